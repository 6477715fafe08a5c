"""Spec-cited identity vectors: each attack blocked, with a benign twin that differs in the
one essential respect and is accepted. Every test quotes the rule it enforces.

Sources: draft-ietf-wimse-workload-creds-02 (WIT), draft-ietf-wimse-wpt-01 (WPT),
RFC 7515 (JWS), RFC 7517 (JWK), RFC 7638 (JWK thumbprint), the SPIFFE JWT-SVID and
Trust Domain and Bundle standards. OWASP Top 10 for Agentic Applications tags:
ASI03 identity and privilege abuse, ASI07 inter-agent communication.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tether.identity import (
    AuthenticationError,
    Authenticator,
    BundleSet,
    FileBundleSource,
    InvalidAudience,
    InvalidBinding,
    InvalidHeader,
    InvalidToken,
    LocalIssuer,
    TrustBundle,
    UnknownKey,
    UnsupportedAlgorithm,
    generate_proof_key,
    mint_wpt,
)
from tether.identity._jose import jwk_thumbprint
from tether.identity.wimse import token_hash

TARGET = "https://api.example.org/orders"


def _public_jwk(key: Any, alg: str | None) -> dict[str, Any]:
    pub = key.public_key()
    algo = RSAAlgorithm if isinstance(pub, rsa.RSAPublicKey) else ECAlgorithm
    jwk: dict[str, Any] = dict(algo.to_jwk(pub, as_dict=True))
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def _wit(issuer: LocalIssuer, clock: Any, forge: Any, cnf_jwk: Any, typ: str = "wit+jwt") -> str:
    """A WIT signed by the issuer's real WIT key, with exactly the given ``cnf.jwk``."""
    key = issuer._wit_keys[0]
    claims = {
        "sub": "spiffe://example.org/agent/w",
        "exp": int(clock.now) + 600,
        "cnf": {"jwk": cnf_jwk},
    }
    return str(forge({"alg": "ES256", "typ": typ, "kid": key.kid}, claims, key.private))


def _wpt(
    wit: str,
    clock: Any,
    forge: Any,
    key: Any,
    alg: str,
    *,
    typ: str = "wpt+jwt",
    aud: str = TARGET,
    drop: tuple[str, ...] = (),
    **extra: str,
) -> str:
    claims = {
        "aud": aud,
        "iat": int(clock.now),
        "exp": int(clock.now) + 30,
        "jti": f"j-{os.urandom(6).hex()}",
        "wth": token_hash(wit),
        **extra,
    }
    for name in drop:
        del claims[name]
    return str(forge({"alg": alg, "typ": typ}, claims, key))


def _rejects(auth: Authenticator, wit: str, wpt: str, expected: type[Exception], **kw: Any) -> str:
    with pytest.raises(AuthenticationError) as info:
        auth.authenticate_wimse_sync(wit, wpt, kw.pop("target", TARGET), **kw)
    assert type(info.value) is expected, f"{type(info.value).__name__}: {info.value}"
    return str(info.value)


# ------------------------------------------------------------------ item 14: cnf.jwk.alg


def test_wit_without_cnf_jwk_alg_is_rejected(
    auth: Authenticator, issuer: LocalIssuer, clock: Any, forge: Any
) -> None:
    """[ASI03] draft-ietf-wimse-workload-creds-02, section 5.1 (The Workload Identity Token):
    "``alg``: Within the jwk object, an ``alg`` field MUST be present. ... The presented
    proof MUST be produced with the algorithm specified in this field."
    """
    private, _ = generate_proof_key()
    attack = _wit(issuer, clock, forge, _public_jwk(private, None))
    message = _rejects(
        auth, attack, _wpt(attack, clock, forge, private, "ES256"), UnsupportedAlgorithm
    )
    assert "has no 'alg'" in message
    # Twin: the same key with its alg stated.
    benign = _wit(issuer, clock, forge, _public_jwk(private, "ES256"))
    agent = auth.authenticate_wimse_sync(
        benign, _wpt(benign, clock, forge, private, "ES256"), TARGET
    )
    assert agent.spiffe_id.path == "/agent/w"


