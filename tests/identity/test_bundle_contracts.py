"""Trust bundles: the exact behaviour callers and operators rely on (messages, skipped-key
reports, digests, sources' defaults and logs), written for mutation-testing survivors."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tether.identity import (
    BundleSet,
    FileBundleSource,
    HttpBundleSource,
    InvalidBundle,
    StaleBundle,
    TrustBundle,
)
from tether.identity.bundle import SkippedKey, public_key_from_jwk


def _bundle_error(doc: Any) -> str:
    with pytest.raises(InvalidBundle) as info:
        TrustBundle.from_dict("example.org", doc)
    return str(info.value)


# ------------------------------------------------------------------ keys


def test_pinned_alg_refuses_another_alg_the_key_could_verify(keys: Any, jwk_of: Any) -> None:
    """RFC 7517 4.4: a JWK's ``alg`` names the one algorithm intended for the key. An RSA
    key pinned to RS256 must not verify PS256 (which its type would allow)."""
    pinned = public_key_from_jwk({**jwk_of(keys.rsa, "r", "jwt-svid"), "alg": "RS256"}, None)
    assert pinned is not None
    assert pinned.supports("RS256")
    assert not pinned.supports("PS256")
    unpinned = public_key_from_jwk(jwk_of(keys.rsa, "r", "jwt-svid"), None)
    assert unpinned is not None and unpinned.supports("PS256")


@pytest.mark.parametrize(
    ("alg", "shown"),
    [("A" * 16, "A" * 16), ("B" * 17, "B" * 13 + "..."), ("C" * 40, "C" * 13 + "...")],
)
def test_long_alg_pins_are_cut_in_the_skip_reason(
    keys: Any, jwk_of: Any, alg: str, shown: str
) -> None:
    """An attacker-chosen ``alg`` is echoed at most 16 characters long in logs."""
    doc = {"keys": [{**jwk_of(keys.ec256, "k", "jwt-svid"), "alg": alg}]}
    (skipped,) = TrustBundle.from_dict("example.org", doc).skipped
    assert skipped.reason == f"key 'alg' {shown!r} is not an allowed signature algorithm"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kid": ""}, "key 'kid' must be a non-empty string"),
        ({"kid": 5}, "key 'kid' must be a non-empty string"),
        ({"alg": 256}, "key 'alg' must be a string"),
        ({"x": "!!"}, "malformed EC key"),
    ],
)
def test_malformed_key_messages(keys: Any, jwk_of: Any, change: Any, message: str) -> None:
    with pytest.raises(InvalidBundle) as info:
        public_key_from_jwk({**jwk_of(keys.ec256, "k", "jwt-svid"), **change}, "jwt-svid")
    assert str(info.value) == message


def test_short_rsa_keys_are_refused_with_the_minimum_named() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(InvalidBundle) as info:
        public_key_from_jwk(RSAAlgorithm.to_jwk(weak, as_dict=True), "jwt-svid")
    assert str(info.value) == "RSA key is shorter than 2048 bits"


def test_ec_key_on_unknown_curve_is_ignored_not_skipped(keys: Any, jwk_of: Any) -> None:
    """SPIFFE bundle 4.2.1: entries we cannot interpret are ignored (not reported as
    unusable keys of ours); the P-256 twin loads."""
    doc = {
        "keys": [
            {"kty": "EC", "crv": "P-256K", "x": "AA", "y": "AA", "kid": "c", "use": "jwt-svid"},
            jwk_of(keys.ec256, "k1", "jwt-svid"),
        ]
    }
    bundle = TrustBundle.from_dict("example.org", doc)
    assert bundle.skipped == ()
    assert [k.kid for k in bundle.jwt_keys] == ["k1"]


def test_unsupported_key_is_logged_at_debug_with_use_and_domain(
    keys: Any, jwk_of: Any, caplog: pytest.LogCaptureFixture
) -> None:
    okp = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7T", "kid": "e", "use": "wit-svid"}
    with caplog.at_level(logging.DEBUG, logger="tether.identity"):
        TrustBundle.from_dict("example.org", {"keys": [okp]})
    assert caplog.messages == ["ignoring unsupported wit-svid key in bundle for example.org"]


# ------------------------------------------------------------------ documents


def test_bundle_document_messages() -> None:
    assert _bundle_error(["keys"]) == "bundle must be a JSON object"
    assert _bundle_error({"keys": "k"}) == "bundle 'keys' must be a list"
    with pytest.raises(InvalidBundle) as info:
        TrustBundle.from_json("example.org", b"{")
    assert str(info.value) == "bundle is not valid JSON"
    with pytest.raises(InvalidBundle) as info:
        TrustBundle.from_json("example.org", b"[1]")
    assert str(info.value) == "bundle must be a JSON object"


def test_ignored_entries_do_not_stop_the_keys_after_them(keys: Any, jwk_of: Any) -> None:
    doc = {
        "keys": [
            jwk_of(keys.other, "x1", "x509-svid"),  # another use: ignored
            jwk_of(keys.ec256, "k1", "jwt-svid"),
            jwk_of(keys.wit, "w1", "wit-svid"),
        ]
    }
    bundle = TrustBundle.from_dict("example.org", doc)
    assert [k.kid for k in bundle.jwt_keys] == ["k1"]
    assert bundle.keys_for("jwt-svid") == bundle.jwt_keys
    assert [k.kid for k in bundle.keys_for("wit-svid")] == ["w1"]


def test_skipped_keys_record_their_use_and_a_string_kid_only(
    keys: Any, jwk_of: Any, caplog: pytest.LogCaptureFixture
) -> None:
    doc = {
        "keys": [
            {**jwk_of(keys.wit, None, "wit-svid"), "kid": 7},  # non-string kid
            {**jwk_of(keys.ec256, "d", "jwt-svid")},
            {**jwk_of(keys.other, "d", "jwt-svid")},  # duplicate kid
        ]
    }
    with caplog.at_level(logging.WARNING, logger="tether.identity"):
        bundle = TrustBundle.from_dict("example.org", doc)
    assert bundle.skipped == (
        SkippedKey(0, None, "wit-svid", "key 'kid' must be a non-empty string"),
        SkippedKey(1, "d", "jwt-svid", "duplicate jwt-svid kid"),
        SkippedKey(2, "d", "jwt-svid", "duplicate jwt-svid kid"),
    )
    assert caplog.messages == [
        "bundle for example.org: skipped 3 unusable key(s): "
        "keys[0]: key 'kid' must be a non-empty string; "
        "keys[1] (kid 'd'): duplicate jwt-svid kid; keys[2] (kid 'd'): duplicate jwt-svid kid"
    ]


def test_digest_is_sha256_of_the_sorted_compact_document(keys: Any, jwk_of: Any) -> None:
    """``digest`` identifies content, not layout: member order does not change it, and it
    equals the SHA-256 of the sorted, whitespace-free JSON (what ``jq -cS`` prints), so an
    operator can compare it with a digest computed elsewhere."""
    key = jwk_of(keys.ec256, "k1", "jwt-svid")
    doc = {"spiffe_sequence": 2, "keys": [key]}
    reordered = {"keys": [dict(reversed(list(key.items())))], "spiffe_sequence": 2}
    a = TrustBundle.from_dict("example.org", doc)
    b = TrustBundle.from_dict("example.org", reordered)
    assert a.digest == b.digest
    compact = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert a.digest == hashlib.sha256(compact.encode()).hexdigest()


def test_members_we_do_not_read_may_hold_any_python_value() -> None:
    """``from_dict`` takes an already-parsed document; extra members are not interpreted,
    so a value JSON cannot encode (a datetime from a YAML loader) does not break it."""
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    bundle = TrustBundle.from_dict("example.org", {"keys": [], "x-published": when})
    assert bundle.is_empty and len(bundle.digest) == 64


def test_equal_sequence_with_new_content_is_installed(keys: Any, jwk_of: Any) -> None:
    """Only a *lower* ``spiffe_sequence`` is a rollback; a publisher that changed keys
    without bumping it is followed, and a lower one is refused with both numbers named."""
    first = TrustBundle.from_dict("example.org", {"keys": [], "spiffe_sequence": 4})
    same_seq = TrustBundle.from_dict(
        "example.org", {"keys": [jwk_of(keys.ec256, "k1", "jwt-svid")], "spiffe_sequence": 4}
    )
    bundles = BundleSet([first])
    assert bundles.update(same_seq)
    assert bundles.get("example.org") is same_seq
    older = TrustBundle.from_dict("example.org", {"keys": [], "spiffe_sequence": 3})
    with pytest.raises(StaleBundle) as info:
        bundles.update(older)
    assert str(info.value) == "bundle for 'example.org' has sequence 3, older than current 4"


# ------------------------------------------------------------------ file source


def test_file_source_defaults_and_broken_file_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bundle.json"
    path.write_text("{not json")
    source = FileBundleSource(path, "example.org", BundleSet())
    assert source.poll_interval == 1.0
    assert source.last_error is None
    with caplog.at_level(logging.WARNING, logger="tether.identity"):
        assert not source.refresh()
        assert not source.refresh()  # same stamp: not re-read, not re-reported
    assert caplog.messages == [
        "bundle file refresh for example.org failed: bundle is not valid JSON"
    ]
    assert isinstance(source.last_error, InvalidBundle)


# ------------------------------------------------------------------ HTTP source


def test_http_source_defaults_verify_tls_and_accept_https() -> None:
    source = HttpBundleSource("https://bundles.example.org/b", "example.org", BundleSet())
    assert source.verify is True  # TLS verification is on unless the caller says otherwise
    assert (source.default_refresh, source.retry_interval, source.min_refresh) == (300, 10, 1)
    assert (source.jitter, source.timeout) == (0.1, 10.0)
    assert source.last_error is None and source.last_success is None
    custom = HttpBundleSource(
        "http://127.0.0.1/b", "example.org", BundleSet(), verify="/ca.pem", timeout=2.5
    )
    assert (custom.verify, custom.timeout) == ("/ca.pem", 2.5)
    with pytest.raises(ValueError) as info:
        HttpBundleSource("ftp://x/b", "example.org", BundleSet())
    assert str(info.value) == "bundle endpoint URL must be https:// (or http:// for local use)"


class _Endpoint:
    """127.0.0.1 server answering every GET with ``status``, ``headers`` and ``body``,
    recording the request headers it saw."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}
        self.body = b""
        self.seen: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.seen.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(owner.status)
                for name, value in owner.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str = "/bundle") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def endpoint() -> Iterator[_Endpoint]:
    srv = _Endpoint()
    yield srv
    srv.server.shutdown()
    srv.server.server_close()


