"""The JOSE pieces every tether token shares: strict compact-JWS parsing, the ``alg``
allow-list and its binding to keys, signature checks and RFC 7638 key thumbprints.

We do our own strict parsing of the compact JWS (header allow-list, ``alg`` allow-list,
key/alg binding) *before* any crypto, then call pyjwt's algorithm implementations for
the signature itself. Doing the header checks ourselves is what closes the classic
holes (``alg: none``, HS256-with-an-RSA-public-key, ``crit``, ``b64: false``, ``jku``)
rather than trusting a general-purpose JWT library's defaults.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import get_default_algorithms

from tether.identity.errors import (
    InvalidHeader,
    InvalidSignature,
    InvalidToken,
    UnknownKey,
    UnsupportedAlgorithm,
)

if TYPE_CHECKING:
    from tether.identity.bundle import BundleKey

__all__ = [
    "ALLOWED_ALGS",
    "MAX_TOKEN_BYTES",
    "ParsedJws",
    "alg_fits_key",
    "b64url_decode",
    "b64url_encode",
    "curve_alg",
    "jwk_thumbprint",
    "media_type",
    "no_duplicate_members",
    "parse_jws",
    "verify_signature",
]

MAX_TOKEN_BYTES = 16 * 1024
# The asymmetric signature algorithms of RFC 7518 3.3-3.5: exactly the JWT-SVID list
# (SPIFFE JWT-SVID 2.1) and the WIT-SVID list (SPIFFE WIT-SVID 2.3 and 3.2).
ALLOWED_ALGS = frozenset(
    f"{family}{bits}" for family in ("RS", "ES", "PS") for bits in ("256", "384", "512")
)
_ALGS = {name: get_default_algorithms()[name] for name in ALLOWED_ALGS}
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
_CURVE_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# RFC 7638 3.2: the required members of each key type, already in lexicographic order.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
    "oct": ("k", "kty"),
}


# ------------------------------------------------------------------ encoding


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


def no_duplicate_members(
    error: type[Exception],
) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A ``json.loads`` ``object_pairs_hook`` that raises ``error`` on a repeated member."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                # Parsers disagree on which duplicate wins; refuse instead of guessing.
                raise error(f"duplicate JSON member {k!r}")
            out[k] = v
        return out

    return hook


_no_duplicates = no_duplicate_members(InvalidToken)


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


def media_type(typ: str) -> str:
    """``typ`` as a full, lower-case media type.

    RFC 7515 4.1.9: a recipient "MUST treat it as if "application/" were prepended to any
    "typ" value not containing a '/'", and media types compare case-insensitively.
    """
    lowered = typ.lower()
    return lowered if "/" in lowered else f"application/{lowered}"


# ------------------------------------------------------------------ parsing


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


def _check_header(header: Mapping[str, Any], typs: Collection[str | None], what: str) -> None:
    if "crit" in header:
        raise InvalidHeader(f"{what} header has 'crit'; no critical extensions are supported")
    unknown = set(header) - _ALLOWED_HEADERS
    if unknown:
        raise InvalidHeader(f"{what} header has unsupported parameters {sorted(unknown)}")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGS:
        shown = alg if isinstance(alg, str) and len(alg) <= 16 else "?"
        raise UnsupportedAlgorithm(
            f"{what} alg {shown!r} is not allowed (RS/ES/PS 256/384/512 only)"
        )
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise InvalidHeader(f"{what} kid must be a non-empty string")
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        raise InvalidHeader(f"{what} typ must be a string")
    allowed = {media_type(t) if t else None for t in typs}
    if (media_type(typ) if typ is not None else None) not in allowed:
        expected = sorted(t if t else "(absent)" for t in typs)
        raise InvalidHeader(f"{what} typ is not one of {expected}")


def parse_jws(
    token: str,
    *,
    typs: Collection[str | None],
    max_bytes: int = MAX_TOKEN_BYTES,
    what: str = "token",
) -> ParsedJws:
    """Split and decode a compact JWS, enforcing the header rules shared by all our tokens.

    ``typs`` lists acceptable ``typ`` values (compared as media types: case-insensitively,
    with or without the ``application/`` prefix); include ``None`` to allow an absent
    ``typ``. No signature is checked here.
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
    header = _json_object(b64url_decode(h64, f"{what} header"), f"{what} header")
    _check_header(header, typs, what)
    if not s64:
        raise InvalidToken(f"{what} has no signature")
    claims = _json_object(b64url_decode(p64, f"{what} payload"), f"{what} payload")
    signature = b64url_decode(s64, f"{what} signature")
    return ParsedJws(header, claims, f"{h64}.{p64}".encode("ascii"), signature)


# ------------------------------------------------------------------ keys and signatures


def alg_fits_key(alg: str, key: RSAPublicKey | EllipticCurvePublicKey) -> bool:
    """The algorithm-confusion guard: an RSA key only verifies RS*/PS*, an EC key only
    the ES* of its own curve, and nothing outside :data:`ALLOWED_ALGS` fits any key."""
    if alg not in ALLOWED_ALGS:
        return False
    if isinstance(key, RSAPublicKey):
        return alg[:2] in ("RS", "PS")
    return _CURVE_ALG.get(key.curve.name) == alg


def curve_alg(key: EllipticCurvePublicKey) -> str | None:
    """The one ES* algorithm an EC key can verify, or None for a curve we do not support."""
    return _CURVE_ALG.get(key.curve.name)


def verify_signature(
    parsed: ParsedJws, candidates: Sequence[BundleKey], what: str, *, pinned: bool
) -> BundleKey:
    """Return the key among ``candidates`` that verifies ``parsed``.

    ``pinned`` says the candidates were chosen for this token (by its ``kid``, or by a
    WIT's ``cnf``): then an ``alg`` none of them supports is the token's fault
    (:class:`UnsupportedAlgorithm`); otherwise the domain simply has no key for it
    (:class:`UnknownKey`). A signature no usable key verifies is :class:`InvalidSignature`.
    """
    alg = parsed.alg
    if not candidates:
        raise UnknownKey(f"no key for {what} with the given kid")
    usable = [k for k in candidates if k.supports(alg)]
    if not usable:
        if pinned:
            raise UnsupportedAlgorithm(f"{what} alg {alg} does not fit its key")
        raise UnknownKey(f"no key for {what} with alg {alg}")
    algorithm = _ALGS[alg]
    for key in usable:
        if algorithm.verify(parsed.signing_input, key.key, parsed.signature):
            return key
    raise InvalidSignature(f"{what} signature does not verify")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the hash of the key type's required
    members only, sorted, without whitespace. Stable and unique per key, reveals nothing
    secret, so it makes a good ``kid``."""
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise ValueError(f"no RFC 7638 thumbprint for key type {kty!r}")
    missing = [m for m in members if not isinstance(jwk.get(m), str)]
    if missing:
        raise ValueError(f"{kty} key lacks required members {missing}")
    canonical = json.dumps(
        {m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True, ensure_ascii=False
    )
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())