def test_proof_alg_must_equal_cnf_jwk_alg(
    auth: Authenticator, issuer: LocalIssuer, clock: Any, forge: Any, keys: Any
) -> None:
    """[ASI03] draft-ietf-wimse-wpt-01, section 2: the recipient MUST ensure "The signature
    algorithm in the ``alg`` JOSE header string-equal matches the ``alg`` attribute of the
    ``jwk`` in the ``cnf`` claim of the WIT."

    An RSA key verifies both RS256 and PS256, so only the pin tells them apart: a proof
    whose signature is valid under the wrong algorithm must still be refused.
    """
    wit = _wit(issuer, clock, forge, _public_jwk(keys.rsa, "PS256"))
    message = _rejects(auth, wit, _wpt(wit, clock, forge, keys.rsa, "RS256"), UnsupportedAlgorithm)
    assert "cnf.jwk alg" in message
    agent = auth.authenticate_wimse_sync(wit, _wpt(wit, clock, forge, keys.rsa, "PS256"), TARGET)
    assert agent.spiffe_id.path == "/agent/w"


@pytest.mark.parametrize(
    ("alg", "key_attr"), [("PS512", "rsa"), ("RS384", "rsa"), ("ES512", "ec521")]
)
def test_wimse_accepts_every_allowed_proof_alg(
    auth: Authenticator,
    issuer: LocalIssuer,
    clock: Any,
    forge: Any,
    keys: Any,
    alg: str,
    key_attr: str,
) -> None:
    """SPIFFE WIT-SVID 3.2: "the ``cnf.jwk.alg`` claim MUST have one of the following
    supported values" (RS/ES/PS 256/384/512); each must work end to end."""
    key = getattr(keys, key_attr)
    wit = _wit(issuer, clock, forge, _public_jwk(key, alg))
    agent = auth.authenticate_wimse_sync(wit, _wpt(wit, clock, forge, key, alg), TARGET)
    assert agent.claims["cnf"]["jwk"]["alg"] == alg


def test_issuer_states_cnf_alg_and_mint_wpt_follows_the_curve(
    auth: Authenticator, issuer: LocalIssuer, keys: Any, clock: Any
) -> None:
    """LocalIssuer writes the ``cnf.jwk.alg`` the WIT draft requires (derived from an EC
    key's curve), and mint_wpt signs with that algorithm: a P-521 proof key is ES512."""
    wit = issuer.mint_wit("/agent/w", keys.ec521.public_key())
    assert auth._wimse.verify_wit(wit).claims["cnf"]["jwk"]["alg"] == "ES512"
    wpt = mint_wpt(keys.ec521, wit, TARGET, now=clock.now)
    assert jwt.get_unverified_header(wpt)["alg"] == "ES512"
    assert auth.authenticate_wimse_sync(wit, wpt, TARGET).spiffe_id.path == "/agent/w"
    with pytest.raises(ValueError, match="needs an 'alg'"):
        issuer.mint_wit("/agent/w", _public_jwk(keys.rsa, None))


# ------------------------------------------------------------------ item 15: alg none


def test_cnf_jwk_alg_none_is_a_typed_error(
    auth: Authenticator, issuer: LocalIssuer, clock: Any, forge: Any
) -> None:
    """[ASI03] draft-ietf-wimse-workload-creds-02, section 5.1, on ``cnf.jwk.alg``: "The value
    ``none`` MUST NOT be used. Algorithms used in combination with symmetric keys MUST NOT
    be used." A refusal is an AuthenticationError, never NotImplementedError."""
    private, _ = generate_proof_key()
    for bad in ("none", "HS256", "EdDSA", 7):
        attack = _wit(issuer, clock, forge, {**_public_jwk(private, None), "alg": bad})
        _rejects(auth, attack, _wpt(attack, clock, forge, private, "ES256"), UnsupportedAlgorithm)
    benign = _wit(issuer, clock, forge, _public_jwk(private, "ES256"))
    assert auth.authenticate_wimse_sync(
        benign, _wpt(benign, clock, forge, private, "ES256"), TARGET
    )


