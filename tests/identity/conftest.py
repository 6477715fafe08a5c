"""Shared fixtures for the identity suite: keys, bundles, a fake clock, a JWS forger."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, get_default_algorithms

from tests.support import FakeClock
from tether.identity import Authenticator, BundleSet, LocalIssuer

NOW = 1_800_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(
    header: dict[str, Any] | bytes,
    claims: dict[str, Any] | bytes,
    key: Any = None,
    *,
    alg: str | None = None,
    hmac_secret: bytes | None = None,
) -> str:
    """Build a compact JWS exactly as given (no library defaults), for attack vectors."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{b64(h)}.{b64(p)}".encode()
    if hmac_secret is not None:
        sig = hmac.new(hmac_secret, signing_input, hashlib.sha256).digest()
    elif key is None:
        sig = b""
    else:
        name = alg or (header["alg"] if isinstance(header, dict) else "ES256")
        sig = get_default_algorithms()[name].sign(signing_input, key)
    return f"{signing_input.decode()}.{b64(sig)}"


@dataclass
class Keys:
    ec256: ec.EllipticCurvePrivateKey
    ec384: ec.EllipticCurvePrivateKey
    ec521: ec.EllipticCurvePrivateKey
    rsa: rsa.RSAPrivateKey
    other: ec.EllipticCurvePrivateKey  # other.org's key
    attacker: ec.EllipticCurvePrivateKey  # in no bundle
    wit: ec.EllipticCurvePrivateKey  # example.org wit-svid key


@pytest.fixture
def issuer(clock: FakeClock) -> LocalIssuer:
    """An in-process issuer for example.org on the test clock."""
    return LocalIssuer("example.org", clock=clock)


@pytest.fixture
def auth(issuer: LocalIssuer, clock: FakeClock) -> Authenticator:
    """An authenticator for audience ``svc`` trusting only ``issuer``, 5 s leeway."""
    return Authenticator(issuer.bundle_set(), "svc", leeway=5, clock=clock)


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        ec256=ec.generate_private_key(ec.SECP256R1()),
        ec384=ec.generate_private_key(ec.SECP384R1()),
        ec521=ec.generate_private_key(ec.SECP521R1()),
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        other=ec.generate_private_key(ec.SECP256R1()),
        attacker=ec.generate_private_key(ec.SECP256R1()),
        wit=ec.generate_private_key(ec.SECP256R1()),
    )


def _jwk_of(key: Any, kid: str | None, use: str) -> dict[str, Any]:
    pub = key.public_key()
    algo = RSAAlgorithm if isinstance(pub, rsa.RSAPublicKey) else ECAlgorithm
    jwk: dict[str, Any] = dict(algo.to_jwk(pub, as_dict=True))
    if kid is not None:
        jwk["kid"] = kid
    jwk["use"] = use
    return jwk


@pytest.fixture
def bundle_docs(keys: Keys) -> dict[str, dict[str, Any]]:
    return {
        "example.org": {
            "keys": [
                _jwk_of(keys.ec256, "k1", "jwt-svid"),
                _jwk_of(keys.ec384, "k384", "jwt-svid"),
                _jwk_of(keys.ec521, "k521", "jwt-svid"),
                _jwk_of(keys.rsa, "r1", "jwt-svid"),
                _jwk_of(keys.wit, "w1", "wit-svid"),
            ],
            "spiffe_sequence": 5,
            "spiffe_refresh_hint": 60,
        },
        "other.org": {"keys": [_jwk_of(keys.other, "o1", "jwt-svid")], "spiffe_sequence": 1},
        "revoked.org": {"keys": [], "spiffe_sequence": 9},
    }


@pytest.fixture
def bundles(bundle_docs: dict[str, dict[str, Any]]) -> BundleSet:
    return BundleSet.from_dict(bundle_docs)


@pytest.fixture
def good_claims() -> dict[str, Any]:
    return {
        "sub": "spiffe://example.org/agent/a",
        "aud": ["svc"],
        "exp": int(NOW) + 300,
        "iat": int(NOW) - 10,
        "jti": "id-1",
    }


@pytest.fixture
def forge() -> Callable[..., str]:
    """``forge(header, claims, key=None, *, alg=None, hmac_secret=None) -> token``."""
    return _forge


@pytest.fixture
def jwk_of() -> Callable[..., dict[str, Any]]:
    """``jwk_of(private_key, kid, use) -> public JWK dict``."""
    return _jwk_of
