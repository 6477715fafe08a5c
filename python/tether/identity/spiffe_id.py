"""SPIFFE ID parsing and validation (SPIFFE-ID standard, section 2).

A SPIFFE ID is ``spiffe://<trust-domain><path>``. The rules are deliberately strict and
have exactly one spelling per identity, so string equality is identity equality: no
percent-encoding, no case folding of the trust domain, no dot segments to normalise.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.identity.errors import InvalidSpiffeId

__all__ = ["MAX_SPIFFE_ID_BYTES", "SpiffeId", "validate_trust_domain"]

MAX_SPIFFE_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255
_SCHEME = "spiffe://"
_TD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


def validate_trust_domain(trust_domain: str) -> None:
    """Raise :class:`InvalidSpiffeId` unless ``trust_domain`` is a valid trust domain name."""
    if not trust_domain:
        raise InvalidSpiffeId("trust domain is empty")
    if len(trust_domain.encode()) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeId(f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    if _TD_CHARS.issuperset(trust_domain):
        return
    # Name the most specific rule; these are the common mistakes people make.
    if "@" in trust_domain:
        raise InvalidSpiffeId("userinfo is not allowed", trust_domain)
    if ":" in trust_domain:
        raise InvalidSpiffeId("port is not allowed", trust_domain)
    if "%" in trust_domain:
        raise InvalidSpiffeId("percent-encoding is not allowed", trust_domain)
    if any(c.isupper() for c in trust_domain):
        raise InvalidSpiffeId("trust domain must be lowercase", trust_domain)
    raise InvalidSpiffeId(
        "trust domain may only contain [a-z0-9.-_]",
        trust_domain,
    )


def _validate_path(path: str) -> None:
    if not path:
        return  # The path is optional: ``spiffe://example.org`` names the trust domain.
    if not path.startswith("/"):
        raise InvalidSpiffeId("path must start with '/'", path)
    if path.endswith("/"):
        raise InvalidSpiffeId("path must not end with '/'", path)
    for segment in path[1:].split("/"):
        if not segment:
            raise InvalidSpiffeId("path has an empty segment", path)
        if segment in (".", ".."):
            raise InvalidSpiffeId("path has a '.' or '..' segment", path)
        if not _PATH_CHARS.issuperset(segment):
            if "%" in segment:
                raise InvalidSpiffeId("percent-encoding is not allowed", path)
            raise InvalidSpiffeId("path segments may only contain [a-zA-Z0-9.-_]", path)


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A validated SPIFFE ID. Construct with :meth:`parse` or ``SpiffeId(td, path)``."""

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        _validate_path(self.path)
        if len(_SCHEME) + len(self.trust_domain) + len(self.path.encode()) > MAX_SPIFFE_ID_BYTES:
            raise InvalidSpiffeId(f"longer than {MAX_SPIFFE_ID_BYTES} bytes")

    @classmethod
    def parse(cls, value: str) -> SpiffeId:
        """Parse ``spiffe://trust-domain/path``; raise :class:`InvalidSpiffeId` naming the rule."""
        if not isinstance(value, str):
            raise InvalidSpiffeId("must be a string")
        if not value:
            raise InvalidSpiffeId("is empty")
        # Check size first so we never scan a huge attacker-supplied string twice.
        if len(value) > MAX_SPIFFE_ID_BYTES or len(value.encode()) > MAX_SPIFFE_ID_BYTES:
            raise InvalidSpiffeId(f"longer than {MAX_SPIFFE_ID_BYTES} bytes")
        if not value.startswith(_SCHEME):
            if value.lower().startswith(_SCHEME):
                raise InvalidSpiffeId("scheme must be lowercase 'spiffe'", value)
            raise InvalidSpiffeId("scheme must be 'spiffe://'", value)
        rest = value[len(_SCHEME) :]
        if "?" in rest:
            raise InvalidSpiffeId("query is not allowed", value)
        if "#" in rest:
            raise InvalidSpiffeId("fragment is not allowed", value)
        slash = rest.find("/")
        if slash < 0:
            return cls(rest)
        return cls(rest[:slash], rest[slash:])

    @classmethod
    def from_path(cls, trust_domain: str, path: str) -> SpiffeId:
        """Build an ID in ``trust_domain``; a missing leading ``/`` on ``path`` is added."""
        if path and not path.startswith("/"):
            path = "/" + path
        return cls(trust_domain, path)

    def member_of(self, trust_domain: str) -> bool:
        return self.trust_domain == trust_domain

    def __str__(self) -> str:
        return f"{_SCHEME}{self.trust_domain}{self.path}"
