"""JWT-SVID and WIMSE verification: the exact error each defect gets, boundaries of the time
and size rules, caches and replay windows; written for mutation-testing survivors.

Each message names the token kind (``JWT-SVID``, ``WIT``, ``WPT``) and the rule broken, so
an operator can tell which credential of a request failed and why."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from tests.identity.conftest import NOW, b64
from tether.identity import (
    AuthenticationError,
    Authenticator,
    BundleSet,
    ExpiredToken,
    InvalidAudience,
    InvalidHeader,
    InvalidSignature,
    InvalidToken,
    NotYetValid,
    ReplayCache,
    ReplayedProof,
    UnknownKey,
    UnsupportedAlgorithm,
    UntrustedDomain,
    generate_proof_key,
    mint_wpt,
)
from tether.identity._jose import alg_fits_key, b64url_decode, b64url_encode, jwk_thumbprint
from tether.identity.jwt_svid import JwtSvidVerifier, TokenCache
from tether.identity.wimse import WimseVerifier, proof_audience, token_hash

ES = {"alg": "ES256", "kid": "k1"}
TARGET = "https://api.example.org/orders"


def _raw(header: bytes | str, payload: bytes | str = b"{}", sig: str = "c2ln") -> str:
    h = header.encode() if isinstance(header, str) else header
    p = payload.encode() if isinstance(payload, str) else payload
    return f"{b64(h)}.{b64(p)}.{sig}"


@pytest.fixture
def svid(bundles: BundleSet, clock: Any) -> JwtSvidVerifier:
    return JwtSvidVerifier(bundles, "svc", leeway=5, clock=clock)


def _error(verify: Any, token: Any) -> tuple[type[Exception], str]:
    with pytest.raises(AuthenticationError) as info:
        verify(token)
    return type(info.value), str(info.value)


# ------------------------------------------------------------------ JWS structure (RFC 7515)


@pytest.mark.parametrize(
    ("token", "error", "message"),
    [
        (5, InvalidToken, "JWT-SVID must be a string"),
        ("a.b", InvalidToken, "JWT-SVID is not a JWS compact serialization (need 3 parts)"),
        ("é.e30.c2ln", InvalidToken, "JWT-SVID header is not base64url"),
        (_raw("nope"), InvalidToken, "JWT-SVID header is not valid JSON"),
        (_raw("[]"), InvalidToken, "JWT-SVID header is not a JSON object"),
        (
            _raw('{"alg": "ES256", "crit": ["exp"]}'),
            InvalidHeader,
            "JWT-SVID header has 'crit'; no critical extensions are supported",
        ),
        (
            _raw('{"alg": "ES256", "jku": "https://x", "b64": false}'),
            InvalidHeader,
            "JWT-SVID header has unsupported parameters ['b64', 'jku']",
        ),
        (
            _raw('{"alg": "HS256"}'),
            UnsupportedAlgorithm,
            "JWT-SVID alg 'HS256' is not allowed (RS/ES/PS 256/384/512 only)",
        ),
        (
            _raw(json.dumps({"alg": "X" * 16})),
            UnsupportedAlgorithm,
            f"JWT-SVID alg {'X' * 16!r} is not allowed (RS/ES/PS 256/384/512 only)",
        ),
        (
            _raw(json.dumps({"alg": "X" * 17})),
            UnsupportedAlgorithm,
            "JWT-SVID alg '?' is not allowed (RS/ES/PS 256/384/512 only)",
        ),
        (
            _raw('{"alg": 256}'),
            UnsupportedAlgorithm,
            "JWT-SVID alg '?' is not allowed (RS/ES/PS 256/384/512 only)",
        ),
        (
            _raw('{"alg": "ES256", "kid": ""}'),
            InvalidHeader,
            "JWT-SVID kid must be a non-empty string",
        ),
        (_raw('{"alg": "ES256", "typ": 1}'), InvalidHeader, "JWT-SVID typ must be a string"),
        (
            _raw('{"alg": "ES256", "typ": "wit+jwt"}'),
            InvalidHeader,
            "JWT-SVID typ is not one of ['(absent)', 'JOSE', 'JWT']",
        ),
        (_raw(json.dumps(ES), sig=""), InvalidToken, "JWT-SVID has no signature"),
        (
            f"{b64(json.dumps(ES).encode())}.!!.c2ln",
            InvalidToken,
            "JWT-SVID payload is not base64url",
        ),
        (_raw(json.dumps(ES), "nope"), InvalidToken, "JWT-SVID payload is not valid JSON"),
        (_raw(json.dumps(ES), "[]"), InvalidToken, "JWT-SVID payload is not a JSON object"),
        (_raw(json.dumps(ES), sig="a"), InvalidToken, "JWT-SVID signature is not base64url"),
    ],
)
def test_malformed_jws_is_refused_with_a_precise_message(
    svid: JwtSvidVerifier, token: Any, error: type[Exception], message: str
) -> None:
    assert _error(svid.verify, token) == (error, message)


def test_strict_base64url_accepts_every_valid_length() -> None:
    """RFC 7515 2: base64url without padding; a length of 1 mod 4 is never valid, every
    other length is (4 characters is a whole quantum, not a stray character)."""
    assert b64url_decode("QUJD", "x") == b"ABC"
    assert b64url_decode("QUI", "x") == b"AB"
    assert b64url_decode("QQ", "x") == b"A"
    for bad in ("Q", "QUJDR", "QU=I", "QUJ+", "QU\u00e9I"):
        with pytest.raises(InvalidToken):
            b64url_decode(bad, "x")


def test_size_limit_allows_exactly_max_bytes(
    bundles: BundleSet, clock: Any, forge: Any, keys: Any, good_claims: Any
) -> None:
    token = forge(ES, good_claims, keys.ec256)
    exact = JwtSvidVerifier(bundles, "svc", clock=clock, max_token_bytes=len(token))
    assert exact.verify(token).spiffe_id.path == "/agent/a"
    short = JwtSvidVerifier(bundles, "svc", clock=clock, max_token_bytes=len(token) - 1)
    assert _error(short.verify, token) == (
        InvalidToken,
        f"JWT-SVID is larger than {len(token) - 1} bytes",
    )


def test_four_character_signature_is_checked_not_misparsed(
    svid: JwtSvidVerifier, forge: Any, keys: Any, good_claims: Any
) -> None:
    h, p, _ = forge(ES, good_claims, keys.ec256).split(".")
    assert _error(svid.verify, f"{h}.{p}.QUJD") == (
        InvalidSignature,
        "JWT-SVID signature does not verify",
    )


# ------------------------------------------------------------------ JWT-SVID claims and keys


def _claims(good_claims: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**good_claims, **changes}
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(
    ("header", "changes", "error", "message"),
    [
        (ES, {"sub": None}, InvalidToken, "JWT-SVID 'sub' must be a SPIFFE ID string"),
        (
            ES,
            {"sub": "spiffe://nowhere.org/a"},
            UntrustedDomain,
            "trust domain 'nowhere.org' is not trusted",
        ),
        (
            ES,
            {"sub": "spiffe://revoked.org/a"},
            UntrustedDomain,
            "trust domain 'revoked.org' has no jwt-svid keys",
        ),
        (
            {"alg": "ES256", "kid": "nope"},
            {},
            UnknownKey,
            "JWT-SVID kid is not in the bundle for 'example.org'",
        ),
        (
            {"alg": "ES384", "kid": "k1"},
            {},
            UnsupportedAlgorithm,
            "JWT-SVID alg ES384 does not fit its key",
        ),
        (
            {"alg": "ES384"},
            {"sub": "spiffe://other.org/a"},
            UnknownKey,
            "no key for JWT-SVID with alg ES384",
        ),
        (ES, {"exp": None}, InvalidToken, "JWT-SVID has no 'exp'"),
        (ES, {"exp": "soon"}, InvalidToken, "JWT-SVID 'exp' must be a number"),
        (ES, {"nbf": True}, InvalidToken, "JWT-SVID 'nbf' must be a number"),
        (ES, {"iat": 10**400}, InvalidToken, "JWT-SVID 'iat' must be a finite number"),
        (ES, {"exp": int(NOW) - 6}, ExpiredToken, "JWT-SVID has expired"),
        (ES, {"nbf": int(NOW) + 6}, NotYetValid, "JWT-SVID is not valid yet (nbf)"),
        (ES, {"iat": int(NOW) + 6}, NotYetValid, "JWT-SVID was issued in the future (iat)"),
        (ES, {"aud": None}, InvalidAudience, "JWT-SVID has no 'aud'"),
        (ES, {"aud": 5}, InvalidToken, "JWT-SVID 'aud' must be a string or list of strings"),
        (
            ES,
            {"aud": ["a", "b"]},
            InvalidAudience,
            "JWT-SVID audience does not include this service",
        ),
    ],
)
def test_jwt_svid_claim_and_key_errors(
    svid: JwtSvidVerifier,
    forge: Any,
    keys: Any,
    good_claims: Any,
    header: dict[str, Any],
    changes: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    key = keys.other if str(changes.get("sub")).startswith("spiffe://other.org") else keys.ec256
    token = forge(header, _claims(good_claims, **changes), key, alg=header["alg"])
    assert _error(svid.verify, token) == (error, message)


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": int(NOW) - 5},  # expired exactly one leeway ago: still accepted
        {"nbf": int(NOW) + 5},  # valid from exactly one leeway ahead
        {"nbf": int(NOW) + 3},
        {"iat": int(NOW) + 5},
    ],
)
def test_time_claims_are_inclusive_at_the_leeway(
    svid: JwtSvidVerifier, forge: Any, keys: Any, good_claims: Any, changes: dict[str, Any]
) -> None:
    """RFC 7519 4.1.4/4.1.5 with a leeway: ``exp`` fails only once now > exp + leeway,
    ``nbf``/``iat`` only while now + leeway < the claim."""
    token = forge(ES, _claims(good_claims, **changes), keys.ec256)
    assert svid.verify(token).spiffe_id.path == "/agent/a"


def test_verifier_needs_an_audience(bundles: BundleSet) -> None:
    with pytest.raises(ValueError) as info:
        JwtSvidVerifier(bundles, [])
    assert str(info.value) == "at least one audience is required"


def test_a_zero_size_cache_stores_nothing(bundles: BundleSet) -> None:
    cache: TokenCache[str] = TokenCache(0)
    bundle = bundles.get("example.org")
    assert bundle is not None
    cache.put("t", "v", NOW + 10, bundle, NOW)
    assert len(cache) == 0 and cache.get("t", NOW, bundles) is None


def test_authenticator_refuses_non_string_tokens_and_keeps_only_string_jti(
    auth: Authenticator, issuer: Any, forge: Any, clock: Any
) -> None:
    with pytest.raises(InvalidToken) as info:
        auth.authenticate_sync(["not", "a", "token"])  # type: ignore[arg-type]
    assert str(info.value) == "JWT-SVID must be a string"
    key = issuer._svid_keys[0]
    claims = {"sub": "spiffe://example.org/a", "aud": "svc", "exp": int(NOW) + 60, "jti": 5}
    token = forge({"alg": "ES256", "kid": key.kid}, claims, key.private)
    assert auth.authenticate_sync(token).token_id is None


def test_authenticator_applies_its_leeway_to_both_token_kinds(issuer: Any, clock: Any) -> None:
    strict = Authenticator(issuer.bundle_set(), "svc", leeway=0, clock=clock)
    lenient = Authenticator(issuer.bundle_set(), "svc", leeway=20, clock=clock)
    token = issuer.mint_svid("/a", "svc", ttl=60)
    private, jwk = generate_proof_key()
    wit = issuer.mint_wit("/w", jwk, ttl=60)
    clock.now += 70  # 10 s past both expiries
    with pytest.raises(ExpiredToken):
        strict.authenticate_sync(token)
    with pytest.raises(ExpiredToken):
        strict.authenticate_wimse_sync(wit, mint_wpt(private, wit, TARGET, now=clock.now), TARGET)
    assert lenient.authenticate_sync(token).spiffe_id.path == "/a"
    wpt = mint_wpt(private, wit, TARGET, now=clock.now)
    assert lenient.authenticate_wimse_sync(wit, wpt, TARGET).spiffe_id.path == "/w"


def test_authenticator_passes_size_lifetime_and_replay_settings_to_wimse(
    issuer: Any, clock: Any
) -> None:
    private, jwk = generate_proof_key()
    wit = issuer.mint_wit("/w", jwk, ttl=600)
    small = Authenticator(issuer.bundle_set(), "svc", clock=clock, max_token_bytes=len(wit) - 1)
    with pytest.raises(InvalidToken, match=r"^WIT is larger than"):
        small.authenticate_wimse_sync(wit, mint_wpt(private, wit, TARGET, now=clock.now), TARGET)
    short = Authenticator(issuer.bundle_set(), "svc", clock=clock, max_proof_lifetime=30)
    with pytest.raises(InvalidToken, match=r"^WPT lifetime exceeds 30 seconds$"):
        short.authenticate_wimse_sync(wit, mint_wpt(private, wit, TARGET, now=clock.now), TARGET)
    # Two authenticators sharing one replay cache (two workers of one service) refuse a
    # proof the other already accepted; without sharing, each would accept it once.
    shared = ReplayCache()
    a = Authenticator(issuer.bundle_set(), "svc", clock=clock, replay_cache=shared)
    b = Authenticator(issuer.bundle_set(), "svc", clock=clock, replay_cache=shared)
    wpt = mint_wpt(private, wit, TARGET, now=clock.now)
    a.authenticate_wimse_sync(wit, wpt, TARGET)
    with pytest.raises(ReplayedProof):
        b.authenticate_wimse_sync(wit, wpt, TARGET)


# ------------------------------------------------------------------ WIT (WIMSE workload creds)


@pytest.fixture
def wimse(bundles: BundleSet, clock: Any) -> WimseVerifier:
    return WimseVerifier(bundles, leeway=5, clock=clock)


@pytest.fixture
def proof() -> tuple[Any, dict[str, Any]]:
    return generate_proof_key()


def _wit_claims(jwk: dict[str, Any], **changes: Any) -> dict[str, Any]:
    claims = {
        "sub": "spiffe://example.org/agent/w",
        "iat": int(NOW),
        "exp": int(NOW) + 600,
        "jti": "wit-1",
        "cnf": {"jwk": jwk},
        **changes,
    }
    return {k: v for k, v in claims.items() if v is not None}


WIT_HEADER = {"alg": "ES256", "kid": "w1", "typ": "wit+jwt"}


def _wit(forge: Any, keys: Any, claims: dict[str, Any], header: Any = None) -> str:
    h = WIT_HEADER if header is None else header
    return str(forge(h, claims, keys.wit, alg=h["alg"]))


@pytest.mark.parametrize(
    ("header", "changes", "error", "message"),
    [
        (
            {**WIT_HEADER, "typ": "JWT"},
            {},
            InvalidHeader,
            "WIT typ is not one of ['wit+jwt']",
        ),
        (WIT_HEADER, {"sub": 7}, InvalidToken, "WIT 'sub' must be a SPIFFE ID string"),
        (
            WIT_HEADER,
            {"sub": "spiffe://other.org/w"},
            UntrustedDomain,
            "trust domain 'other.org' has no wit-svid keys",
        ),
        ({**WIT_HEADER, "kid": "zz"}, {}, UnknownKey, "no key for WIT with the given kid"),
        (
            {**WIT_HEADER, "alg": "ES384"},
            {},
            UnsupportedAlgorithm,
            "WIT alg ES384 does not fit its key",
        ),
        (
            {"alg": "ES384", "typ": "wit+jwt"},
            {},
            UnknownKey,
            "no key for WIT with alg ES384",
        ),
        (WIT_HEADER, {"exp": int(NOW) - 6}, ExpiredToken, "WIT has expired"),
        (WIT_HEADER, {"aud": "svc"}, InvalidToken, "WIT must not have an 'aud' claim"),
        (WIT_HEADER, {"cnf": {}}, InvalidToken, "WIT has no 'cnf.jwk' confirmation key"),
    ],
)
def test_wit_errors(
    wimse: WimseVerifier,
    forge: Any,
    keys: Any,
    proof: Any,
    header: dict[str, Any],
    changes: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    token = _wit(forge, keys, _wit_claims(proof[1], **changes), header)
    assert _error(wimse.verify_wit, token) == (error, message)


def test_wit_signed_by_another_key_names_the_wit(
    wimse: WimseVerifier, forge: Any, keys: Any, proof: Any
) -> None:
    token = forge(WIT_HEADER, _wit_claims(proof[1]), keys.attacker)
    assert _error(wimse.verify_wit, token) == (InvalidSignature, "WIT signature does not verify")
    big = WimseVerifier(wimse.bundles, max_token_bytes=100)
    assert _error(big.verify_wit, token) == (InvalidToken, "WIT is larger than 100 bytes")
    assert _error(wimse.verify_wit, 5) == (InvalidToken, "WIT must be a string")
    assert _error(wimse.verify_wit, ["x"]) == (InvalidToken, "WIT must be a string")


@pytest.mark.parametrize(
    ("jwk_change", "error", "message"),
    [
        ({"alg": None}, UnsupportedAlgorithm, "WIT 'cnf.jwk' has no 'alg'"),
        (
            {"alg": "HS256"},
            UnsupportedAlgorithm,
            "WIT 'cnf.jwk' alg 'HS256' is not allowed (RS/ES/PS 256/384/512 only)",
        ),
        (
            {"alg": "X" * 16},
            UnsupportedAlgorithm,
            f"WIT 'cnf.jwk' alg {'X' * 16!r} is not allowed (RS/ES/PS 256/384/512 only)",
        ),
        (
            {"alg": "X" * 17},
            UnsupportedAlgorithm,
            "WIT 'cnf.jwk' alg '?' is not allowed (RS/ES/PS 256/384/512 only)",
        ),
        (
            {"alg": 256},
            UnsupportedAlgorithm,
            "WIT 'cnf.jwk' alg '?' is not allowed (RS/ES/PS 256/384/512 only)",
        ),
        ({"x": "!!"}, InvalidToken, "WIT 'cnf.jwk' is not a valid public key"),
        (
            {"kty": "OKP", "crv": "Ed25519"},
            InvalidToken,
            "WIT 'cnf.jwk' key type is not supported (RSA or EC only)",
        ),
        (
            {"alg": "ES384"},
            UnsupportedAlgorithm,
            "WIT 'cnf.jwk' alg 'ES384' does not fit its key",
        ),
    ],
)
def test_wit_confirmation_key_errors(
    wimse: WimseVerifier,
    forge: Any,
    keys: Any,
    proof: Any,
    jwk_change: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    """draft-ietf-wimse-workload-creds 5.1: ``cnf.jwk`` is required, its ``alg`` is
    required, asymmetric and must fit the key."""
    jwk = {k: v for k, v in {**proof[1], **jwk_change}.items() if v is not None}
    token = _wit(forge, keys, _wit_claims(jwk))
    assert _error(wimse.verify_wit, token) == (error, message)


def test_wit_cache_returns_the_verified_result_through_the_leeway(
    bundles: BundleSet, forge: Any, keys: Any, proof: Any, clock: Any
) -> None:
    wimse = WimseVerifier(bundles, leeway=5, clock=clock)
    token = _wit(forge, keys, _wit_claims(proof[1]))
    first = wimse.verify_wit(token)
    assert wimse.verify_wit(token) is first
    clock.now = NOW + 600 + 3  # expired, inside the leeway: still the cached result
    assert wimse.verify_wit(token) is first
    assert first.expires_at == NOW + 600


def test_full_wit_cache_evicts_on_the_verifiers_clock(
    bundles: BundleSet, forge: Any, keys: Any, proof: Any, clock: Any
) -> None:
    wimse = WimseVerifier(bundles, clock=clock, cache_size=1)
    for n in range(3):
        token = _wit(forge, keys, _wit_claims(proof[1], jti=f"w{n}"))
        assert wimse.verify_wit(token).claims["jti"] == f"w{n}"
    assert len(wimse.wit_cache) == 1


def test_cache_and_replay_defaults(bundles: BundleSet) -> None:
    assert ReplayCache().maxsize == 100_000
    assert JwtSvidVerifier(bundles, "svc").cache.maxsize == 10_000
    assert Authenticator(bundles, "svc").cache.maxsize == 10_000
    wimse = WimseVerifier(bundles)
    assert wimse.wit_cache.maxsize == 10_000
    shared = ReplayCache()
    assert WimseVerifier(bundles, replay_cache=shared).replay_cache is shared
    assert TokenCache().maxsize == 10_000


# ------------------------------------------------------------------ WPT (draft-ietf-wimse-wpt)


@pytest.fixture
def wit_token(forge: Any, keys: Any, proof: Any) -> str:
    return _wit(forge, keys, _wit_claims(proof[1]))


def _wpt(proof: Any, wit: str, **claims: Any) -> str:
    body = {
        "aud": TARGET,
        "iat": int(NOW),
        "exp": int(NOW) + 60,
        "jti": "p-1",
        "wth": token_hash(wit),
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, proof[0], algorithm="ES256", headers={"typ": "wpt+jwt"})


@pytest.mark.parametrize(
    ("claims", "error", "message"),
    [
        ({"exp": int(NOW) - 6}, ExpiredToken, "WPT has expired"),
        ({"jti": ""}, InvalidToken, "WPT has no 'jti'"),
        ({"jti": None}, InvalidToken, "WPT has no 'jti'"),
        ({"aud": None}, InvalidAudience, "WPT has no 'aud'"),
        (
            {"iat": int(NOW) - 250, "exp": int(NOW) + 100},
            InvalidToken,
            "WPT lifetime exceeds 300 seconds",
        ),
    ],
)
def test_wpt_errors(
    wimse: WimseVerifier,
    wit_token: str,
    proof: Any,
    claims: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    wpt = _wpt(proof, wit_token, **claims)
    assert _error(lambda t: wimse.verify(wit_token, t, TARGET), wpt) == (error, message)


def test_wpt_structure_and_signature_errors_name_the_wpt(
    wimse: WimseVerifier, wit_token: str, proof: Any
) -> None:
    def verify(t: Any) -> Any:
        return wimse.verify(wit_token, t, TARGET)

    assert _error(verify, "a.b") == (
        InvalidToken,
        "WPT is not a JWS compact serialization (need 3 parts)",
    )
    thief = generate_proof_key()
    assert _error(verify, _wpt(thief, wit_token)) == (
        InvalidSignature,
        "WPT signature does not verify",
    )
    small = WimseVerifier(wimse.bundles, clock=wimse.clock, max_token_bytes=len(wit_token))
    wpt = _wpt(proof, wit_token, pad="x" * len(wit_token))
    assert _error(lambda t: small.verify(wit_token, t, TARGET), wpt) == (
        InvalidToken,
        f"WPT is larger than {len(wit_token)} bytes",
    )


@pytest.mark.parametrize(
    "claims",
    [
        {"iat": int(NOW), "exp": int(NOW) + 300},  # lifetime exactly the maximum
        {"iat": None},  # iat is optional: the lifetime counts from now
        {"aud": TARGET + "?page=2#top"},  # wpt 2: query and fragment are ignored
        {"aud": [TARGET + "?a=1", "https://other.example.org/"]},
    ],
)
def test_wpt_benign_twins_accepted(
    wimse: WimseVerifier, wit_token: str, proof: Any, claims: dict[str, Any]
) -> None:
    verified = wimse.verify(wit_token, _wpt(proof, wit_token, **claims), TARGET)
    assert verified.jti == "p-1" and verified.claims["jti"] == "p-1"
    assert verified.expires_at == claims.get("exp", int(NOW) + 60)


def test_proof_audience_drops_query_and_fragment_only() -> None:
    """draft-ietf-wimse-wpt 2: the target URI "without query or fragment parts"."""
    assert proof_audience("https://h/p?x=1?y=2") == "https://h/p"
    assert proof_audience("https://h/p#a#b") == "https://h/p"
    assert proof_audience("https://h/p#frag?x") == "https://h/p"
    assert proof_audience("https://h/p#f") == "https://h/p"
    assert proof_audience("https://h/a b") == "https://h/a b"


def test_distinct_proofs_each_consume_only_their_own_jti(
    wimse: WimseVerifier, wit_token: str, proof: Any
) -> None:
    wimse.verify(wit_token, _wpt(proof, wit_token, jti="one"), TARGET)
    wimse.verify(wit_token, _wpt(proof, wit_token, jti="two"), TARGET)
    assert len(wimse.replay_cache) == 2


def test_replay_refused_until_the_proof_expires_plus_leeway(
    wimse: WimseVerifier, wit_token: str, proof: Any, clock: Any
) -> None:
    """A proof stays usable until exp + leeway, so its jti must be remembered as long."""
    wpt = _wpt(proof, wit_token)
    wimse.verify(wit_token, wpt, TARGET)
    clock.now = NOW + 60 + 4  # past exp, inside the leeway: the proof itself still passes
    with pytest.raises(ReplayedProof):
        wimse.verify(wit_token, wpt, TARGET)


def test_replay_cache_edges(clock: Any) -> None:
    cache = ReplayCache(maxsize=1)
    cache.check_and_store("a", until=10.0, now=0.0)
    with pytest.raises(ReplayedProof) as info:
        cache.check_and_store("a", until=20.0, now=10.0)  # at its last valid instant
    assert str(info.value) == "proof jti was already used"
    # Full, and "a" is live until 10 inclusive: a new jti is refused, not "a" forgotten.
    with pytest.raises(AuthenticationError) as full:
        cache.check_and_store("b", until=20.0, now=10.0)
    assert str(full.value) == "proof replay cache is full; try again later"
    cache.check_and_store("b", until=20.0, now=10.5)  # "a" has lapsed: room again
    assert len(cache) == 1


# ------------------------------------------------------------------ JOSE helpers


def test_b64url_encode_strips_only_padding() -> None:
    """RFC 7515 2: base64url with the trailing '=' removed, and nothing else."""
    assert b64url_encode(b"\x00\x00\x17") == "AAAX"
    assert b64url_encode(b"\xff") == "_w"
    assert b64url_encode(b"\xfb\xf0") == "-_A"


def test_alg_guard_refuses_algorithms_outside_the_allow_list(keys: Any) -> None:
    """The algorithm-confusion guard: a name that merely starts like an RSA algorithm
    ("RS1", "PS999") fits no key; its allowed twin fits."""
    rsa_key = keys.rsa.public_key()
    assert alg_fits_key("RS256", rsa_key) and alg_fits_key("PS512", rsa_key)
    for alg in ("RS1", "PS999", "RSA-OAEP", "none"):
        assert not alg_fits_key(alg, rsa_key)


def test_thumbprint_hashes_the_utf8_json_of_the_required_members() -> None:
    """RFC 7638 3: the hash input is the UTF-8 of the JSON object (non-ASCII is not
    escaped); a key type that is not a string has no thumbprint."""
    import hashlib

    jwk = {"kty": "oct", "k": "cl\u00e9", "alg": "ignored"}
    expected = hashlib.sha256('{"k":"cl\u00e9","kty":"oct"}'.encode()).digest()
    assert jwk_thumbprint(jwk) == b64url_encode(expected)
    with pytest.raises(ValueError) as info:
        jwk_thumbprint({"kty": ["EC"]})
    assert str(info.value) == "no RFC 7638 thumbprint for key type ['EC']"