def test_bundle_key_alg_none_is_skipped_not_raised(
    keys: Any, jwk_of: Any, forge: Any, clock: Any, good_claims: dict[str, Any]
) -> None:
    """[ASI03] SPIFFE JWT-SVID 2.1: "Validators receiving a token with the ``alg`` parameter
    set to a different value MUST reject the token." A bundle key pinned to ``alg: none``
    (RFC 7517 4.4: "the algorithm intended for use with the key") can verify nothing: it is
    skipped and reported, and the bundle still loads."""
    token = forge({"alg": "ES256", "kid": "k1"}, good_claims, keys.ec256)
    attack = {"keys": [{**jwk_of(keys.ec256, "k1", "jwt-svid"), "alg": "none"}]}
    bundle = TrustBundle.from_dict("example.org", attack)  # no NotImplementedError
    assert [str(s) for s in bundle.skipped] == [
        "keys[0] (kid 'k1'): key 'alg' 'none' is not an allowed signature algorithm"
    ]
    with pytest.raises(AuthenticationError):
        Authenticator(bundle, "svc", clock=clock).authenticate_sync(token)
    benign = {"keys": [{**jwk_of(keys.ec256, "k1", "jwt-svid"), "alg": "ES256"}]}
    trusting = Authenticator(TrustBundle.from_dict("example.org", benign), "svc", clock=clock)
    assert trusting.authenticate_sync(token).spiffe_id.path == "/agent/a"


def _write(path: Path, doc: Any, stamp: int) -> None:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.utime(path, ns=(stamp, stamp))  # a distinct mtime even on coarse filesystems


