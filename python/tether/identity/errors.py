"""Typed errors for workload-identity authentication.

Every failure while authenticating raises a subclass of :class:`AuthenticationError`, so
callers can catch one type and still branch on the precise reason. Messages describe the
rule that failed but never echo the token, its signature or any key material: tokens are
bearer credentials and end up in logs.

The tree (all under :class:`tether.errors.TetherError`)::

    AuthenticationError
    ├── InvalidToken             malformed token, bad or missing claim
    │   ├── UnsupportedAlgorithm alg none/HS*/EdDSA/missing, or alg that does not fit the key
    │   ├── InvalidHeader        typ, crit, jku, x5u, jwk, cty or any unknown header parameter
    │   └── InvalidBinding       WPT wth/ath/tth missing or not matching the presented token
    ├── ExpiredToken, NotYetValid, InvalidAudience
    ├── UntrustedDomain, UnknownKey, InvalidSignature
    └── ReplayedProof
    InvalidSpiffeId (also ValueError)
    InvalidBundle (also ValueError)
    └── StaleBundle
"""

from __future__ import annotations

from tether.errors import TetherError

__all__ = [
    "AuthenticationError",
    "ExpiredToken",
    "InvalidAudience",
    "InvalidBinding",
    "InvalidBundle",
    "InvalidHeader",
    "InvalidSignature",
    "InvalidSpiffeId",
    "InvalidToken",
    "NotYetValid",
    "ReplayedProof",
    "UnknownKey",
    "UnsupportedAlgorithm",
    "UntrustedDomain",
]


class AuthenticationError(TetherError):
    """Base class: the presented credential does not authenticate a workload."""


class InvalidToken(AuthenticationError):
    """Malformed token, forbidden header, bad or missing claim."""


class UnsupportedAlgorithm(InvalidToken):
    """``alg`` is missing, not an allowed asymmetric signature algorithm (``none``, ``HS*``,
    ``EdDSA``, ...), or does not fit the key it must be verified with (its type, curve or
    pinned JWK ``alg``, e.g. a WPT whose ``alg`` is not its WIT's ``cnf.jwk.alg``)."""


class InvalidHeader(InvalidToken):
    """A JOSE header parameter that is forbidden, unknown or has the wrong value
    (``typ``, ``crit``, ``jku``, ``x5u``, an embedded ``jwk``, ``cty``, ``kid``...)."""


class InvalidBinding(InvalidToken):
    """A WPT is not bound to the tokens presented with it: ``wth`` (the WIT), ``ath``
    (access token) or ``tth`` (transaction token) missing, unexpected or not matching."""


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


class InvalidSpiffeId(TetherError, ValueError):
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


class InvalidBundle(TetherError, ValueError):
    """A trust bundle document does not follow the SPIFFE bundle format."""
