"""Typed errors for workload-identity authentication.

Every failure while authenticating raises a subclass of :class:`AuthenticationError`, so
callers can catch one type and still branch on the precise reason. Messages describe the
rule that failed but never echo the token, its signature or any key material: tokens are
bearer credentials and end up in logs.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ExpiredToken",
    "InvalidAudience",
    "InvalidBundle",
    "InvalidSignature",
    "InvalidSpiffeId",
    "InvalidToken",
    "NotYetValid",
    "ReplayedProof",
    "UnknownKey",
    "UntrustedDomain",
]


class AuthenticationError(Exception):
    """Base class: the presented credential does not authenticate a workload."""


class InvalidToken(AuthenticationError):
    """Malformed token, forbidden header, bad or missing claim."""


class ExpiredToken(AuthenticationError):
    """``exp`` is in the past (beyond the configured leeway)."""


class NotYetValid(AuthenticationError):
    """``nbf`` or ``iat`` is in the future (beyond the configured leeway)."""


class InvalidAudience(AuthenticationError):
    """``aud`` is missing or does not contain the expected audience."""


class UntrustedDomain(AuthenticationError):
    """No bundle for the subject's trust domain, or the bundle has no keys (distrusted)."""


class UnknownKey(AuthenticationError):
    """No key in the trust domain's bundle matches the token's ``kid``/``alg``."""


class InvalidSignature(AuthenticationError):
    """The signature does not verify with any candidate key."""


class ReplayedProof(AuthenticationError):
    """A Workload Proof Token's ``jti`` was already seen within its lifetime."""


class InvalidSpiffeId(ValueError):
    """A string is not a valid SPIFFE ID; ``rule`` names the rule that broke.

    This is a ValueError (it is raised by plain parsing); when it happens while
    authenticating a token it is wrapped in :class:`InvalidToken`.
    """

    def __init__(self, rule: str, value: str | None = None) -> None:
        self.rule = rule
        if value is None:
            super().__init__(f"invalid SPIFFE ID: {rule}")
        else:
            # Truncate: IDs can be up to 2 KiB and the point is to identify, not dump.
            shown = value if len(value) <= 80 else value[:77] + "..."
            super().__init__(f"invalid SPIFFE ID {shown!r}: {rule}")


class InvalidBundle(ValueError):
    """A trust bundle document does not follow the SPIFFE bundle format."""
