"""JWT-SVID vector suite: every rule, plus the classic JWT attacks, each with its typed error."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tether.identity import (
    AuthenticationError,
    Authenticator,
    BundleSet,
    ExpiredToken,
    InvalidAudience,
    InvalidHeader,
    InvalidSignature,
    InvalidToken,
    JwtSvidVerifier,
    NotYetValid,
    TrustBundle,
    UnknownKey,
    UnsupportedAlgorithm,
    UntrustedDomain,
)

NOW = 1_800_000_000


def _auth(bundles: BundleSet, clock: Callable[[], float], **kw: Any) -> Authenticator:
    return Authenticator(bundles, "svc", leeway=5, clock=clock, **kw)


# (name, header, claim overrides, signing key attr, alg to sign with)
GOOD: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("es256-kid", {"alg": "ES256", "kid": "k1", "typ": "JWT"}, {}, "ec256"),
    ("typ-absent", {"alg": "ES256", "kid": "k1"}, {}, "ec256"),
    ("typ-jose", {"alg": "ES256", "kid": "k1", "typ": "JOSE"}, {}, "ec256"),
    ("typ-case-insensitive", {"alg": "ES256", "kid": "k1", "typ": "jwt"}, {}, "ec256"),
    ("es384", {"alg": "ES384", "kid": "k384"}, {}, "ec384"),
    ("rs256", {"alg": "RS256", "kid": "r1"}, {}, "rsa"),
    ("es512", {"alg": "ES512", "kid": "k521"}, {}, "ec521"),
    ("rs384", {"alg": "RS384", "kid": "r1"}, {}, "rsa"),
    ("rs512", {"alg": "RS512", "kid": "r1"}, {}, "rsa"),
    ("ps256", {"alg": "PS256", "kid": "r1"}, {}, "rsa"),
    ("ps384", {"alg": "PS384", "kid": "r1"}, {}, "rsa"),
    ("ps512", {"alg": "PS512", "kid": "r1"}, {}, "rsa"),
    ("no-kid-es512", {"alg": "ES512"}, {}, "ec521"),
    # RFC 7515 4.1.9: "application/" may be present or omitted in typ.
    ("typ-application-jwt", {"alg": "ES256", "kid": "k1", "typ": "application/jwt"}, {}, "ec256"),
    ("no-kid-tries-domain-keys-ec", {"alg": "ES256"}, {}, "ec256"),
    ("no-kid-tries-domain-keys-rsa", {"alg": "RS256", "typ": "JWT"}, {}, "rsa"),
    ("aud-string", {"alg": "ES256", "kid": "k1"}, {"aud": "svc"}, "ec256"),
    ("aud-list-mixed", {"alg": "ES256", "kid": "k1"}, {"aud": ["x", "svc", "y"]}, "ec256"),
    ("nbf-past", {"alg": "ES256", "kid": "k1"}, {"nbf": NOW - 5}, "ec256"),
    ("no-iat-no-jti", {"alg": "ES256", "kid": "k1"}, {"iat": None, "jti": None}, "ec256"),
    ("exp-within-leeway", {"alg": "ES256", "kid": "k1"}, {"exp": NOW - 3}, "ec256"),
    ("iat-within-leeway", {"alg": "ES256", "kid": "k1"}, {"iat": NOW + 3}, "ec256"),
    ("other-domain", {"alg": "ES256", "kid": "o1"}, {"sub": "spiffe://other.org/x"}, "other"),
]


def _claims(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = {**base, **overrides}
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(("name", "header", "over", "key"), GOOD, ids=[g[0] for g in GOOD])
def test_good_tokens(
    name: str,
    header: dict[str, Any],
    over: dict[str, Any],
    key: str,
    keys: Any,
    bundles: BundleSet,
    clock: Any,
    forge: Any,
    good_claims: dict[str, Any],
) -> None:
    claims = _claims(good_claims, over)
    token = forge(header, claims, getattr(keys, key))
    agent = _auth(bundles, clock).authenticate_sync(token)
    assert str(agent.spiffe_id) == claims["sub"]
    assert agent.expires_at == claims["exp"]
    assert agent.token_id == claims.get("jti")
    assert dict(agent.claims) == claims


def _vectors(keys: Any, forge: Any, good: dict[str, Any]) -> list[tuple[str, Any, type[Exception]]]:
    """Bad tokens: (name, token, expected exact error type)."""
    es = {"alg": "ES256", "kid": "k1", "typ": "JWT"}
    ok = forge(es, good, keys.ec256)
    h, p, s = ok.split(".")

    def c(**over: Any) -> dict[str, Any]:
        return _claims(good, over)

    def b64(obj: Any) -> str:
        raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    rsa_pub_pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tampered = b64({**good, "sub": "spiffe://example.org/admin"})
    return [
        # --- classic attacks
        ("alg-none-empty-sig", f"{b64({'alg': 'none'})}.{p}.", UnsupportedAlgorithm),
        ("alg-none-with-sig", f"{b64({'alg': 'none', 'kid': 'k1'})}.{p}.{s}", UnsupportedAlgorithm),
        (
            "alg-None-case",
            forge({"alg": "None", "kid": "k1"}, good, keys.ec256, alg="ES256"),
            UnsupportedAlgorithm,
        ),
        (
            "hs256-rsa-pubkey-as-secret",
            forge({"alg": "HS256", "kid": "r1"}, good, hmac_secret=rsa_pub_pem),
            UnsupportedAlgorithm,
        ),
        (
            "hs512",
            forge({"alg": "HS512", "kid": "k1"}, good, hmac_secret=b"x"),
            UnsupportedAlgorithm,
        ),
        ("kid-of-other-domain", forge({"alg": "ES256", "kid": "o1"}, good, keys.other), UnknownKey),
        (
            "no-kid-signed-by-other-domain",
            forge({"alg": "ES256"}, good, keys.other),
            InvalidSignature,
        ),
        (
            "attacker-key-claims-trusted-kid",
            forge({"alg": "ES256", "kid": "k1"}, good, keys.attacker),
            InvalidSignature,
        ),
        (
            "distrusted-empty-keys-domain",
            forge(es, c(sub="spiffe://revoked.org/a"), keys.ec256),
            UntrustedDomain,
        ),
        ("unknown-domain", forge(es, c(sub="spiffe://nowhere.org/a"), keys.ec256), UntrustedDomain),
        ("tampered-payload", f"{h}.{tampered}.{s}", InvalidSignature),
        ("signature-stripped", f"{h}.{p}.", InvalidToken),
        (
            "signature-of-other-token",
            f"{h}.{p}.{forge(es, c(jti='z'), keys.ec256).split('.')[2]}",
            InvalidSignature,
        ),
        ("typ-wit", forge({**es, "typ": "wit+jwt"}, good, keys.ec256), InvalidHeader),
        ("typ-at-jwt", forge({**es, "typ": "at+jwt"}, good, keys.ec256), InvalidHeader),
        ("typ-not-string", forge({**es, "typ": 1}, good, keys.ec256), InvalidHeader),
        ("crit-header", forge({**es, "crit": ["exp"]}, good, keys.ec256), InvalidHeader),
        (
            "crit-b64-false",
            forge({**es, "b64": False, "crit": ["b64"]}, good, keys.ec256),
            InvalidHeader,
        ),
        ("jku-header", forge({**es, "jku": "https://evil/jwks"}, good, keys.ec256), InvalidHeader),
        (
            "embedded-jwk-header",
            forge({**es, "jwk": {"kty": "EC"}}, good, keys.attacker),
            InvalidHeader,
        ),
        ("x5u-header", forge({**es, "x5u": "https://evil"}, good, keys.ec256), InvalidHeader),
        ("oversized", forge(es, c(pad="A" * 17000), keys.ec256), InvalidToken),
        ("header-not-base64", f"!!!.{p}.{s}", InvalidToken),
        ("payload-not-base64", f"{h}.{p[:-2]}*x.{s}", InvalidToken),
        ("signature-not-base64", f"{h}.{p}.{s[:-2]}+/", InvalidToken),
        ("padding-chars", f"{h}=.{p}.{s}", InvalidToken),
        ("impossible-b64-length", f"{h}.{p}.{s}{'A' * ((1 - len(s)) % 4 or 4)}", InvalidToken),
        ("two-segments", f"{h}.{p}", InvalidToken),
        ("jwe-five-segments", f"{h}.{p}.{s}.{s}.{s}", InvalidToken),
        ("empty", "", InvalidToken),
        ("bytes-token", ok.encode(), InvalidToken),
        ("header-not-json", f"{b64(b'not json')}.{p}.{s}", InvalidToken),
        ("header-json-array", f"{b64([1, 2])}.{p}.{s}", InvalidToken),
        (
            "header-duplicate-alg",
            forge(b'{"alg":"ES256","kid":"k1","alg":"none"}', good, keys.ec256, alg="ES256"),
            InvalidToken,
        ),
        ("payload-not-object", forge(es, b"[1]", keys.ec256), InvalidToken),
        (
            "payload-duplicate-sub",
            forge(es, b'{"sub":"spiffe://example.org/a","sub":"spiffe://x/y"}', keys.ec256),
            InvalidToken,
        ),
        # --- alg / key binding
        ("alg-missing", forge({"kid": "k1"}, good, keys.ec256, alg="ES256"), UnsupportedAlgorithm),
        (
            "alg-es256k",
            forge({"alg": "ES256K", "kid": "k1"}, good, keys.ec256, alg="ES256"),
            UnsupportedAlgorithm,
        ),
        (
            "alg-eddsa",
            forge({"alg": "EdDSA", "kid": "k1"}, good, keys.ec256, alg="ES256"),
            UnsupportedAlgorithm,
        ),
        (
            "es256-with-rsa-kid",
            forge({"alg": "ES256", "kid": "r1"}, good, keys.ec256),
            UnsupportedAlgorithm,
        ),
        (
            "rs256-with-ec-kid",
            forge({"alg": "RS256", "kid": "k1"}, good, keys.rsa),
            UnsupportedAlgorithm,
        ),
        (
            "es384-with-p256-kid",
            forge({"alg": "ES384", "kid": "k1"}, good, keys.ec384),
            UnsupportedAlgorithm,
        ),
        (
            "es512-no-matching-curve",
            forge({"alg": "ES512"}, c(sub="spiffe://other.org/x"), keys.ec521),
            UnknownKey,
        ),
        (
            "es512-with-p384-kid",
            forge({"alg": "ES512", "kid": "k384"}, good, keys.ec521),
            UnsupportedAlgorithm,
        ),
        ("typ-text-jwt", forge({**es, "typ": "text/jwt"}, good, keys.ec256), InvalidHeader),
        ("cty-header", forge({**es, "cty": "JWT"}, good, keys.ec256), InvalidHeader),
        ("unknown-header", forge({**es, "zip": "DEF"}, good, keys.ec256), InvalidHeader),
        ("kid-unknown", forge({"alg": "ES256", "kid": "nope"}, good, keys.ec256), UnknownKey),
        ("kid-not-string", forge({"alg": "ES256", "kid": 7}, good, keys.ec256), InvalidHeader),
        ("kid-wit-key-for-svid", forge({"alg": "ES256", "kid": "w1"}, good, keys.wit), UnknownKey),
        # --- claims
        ("sub-missing", forge(es, c(sub=None), keys.ec256), InvalidToken),
        ("sub-not-string", forge(es, c(sub=5), keys.ec256), InvalidToken),
        ("sub-not-spiffe", forge(es, c(sub="https://example.org/a"), keys.ec256), InvalidToken),
        ("sub-uppercase-td", forge(es, c(sub="spiffe://Example.org/a"), keys.ec256), InvalidToken),
        (
            "sub-dot-segment",
            forge(es, c(sub="spiffe://example.org/a/../b"), keys.ec256),
            InvalidToken,
        ),
        ("aud-missing", forge(es, c(aud=None), keys.ec256), InvalidAudience),
        ("aud-wrong", forge(es, c(aud=["other-svc"]), keys.ec256), InvalidAudience),
        ("aud-empty-list", forge(es, c(aud=[]), keys.ec256), InvalidAudience),
        ("aud-not-string", forge(es, c(aud=7), keys.ec256), InvalidToken),
        ("exp-missing", forge(es, c(exp=None), keys.ec256), InvalidToken),
        ("exp-string", forge(es, c(exp=str(NOW + 100)), keys.ec256), InvalidToken),
        ("exp-bool", forge(es, c(exp=True), keys.ec256), InvalidToken),
        ("expired", forge(es, c(exp=NOW - 6), keys.ec256), ExpiredToken),
        ("nbf-future", forge(es, c(nbf=NOW + 60), keys.ec256), NotYetValid),
        ("iat-future", forge(es, c(iat=NOW + 60), keys.ec256), NotYetValid),
        (
            "exp-nan",
            forge(es, f'{{"sub":"{good["sub"]}","aud":"svc","exp":NaN}}'.encode(), keys.ec256),
            InvalidToken,
        ),
        ("exp-infinity", forge(es, c(exp=float("inf")), keys.ec256), InvalidToken),
        ("exp-huge-int", forge(es, c(exp=10**400), keys.ec256), InvalidToken),
        ("payload-deeply-nested", forge(es, b"[" * 6000 + b"]" * 6000, keys.ec256), InvalidToken),
        ("nbf-not-number", forge(es, c(nbf="soon"), keys.ec256), InvalidToken),
    ]


def test_bad_tokens_raise_their_specific_error(
    keys: Any, bundles: BundleSet, clock: Any, forge: Any, good_claims: dict[str, Any]
) -> None:
    vectors = _vectors(keys, forge, good_claims)
    assert len({name for name, _, _ in vectors}) == len(vectors)
    auth = _auth(bundles, clock)
    failures = []
    for name, token, expected in vectors:
        try:
            auth.authenticate_sync(token)
        except AuthenticationError as exc:
            if type(exc) is not expected:
                failures.append(f"{name}: {type(exc).__name__} ({exc}), want {expected.__name__}")
            text = str(exc)
            # Messages never echo the credential or its signature.
            if isinstance(token, str) and token and (token in text or token[-20:] in text):
                failures.append(f"{name}: message echoes the token")
        else:
            failures.append(f"{name}: accepted, want {expected.__name__}")
    assert not failures, "\n".join(failures)
    assert len(auth.cache) == 0  # nothing bad was cached


def test_max_token_size_enforced_before_decoding(
    bundles: BundleSet, clock: Any, keys: Any, forge: Any, good_claims: dict[str, Any]
) -> None:
    auth = _auth(bundles, clock, max_token_bytes=64)
    # Not even valid base64: proves the size check happens first.
    with pytest.raises(InvalidToken, match="larger than 64"):
        auth.authenticate_sync("*" * 65)
    token = forge({"alg": "ES256", "kid": "k1"}, good_claims, keys.ec256)
    with pytest.raises(InvalidToken, match="larger than"):
        auth.authenticate_sync(token)


def test_cache_hit_is_returned_and_rechecks_expiry(
    bundles: BundleSet, clock: Any, keys: Any, forge: Any, good_claims: dict[str, Any]
) -> None:
    auth = _auth(bundles, clock)
    token = forge({"alg": "ES256", "kid": "k1"}, good_claims, keys.ec256)
    first = auth.authenticate_sync(token)
    assert auth.authenticate_sync(token) is first
    assert len(auth.cache) == 1
    clock.now = good_claims["exp"] + 4  # inside leeway: still fine from the cache
    assert auth.authenticate_sync(token) is first
    clock.now = good_claims["exp"] + 6
    with pytest.raises(ExpiredToken):
        auth.authenticate_sync(token)
    assert len(auth.cache) == 0


def test_revoking_domain_invalidates_cached_tokens(
    bundles: BundleSet,
    bundle_docs: dict[str, Any],
    clock: Any,
    keys: Any,
    forge: Any,
    good_claims: dict[str, Any],
) -> None:
    auth = _auth(bundles, clock)
    mine = forge({"alg": "ES256", "kid": "k1"}, good_claims, keys.ec256)
    theirs = forge(
        {"alg": "ES256", "kid": "o1"}, {**good_claims, "sub": "spiffe://other.org/x"}, keys.other
    )
    auth.authenticate_sync(mine)
    cached_other = auth.authenticate_sync(theirs)
    assert len(auth.cache) == 2
    assert bundles.update(TrustBundle.from_dict("example.org", {"keys": [], "spiffe_sequence": 6}))
    with pytest.raises(UntrustedDomain):
        auth.authenticate_sync(mine)
    # Other domains are unaffected and stay cached.
    assert auth.authenticate_sync(theirs) is cached_other


def test_cache_is_bounded(
    bundles: BundleSet, clock: Any, keys: Any, forge: Any, good_claims: dict[str, Any]
) -> None:
    auth = _auth(bundles, clock, cache_size=3)
    for i in range(10):
        token = forge({"alg": "ES256", "kid": "k1"}, {**good_claims, "jti": str(i)}, keys.ec256)
        auth.authenticate_sync(token)
        assert len(auth.cache) <= 3
    assert len(auth.cache) >= 1


def test_standalone_verifier_caches_and_accepts_any_configured_audience(
    bundles: BundleSet, clock: Any, keys: Any, forge: Any, good_claims: dict[str, Any]
) -> None:
    verifier = JwtSvidVerifier(bundles, ["a", "svc"], clock=clock)
    token = forge({"alg": "ES256", "kid": "k1"}, good_claims, keys.ec256)
    first = verifier.verify(token)
    assert verifier.verify(token) is first
    assert first.kid == "k1"
    assert str(first.spiffe_id) == good_claims["sub"]
    with pytest.raises(ValueError, match="audience"):
        JwtSvidVerifier(bundles, [])
