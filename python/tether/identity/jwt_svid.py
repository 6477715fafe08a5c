"""JWT-SVID verification (SPIFFE JWT-SVID standard) plus the JWS helpers WIMSE reuses.

We do our own strict parsing of the compact JWS (header allow-list, ``alg`` allow-list,
key/alg binding) *before* any crypto, then call pyjwt's algorithm implementations for
the signature itself. Doing the header checks ourselves is what closes the classic
holes (``alg: none``, HS256-with-an-RSA-public-key, ``crit``, ``b64: false``, ``jku``)
rather than trusting a general-purpose JWT library's defaults.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from jwt.algorithms import get_default_algorithms

from tether.identity.bundle import JWT_SVID_USE, BundleKey, BundleSet, TrustBundle
from tether.identity.errors import (
    ExpiredToken,
    InvalidAudience,
    InvalidSignature,
    InvalidSpiffeId,
    InvalidToken,
    NotYetValid,
    UnknownKey,
    UntrustedDomain,
)
from tether.identity.spiffe_id import SpiffeId

__all__ = [
    "ALLOWED_ALGS",
    "DEFAULT_LEEWAY",
    "MAX_TOKEN_BYTES",
    "JwtSvidVerifier",
    "ParsedJws",
    "TokenCache",
    "VerifiedSvid",
    "parse_jws",
]

MAX_TOKEN_BYTES = 16 * 1024
DEFAULT_LEEWAY = 5.0
ALLOWED_ALGS = frozenset(
    f"{family}{bits}" for family in ("RS", "ES", "PS") for bits in ("256", "384", "512")
)
_ALGS = {name: get_default_algorithms()[name] for name in ALLOWED_ALGS}
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
_SVID_TYPS = frozenset({None, "JWT", "JOSE"})
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

Clock = Callable[[], float]
T = TypeVar("T")


# ------------------------------------------------------------------ JWS parsing


def b64url_decode(segment: str, what: str) -> bytes:
    """Strict base64url without padding (RFC 7515 s2); stdlib decoding skips junk chars."""
    raw = segment.encode("ascii", "replace")
    if not _B64URL.issuperset(raw) or len(raw) % 4 == 1:
        raise InvalidToken(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken(f"{what} is not base64url") from exc


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            # Parsers disagree on which duplicate wins; refuse instead of guessing.
            raise InvalidToken(f"duplicate JSON member {k!r}")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    # Python's json accepts NaN/Infinity; NaN compares false with everything, so an
    # ``exp: NaN`` would never expire. They are not JSON (RFC 8259): refuse them.
    raise InvalidToken(f"non-JSON constant {name}")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except InvalidToken:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidToken(f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise InvalidToken(f"{what} is not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class ParsedJws:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    @property
    def alg(self) -> str:
        alg: str = self.header["alg"]
        return alg

    @property
    def kid(self) -> str | None:
        kid: str | None = self.header.get("kid")
        return kid


def parse_jws(
    token: str,
    *,
    typs: Collection[str | None],
    max_bytes: int = MAX_TOKEN_BYTES,
    what: str = "token",
) -> ParsedJws:
    """Split and decode a compact JWS, enforcing the header rules shared by all our tokens.

    ``typs`` lists acceptable ``typ`` values (compared case-insensitively, as media types
    are); include ``None`` to allow an absent ``typ``. No signature is checked here.
    """
    if not isinstance(token, str):
        raise InvalidToken(f"{what} must be a string")
    # Size check before any decoding: a huge token must not cost us CPU or memory.
    if len(token) > max_bytes:
        raise InvalidToken(f"{what} is larger than {max_bytes} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken(f"{what} is not a JWS compact serialization (need 3 parts)")
    h64, p64, s64 = parts
    if not s64:
        raise InvalidToken(f"{what} has no signature")
    header = _json_object(b64url_decode(h64, f"{what} header"), f"{what} header")
    if "crit" in header:
        raise InvalidToken(f"{what} header has 'crit'; no critical extensions are supported")
    unknown = set(header) - _ALLOWED_HEADERS
    if unknown:
        raise InvalidToken(f"{what} header has unsupported parameters {sorted(unknown)}")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGS:
        shown = alg if isinstance(alg, str) and len(alg) <= 16 else "?"
        raise InvalidToken(f"{what} alg {shown!r} is not allowed (RS/ES/PS 256/384/512 only)")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise InvalidToken(f"{what} kid must be a non-empty string")
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        raise InvalidToken(f"{what} typ must be a string")
    allowed = {t.lower() if t else None for t in typs}
    if (typ.lower() if typ is not None else None) not in allowed:
        raise InvalidToken(f"{what} typ is not one of {sorted(str(t) for t in typs)}")
    claims = _json_object(b64url_decode(p64, f"{what} payload"), f"{what} payload")
    signature = b64url_decode(s64, f"{what} signature")
    return ParsedJws(header, claims, f"{h64}.{p64}".encode("ascii"), signature)


def verify_signature(parsed: ParsedJws, candidates: Sequence[BundleKey], what: str) -> BundleKey:
    """Return the key that verifies ``parsed``; UnknownKey / InvalidSignature otherwise."""
    alg = parsed.alg
    usable = [k for k in candidates if k.supports(alg)]
    if not usable:
        raise UnknownKey(f"no key for {what} with alg {alg} and the given kid")
    algorithm = _ALGS[alg]
    for key in usable:
        if algorithm.verify(parsed.signing_input, key.key, parsed.signature):
            return key
    raise InvalidSignature(f"{what} signature does not verify")


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


def check_audience(claims: Mapping[str, Any], accepted: frozenset[str], what: str) -> None:
    aud = claims.get("aud")
    if aud is None:
        raise InvalidAudience(f"{what} has no 'aud'")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not all(isinstance(a, str) for a in values):
        raise InvalidToken(f"{what} 'aud' must be a string or list of strings")
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
        verify_signature(parsed, candidates, what)
        # Claims are only trusted (and only worth judging) once the signature holds.
        exp = check_times(parsed.claims, now, self.leeway, what)
        check_audience(parsed.claims, self.audiences, what)
        return VerifiedSvid(spiffe_id, parsed.claims, exp, kid), bundle
