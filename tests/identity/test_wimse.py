"""WIMSE: Workload Identity Token + Workload Proof Token."""

from __future__ import annotations

from typing import Any

import pytest

from tether.identity import (
    AuthenticationError,
    Authenticator,
    ExpiredToken,
    InvalidAudience,
    InvalidHeader,
    InvalidSignature,
    InvalidToken,
    LocalIssuer,
    NotYetValid,
    ReplayCache,
    ReplayedProof,
    TrustBundle,
    UnknownKey,
    UnsupportedAlgorithm,
    UntrustedDomain,
    generate_proof_key,
    mint_wpt,
)

TARGET = "https://api.example.org/orders"


@pytest.fixture
def proof_key() -> tuple[Any, dict[str, Any]]:
    return generate_proof_key()


@pytest.fixture
def wit(issuer: LocalIssuer, proof_key: tuple[Any, dict[str, Any]]) -> str:
    return issuer.mint_wit("/agent/w", proof_key[1], ttl=600)


def _wpt(proof_key: Any, wit: str, clock: Any, **kw: Any) -> str:
    return mint_wpt(proof_key[0], wit, kw.pop("target", TARGET), now=clock.now, **kw)


def test_good_path(auth: Authenticator, wit: str, proof_key: Any, clock: Any) -> None:
    agent = auth.authenticate_wimse_sync(wit, _wpt(proof_key, wit, clock), TARGET)
    assert str(agent.spiffe_id) == "spiffe://example.org/agent/w"
    assert agent.entity == 'Agent::"spiffe://example.org/agent/w"'
    assert agent.expires_at == clock.now + 600
    assert agent.claims["cnf"]["jwk"] == proof_key[1]


@pytest.mark.anyio
async def test_good_path_async(auth: Authenticator, wit: str, proof_key: Any, clock: Any) -> None:
    agent = await auth.authenticate_wimse(wit, _wpt(proof_key, wit, clock), TARGET)
    assert agent.spiffe_id.path == "/agent/w"


def test_replayed_jti(auth: Authenticator, wit: str, proof_key: Any, clock: Any) -> None:
    wpt = _wpt(proof_key, wit, clock)
    auth.authenticate_wimse_sync(wit, wpt, TARGET)
    with pytest.raises(ReplayedProof):
        auth.authenticate_wimse_sync(wit, wpt, TARGET)
    # A different proof with the same jti is a replay too.
    again = _wpt(proof_key, wit, clock, jti=_jti(wpt))
    with pytest.raises(ReplayedProof):
        auth.authenticate_wimse_sync(wit, again, TARGET)


def _jti(token: str) -> str:
    import jwt

    jti: str = jwt.decode(token, options={"verify_signature": False})["jti"]
    return jti


def test_invalid_proof_does_not_consume_jti(
    auth: Authenticator, wit: str, proof_key: Any, clock: Any
) -> None:
    wpt = _wpt(proof_key, wit, clock)
    with pytest.raises(InvalidAudience):
        auth.authenticate_wimse_sync(wit, wpt, "https://elsewhere.example.org/")
    assert auth.authenticate_wimse_sync(wit, wpt, TARGET).spiffe_id.path == "/agent/w"


def test_replay_window_ends_with_proof_lifetime(clock: Any) -> None:
    cache = ReplayCache(maxsize=2)
    cache.check_and_store("a", until=clock.now + 10, now=clock.now)
    with pytest.raises(ReplayedProof):
        cache.check_and_store("a", until=clock.now + 10, now=clock.now + 5)
    cache.check_and_store("b", until=clock.now + 10, now=clock.now)
    with pytest.raises(AuthenticationError, match="full"):
        cache.check_and_store("c", until=clock.now + 10, now=clock.now)
    # After expiry the entries are purged, so the cache accepts new proofs again.
    cache.check_and_store("c", until=clock.now + 30, now=clock.now + 20)
    assert len(cache) == 1