@pytest.mark.anyio
async def test_http_source_refuses_redirects(endpoint: _Endpoint) -> None:
    """A redirect could move trust to a host the operator never configured: refused, and
    the twin without a redirect loads."""
    endpoint.status = 302
    endpoint.headers = {"location": endpoint.url("/elsewhere")}
    bundles = BundleSet()
    source = HttpBundleSource(endpoint.url(), "example.org", bundles)
    assert not await source.refresh()
    assert str(source.last_error) == "bundle endpoint returned HTTP 302"
    assert len(endpoint.seen) == 1  # the redirect was not followed
    endpoint.status, endpoint.headers, endpoint.body = 200, {}, b'{"keys": []}'
    assert await source.refresh()
    assert "example.org" in bundles
    assert endpoint.seen[-1]["accept"] == "application/json"


@pytest.mark.anyio
async def test_http_source_reads_multi_chunk_bodies_up_to_the_limit(
    endpoint: _Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint.body = json.dumps({"keys": [], "padding": "x" * 300_000}).encode()
    bundles = BundleSet()
    exact = HttpBundleSource(endpoint.url(), "example.org", bundles, max_bytes=len(endpoint.body))
    assert await exact.refresh()  # a body of exactly max_bytes is allowed
    assert bundles.get("example.org") is not None
    small = HttpBundleSource(endpoint.url(), "example.org", bundles, max_bytes=1000)
    with caplog.at_level(logging.WARNING, logger="tether.identity"):
        assert not await small.refresh()
    assert caplog.messages == [
        "bundle endpoint refresh for example.org failed: "
        "InvalidBundle: bundle larger than 1000 bytes"
    ]


def _self_signed_localhost(tmp_path: Path) -> tuple[Path, Path]:
    """A throw-away CA-less certificate for 127.0.0.1 (its own trust anchor)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365 * 30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.anyio
async def test_https_source_verifies_the_endpoint_certificate(
    endpoint: _Endpoint, tmp_path: Path
) -> None:
    """The endpoint is authenticated by TLS: an unknown certificate is refused by default,
    and the same endpoint loads once its CA is given as ``verify``."""
    import ssl

    cert, key = _self_signed_localhost(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    endpoint.server.socket = context.wrap_socket(endpoint.server.socket, server_side=True)
    endpoint.body = b'{"keys": []}'
    url = endpoint.url().replace("http://", "https://")
    default = HttpBundleSource(url, "example.org", BundleSet())
    assert not await default.refresh()
    assert type(default.last_error).__name__ == "ConnectError"  # the TLS handshake failed
    bundles = BundleSet()
    ca = ssl.create_default_context(cafile=str(cert))
    trusting = HttpBundleSource(url, "example.org", bundles, verify=ca)
    assert await trusting.refresh(), trusting.last_error
    assert "example.org" in bundles


@pytest.mark.anyio
async def test_http_source_gives_up_on_a_silent_endpoint(tmp_path: Path) -> None:
    """A server that accepts but never answers costs one ``timeout``, then the refresh
    fails (the last good bundle stays); the fail-safe only stops a hung test."""
    import socket

    import anyio

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/bundle"
        source = HttpBundleSource(url, "example.org", BundleSet(), timeout=0.2)
        with anyio.fail_after(4):
            assert not await source.refresh()
        assert "Timeout" in type(source.last_error).__name__
    finally:
        listener.close()
