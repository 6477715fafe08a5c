"""Authenticator / Agent / LocalIssuer / error taxonomy."""

from __future__ import annotations

import json
from typing import Any

import pytest

import tether.identity as identity
from tether.errors import TetherError
from tether.identity import (
    Agent,
    AuthenticationError,
    Authenticator,
    ExpiredToken,
    InvalidAudience,
    InvalidBinding,
    InvalidBundle,
    InvalidHeader,
    InvalidSignature,
    InvalidSpiffeId,
    InvalidToken,
    LocalIssuer,
    NotYetValid,
    ReplayedProof,
    SpiffeId,
    TrustBundle,
    UnknownKey,
    UnsupportedAlgorithm,
    UntrustedDomain,
    cedar_entity_uid,
    generate_proof_key,
)


def test_agent_fields(issuer: LocalIssuer, clock: Any) -> None:
    auth = Authenticator(issuer.bundle_set(), "svc", clock=clock)
    token = issuer.mint_svid("agents/planner", ["svc", "other"], ttl=120)
    agent = auth.authenticate_sync(token)
    assert agent.spiffe_id == SpiffeId("example.org", "/agents/planner")
    assert agent.entity == 'Agent::"spiffe://example.org/agents/planner"'
    assert agent.expires_at == clock.now + 120
    assert agent.token_id == agent.claims["jti"]
    assert agent.claims["aud"] == ["svc", "other"]
    assert dict(agent.attributes) == {}
    with pytest.raises(TypeError):
        agent.claims["sub"] = "x"  # type: ignore[index]
    # An Agent is a value: the same token verified by a second, independent authenticator
    # (no shared cache) is a distinct object that is equal and hashes equal, and an Agent
    # from another token of the same subject (another jti) is not equal.
    again = Authenticator(issuer.bundle_set(), "svc", clock=clock).authenticate_sync(token)
    assert again is not agent
    assert again == agent and hash(again) == hash(agent)
    other = auth.authenticate_sync(issuer.mint_svid("agents/planner", ["svc", "other"], ttl=120))
    assert other.spiffe_id == agent.spiffe_id and other.token_id != agent.token_id
    assert other != agent


@pytest.mark.anyio
async def test_async_authenticate_matches_sync(issuer: LocalIssuer, clock: Any) -> None:
    auth = Authenticator(issuer.bundle_set(), "svc", clock=clock)
    token = issuer.mint_svid("/a", "svc")
    agent = await auth.authenticate(token)
    assert agent is auth.authenticate_sync(token)
    with pytest.raises(InvalidAudience):
        await auth.authenticate(issuer.mint_svid("/a", "not-us"))


def test_entity_attrs_lookup_is_merged_fresh(issuer: LocalIssuer, clock: Any) -> None:
    table: dict[str, dict[str, Any]] = {"spiffe://example.org/a": {"team": "red"}}
    calls: list[str] = []

    def lookup(uid: str) -> dict[str, Any] | None:
        calls.append(uid)
        return table.get(uid)

    auth = Authenticator(issuer.bundle_set(), "svc", clock=clock, entity_attrs=lookup)
    token = issuer.mint_svid("/a", "svc")
    assert dict(auth.authenticate_sync(token).attributes) == {"team": "red"}
    table["spiffe://example.org/a"] = {"team": "blue"}
    # Cached token, fresh attributes: the lookup is consulted on every call.
    assert dict(auth.authenticate_sync(token).attributes) == {"team": "blue"}
    assert dict(auth.authenticate_sync(issuer.mint_svid("/b", "svc")).attributes) == {}
    assert calls == ["spiffe://example.org/a"] * 2 + ["spiffe://example.org/b"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("spiffe://example.org/a", 'Agent::"spiffe://example.org/a"'),
        ('a"b', 'Agent::"a\\"b"'),
        ("a\\b", 'Agent::"a\\\\b"'),
        ('\\"', 'Agent::"\\\\\\""'),
        ("a\nb", 'Agent::"a\\u{a}b"'),
    ],
)
def test_cedar_entity_uid_escaping(raw: str, expected: str) -> None:
    assert cedar_entity_uid("Agent", raw) == expected


def test_authenticator_accepts_bundle_or_iterable(issuer: LocalIssuer, clock: Any) -> None:
    token = issuer.mint_svid("/a", "svc")
    for source in (issuer.trust_bundle(), [issuer.trust_bundle()]):
        auth = Authenticator(source, "svc", clock=clock)
        assert auth.authenticate_sync(token).spiffe_id.path == "/a"


