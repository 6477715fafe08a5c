"""Trust bundles: parsing, federation, rotation, revocation, file and HTTP sources."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from tether.identity import (
    Authenticator,
    BundleSet,
    FileBundleSource,
    HttpBundleSource,
    InvalidBundle,
    LocalIssuer,
    StaleBundle,
    TrustBundle,
    UnknownKey,
    UntrustedDomain,
)

# ------------------------------------------------------------------ parsing


def test_keys_filtered_by_use_and_kty(keys: Any, jwk_of: Any) -> None:
    doc = {
        "keys": [
            jwk_of(keys.ec256, "k1", "jwt-svid"),
            jwk_of(keys.wit, None, "wit-svid"),  # WIT keys may omit kid
            jwk_of(keys.other, "x1", "x509-svid"),  # not ours: ignored
            {**jwk_of(keys.other, "u1", "jwt-svid"), "use": "enc"},  # unknown use
            {k: v for k, v in jwk_of(keys.other, "n1", "jwt-svid").items() if k != "use"},
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "kid": "ed",
                "use": "jwt-svid",
            },  # unsupported kty: ignored
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hs", "use": "jwt-svid"},  # never trusted
            {"kty": "EC", "crv": "P-256K", "x": "AA", "y": "AA", "kid": "c", "use": "jwt-svid"},
        ],
        "spiffe_sequence": 3,
        "spiffe_refresh_hint": 30,
    }
    bundle = TrustBundle.from_dict("example.org", doc)
    assert [k.kid for k in bundle.jwt_keys] == ["k1"]
    assert [k.kid for k in bundle.wit_keys] == [None]
    assert bundle.jwt_key("k1") is bundle.jwt_keys[0]
    assert bundle.jwt_key("hs") is None
    assert (bundle.sequence, bundle.refresh_hint) == (3, 30)
    assert not bundle.is_empty


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({}, "'keys' must be a list"),
        ({"keys": {}}, "'keys' must be a list"),
        ({"keys": [], "spiffe_sequence": -1}, "spiffe_sequence"),
        ({"keys": [], "spiffe_sequence": "1"}, "spiffe_sequence"),
        ({"keys": [], "spiffe_refresh_hint": True}, "spiffe_refresh_hint"),
    ],
)
def test_malformed_bundles_rejected(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidBundle, match=match):
        TrustBundle.from_dict("example.org", doc)


def test_unusable_keys_are_skipped_and_reported(keys: Any, jwk_of: Any) -> None:
    """Each defect costs its own key only; the rest of the bundle applies.

    SPIFFE JWT-SVID 6.1: "the ``kid`` parameter of each JWK entry MUST be set"; a key that
    breaks that, or any other per-key rule, cannot be used, but it must not keep the rest
    of a new bundle (and the removal of old keys it carries) from taking effect.
    """
    from jwt.algorithms import ECAlgorithm

    private = {**ECAlgorithm.to_jwk(keys.other, as_dict=True), "kid": "leak", "use": "jwt-svid"}
    doc = {
        "keys": [
            jwk_of(keys.ec256, "good", "jwt-svid"),
            jwk_of(keys.ec384, None, "jwt-svid"),  # no kid
            "x",  # not a JSON object
            {"kty": "EC", "crv": "P-256", "use": "jwt-svid", "kid": "bad"},  # no x/y
            private,  # private key material: a leaked key is never trusted
            jwk_of(keys.rsa, "dup", "jwt-svid"),
            jwk_of(keys.other, "dup", "jwt-svid"),  # duplicate kid: neither is trusted
            {**jwk_of(keys.ec521, "none", "jwt-svid"), "alg": "none"},
            {**jwk_of(keys.ec521, "pin", "jwt-svid"), "alg": "ES256"},  # P-521 is ES512
            jwk_of(keys.wit, "w1", "wit-svid"),
        ],
        "spiffe_sequence": 7,
    }
    bundle = TrustBundle.from_dict("example.org", doc)
    assert [k.kid for k in bundle.jwt_keys] == ["good"]
    assert [k.kid for k in bundle.wit_keys] == ["w1"]
    assert bundle.jwt_key("dup") is None
    reasons = {(s.index, s.kid): s.reason for s in bundle.skipped}
    assert reasons == {
        (1, None): "jwt-svid key has no 'kid'",
        (2, None): "a key is not a JSON object",
        (3, "bad"): "malformed EC key",
        (4, "leak"): "a key contains private key material",
        (5, "dup"): "duplicate jwt-svid kid",
        (6, "dup"): "duplicate jwt-svid kid",
        (7, "none"): "key 'alg' 'none' is not an allowed signature algorithm",
        (8, "pin"): "key 'alg' 'ES256' does not fit the key type or curve",
    }
    assert str(bundle.skipped[0]) == "keys[1]: jwt-svid key has no 'kid'"
    assert str(bundle.skipped[1]) == "keys[2]: a key is not a JSON object"
    assert str(bundle.skipped[2]) == "keys[3] (kid 'bad'): malformed EC key"


def test_bundle_with_no_usable_key_distrusts_the_domain(keys: Any, jwk_of: Any) -> None:
    """SPIFFE bundle 4.1.3: "Clients may also encounter bundles which after processing yield
    no usable keys ... workloads MUST treat all SVIDs from the trust domain as invalid and
    untrusted."
    """
    doc = {"keys": [jwk_of(keys.ec256, None, "jwt-svid")]}
    bundle = TrustBundle.from_dict("example.org", doc)
    assert bundle.is_empty and len(bundle.skipped) == 1


def test_json_errors_and_duplicate_members() -> None:
    with pytest.raises(InvalidBundle, match="not valid JSON"):
        TrustBundle.from_json("example.org", b"{nope")
    with pytest.raises(InvalidBundle, match="duplicate JSON member"):
        TrustBundle.from_json("example.org", '{"keys": [], "keys": []}')
    with pytest.raises(InvalidBundle, match="JSON object"):
        TrustBundle.from_json("example.org", "[]")
    with pytest.raises(InvalidBundle, match="invalid trust domain"):
        TrustBundle.from_dict("Example.ORG", {"keys": []})


def test_empty_keys_is_valid_and_distrusts() -> None:
    bundle = TrustBundle.from_dict("spiffe://example.org", {"keys": []})
    assert bundle.trust_domain == "example.org"
    assert bundle.is_empty


# ------------------------------------------------------------------ BundleSet


def test_bundle_set_rejects_duplicate_domains(bundle_docs: dict[str, Any]) -> None:
    b = TrustBundle.from_dict("example.org", bundle_docs["example.org"])
    with pytest.raises(InvalidBundle, match="duplicate trust domain"):
        BundleSet([b, TrustBundle.from_dict("example.org", {"keys": []})])
    with pytest.raises(InvalidBundle, match="duplicate trust domain"):
        BundleSet.from_dict({"example.org": {"keys": []}, "spiffe://example.org": {"keys": []}})
    with pytest.raises(InvalidBundle, match="duplicate JSON member"):
        BundleSet.from_json('{"a.org": {"keys": []}, "a.org": {"keys": []}}')
    bs = BundleSet([b])
    with pytest.raises(InvalidBundle):
        bs.add(TrustBundle.from_dict("example.org", {"keys": []}))


def test_bundle_set_federation(bundles: BundleSet) -> None:
    assert sorted(bundles) == ["example.org", "other.org", "revoked.org"]
    assert len(bundles) == 3
    assert "other.org" in bundles
    bundles.remove("other.org")
    assert bundles.get("other.org") is None


def test_update_keeps_identical_and_refuses_lower_sequence(bundle_docs: dict[str, Any]) -> None:
    bs = BundleSet.from_dict(bundle_docs)
    current = bs.get("example.org")
    assert not bs.update(TrustBundle.from_dict("example.org", bundle_docs["example.org"]))
    assert bs.get("example.org") is current  # caches stay warm on no-op refresh
    older = {**bundle_docs["example.org"], "keys": [], "spiffe_sequence": 4}
    with pytest.raises(StaleBundle):
        bs.update(TrustBundle.from_dict("example.org", older))
    assert bs.get("example.org") is current
    newer = {**bundle_docs["example.org"], "keys": [], "spiffe_sequence": 6}
    assert bs.update(TrustBundle.from_dict("example.org", newer))
    assert bs.get("example.org") is not current


# ------------------------------------------------------------------ rotation / revocation


def test_rotation_old_tokens_live_until_retired(clock: Any) -> None:
    issuer = LocalIssuer("example.org", clock=clock)
    bundles = issuer.bundle_set()
    auth = Authenticator(bundles, "svc", clock=clock)
    old_kid = issuer.current_kid
    old_token = issuer.mint_svid("/a", "svc")
    assert auth.authenticate_sync(old_token).spiffe_id.path == "/a"

    new_kid = issuer.rotate()
    assert new_kid != old_kid
    assert issuer.bundle()["spiffe_sequence"] == 2
    assert bundles.update(issuer.trust_bundle())
    new_token = issuer.mint_svid("/a", "svc")
    auth.clear_cache()
    assert auth.authenticate_sync(old_token).token_id  # old key still published
    assert auth.authenticate_sync(new_token).token_id

    issuer.retire_old_keys()
    assert issuer.bundle()["spiffe_sequence"] == 3
    assert bundles.update(issuer.trust_bundle())
    with pytest.raises(UnknownKey):
        auth.authenticate_sync(old_token)  # even though it was cached
    assert auth.authenticate_sync(new_token).token_id


def test_empty_bundle_revokes_cached_tokens(clock: Any) -> None:
    issuer = LocalIssuer("example.org", clock=clock)
    bundles = issuer.bundle_set()
    auth = Authenticator(bundles, "svc", clock=clock)
    token = issuer.mint_svid("/a", "svc")
    auth.authenticate_sync(token)
    bundles.update(TrustBundle.from_dict("example.org", {"keys": [], "spiffe_sequence": 99}))
    with pytest.raises(UntrustedDomain):
        auth.authenticate_sync(token)


# ------------------------------------------------------------------ file source


def _write(path: Path, doc: dict[str, Any], stamp: int) -> None:
    path.write_text(json.dumps(doc))
    # Force a distinct mtime: filesystems with coarse timestamps would hide the change.
    os.utime(path, ns=(stamp, stamp))


def test_file_source_rereads_on_change_and_keeps_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    issuer = LocalIssuer("example.org")
    path = tmp_path / "bundle.json"
    bundles = BundleSet()
    source = FileBundleSource(path, "example.org", bundles)

    assert not source.refresh()  # missing file: reported, nothing installed
    assert isinstance(source.last_error, OSError)
    assert bundles.get("example.org") is None

    _write(path, issuer.bundle(), 1_000_000_000)
    assert source.refresh()
    assert source.last_error is None
    first = bundles.get("example.org")
    assert first is not None and first.sequence == 1
    assert not source.refresh()  # unchanged stat: no re-read
    assert bundles.get("example.org") is first

    path.write_text("{broken")
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    with caplog.at_level(logging.WARNING, logger="tether.identity"):
        assert not source.refresh()
    assert isinstance(source.last_error, InvalidBundle)
    assert "refresh for example.org failed" in caplog.text
    assert bundles.get("example.org") is first  # last good bundle kept

    issuer.rotate()
    _write(path, issuer.bundle(), 3_000_000_000)
    assert source.refresh()
    assert source.last_error is None
    current = bundles.get("example.org")
    assert current is not None and current.sequence == 2


@pytest.mark.anyio
async def test_file_source_run_loop_picks_up_changes(tmp_path: Path) -> None:
    issuer = LocalIssuer("example.org")
    path = tmp_path / "bundle.json"
    _write(path, issuer.bundle(), 1_000_000_000)
    bundles = BundleSet()
    source = FileBundleSource(path, "example.org", bundles, poll_interval=0.01)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        await _wait_for(lambda: bundles.get("example.org") is not None)
        issuer.rotate()
        _write(path, issuer.bundle(), 2_000_000_000)
        await _wait_for(lambda: _seq(bundles) == 2)
        _stop(tg.cancel_scope)
    assert _seq(bundles) == 2


def _seq(bundles: BundleSet) -> int | None:
    b = bundles.get("example.org")
    return b.sequence if b else None


def _stop(scope: anyio.CancelScope) -> None:
    # Expire the deadline rather than call cancel(): same effect on every backend, and it
    # also works with trio releases older than the one anyio's cancel(reason) expects.
    scope.deadline = -math.inf


async def _wait_for(cond: Any, limit: float = 5.0) -> None:
    # A generous failsafe, not a timing assertion: the loop normally ends in milliseconds.
    with anyio.fail_after(limit):
        while not cond():
            await anyio.sleep(0.005)


# ------------------------------------------------------------------ HTTP source


class _BundleServer:
    """A stdlib HTTP server on 127.0.0.1 serving ``self.doc``; can go down and come back."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"keys": []}
        self.status = 200
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(owner.doc).encode()
                self.send_response(owner.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bundle"


@pytest.fixture
def server() -> Iterator[_BundleServer]:
    srv = _BundleServer()
    srv.start()
    yield srv
    if srv._server is not None:
        srv.stop()


@pytest.mark.anyio
async def test_http_source_down_and_back(
    server: _BundleServer, caplog: pytest.LogCaptureFixture
) -> None:
    issuer = LocalIssuer("example.org")
    server.doc = issuer.bundle()
    bundles = BundleSet()
    source = HttpBundleSource(server.url, "example.org", bundles, retry_interval=2.0, jitter=0)
    auth = Authenticator(bundles, "svc")
    token = issuer.mint_svid("/a", "svc")

    assert await source.refresh()
    assert source.last_error is None and source.last_success is not None
    assert auth.authenticate_sync(token).spiffe_id.path == "/a"
    assert source.next_delay() == 60  # spiffe_refresh_hint, no jitter

    server.stop()  # endpoint down
    with caplog.at_level(logging.WARNING, logger="tether.identity"):
        assert not await source.refresh()
    assert source.last_error is not None
    assert "refresh for example.org failed" in caplog.text
    assert source.next_delay() == 2.0  # retries sooner while failing
    auth.clear_cache()
    assert auth.authenticate_sync(token).spiffe_id.path == "/a"  # last good bundle kept

    issuer.rotate()
    issuer.retire_old_keys()
    server.doc = issuer.bundle()
    server.start()  # back, same port, with a rotated bundle
    assert await source.refresh()
    assert source.last_error is None
    assert auth.authenticate_sync(issuer.mint_svid("/b", "svc")).spiffe_id.path == "/b"
    with pytest.raises(UnknownKey):
        auth.authenticate_sync(token)  # the new bundle dropped the old key


@pytest.mark.anyio
async def test_http_source_refuses_rollback_and_bad_responses(server: _BundleServer) -> None:
    issuer = LocalIssuer("example.org")
    issuer.rotate()
    server.doc = issuer.bundle()  # sequence 2
    bundles = BundleSet()
    source = HttpBundleSource(server.url, "example.org", bundles, max_bytes=4096)
    assert await source.refresh()
    good = bundles.get("example.org")

    server.doc = {**issuer.bundle(), "keys": [], "spiffe_sequence": 1}
    assert not await source.refresh()
    assert isinstance(source.last_error, StaleBundle)
    assert bundles.get("example.org") is good

    server.doc = {"keys": [], "padding": "x" * 10_000}
    assert not await source.refresh()
    assert isinstance(source.last_error, InvalidBundle)
    assert "larger than" in str(source.last_error)
    assert bundles.get("example.org") is good

    server.doc = {"keys": "nope"}
    assert not await source.refresh()
    assert isinstance(source.last_error, InvalidBundle)
    assert bundles.get("example.org") is good

    server.doc = issuer.bundle()
    server.status = 503
    assert not await source.refresh()
    assert "HTTP 503" in str(source.last_error)
    assert bundles.get("example.org") is good


def test_http_source_requires_http_url() -> None:
    with pytest.raises(ValueError, match="https://"):
        HttpBundleSource("file:///etc/bundle.json", "example.org", BundleSet())


@pytest.mark.anyio
async def test_http_source_run_loop_follows_refresh_hint(server: _BundleServer) -> None:
    issuer = LocalIssuer("example.org", refresh_hint=0)
    server.doc = issuer.bundle()
    bundles = BundleSet()
    source = HttpBundleSource(
        server.url, "example.org", bundles, default_refresh=0.01, min_refresh=0.01
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        await _wait_for(lambda: _seq(bundles) == 1)
        issuer.rotate()
        server.doc = issuer.bundle()
        await _wait_for(lambda: _seq(bundles) == 2)
        _stop(tg.cancel_scope)
    assert _seq(bundles) == 2


def test_next_delay_jitter_refreshes_early() -> None:
    bundles = BundleSet([TrustBundle.from_dict("a.org", {"keys": [], "spiffe_refresh_hint": 100})])
    early = HttpBundleSource("http://x", "a.org", bundles, jitter=0.2, rng=lambda: 1.0)
    late = HttpBundleSource("http://x", "a.org", bundles, jitter=0.2, rng=lambda: 0.0)
    assert early.next_delay() == pytest.approx(80.0)
    assert late.next_delay() == pytest.approx(100.0)
    none = HttpBundleSource("http://x", "b.org", bundles, default_refresh=7, jitter=0)
    assert none.next_delay() == 7