def test_wrong_wth(
    auth: Authenticator, issuer: LocalIssuer, wit: str, proof_key: Any, clock: Any
) -> None:
    other_wit = issuer.mint_wit("/agent/w", proof_key[1], ttl=600)
    wpt = _wpt(proof_key, other_wit, clock)  # bound to a different WIT
    with pytest.raises(InvalidToken, match="'wth' does not match"):
        auth.authenticate_wimse_sync(wit, wpt, TARGET)


def test_wrong_aud(auth: Authenticator, wit: str, proof_key: Any, clock: Any) -> None:
    wpt = _wpt(proof_key, wit, clock, target="https://api.example.org/other")
    with pytest.raises(InvalidAudience):
        auth.authenticate_wimse_sync(wit, wpt, TARGET)


def test_expired_proof(auth: Authenticator, wit: str, proof_key: Any, clock: Any) -> None:
    wpt = _wpt(proof_key, wit, clock, ttl=30)
    clock.now += 36
    with pytest.raises(ExpiredToken):
        auth.authenticate_wimse_sync(wit, wpt, TARGET)


def test_expired_wit(auth: Authenticator, issuer: LocalIssuer, proof_key: Any, clock: Any) -> None:
    wit = issuer.mint_wit("/agent/w", proof_key[1], ttl=60)
    auth.authenticate_wimse_sync(wit, _wpt(proof_key, wit, clock), TARGET)  # cached now
    clock.now += 66
    with pytest.raises(ExpiredToken):
        auth.authenticate_wimse_sync(wit, _wpt(proof_key, wit, clock), TARGET)


def test_future_proof(auth: Authenticator, wit: str, proof_key: Any, clock: Any) -> None:
    wpt = mint_wpt(proof_key[0], wit, TARGET, now=clock.now + 60)
    with pytest.raises(NotYetValid):
        auth.authenticate_wimse_sync(wit, wpt, TARGET)


def test_proof_signed_by_wrong_key(auth: Authenticator, wit: str, clock: Any) -> None:
    thief_key = generate_proof_key()
    with pytest.raises(InvalidSignature):
        auth.authenticate_wimse_sync(wit, _wpt(thief_key, wit, clock), TARGET)


def test_proof_lifetime_is_capped(
    auth: Authenticator, wit: str, proof_key: Any, clock: Any
) -> None:
    with pytest.raises(InvalidToken, match="lifetime"):
        auth.authenticate_wimse_sync(wit, _wpt(proof_key, wit, clock, ttl=3600), TARGET)


def test_access_and_txn_token_binding(
    auth: Authenticator, wit: str, proof_key: Any, clock: Any
) -> None:
    good = _wpt(proof_key, wit, clock, access_token="AT", txn_token="TT")
    agent = auth.authenticate_wimse_sync(wit, good, TARGET, access_token="AT", txn_token="TT")
    assert agent.spiffe_id.path == "/agent/w"
    with pytest.raises(InvalidToken, match="'ath' does not match"):
        auth.authenticate_wimse_sync(
            wit, _wpt(proof_key, wit, clock, access_token="AT"), TARGET, access_token="other"
        )
    with pytest.raises(InvalidToken, match="no 'ath'"):
        auth.authenticate_wimse_sync(wit, _wpt(proof_key, wit, clock), TARGET, access_token="AT")
    with pytest.raises(InvalidToken, match="no matching token"):
        auth.authenticate_wimse_sync(wit, _wpt(proof_key, wit, clock, txn_token="TT"), TARGET)