def test_invalid_sub_is_wrapped_as_invalid_token(
    forge: Any, keys: Any, bundles: Any, clock: Any, good_claims: dict[str, Any]
) -> None:
    auth = Authenticator(bundles, "svc", clock=clock)
    bad = forge({"alg": "ES256", "kid": "k1"}, {**good_claims, "sub": "spiffe://x/a/"}, keys.ec256)
    with pytest.raises(InvalidToken) as info:
        auth.authenticate_sync(bad)
    assert isinstance(info.value.__cause__, InvalidSpiffeId)
    assert "must not end with '/'" in str(info.value)


def test_error_taxonomy() -> None:
    for err in (AuthenticationError, InvalidSpiffeId, InvalidBundle):
        assert issubclass(err, TetherError)
    # Finer errors refine InvalidToken, so existing ``except InvalidToken`` still works.
    for err in (UnsupportedAlgorithm, InvalidHeader, InvalidBinding):
        assert issubclass(err, InvalidToken)
    for err in (
        InvalidToken,
        ExpiredToken,
        NotYetValid,
        InvalidAudience,
        UntrustedDomain,
        UnknownKey,
        InvalidSignature,
        ReplayedProof,
    ):
        assert issubclass(err, AuthenticationError)
    assert issubclass(InvalidSpiffeId, ValueError)
    assert not issubclass(InvalidSpiffeId, AuthenticationError)


def test_public_names_are_reexported() -> None:
    missing = [name for name in identity.__all__ if not hasattr(identity, name)]
    assert not missing
    assert {"Authenticator", "Agent", "SpiffeId", "LocalIssuer", "BundleSet"} <= set(
        identity.__all__
    )


# ------------------------------------------------------------------ LocalIssuer


def test_issuer_bundle_format(issuer: LocalIssuer) -> None:
    doc = issuer.bundle()
    json.dumps(doc)  # plain JSON
    assert doc["spiffe_sequence"] == 1
    assert doc["spiffe_refresh_hint"] == 60
    uses = sorted(k["use"] for k in doc["keys"])
    assert uses == ["jwt-svid", "wit-svid"]
    for key in doc["keys"]:
        assert key["kty"] == "EC" and key["crv"] == "P-256" and key["kid"]
        assert "d" not in key
    parsed = TrustBundle.from_dict(issuer.trust_domain, doc)
    assert parsed.jwt_keys[0].kid == issuer.current_kid


def test_issuer_refuses_other_domains(issuer: LocalIssuer) -> None:
    with pytest.raises(InvalidSpiffeId, match="cannot issue"):
        issuer.mint_svid("spiffe://other.org/a", "svc")
    with pytest.raises(InvalidSpiffeId, match="cannot issue"):
        issuer.mint_wit(SpiffeId("other.org", "/a"), generate_proof_key()[1])
    with pytest.raises(InvalidSpiffeId):
        issuer.mint_svid("/bad//path", "svc")
    with pytest.raises(InvalidSpiffeId):
        LocalIssuer("Bad.Domain")


def test_issuer_mint_options(issuer: LocalIssuer, clock: Any) -> None:
    auth = Authenticator(issuer.bundle_set(), "svc", clock=clock)
    token = issuer.mint_svid(SpiffeId("example.org", "/x"), "svc", extra_claims={"role": "r"})
    agent = auth.authenticate_sync(token)
    assert agent.claims["role"] == "r"
    assert agent.expires_at == clock.now + issuer.default_ttl
    private, jwk = generate_proof_key()
    wit = issuer.mint_wit("/x", private.public_key())
    assert auth._wimse.verify_wit(wit).claims["cnf"]["jwk"] == jwk
    with pytest.raises(ValueError, match="public"):
        issuer.mint_wit("/x", {**jwk, "d": "AA"})


def test_rotate_keeps_old_keys_until_retired(issuer: LocalIssuer) -> None:
    first = issuer.current_kid
    second = issuer.rotate()
    kids = {k["kid"] for k in issuer.bundle()["keys"] if k["use"] == "jwt-svid"}
    assert kids == {first, second}
    assert issuer.bundle()["spiffe_sequence"] == 2
    issuer.retire_old_keys()
    kids = {k["kid"] for k in issuer.bundle()["keys"] if k["use"] == "jwt-svid"}
    assert kids == {second}
    assert issuer.bundle()["spiffe_sequence"] == 3


def test_agent_is_constructible_directly() -> None:
    sid = SpiffeId.parse("spiffe://example.org/a")
    agent = Agent.from_claims(sid, {"sub": str(sid)}, 1.0)
    assert agent.token_id is None
    assert agent.entity == 'Agent::"spiffe://example.org/a"'
