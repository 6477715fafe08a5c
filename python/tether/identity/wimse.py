"""WIMSE workload credentials: Workload Identity Token (WIT) + Workload Proof Token (WPT).

Per draft-ietf-wimse-workload-creds (the WIT, ``typ: wit+jwt``): issued by the trust
domain, it binds a SPIFFE ID to a public key (``cnf.jwk``, whose ``alg`` is required); it
has no audience and is not a bearer credential on its own. Per draft-ietf-wimse-wpt: each
request carries a WPT (``typ: wpt+jwt``) signed with the matching private key using that
``alg``, scoped to one target URI (query and fragment ignored), short-lived, unique
(``jti``) and bound to the WIT by ``wth`` (and to an access/transaction token by
``ath``/``tth`` whenever one is presented).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether.identity._jose import (
    ALLOWED_ALGS,
    MAX_TOKEN_BYTES,
    b64url_encode,
    parse_jws,
    verify_signature,
)
from tether.identity.bundle import WIT_SVID_USE, BundleKey, BundleSet, public_key_from_jwk
from tether.identity.errors import (
    AuthenticationError,
    InvalidBinding,
    InvalidBundle,
    InvalidToken,
    ReplayedProof,
    UnsupportedAlgorithm,
)
from tether.identity.jwt_svid import (
    DEFAULT_LEEWAY,
    Clock,
    TokenCache,
    bundle_for,
    check_audience,
    check_times,
    subject_of,
)
from tether.identity.spiffe_id import SpiffeId

__all__ = [
    "WIT_TYP",
    "WPT_TYP",
    "ReplayCache",
    "VerifiedProof",
    "VerifiedWit",
    "WimseVerifier",
    "proof_audience",
    "token_hash",
]

WIT_TYP = "wit+jwt"
WPT_TYP = "wpt+jwt"
DEFAULT_MAX_PROOF_LIFETIME = 300.0


def proof_audience(target_uri: str) -> str:
    """The WPT ``aud`` for a request target: the URI without query or fragment.

    draft-ietf-wimse-wpt-01 section 2: ``aud`` "SHOULD contain the HTTP target URI ... without
    query or fragment parts", and the recipient compares it "ignoring any query and
    fragment parts".
    """
    return target_uri.split("#", 1)[0].split("?", 1)[0]


def token_hash(token: str) -> str:
    """base64url(SHA-256(ASCII(token))): the form of ``wth``, ``ath`` and ``tth``."""
    return b64url_encode(hashlib.sha256(token.encode()).digest())


class ReplayCache:
    """Remembers proof ``jti`` values until the proof itself could no longer be accepted.

    When full of still-live entries it refuses new proofs rather than forgetting old
    ones: evicting a live ``jti`` would silently re-open it to replay.
    """

    def __init__(self, maxsize: int = 100_000) -> None:
        self.maxsize = maxsize
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def check_and_store(self, jti: str, until: float, now: float) -> None:
        with self._lock:
            seen_until = self._seen.get(jti)
            if seen_until is not None and seen_until >= now:
                raise ReplayedProof("proof jti was already used")
            if len(self._seen) >= self.maxsize:
                self._seen = {j: u for j, u in self._seen.items() if u >= now}
                if len(self._seen) >= self.maxsize:
                    raise AuthenticationError("proof replay cache is full; try again later")
            self._seen[jti] = until

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True, slots=True)
class VerifiedWit:
    spiffe_id: SpiffeId
    claims: dict[str, Any]
    expires_at: float
    confirmation_key: BundleKey


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    wit: VerifiedWit
    claims: dict[str, Any]
    expires_at: float
    jti: str


def _confirmation_key(claims: Mapping[str, Any]) -> BundleKey:
    """The WIT's ``cnf.jwk``, with the ``alg`` every proof must use.

    draft-ietf-wimse-workload-creds-02 section 5.1 (The Workload Identity Token): "an
    ``alg`` field MUST be present ... The presented proof MUST be produced with the
    algorithm specified in this field. The value ``none`` MUST NOT be used. Algorithms
    used in combination with symmetric keys MUST NOT be used."
    """
    cnf = claims.get("cnf")
    jwk = cnf.get("jwk") if isinstance(cnf, Mapping) else None
    if not isinstance(jwk, Mapping):
        raise InvalidToken("WIT has no 'cnf.jwk' confirmation key")
    alg = jwk.get("alg")
    if alg is None:
        raise UnsupportedAlgorithm("WIT 'cnf.jwk' has no 'alg'")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGS:
        shown = alg if isinstance(alg, str) and len(alg) <= 16 else "?"
        raise UnsupportedAlgorithm(
            f"WIT 'cnf.jwk' alg {shown!r} is not allowed (RS/ES/PS 256/384/512 only)"
        )
    try:
        key = public_key_from_jwk(jwk, None)
    except InvalidBundle as exc:
        raise InvalidToken("WIT 'cnf.jwk' is not a valid public key") from exc
    if key is None:
        raise InvalidToken("WIT 'cnf.jwk' key type is not supported (RSA or EC only)")
    if key.alg_problem() is not None:
        raise UnsupportedAlgorithm(f"WIT 'cnf.jwk' alg {alg!r} does not fit its key")
    return key


class WimseVerifier:
    def __init__(
        self,
        bundles: BundleSet,
        *,
        leeway: float = DEFAULT_LEEWAY,
        clock: Clock = time.time,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        max_proof_lifetime: float = DEFAULT_MAX_PROOF_LIFETIME,
        cache_size: int = 10_000,
        replay_cache: ReplayCache | None = None,
    ) -> None:
        self.bundles = bundles
        self.leeway = leeway
        self.clock = clock
        self.max_token_bytes = max_token_bytes
        self.max_proof_lifetime = max_proof_lifetime
        self.replay_cache = replay_cache if replay_cache is not None else ReplayCache()
        # WITs are reused for many requests, so cache them like JWT-SVIDs. WPTs are
        # single-use by construction and are never cached.
        self.wit_cache: TokenCache[VerifiedWit] = TokenCache(cache_size)

    def verify_wit(self, wit: str) -> VerifiedWit:
        now = self.clock()
        hit = self.wit_cache.get(wit, now, self.bundles) if isinstance(wit, str) else None
        if hit is not None:
            return hit
        what = "WIT"
        parsed = parse_jws(wit, typs=(WIT_TYP,), max_bytes=self.max_token_bytes, what=what)
        spiffe_id = subject_of(parsed.claims, what)
        bundle = bundle_for(self.bundles, spiffe_id, WIT_SVID_USE)
        kid = parsed.kid
        candidates = [k for k in bundle.wit_keys if kid is None or k.kid == kid]
        verify_signature(parsed, candidates, what, pinned=kid is not None)
        exp = check_times(parsed.claims, now, self.leeway, what)
        if "aud" in parsed.claims:
            # A WIT is presented to everyone; an audience would suggest bearer use.
            raise InvalidToken("WIT must not have an 'aud' claim")
        result = VerifiedWit(spiffe_id, parsed.claims, exp, _confirmation_key(parsed.claims))
        self.wit_cache.put(wit, result, exp + self.leeway, bundle, now)
        return result

    def verify(
        self,
        wit: str,
        wpt: str,
        target_uri: str,
        *,
        access_token: str | None = None,
        txn_token: str | None = None,
    ) -> VerifiedProof:
        """Verify a WIT and the request's WPT for ``target_uri``; records the proof's jti."""
        verified_wit = self.verify_wit(wit)
        now = self.clock()
        what = "WPT"
        parsed = parse_jws(wpt, typs=(WPT_TYP,), max_bytes=self.max_token_bytes, what=what)
        key = verified_wit.confirmation_key
        if parsed.alg != key.alg:
            # wpt-01 section 2: the WPT alg "string-equal matches the alg attribute of the
            # jwk in the cnf claim of the WIT".
            raise UnsupportedAlgorithm(f"WPT alg {parsed.alg} is not the WIT's cnf.jwk alg")
        verify_signature(parsed, (key,), what, pinned=True)
        claims = parsed.claims
        exp = check_times(claims, now, self.leeway, what)
        iat = claims.get("iat")
        start = float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else now
        if exp - start > self.max_proof_lifetime:
            raise InvalidToken(f"WPT lifetime exceeds {self.max_proof_lifetime:g} seconds")
        check_audience(
            claims, frozenset({proof_audience(target_uri)}), what, normalize=proof_audience
        )
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise InvalidToken("WPT has no 'jti'")
        self._check_binding(claims, "wth", wit, required=True)
        self._check_binding(claims, "ath", access_token, required=access_token is not None)
        self._check_binding(claims, "tth", txn_token, required=txn_token is not None)
        # Last: only a proof that is otherwise fully valid may consume its jti.
        self.replay_cache.check_and_store(jti, exp + self.leeway, now)
        return VerifiedProof(verified_wit, claims, exp, jti)

    @staticmethod
    def _check_binding(
        claims: Mapping[str, Any], name: str, token: str | None, *, required: bool
    ) -> None:
        value = claims.get(name)
        if value is None:
            if required:
                raise InvalidBinding(f"WPT has no '{name}'")
            return
        if token is None:
            # Bound to a token the request did not present: cannot be checked, refuse.
            raise InvalidBinding(f"WPT has '{name}' but no matching token was presented")
        if not isinstance(value, str) or not hmac.compare_digest(value, token_hash(token)):
            raise InvalidBinding(f"WPT '{name}' does not match the presented token")