def test_file_source_refresh_never_raises(
    tmp_path: Path, keys: Any, jwk_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[ASI03] FileBundleSource.refresh() reports every failure in ``last_error`` and keeps
    the last good bundle; a key with ``alg: none`` is not a failure at all (it is skipped)."""
    path = tmp_path / "bundle.json"
    bundles = BundleSet()
    source = FileBundleSource(path, "example.org", bundles)
    doc = {
        "keys": [
            jwk_of(keys.ec256, "k1", "jwt-svid"),
            {**jwk_of(keys.ec384, "k2", "jwt-svid"), "alg": "none"},
        ],
        "spiffe_sequence": 1,
    }
    _write(path, doc, 1_000_000_000)
    assert source.refresh() is True
    assert source.last_error is None
    good = bundles.get("example.org")
    assert good is not None and [k.kid for k in good.jwt_keys] == ["k1"]
    assert [s.kid for s in good.skipped] == ["k2"]

    # Whatever goes wrong while parsing (here an unexpected exception type) is reported.
    def explode(cls: Any, trust_domain: str, data: Any) -> TrustBundle:
        raise NotImplementedError("parser bug")

    monkeypatch.setattr(TrustBundle, "from_json", classmethod(explode))
    _write(path, {**doc, "spiffe_sequence": 2}, 2_000_000_000)
    assert source.refresh() is False
    assert isinstance(source.last_error, NotImplementedError)
    assert bundles.get("example.org") is good


# ------------------------------------------------------------------ item 16: typ prefix


def test_typ_with_application_prefix_is_the_same_media_type(
    auth: Authenticator, issuer: LocalIssuer, clock: Any, forge: Any
) -> None:
    """[ASI07] RFC 7515 4.1.9: "it is RECOMMENDED that producers omit an "application/"
    prefix of a media type value in a "typ" Header Parameter when no other '/' appears in
    the media type value. A recipient using the media type value MUST treat it as if
    "application/" were prepended to any "typ" value not containing a '/'." The WPT draft
    (wpt-01 section 2) itself names the type ``application/wpt+jwt``."""
    private, public = generate_proof_key()
    wit = _wit(issuer, clock, forge, public, typ="application/wit+jwt")
    wpt = _wpt(wit, clock, forge, private, "ES256", typ="application/wpt+jwt")
    assert auth.authenticate_wimse_sync(wit, wpt, TARGET).spiffe_id.path == "/agent/w"
    # Attacks: another media type, or a WIT's type on the proof, stay refused.
    for typ in ("text/wpt+jwt", "application/wit+jwt", "application/application/wpt+jwt"):
        _rejects(auth, wit, _wpt(wit, clock, forge, private, "ES256", typ=typ), InvalidHeader)
    with pytest.raises(InvalidHeader):
        auth._wimse.verify_wit(_wit(issuer, clock, forge, public, typ="application/wpt+jwt"))


# ------------------------------------------------------------------ item 17: aud


def test_wpt_aud_ignores_query_and_fragment_but_not_the_path(
    auth: Authenticator, issuer: LocalIssuer, clock: Any
) -> None:
    """[ASI07] draft-ietf-wimse-wpt-01, section 2: ``aud`` "SHOULD contain the HTTP target URI
    ... of the request to which the WPT is attached, without query or fragment parts", and
    the recipient checks that it "matches the target URI ... ignoring any query and fragment
    parts"."""
    private, public = generate_proof_key()
    wit = issuer.mint_wit("/agent/w", public, ttl=600)
    target = f"{TARGET}?id=7&page=2#top"
    wpt = mint_wpt(private, wit, target, now=clock.now)
    assert jwt.decode(wpt, options={"verify_signature": False})["aud"] == TARGET
    assert auth.authenticate_wimse_sync(wit, wpt, target).spiffe_id.path == "/agent/w"
    # Attack: the same proof replayed at another path with the same query.
    stolen = mint_wpt(private, wit, target, now=clock.now)
    _rejects(auth, wit, stolen, InvalidAudience, target=f"{TARGET}/admin?id=7&page=2#top")


# ------------------------------------------------------------------ item 18: bundle refresh


def test_kidless_key_does_not_freeze_an_old_bundle(
    tmp_path: Path, keys: Any, jwk_of: Any, forge: Any, clock: Any, good_claims: dict[str, Any]
) -> None:
    """[ASI03] SPIFFE JWT-SVID 6.1: "the ``kid`` parameter of each JWK entry MUST be set."
    One key that breaks it must not make the whole refresh fail, or the old bundle (with
    the keys the publisher removed) would stay trusted. The bad key is skipped and
    reported; the rest of the new bundle applies."""
    path = tmp_path / "bundle.json"
    bundles = BundleSet()
    source = FileBundleSource(path, "example.org", bundles)
    old = {
        "keys": [jwk_of(keys.attacker, "old", "jwt-svid"), jwk_of(keys.ec256, "k1", "jwt-svid")],
        "spiffe_sequence": 1,
    }
    new = {
        "keys": [jwk_of(keys.ec256, "k1", "jwt-svid"), jwk_of(keys.ec384, None, "jwt-svid")],
        "spiffe_sequence": 2,
    }
    auth = Authenticator(bundles, "svc", clock=clock)
    retired = forge({"alg": "ES256", "kid": "old"}, good_claims, keys.attacker)
    current = forge({"alg": "ES256", "kid": "k1"}, good_claims, keys.ec256)
    _write(path, old, 1_000_000_000)
    assert source.refresh()
    assert auth.authenticate_sync(retired).spiffe_id.path == "/agent/a"

    _write(path, new, 2_000_000_000)
    assert source.refresh() is True and source.last_error is None
    installed = bundles.get("example.org")
    assert installed is not None and installed.sequence == 2
    assert [str(s) for s in installed.skipped] == ["keys[1]: jwt-svid key has no 'kid'"]
    with pytest.raises(UnknownKey):  # attack: the removed key no longer signs anything
        auth.authenticate_sync(retired)
    assert auth.authenticate_sync(current).spiffe_id.path == "/agent/a"  # twin


# ------------------------------------------------------------------ item 19 and bindings


def test_finer_errors_are_invalid_tokens(
    auth: Authenticator, issuer: LocalIssuer, clock: Any, forge: Any, keys: Any
) -> None:
    """Finer errors refine InvalidToken, so ``except InvalidToken`` keeps working.

    RFC 7515 4.1.1: ``alg`` "MUST be present and MUST be understood and processed by
    implementations"; SPIFFE JWT-SVID 2: "Any header not described here, registered or
    private, MUST NOT be included in the JWT-SVID JOSE Header."
    """
    key = issuer._svid_keys[0]
    claims = {"sub": "spiffe://example.org/a", "aud": "svc", "exp": int(clock.now) + 60}
    base = {"alg": "ES256", "kid": key.kid}
    vectors = {
        UnsupportedAlgorithm: forge({**base, "alg": "HS256"}, claims, hmac_secret=b"k"),
        InvalidHeader: forge({**base, "cty": "JWT"}, claims, key.private),
    }
    for expected, bad in vectors.items():
        with pytest.raises(InvalidToken) as info:
            auth.authenticate_sync(bad)
        assert type(info.value) is expected
    # Twin: the same claims, the allowed alg, no extra header.
    assert auth.authenticate_sync(forge(base, claims, key.private)).spiffe_id.path == "/a"


def test_wpt_without_wth_is_unbound(
    auth: Authenticator, issuer: LocalIssuer, clock: Any, forge: Any
) -> None:
    """[ASI07] draft-ietf-wimse-wpt-01, section 2: the recipient MUST ensure "The ``wth``
    claim is present and matches the hash of the token value conveyed in the
    ``Workload-Identity-Token`` header." Without it a proof could ride any WIT of the key."""
    private, public = generate_proof_key()
    wit = issuer.mint_wit("/agent/w", public, ttl=600)
    message = _rejects(
        auth, wit, _wpt(wit, clock, forge, private, "ES256", drop=("wth",)), InvalidBinding
    )
    assert "no 'wth'" in message
    other_wit = issuer.mint_wit("/agent/w", public, ttl=600)
    _rejects(auth, wit, _wpt(other_wit, clock, forge, private, "ES256"), InvalidBinding)
    assert auth.authenticate_wimse_sync(wit, _wpt(wit, clock, forge, private, "ES256"), TARGET)


def test_tth_required_when_a_transaction_token_is_presented(
    auth: Authenticator, issuer: LocalIssuer, clock: Any, forge: Any
) -> None:
    """[ASI07] draft-ietf-wimse-wpt-01, section 2: "the ``ath``, ``tth`` and ``oth`` claims
    are each mandatory if the respective tokens are included in the request", and "If
    presented in conjunction with a Txn-Token, the value of the ``tth`` claim matches the
    hash of that token's value." A proof without ``tth`` cannot vouch for the Txn-Token
    sent beside it, so an attacker could swap in another transaction's token."""
    private, public = generate_proof_key()
    wit = issuer.mint_wit("/agent/w", public, ttl=600)
    unbound = _wpt(wit, clock, forge, private, "ES256")
    message = _rejects(auth, wit, unbound, InvalidBinding, txn_token="TT")
    assert "no 'tth'" in message
    bound = _wpt(wit, clock, forge, private, "ES256", tth=token_hash("TT"))
    _rejects(auth, wit, bound, InvalidBinding, txn_token="other transaction")
    agent = auth.authenticate_wimse_sync(wit, bound, TARGET, txn_token="TT")
    assert agent.spiffe_id.path == "/agent/w"


# ------------------------------------------------------------------ RFC 7638


def test_jwk_thumbprint_matches_rfc7638_example() -> None:
    """RFC 7638 3.1: the example RSA key's SHA-256 thumbprint is
    ``NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs``; members other than the required
    ones (``alg``, ``kid``) do not change it (3.2)."""
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
            "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj"
            "QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
            "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    with pytest.raises(ValueError, match="lacks required members"):
        jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "AA"})
    with pytest.raises(ValueError, match="no RFC 7638 thumbprint"):
        jwk_thumbprint({"kty": "XYZ"})


def test_issuer_and_task_tokens_use_the_one_thumbprint(issuer: LocalIssuer) -> None:
    """Both kid generators are the RFC 7638 helper: the issuer's bundle key and the task
    token provider's JWKS key are named by their thumbprints."""
    from tether.leases.task_token import TaskTokenProvider

    svid_key = next(k for k in issuer.bundle()["keys"] if k["use"] == "jwt-svid")
    assert svid_key["kid"] == jwk_thumbprint(svid_key) == issuer.current_kid
    provider = TaskTokenProvider("svc", key=ec.generate_private_key(ec.SECP256R1()))
    published = provider.jwks()["keys"][0]
    assert published["kid"] == jwk_thumbprint(published) == provider.kid
