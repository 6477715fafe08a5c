"""Transaction-token shape, verification, and the narrowing rules for replacements."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tether.leases import (
    CredentialBroker,
    InvalidTaskToken,
    LeaseRevoked,
    TaskTokenProvider,
    TaskTokenVerifier,
    TokenNarrowingError,
    actor_chain,
)
from tether.store import MemoryLeaseStore

AUD = "https://api.example.org"
ACTORS = ("spiffe://example.org/user/alice", "spiffe://example.org/agent/planner")


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def provider(key: ec.EllipticCurvePrivateKey, clock: Any) -> TaskTokenProvider:
    return TaskTokenProvider(audience=AUD, key=key, clock=clock)


@pytest.fixture
def verifier(provider: TaskTokenProvider, clock: Any) -> TaskTokenVerifier:
    return TaskTokenVerifier(provider.jwks(), AUD, clock=clock)


@pytest.fixture
def token(provider: TaskTokenProvider, make_task: Any) -> str:
    return provider.mint(make_task(actors=ACTORS), ttl=120)


def _claims(tok: str) -> dict[str, Any]:
    return dict(jwt.decode(tok, options={"verify_signature": False}))


@pytest.fixture
def forge(
    key: ec.EllipticCurvePrivateKey, provider: TaskTokenProvider, token: str
) -> Callable[..., str]:
    """Sign a modified copy of ``token``'s claims with the real key (a compromised or buggy
    intermediary), so only the narrowing rules can catch it."""

    def sign(typ: str = "txntoken+jwt", **changes: Any) -> str:
        claims = {**_claims(token), **changes}
        return jwt.encode(claims, key, algorithm="ES256", headers={"typ": typ, "kid": provider.kid})

    return sign


def test_token_shape(token: str, provider: TaskTokenProvider, clock: Any, make_task: Any) -> None:
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "typ": "txntoken+jwt", "kid": provider.kid}
    claims = _claims(token)
    task = make_task(actors=ACTORS)
    assert claims["txn"] == task.txn
    assert claims["sub"] == claims["req_wl"] == task.agent
    assert claims["aud"] == AUD and claims["iss"] == "tether"
    assert claims["scope"] == task.intent
    assert claims["tctx"] == {"scope": ["db:read", "db:write"]}
    assert claims["iat"] == int(clock.now) and claims["exp"] == int(clock.now) + 120
    assert claims["act"] == {
        "sub": "spiffe://example.org/agent/planner",
        "act": {"sub": "spiffe://example.org/user/alice"},
    }
    assert len(claims["jti"]) >= 16
    assert "act" not in _claims(provider.mint(make_task(actors=())))


def test_actor_chain_nests_most_recent_outermost() -> None:
    assert actor_chain([]) is None
    assert actor_chain(["a", "b", "c"]) == {"sub": "c", "act": {"sub": "b", "act": {"sub": "a"}}}


def test_jwks_publishes_public_key_only(provider: TaskTokenProvider) -> None:
    (jwk,) = provider.jwks()["keys"]
    assert jwk["kid"] == provider.kid and jwk["alg"] == "ES256" and jwk["kty"] == "EC"
    assert "d" not in jwk
    # Default kid is the RFC 7638 thumbprint, so it is stable for a given key.
    assert TaskTokenProvider(audience=AUD, key=provider._key).kid == provider.kid
    assert TaskTokenProvider(audience=AUD, kid="k1").kid == "k1"


def test_verify_accepts_valid_token(verifier: TaskTokenVerifier, token: str) -> None:
    claims = verifier.verify(token)
    assert claims["txn"] == "txn-1"


def test_valid_narrowed_replacement(
    provider: TaskTokenProvider, verifier: TaskTokenVerifier, token: str, clock: Any
) -> None:
    clock.advance(10)
    narrower = provider.replace(token, scope={"db:read"}, ttl=30)
    claims = verifier.verify_replacement(token, narrower)
    assert claims["tctx"]["scope"] == ["db:read"]
    assert claims["exp"] <= _claims(token)["exp"]
    with pytest.raises(TokenNarrowingError):
        provider.replace(token, scope={"db:admin"})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"tctx": {"scope": ["db:read", "db:write", "db:admin"]}}, "widens"),
        ({"txn": "txn-other"}, "txn"),
        ({"sub": "spiffe://example.org/agent/evil"}, "sub"),
        ({"aud": [AUD, "https://other.example.org"]}, "aud"),
        ({"exp_delta": 60}, "expires after"),
    ],
    ids=["widened-scope", "changed-txn", "changed-sub", "changed-aud", "longer-exp"],
)
def test_replacement_narrowing_violations(
    verifier: TaskTokenVerifier,
    token: str,
    forge: Callable[..., str],
    changes: dict[str, Any],
    match: str,
) -> None:
    if "exp_delta" in changes:
        changes = {"exp": _claims(token)["exp"] + changes["exp_delta"]}  # never edit the param
    replacement = forge(**changes)
    verifier.verify(replacement)  # each forgery is individually a valid token...
    with pytest.raises(TokenNarrowingError, match=match):
        verifier.verify_replacement(token, replacement)  # ...but not a valid replacement


def _tamper(tok: str) -> str:
    head, body, sig = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["tctx"]["scope"].append("db:admin")
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


@pytest.mark.parametrize(
    "case", ["wrong-typ", "tampered-signature", "tampered-claims", "wrong-aud", "unknown-kid"]
)
def test_invalid_tokens_rejected(
    verifier: TaskTokenVerifier,
    token: str,
    forge: Callable[..., str],
    case: str,
    make_task: Any,
) -> None:
    if case == "wrong-typ":
        bad = forge(typ="JWT")
    elif case == "tampered-signature":
        head, body, sig = token.split(".")
        bad = f"{head}.{body}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    elif case == "tampered-claims":
        bad = _tamper(token)
    elif case == "wrong-aud":
        bad = forge(aud="https://other.example.org")
    else:
        other = TaskTokenProvider(audience=AUD)
        bad = other.mint(make_task())  # same shape, different key
    with pytest.raises(InvalidTaskToken):
        verifier.verify(bad)
    # A rejected token is also rejected as a replacement (before any narrowing check).
    with pytest.raises(InvalidTaskToken):
        verifier.verify_replacement(token, bad)


def test_expired_token_rejected(verifier: TaskTokenVerifier, token: str, clock: Any) -> None:
    clock.advance(119)
    verifier.verify(token)
    clock.advance(1)
    with pytest.raises(InvalidTaskToken, match="expired"):
        verifier.verify(token)


def test_malformed_token_rejected(verifier: TaskTokenVerifier) -> None:
    with pytest.raises(InvalidTaskToken):
        verifier.verify("not.a.token")


@pytest.mark.anyio
async def test_broker_issues_revocable_task_tokens(
    provider: TaskTokenProvider, make_task: Any, clock: Any
) -> None:
    broker = CredentialBroker(MemoryLeaseStore(), {"txn": provider}, clock=clock)
    verifier = TaskTokenVerifier(provider.jwks(), AUD, clock=clock, is_revoked=provider.is_revoked)
    lease = await broker.issue(make_task(), "txn", scope={"db:read"}, ttl=60)
    assert lease.renewable is False
    tok = lease.secret.reveal()
    claims = verifier.verify(tok)
    assert claims["tctx"]["scope"] == ["db:read"]
    assert claims["jti"] == lease.provider_ref
    assert claims["exp"] <= lease.expires_at
    await broker.revoke_task("txn-1")
    with pytest.raises(LeaseRevoked):
        _ = lease.secret
    with pytest.raises(InvalidTaskToken, match="revoked"):
        verifier.verify(tok)
