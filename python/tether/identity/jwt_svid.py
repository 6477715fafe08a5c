"""JWT-SVID verification (SPIFFE JWT-SVID standard) plus the claim checks WIMSE reuses.

The JOSE layer (strict header parsing, ``alg`` allow-list, key binding) lives in
:mod:`tether.identity._jose`; this module judges claims and caches verified tokens.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tether.identity._jose import MAX_TOKEN_BYTES, parse_jws, verify_signature
from tether.identity.bundle import JWT_SVID_USE, BundleKey, BundleSet, TrustBundle
from tether.identity.errors import (
    ExpiredToken,
    InvalidAudience,
    InvalidSpiffeId,
    InvalidToken,
    NotYetValid,
    UnknownKey,
    UntrustedDomain,
)
from tether.identity.spiffe_id import SpiffeId

__all__ = [
    "DEFAULT_LEEWAY",
    "MAX_TOKEN_BYTES",
    "JwtSvidVerifier",
    "TokenCache",
    "VerifiedSvid",
]

DEFAULT_LEEWAY = 5.0
_SVID_TYPS = frozenset({None, "JWT", "JOSE"})

Clock = Callable[[], float]
T = TypeVar("T")


# ------------------------------------------------------------------ claim checks


def _numeric(claims: Mapping[str, Any], name: str, what: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"{what} '{name}' must be a number")
    try:
        number = float(value)
    except OverflowError:  # a 400-digit integer is not a timestamp
        number = math.inf
    if not math.isfinite(number):
        raise InvalidToken(f"{what} '{name}' must be a finite number")
    return number


def check_times(claims: Mapping[str, Any], now: float, leeway: float, what: str) -> float:
    """Validate exp (required), nbf and iat (optional). Returns exp."""
    exp = _numeric(claims, "exp", what)
    if exp is None:
        raise InvalidToken(f"{what} has no 'exp'")
    if now > exp + leeway:
        raise ExpiredToken(f"{what} has expired")
    nbf = _numeric(claims, "nbf", what)
    if nbf is not None and now + leeway < nbf:
        raise NotYetValid(f"{what} is not valid yet (nbf)")
    iat = _numeric(claims, "iat", what)
    if iat is not None and now + leeway < iat:
        raise NotYetValid(f"{what} was issued in the future (iat)")
    return exp


def subject_of(claims: Mapping[str, Any], what: str) -> SpiffeId:
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise InvalidToken(f"{what} 'sub' must be a SPIFFE ID string")
    try:
        return SpiffeId.parse(sub)
    except InvalidSpiffeId as exc:
        raise InvalidToken(f"{what} 'sub' is not a valid SPIFFE ID: {exc.rule}") from exc


def check_audience(
    claims: Mapping[str, Any],
    accepted: frozenset[str],
    what: str,
    *,
    normalize: Callable[[str], str] | None = None,
) -> None:
    """``aud`` (a string or list of strings) must name one of ``accepted``; ``normalize``
    maps each ``aud`` value first (``accepted`` must already be in that form)."""
    aud = claims.get("aud")
    if aud is None:
        raise InvalidAudience(f"{what} has no 'aud'")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not all(isinstance(a, str) for a in values):
        raise InvalidToken(f"{what} 'aud' must be a string or list of strings")
    if normalize is not None:
        values = [normalize(a) for a in values]
    if accepted.isdisjoint(values):
        raise InvalidAudience(f"{what} audience does not include this service")


def bundle_for(bundles: BundleSet, spiffe_id: SpiffeId, use: str) -> TrustBundle:
    bundle = bundles.get(spiffe_id.trust_domain)
    if bundle is None:
        raise UntrustedDomain(f"trust domain {spiffe_id.trust_domain!r} is not trusted")
    if not bundle.keys_for(use):
        # Empty keys list = revoked domain (or it never published keys for this use).
        raise UntrustedDomain(f"trust domain {spiffe_id.trust_domain!r} has no {use} keys")
    return bundle


# ------------------------------------------------------------------ cache


class TokenCache(Generic[T]):
    """Verified-token cache keyed by the exact token string.

    A hit is a dict lookup plus two checks that cannot be skipped: the token has not
    expired by the clock, and its trust domain's bundle is still the very object it was
    verified against (any bundle swap, including revocation, invalidates the entry).
    Bounded: when full, expired entries are dropped, then the oldest insertions.
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._entries: dict[str, tuple[T, float, TrustBundle]] = {}
        self._lock = threading.Lock()

    def get(self, token: str, now: float, bundles: BundleSet) -> T | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        value, valid_until, bundle = entry
        if now <= valid_until and bundles.get(bundle.trust_domain) is bundle:
            return value
        self._entries.pop(token, None)
        return None

    def put(
        self, token: str, value: T, valid_until: float, bundle: TrustBundle, now: float
    ) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.maxsize:
                self._evict(now)
            self._entries[token] = (value, valid_until, bundle)

    def _evict(self, now: float) -> None:
        expired = [t for t, (_, until, _) in self._entries.items() if until < now]
        for t in expired:
            self._entries.pop(t, None)
        # Still full: drop the oldest tenth in insertion order (amortises the scan).
        excess = len(self._entries) - self.maxsize + max(1, self.maxsize // 10)
        for t in list(self._entries)[: max(0, excess)]:
            self._entries.pop(t, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


# ------------------------------------------------------------------ JWT-SVID


@dataclass(frozen=True, slots=True)
class VerifiedSvid:
    spiffe_id: SpiffeId
    claims: dict[str, Any]
    expires_at: float
    kid: str | None


class JwtSvidVerifier:
    """Verifies JWT-SVIDs against a :class:`BundleSet` for one or more audiences."""

    def __init__(
        self,
        bundles: BundleSet,
        audience: str | Collection[str],
        *,
        leeway: float = DEFAULT_LEEWAY,
        clock: Clock = time.time,
        cache_size: int = 10_000,
        max_token_bytes: int = MAX_TOKEN_BYTES,
    ) -> None:
        self.bundles = bundles
        self.audiences = frozenset([audience] if isinstance(audience, str) else audience)
        if not self.audiences:
            raise ValueError("at least one audience is required")
        self.leeway = leeway
        self.clock = clock
        self.max_token_bytes = max_token_bytes
        self.cache: TokenCache[VerifiedSvid] = TokenCache(cache_size)

    def verify(self, token: str) -> VerifiedSvid:
        now = self.clock()
        hit = self.cache.get(token, now, self.bundles) if isinstance(token, str) else None
        if hit is not None:
            return hit
        result, bundle = self.verify_uncached(token, now)
        self.cache.put(token, result, result.expires_at + self.leeway, bundle, now)
        return result

    def verify_uncached(self, token: str, now: float) -> tuple[VerifiedSvid, TrustBundle]:
        """Full verification; returns the result and the bundle it was checked against."""
        what = "JWT-SVID"
        parsed = parse_jws(token, typs=_SVID_TYPS, max_bytes=self.max_token_bytes, what=what)
        spiffe_id = subject_of(parsed.claims, what)
        bundle = bundle_for(self.bundles, spiffe_id, JWT_SVID_USE)
        kid = parsed.kid
        if kid is not None:
            key = bundle.jwt_key(kid)
            if key is None:
                raise UnknownKey(f"{what} kid is not in the bundle for {spiffe_id.trust_domain!r}")
            candidates: Sequence[BundleKey] = (key,)
        else:
            candidates = bundle.jwt_keys
        verify_signature(parsed, candidates, what, pinned=kid is not None)
        # Claims are only trusted (and only worth judging) once the signature holds.
        exp = check_times(parsed.claims, now, self.leeway, what)
        check_audience(parsed.claims, self.audiences, what)
        return VerifiedSvid(spiffe_id, parsed.claims, exp, kid), bundle
