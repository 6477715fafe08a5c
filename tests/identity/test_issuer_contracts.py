"""SPIFFE IDs, the local issuer and Workload API addresses: exact messages, spec rules and
the shape of what the issuer mints; written for mutation-testing survivors."""

from __future__ import annotations

import time
from collections import UserList
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from tests.identity.conftest import NOW
from tether.identity import InvalidSpiffeId, LocalIssuer, SpiffeId, generate_proof_key, mint_wpt
from tether.identity.workload_api import WorkloadApiClient, WorkloadApiError, endpoint_target

# ------------------------------------------------------------------ SPIFFE ID (SPIFFE ID 2.2)


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("a", "path must start with '/'"),
        ("/a/", "path must not end with '/'"),
        ("/a//b", "path has an empty segment"),
        ("/a/./b", "path has a '.' or '..' segment"),
        ("/a/..", "path has a '.' or '..' segment"),
    ],
)
def test_path_errors_name_the_rule_and_the_path(path: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId("example.org", path)
    assert info.value.rule == rule
    assert str(info.value) == f"invalid SPIFFE ID {path!r}: {rule}"


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/a%20b", "percent-encoding is not allowed"),
        ("/a b", "path segments may only contain [a-zA-Z0-9.-_]"),
        ("/A/é", "path segments may only contain [a-zA-Z0-9.-_]"),
    ],
)
def test_path_character_rules(path: str, rule: str) -> None:
    """SPIFFE ID 2.2: segments use [a-zA-Z0-9.-_] only; percent-encoding is not allowed."""
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(f"spiffe://example.org{path}")
    assert str(info.value) == f"invalid SPIFFE ID {path!r}: {rule}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "invalid SPIFFE ID: must be a string"),
        ("", "invalid SPIFFE ID: is empty"),
        ("spiffe://", "invalid SPIFFE ID: trust domain is empty"),
        ("spiffe://" + "d" * 256, "invalid SPIFFE ID: trust domain is longer than 255 bytes"),
        ("spiffe://e.org/" + "\u00e9" * 1100, "invalid SPIFFE ID: longer than 2048 bytes"),
        (
            "SPIFFE://example.org/a",
            "invalid SPIFFE ID 'SPIFFE://example.org/a': scheme must be lowercase 'spiffe'",
        ),
        (
            "https://example.org/a",
            "invalid SPIFFE ID 'https://example.org/a': scheme must be 'spiffe://'",
        ),
        ("spiffe://e.org/a?x", "invalid SPIFFE ID 'spiffe://e.org/a?x': query is not allowed"),
        ("spiffe://e.org/a#x", "invalid SPIFFE ID 'spiffe://e.org/a#x': fragment is not allowed"),
        ("spiffe://u@e.org/a", "invalid SPIFFE ID 'u@e.org': userinfo is not allowed"),
        ("spiffe://e.org:80/a", "invalid SPIFFE ID 'e.org:80': port is not allowed"),
        ("spiffe://e%41.org/a", "invalid SPIFFE ID 'e%41.org': percent-encoding is not allowed"),
        ("spiffe://E.org/a", "invalid SPIFFE ID 'E.org': trust domain must be lowercase"),
        (
            "spiffe://e!.org/a",
            "invalid SPIFFE ID 'e!.org': trust domain may only contain [a-z0-9.-_]",
        ),
    ],
)
def test_parse_errors_name_the_rule(value: object, message: str) -> None:
    """SPIFFE ID 2.1-2.3: each rule broken is named, with the offending part shown."""
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(value)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_trust_domain_may_be_exactly_255_bytes() -> None:
    """SPIFFE ID 2.1: a trust domain name is at most 255 bytes (the limit is inclusive)."""
    assert len(SpiffeId.parse("spiffe://" + "d" * 255 + "/a").trust_domain) == 255


def test_whole_id_is_at_most_2048_bytes() -> None:
    """SPIFFE ID 2.3: a SPIFFE ID is at most 2048 bytes, scheme and trust domain included."""
    domain = "d" * 200
    fits = "/" + "a" * (2048 - len("spiffe://") - len(domain) - 1)
    assert len(str(SpiffeId(domain, fits))) == 2048
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId(domain, fits + "a")
    assert str(info.value) == "invalid SPIFFE ID: longer than 2048 bytes"


@pytest.mark.parametrize(("length", "shown_length"), [(80, 80), (81, 80), (200, 80)])
def test_long_values_are_cut_to_80_characters_in_messages(length: int, shown_length: int) -> None:
    path = "/" + "a" * (length - 2) + "/"  # a trailing '/' is the defect
    assert len(path) == length
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId("example.org", path)
    shown = path if length <= 80 else path[:77] + "..."
    assert len(shown) == shown_length
    assert str(info.value) == f"invalid SPIFFE ID {shown!r}: path must not end with '/'"


