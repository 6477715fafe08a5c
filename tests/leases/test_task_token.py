"""Transaction-token shape, verification, and the narrowing rules for replacements."""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import FakeClock
from tether.leases import (
    CredentialBroker,
    InvalidTaskToken,
    IssueRequest,
    Lease,
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


# -- contracts: exact refusals, the injected clock, the provider's defaults --------------
# Written against mutmut's survivors (issue 15).


def _sign(key: Any, claims: dict[str, Any], **headers: Any) -> str:
    return jwt.encode(claims, key, algorithm="ES256", headers=headers)


def test_each_refusal_says_why(
    verifier: TaskTokenVerifier,
    provider: TaskTokenProvider,
    key: ec.EllipticCurvePrivateKey,
    token: str,
    clock: Any,
) -> None:
    good = _claims(token)
    ok = {"typ": "txntoken+jwt", "kid": provider.kid}

    def without(name: str) -> dict[str, Any]:
        return {k: v for k, v in good.items() if k != name}

    cases: list[tuple[str, str]] = [
        ("not.a.token", "malformed token: DecodeError"),
        (_sign(key, good, kid=provider.kid, typ="JWT"), "wrong typ header (want txntoken+jwt)"),
        (_sign(key, good, kid=provider.kid), "wrong typ header (want txntoken+jwt)"),
        (
            jwt.encode(good, "k" * 32, algorithm="HS256", headers=ok),
            "wrong alg (want ES256)",
        ),
        (_sign(key, good, typ="txntoken+jwt", kid="nope"), "unknown kid"),
        (_sign(key, good, typ="txntoken+jwt"), "unknown kid"),
        (_sign(key, {**good, "iss": "evil"}, **ok), "token rejected: InvalidIssuerError"),
        (_sign(key, without("tctx"), **ok), "token rejected: MissingRequiredClaimError"),
        (_sign(key, without("jti"), **ok), "token rejected: MissingRequiredClaimError"),
        (_sign(key, {**good, "exp": "later"}, **ok), "exp and iat must be numbers"),
        (_sign(key, {**good, "iat": "now"}, **ok), "exp and iat must be numbers"),
        (_sign(key, {**good, "iat": good["iat"] + 1}, **ok), "token issued in the future"),
        (
            _sign(key, {**good, "tctx": {"scope": "db:read"}}, **ok),
            "tctx.scope must be a list of strings",
        ),
        (
            _sign(key, {**good, "tctx": {"scope": [1]}}, **ok),
            "tctx.scope must be a list of strings",
        ),
        (_sign(key, {**good, "tctx": ["db:read"]}, **ok), "tctx.scope must be a list of strings"),
        (_sign(key, {**good, "txn": ""}, **ok), "txn must be a non-empty string"),
        (_sign(key, {**good, "sub": 5}, **ok), "token rejected: InvalidSubjectError"),
        (_sign(key, {**good, "sub": ""}, **ok), "sub must be a non-empty string"),
        (_sign(key, {**good, "jti": ""}, **ok), "jti must be a non-empty string"),
    ]
    for bad, message in cases:
        with pytest.raises(InvalidTaskToken) as e:
            verifier.verify(bad)
        assert str(e.value) == message, bad
    # The benign twins: upper-case typ, iat exactly now.
    assert verifier.verify(_sign(key, good, typ="TXNTOKEN+JWT", kid=provider.kid))
    assert verifier.verify(_sign(key, {**good, "iat": clock.now}, **ok))
    clock.advance(120)
    with pytest.raises(InvalidTaskToken) as e:
        verifier.verify(token)
    assert str(e.value) == "token expired"


def test_times_are_judged_on_the_injected_clock_only(key: ec.EllipticCurvePrivateKey) -> None:
    """A clock a day ahead of the real one: `iat`, `nbf` and `exp` are judged on it, never
    on the real clock (which would call the token not yet valid)."""
    ahead = FakeClock(time.time() + 86_400)
    provider = TaskTokenProvider(audience=AUD, key=key, clock=ahead)
    verifier = TaskTokenVerifier(provider.jwks(), AUD, clock=ahead)
    claims = _claims(provider.mint(_task(), ttl=60))
    signed = _sign(key, {**claims, "nbf": claims["iat"]}, typ="txntoken+jwt", kid=provider.kid)
    assert verifier.verify(signed)["txn"] == "txn-1"
    behind = FakeClock(time.time() - 86_400)
    old = TaskTokenProvider(audience=AUD, key=key, clock=behind)
    assert TaskTokenVerifier(old.jwks(), AUD, clock=behind).verify(old.mint(_task(), ttl=60))


def _task() -> Any:
    from tether.leases import TaskRef

    return TaskRef(
        txn="txn-1",
        agent="spiffe://example.org/agent/a",
        scope=frozenset({"db:read"}),
        intent="x",
        actors=(),
        deadline=math.inf,
    )


def test_revocation_is_checked_and_named(
    provider: TaskTokenProvider, token: str, clock: Any
) -> None:
    jti = _claims(token)["jti"]
    verifier = TaskTokenVerifier(provider.jwks(), AUD, clock=clock, is_revoked=lambda j: j == jti)
    with pytest.raises(InvalidTaskToken) as e:
        verifier.verify(token)
    assert str(e.value) == "token revoked"


def test_provider_defaults_and_key_checks(clock: Any, make_task: Any) -> None:
    provider = TaskTokenProvider(audience=AUD, clock=clock)
    claims = _claims(provider.mint(make_task()))
    assert claims["exp"] - claims["iat"] == 300
    assert len(base64.urlsafe_b64decode(claims["jti"] + "==")) == 16  # 128 random bits
    (jwk,) = provider.jwks()["keys"]
    assert jwk["use"] == "sig"
    with pytest.raises(ValueError, match=r"^ES256 needs a P-256 key$"):
        TaskTokenProvider(audience=AUD, key=ec.generate_private_key(ec.SECP384R1()))


def test_verifier_needs_a_usable_key(provider: TaskTokenProvider) -> None:
    (good,) = provider.jwks()["keys"]
    unusable = [
        {**good, "kty": "RSA"},
        {**good, "crv": "P-384"},
        {k: v for k, v in good.items() if k != "kid"},
    ]
    message = r"^JWKS contains no usable P-256 key with a kid$"
    for jwk in unusable:
        with pytest.raises(ValueError, match=message):
            TaskTokenVerifier({"keys": [jwk]}, AUD)
    with pytest.raises(ValueError, match=message):
        TaskTokenVerifier({}, AUD)
    # Unusable keys before a usable one are skipped, not the end of the set.
    assert TaskTokenVerifier({"keys": [*unusable, good]}, AUD)


def test_replacement_defaults_and_edges(clock: Any, make_task: Any) -> None:
    provider = TaskTokenProvider(audience=AUD, issuer="other-issuer", clock=clock)
    verifier = TaskTokenVerifier(provider.jwks(), AUD, issuer="other-issuer", clock=clock)
    token = provider.mint(make_task(), ttl=120)
    old = _claims(token)
    clock.advance(10)
    same = _claims(provider.replace(token))  # nothing narrowed: scope and expiry kept
    assert same["tctx"] == old["tctx"] and same["exp"] == old["exp"]
    assert same["iat"] == old["iat"] + 10 and same["jti"] != old["jti"]
    assert len(base64.urlsafe_b64decode(same["jti"] + "==")) == 16
    equal = provider.replace(token, scope=old["tctx"]["scope"], ttl=30)
    claims = verifier.verify_replacement(token, equal)
    assert claims["exp"] == old["iat"] + 40
    with pytest.raises(TokenNarrowingError) as e:
        provider.replace(token, scope={"db:admin"})
    assert str(e.value) == "replacement scope must be a subset of the original"
    # A replacement expiring exactly with the original is still a narrowing.
    assert verifier.verify_replacement(token, provider.replace(token, ttl=110))


@pytest.mark.anyio
async def test_revoked_jti_is_remembered_until_its_expiry(
    provider: TaskTokenProvider, make_task: Any, clock: Any
) -> None:
    broker = CredentialBroker(MemoryLeaseStore(), {"txn": provider}, clock=clock)
    lease = await broker.issue(make_task(), "txn", ttl=60)
    other = await broker.issue(make_task(), "txn", ttl=60)
    jti = lease.provider_ref
    assert jti is not None
    exp = _claims(lease.secret.reveal())["exp"]
    await broker.revoke(lease.lease_id)
    assert provider.is_revoked(jti)
    clock.now = exp
    await broker.revoke(other.lease_id)  # forgetting happens on the next revocation
    assert provider.is_revoked(jti), "still denied at its expiry instant"
    clock.advance(1)
    third = await broker.issue(make_task(), "txn", ttl=60)
    await broker.revoke(third.lease_id)
    assert not provider.is_revoked(jti), "forgotten once it could no longer be used"


# ---------------------------------------------------------------- contract, second mutation run


def test_leeway_extends_both_time_checks_by_its_amount(
    provider: TaskTokenProvider, key: ec.EllipticCurvePrivateKey, token: str, clock: Any
) -> None:
    lenient = TaskTokenVerifier(provider.jwks(), AUD, clock=clock, leeway=5)
    good = _claims(token)
    ok = {"typ": "txntoken+jwt", "kid": provider.kid}
    early = _sign(key, {**good, "iat": good["iat"] + 4}, **ok)
    assert lenient.verify(early)  # issued 4 s "in the future": within the leeway
    with pytest.raises(InvalidTaskToken, match=r"^token issued in the future$"):
        lenient.verify(_sign(key, {**good, "iat": good["iat"] + 6}, **ok))
    clock.now = good["exp"] + 4
    assert lenient.verify(token)  # expired 4 s ago: within the leeway
    clock.now = good["exp"] + 5
    with pytest.raises(InvalidTaskToken, match=r"^token expired$"):
        lenient.verify(token)


def test_a_token_without_kid_never_matches_a_key(
    key: ec.EllipticCurvePrivateKey, clock: Any, make_task: Any
) -> None:
    # A key published under the name "None" must not be chosen for a token naming no key.
    provider = TaskTokenProvider(audience=AUD, key=key, kid="None", clock=clock)
    verifier = TaskTokenVerifier(provider.jwks(), AUD, clock=clock)
    claims = _claims(provider.mint(make_task()))
    with pytest.raises(InvalidTaskToken, match=r"^unknown kid$"):
        verifier.verify(_sign(key, claims, typ="txntoken+jwt"))
    assert verifier.verify(_sign(key, claims, typ="txntoken+jwt", kid="None"))  # benign twin


def test_replace_refuses_a_token_of_another_issuer_with_the_same_key(
    key: ec.EllipticCurvePrivateKey, clock: Any, make_task: Any
) -> None:
    ours = TaskTokenProvider(audience=AUD, key=key, clock=clock)
    theirs = TaskTokenProvider(audience=AUD, issuer="elsewhere", key=key, clock=clock)
    assert ours.kid == theirs.kid
    with pytest.raises(InvalidTaskToken, match=r"^token rejected: InvalidIssuerError$"):
        ours.replace(theirs.mint(make_task()))
    assert ours.replace(ours.mint(make_task()))  # benign twin


def test_replacement_outliving_the_original_is_named(
    verifier: TaskTokenVerifier, token: str, forge: Callable[..., str]
) -> None:
    longer = forge(exp=_claims(token)["exp"] + 1)
    with pytest.raises(TokenNarrowingError) as e:
        verifier.verify_replacement(token, longer)
    assert str(e.value) == "replacement expires after the token it replaces"


@pytest.mark.anyio
async def test_provider_revokes_by_ref_by_lease_id_and_tolerates_the_unknown(
    provider: TaskTokenProvider, make_task: Any, clock: Any
) -> None:
    def lease(lease_id: str, ref: str | None) -> Lease:
        return Lease(
            lease_id=lease_id,
            provider="txn",
            task="txn-1",
            agent="a",
            scope=frozenset(),
            issued_at=0.0,
            ttl=60.0,
            max_ttl=60.0,
            expires_at=60.0,
            renewable=False,
            provider_ref=ref,
        )

    # A jti the provider never recorded (another process issued it): denied for its ttl.
    await provider.revoke(lease("tasks/txn-1/txn/a", "jti-from-elsewhere"))
    assert provider.is_revoked("jti-from-elsewhere")
    clock.advance(provider.ttl)
    await provider.revoke(lease("tasks/txn-1/txn/none", None))  # never created: a no-op
    assert provider.is_revoked("jti-from-elsewhere"), "kept until it could expire"
    clock.advance(1)
    await provider.revoke(lease("tasks/txn-1/txn/none", None))
    assert not provider.is_revoked("jti-from-elsewhere")
    # Issued, but the broker died before recording the jti: revoked by lease id.
    request = IssueRequest(
        lease_id="tasks/txn-1/txn/b", task=make_task(), scope=frozenset(), ttl=60
    )
    cred = await provider.issue(request)
    await provider.revoke(lease("tasks/txn-1/txn/b", None))
    assert provider.is_revoked(cred.provider_ref)
