"""LocalIssuer: an embedded, in-process SPIFFE issuer for development, demos and tests.

It is not a SPIRE replacement: keys live in memory and are never persisted. It exists so
the whole authenticate-then-authorize loop runs with zero infrastructure, using the same
token formats and bundle format a real deployment would.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tether.identity._jose import curve_alg, jwk_thumbprint
from tether.identity.bundle import JWT_SVID_USE, WIT_SVID_USE, BundleSet, TrustBundle
from tether.identity.errors import InvalidSpiffeId
from tether.identity.spiffe_id import SpiffeId, validate_trust_domain
from tether.identity.wimse import WIT_TYP, WPT_TYP, proof_audience, token_hash

__all__ = ["LocalIssuer", "generate_proof_key", "mint_wpt", "public_jwk"]


def public_jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The public JWK of an EC key (private half never included)."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return ECAlgorithm.to_jwk(pub, as_dict=True)


def _es_alg(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    alg = curve_alg(pub)
    if alg is None:
        raise ValueError(f"no JWS algorithm for curve {pub.curve.name}")
    return alg


@dataclass(frozen=True, slots=True)
class _SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> _SigningKey:
        private = ec.generate_private_key(ec.SECP256R1())
        return cls(jwk_thumbprint(public_jwk(private)), private)

    def jwk(self, use: str) -> dict[str, Any]:
        return {**public_jwk(self.private), "kid": self.kid, "use": use, "alg": "ES256"}


def generate_proof_key() -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    """A fresh P-256 key pair for a workload's WIT confirmation: (private key, public JWK
    with ``alg: ES256``, the algorithm its proofs must use)."""
    private = ec.generate_private_key(ec.SECP256R1())
    return private, {**public_jwk(private), "alg": "ES256"}


def mint_wpt(
    private_key: ec.EllipticCurvePrivateKey,
    wit: str,
    target_uri: str,
    *,
    ttl: float = 60.0,
    jti: str | None = None,
    access_token: str | None = None,
    txn_token: str | None = None,
    now: float | None = None,
) -> str:
    """Sign a Workload Proof Token for one request to ``target_uri`` (test/demo helper).

    ``aud`` is the target without query or fragment; the algorithm is the ES* of the
    key's curve (it must match the WIT's ``cnf.jwk.alg``).
    """
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "aud": proof_audience(target_uri),
        "iat": issued,
        "exp": issued + int(ttl),
        "jti": jti or secrets.token_urlsafe(16),
        "wth": token_hash(wit),
    }
    if access_token is not None:
        claims["ath"] = token_hash(access_token)
    if txn_token is not None:
        claims["tth"] = token_hash(txn_token)
    return jwt.encode(claims, private_key, algorithm=_es_alg(private_key), headers={"typ": WPT_TYP})


class LocalIssuer:
    """Issues JWT-SVIDs and WITs for one trust domain from in-memory P-256 keys."""

    def __init__(
        self,
        trust_domain: str = "tether.local",
        *,
        default_ttl: float = 300.0,
        refresh_hint: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        validate_trust_domain(trust_domain)
        self.trust_domain = trust_domain
        self.default_ttl = default_ttl
        self.refresh_hint = refresh_hint
        self.clock = clock
        self._lock = threading.Lock()
        self._sequence = 1
        # Newest key first: it signs; the rest only stay published for verification.
        self._svid_keys: list[_SigningKey] = [_SigningKey.generate()]
        self._wit_keys: list[_SigningKey] = [_SigningKey.generate()]

    # -- identities

    def spiffe_id(self, subject: SpiffeId | str) -> SpiffeId:
        """Resolve a SpiffeId, a ``spiffe://`` string or a bare path; refuse other domains."""
        if isinstance(subject, SpiffeId):
            sid = subject
        elif subject.startswith("spiffe:"):
            sid = SpiffeId.parse(subject)
        else:
            sid = SpiffeId.from_path(self.trust_domain, subject)
        if sid.trust_domain != self.trust_domain:
            raise InvalidSpiffeId(
                f"issuer for {self.trust_domain!r} cannot issue for {sid.trust_domain!r}"
            )
        return sid

    @property
    def current_kid(self) -> str:
        return self._svid_keys[0].kid

    # -- minting

    def mint_svid(
        self,
        subject: SpiffeId | str,
        audience: str | Sequence[str],
        ttl: float | None = None,
        *,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """Mint a JWT-SVID (ES256, ``kid`` set, ``typ: JWT``) with a fresh ``jti``."""
        sid = self.spiffe_id(subject)
        now = int(self.clock())
        claims: dict[str, Any] = dict(extra_claims or {})
        claims.update(
            sub=str(sid),
            aud=audience if isinstance(audience, str) else list(audience),
            iat=now,
            exp=now + int(self.default_ttl if ttl is None else ttl),
            jti=secrets.token_urlsafe(16),
        )
        key = self._svid_keys[0]
        return jwt.encode(
            claims, key.private, algorithm="ES256", headers={"kid": key.kid, "typ": "JWT"}
        )

    def mint_wit(
        self,
        subject: SpiffeId | str,
        public_key: Mapping[str, Any] | ec.EllipticCurvePublicKey,
        ttl: float | None = None,
    ) -> str:
        """Mint a WIMSE Workload Identity Token binding ``subject`` to ``public_key``.

        ``cnf.jwk.alg`` (required by the WIT draft) is taken from the JWK, or derived from
        an EC key's curve when absent; an RSA JWK must name its ``alg`` (RS* or PS*).
        """
        sid = self.spiffe_id(subject)
        jwk = dict(public_key) if isinstance(public_key, Mapping) else public_jwk(public_key)
        if "d" in jwk:
            raise ValueError("cnf.jwk must be a public key")
        if "alg" not in jwk:
            if jwk.get("kty") != "EC":
                raise ValueError("cnf.jwk needs an 'alg' (only an EC key's can be derived)")
            jwk["alg"] = _es_alg(ECAlgorithm.from_jwk(jwk))
        now = int(self.clock())
        claims = {
            "sub": str(sid),
            "iat": now,
            "exp": now + int(self.default_ttl if ttl is None else ttl),
            "jti": secrets.token_urlsafe(16),
            "cnf": {"jwk": jwk},
        }
        key = self._wit_keys[0]
        return jwt.encode(
            claims, key.private, algorithm="ES256", headers={"kid": key.kid, "typ": WIT_TYP}
        )

    # -- bundle and rotation

    def bundle(self) -> dict[str, Any]:
        """The SPIFFE bundle document (JWK Set) for this trust domain."""
        with self._lock:
            keys = [k.jwk(JWT_SVID_USE) for k in self._svid_keys]
            keys += [k.jwk(WIT_SVID_USE) for k in self._wit_keys]
            return {
                "keys": keys,
                "spiffe_sequence": self._sequence,
                "spiffe_refresh_hint": self.refresh_hint,
            }

    def trust_bundle(self) -> TrustBundle:
        return TrustBundle.from_dict(self.trust_domain, self.bundle())

    def bundle_set(self) -> BundleSet:
        """A BundleSet trusting only this issuer (handy for tests and demos)."""
        return BundleSet([self.trust_bundle()])

    def rotate(self) -> str:
        """Start signing with new keys; old keys stay published. Returns the new kid."""
        with self._lock:
            self._svid_keys.insert(0, _SigningKey.generate())
            self._wit_keys.insert(0, _SigningKey.generate())
            self._sequence += 1
            return self._svid_keys[0].kid

    def retire_old_keys(self) -> None:
        """Drop every key but the current ones from the bundle (tokens they signed die)."""
        with self._lock:
            self._svid_keys = self._svid_keys[:1]
            self._wit_keys = self._wit_keys[:1]
            self._sequence += 1