# ------------------------------------------------------------------ LocalIssuer


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def test_issuer_defaults_and_svid_shape() -> None:
    """JWT-SVID 3: ``typ`` is "JWT" (or "JOSE"); the issuer also pins ES256 on every key it
    publishes (RFC 7517 4.4), and each token's ``jti`` carries 128 random bits."""
    issuer = LocalIssuer(clock=lambda: NOW)
    assert issuer.trust_domain == "tether.local"
    token = issuer.mint_svid("/a", ("svc", "other"))
    assert jwt.get_unverified_header(token)["typ"] == "JWT"
    claims = _claims(token)
    assert (claims["iat"], claims["exp"]) == (int(NOW), int(NOW) + 300)
    assert claims["aud"] == ["svc", "other"]
    assert len(claims["jti"]) == 22  # base64url of 16 bytes
    # Any sequence of audiences becomes a JSON list, even one json cannot encode as is.
    assert _claims(issuer.mint_svid("/a", UserList(["svc"])))["aud"] == ["svc"]
    assert {k["alg"] for k in issuer.bundle()["keys"]} == {"ES256"}


def test_wit_shape_and_confirmation_keys() -> None:
    issuer = LocalIssuer("example.org", clock=lambda: NOW)
    _, jwk = generate_proof_key()
    claims = _claims(issuer.mint_wit("/w", jwk))
    assert (claims["iat"], claims["exp"]) == (int(NOW), int(NOW) + 300)
    assert len(claims["jti"]) == 22
    assert claims["cnf"]["jwk"] == jwk
    # An RSA key names its own alg (RS* or PS*), which is kept; without one it is refused.
    pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_jwk = RSAAlgorithm.to_jwk(pub, as_dict=True)
    pinned = _claims(issuer.mint_wit("/w", {**rsa_jwk, "alg": "PS256"}))
    assert pinned["cnf"]["jwk"]["alg"] == "PS256"
    with pytest.raises(ValueError) as info:
        issuer.mint_wit("/w", rsa_jwk)
    assert str(info.value) == "cnf.jwk needs an 'alg' (only an EC key's can be derived)"
    with pytest.raises(ValueError) as private:
        issuer.mint_wit("/w", {**jwk, "d": "secret"})
    assert str(private.value) == "cnf.jwk must be a public key"


def test_wpt_shape_and_clock() -> None:
    private, jwk = generate_proof_key()
    wit = LocalIssuer("example.org").mint_wit("/w", jwk)
    claims = _claims(mint_wpt(private, wit, "https://h/p", now=NOW))
    assert (claims["iat"], claims["exp"]) == (int(NOW), int(NOW) + 60)
    assert len(claims["jti"]) == 22
    before = int(time.time())
    iat = _claims(mint_wpt(private, wit, "https://h/p"))["iat"]
    assert before <= iat <= time.time()  # no clock given: the system clock
    with pytest.raises(ValueError) as info:
        mint_wpt(ec.generate_private_key(ec.SECP256K1()), wit, "https://h/p")
    assert str(info.value) == "no JWS algorithm for curve secp256k1"


def test_rotation_signs_with_the_new_keys_and_retiring_keeps_one_of_each() -> None:
    issuer = LocalIssuer("example.org")
    _, jwk = generate_proof_key()
    old_wit_kid = jwt.get_unverified_header(issuer.mint_wit("/w", jwk))["kid"]
    issuer.rotate()
    new_wit_kid = jwt.get_unverified_header(issuer.mint_wit("/w", jwk))["kid"]
    assert new_wit_kid != old_wit_kid
    issuer.retire_old_keys()
    uses = sorted((k["use"], k["kid"]) for k in issuer.bundle()["keys"])
    assert uses == sorted([("jwt-svid", issuer.current_kid), ("wit-svid", new_wit_kid)])


# ------------------------------------------------------------------ Workload API addresses


@pytest.mark.parametrize(
    "address",
    [
        "tcp://user@127.0.0.1:8081",  # userinfo without a password
        "unix:///run/agent.sock#frag",  # a fragment without userinfo
        "tcp://127.0.0.1:8081/path",  # SPIFFE Workload Endpoint 4: ip:port only
    ],
)
def test_endpoint_addresses_refused(address: str) -> None:
    with pytest.raises(WorkloadApiError):
        endpoint_target(address)


def test_endpoint_tcp_address_may_end_with_a_slash() -> None:
    assert endpoint_target("tcp://127.0.0.1:8081/") == "127.0.0.1:8081"


def test_workload_api_client_timeout_default() -> None:
    assert WorkloadApiClient("unix:///nowhere.sock").timeout == 5.0