def test_wit_rules(
    auth: Authenticator,
    issuer: LocalIssuer,
    proof_key: Any,
    clock: Any,
    forge: Any,
    keys: Any,
) -> None:
    def check(wit: str, expected: type[Exception]) -> None:
        with pytest.raises(AuthenticationError) as info:
            auth.authenticate_wimse_sync(wit, _wpt(proof_key, wit, clock), TARGET)
        assert type(info.value) is expected, str(info.value)

    claims = {
        "sub": "spiffe://example.org/agent/w",
        "exp": int(clock.now) + 60,
        "cnf": {"jwk": proof_key[1]},
    }
    svid_kid = issuer.current_kid
    # Signed by an attacker key, with and without kid.
    check(forge({"alg": "ES256", "typ": "wit+jwt"}, claims, keys.attacker), InvalidSignature)
    # A JWT-SVID signing key must not mint WITs (use separation).
    check(
        forge({"alg": "ES256", "typ": "wit+jwt", "kid": svid_kid}, claims, keys.ec256), UnknownKey
    )
    # A JWT-SVID is not a WIT.
    check(issuer.mint_svid("/agent/w", "svc"), InvalidHeader)
    check(forge({"alg": "ES256", "typ": "JWT"}, claims, keys.attacker), InvalidHeader)
    check(forge({"alg": "none", "typ": "wit+jwt"}, claims), UnsupportedAlgorithm)
    # Properly signed WITs that break claim rules.
    wit_key = issuer._wit_keys[0]
    header = {"alg": "ES256", "typ": "wit+jwt", "kid": wit_key.kid}
    check(forge(header, {**claims, "aud": "svc"}, wit_key.private), InvalidToken)
    check(
        forge(header, {k: v for k, v in claims.items() if k != "exp"}, wit_key.private),
        InvalidToken,
    )
    check(
        forge(header, {k: v for k, v in claims.items() if k != "cnf"}, wit_key.private),
        InvalidToken,
    )
    oct_key = {"kty": "oct", "k": "AA"}
    check(
        forge(header, {**claims, "cnf": {"jwk": {**oct_key, "alg": "HS256"}}}, wit_key.private),
        UnsupportedAlgorithm,
    )
    check(
        forge(header, {**claims, "cnf": {"jwk": {**oct_key, "alg": "ES256"}}}, wit_key.private),
        InvalidToken,
    )
    check(
        forge(header, {**claims, "sub": "spiffe://other.org/x"}, wit_key.private), UntrustedDomain
    )
    check(forge(header, {**claims, "sub": "not-spiffe"}, wit_key.private), InvalidToken)
    good = forge(header, claims, wit_key.private)  # ECDSA is randomised: sign once
    agent = auth.authenticate_wimse_sync(good, _wpt(proof_key, good, clock), TARGET)
    assert agent.spiffe_id.path == "/agent/w"


def test_wpt_header_rules(
    auth: Authenticator, wit: str, proof_key: Any, clock: Any, forge: Any
) -> None:
    from tether.identity.wimse import token_hash

    claims = {
        "aud": TARGET,
        "exp": int(clock.now) + 30,
        "iat": int(clock.now),
        "jti": "j",
        "wth": token_hash(wit),
    }
    for header, expected in [
        ({"alg": "ES256", "typ": "JWT"}, InvalidHeader),
        ({"alg": "ES256"}, InvalidHeader),
        ({"alg": "ES256", "typ": "wpt+jwt", "crit": ["x"]}, InvalidHeader),
        ({"alg": "ES384", "typ": "wpt+jwt"}, UnsupportedAlgorithm),  # cnf.jwk.alg is ES256
    ]:
        with pytest.raises(AuthenticationError) as info:
            auth.authenticate_wimse_sync(
                wit, forge(header, claims, proof_key[0], alg="ES256"), TARGET
            )
        assert type(info.value) is expected
    no_jti = {k: v for k, v in claims.items() if k != "jti"}
    with pytest.raises(InvalidToken, match="jti"):
        auth.authenticate_wimse_sync(
            wit, forge({"alg": "ES256", "typ": "wpt+jwt"}, no_jti, proof_key[0]), TARGET
        )


def test_revoked_domain_stops_cached_wit(
    auth: Authenticator, wit: str, proof_key: Any, clock: Any
) -> None:
    auth.authenticate_wimse_sync(wit, _wpt(proof_key, wit, clock), TARGET)
    auth.bundles.update(TrustBundle.from_dict("example.org", {"keys": [], "spiffe_sequence": 50}))
    with pytest.raises(UntrustedDomain):
        auth.authenticate_wimse_sync(wit, _wpt(proof_key, wit, clock), TARGET)
