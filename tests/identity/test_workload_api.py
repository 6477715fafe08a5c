"""The Workload API client against a fake agent serving the official proto on a Unix socket."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.identity.conftest import NOW, Keys
from tests.support import FakeClock
from tether.identity import BundleSet, InvalidSignature, JwtSvidVerifier, UnknownKey
from tether.identity._workload import workload_pb2 as pb
from tether.identity._workload import workload_pb2_grpc as pb_grpc
from tether.identity.workload_api import (
    ENDPOINT_ENV,
    InvalidWorkloadApiResponse,
    WorkloadApiBundleSource,
    WorkloadApiClient,
    WorkloadApiDenied,
    WorkloadApiError,
    WorkloadApiSvidSource,
    WorkloadApiUnavailable,
    endpoint_target,
)

pytestmark = pytest.mark.anyio

DOMAIN = "spiffe://example.org"
AGENT_ID = "spiffe://example.org/orchestrator"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """grpcio's asyncio API runs on asyncio only. Module scope: anyio then runs every
    test here on one event loop, so grpc's process-wide poller never delivers a late
    completion to a loop an earlier test already closed ("Event loop is closed")."""
    return "asyncio"


class FakeAgent(pb_grpc.SpiffeWorkloadAPIServicer):
    """Serves what the test queues; rejects calls without the security header, as SPIRE does."""

    def __init__(self, forge: Callable[..., str], key: ec.EllipticCurvePrivateKey) -> None:
        self.bundle_updates: asyncio.Queue[dict[str, bytes] | grpc.StatusCode] = asyncio.Queue()
        self.forge = forge
        self.key = key
        self.svid_calls = 0
        self.exp = int(NOW) + 600

    async def _require_header(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if dict(context.invocation_metadata() or ()).get("workload.spiffe.io") != "true":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing")

    async def FetchJWTBundles(
        self, request: pb.JWTBundlesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.JWTBundlesResponse]:
        await self._require_header(context)
        while True:
            item = await self.bundle_updates.get()
            if isinstance(item, grpc.StatusCode):
                await context.abort(item, "test says so")
            else:
                yield pb.JWTBundlesResponse(bundles=item)

    async def FetchJWTSVID(
        self, request: pb.JWTSVIDRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.JWTSVIDResponse:
        await self._require_header(context)
        self.svid_calls += 1
        claims = {"sub": AGENT_ID, "aud": list(request.audience), "exp": self.exp}
        token = self.forge({"alg": "ES256", "kid": "k1", "typ": "JWT"}, claims, self.key)
        return pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id=AGENT_ID, svid=token)])

    async def ValidateJWTSVID(
        self, request: pb.ValidateJWTSVIDRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ValidateJWTSVIDResponse:
        await self._require_header(context)
        response = pb.ValidateJWTSVIDResponse(spiffe_id=AGENT_ID)
        response.claims.update({"aud": [request.audience]})
        return response


class AgentServer:
    def __init__(self, socket_path: Path, agent: FakeAgent) -> None:
        self.path = socket_path
        self.agent = agent
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self._server = grpc.aio.server()
        pb_grpc.add_SpiffeWorkloadAPIServicer_to_server(self.agent, self._server)  # type: ignore[no-untyped-call]
        self._server.add_insecure_port(f"unix:{self.path}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="wl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(forge: Callable[..., str], keys: Keys) -> FakeAgent:
    return FakeAgent(forge, keys.ec256)


@pytest.fixture
async def server(socket_dir: Path, agent: FakeAgent) -> AsyncIterator[AgentServer]:
    srv = AgentServer(socket_dir / "agent.sock", agent)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def client(socket_dir: Path) -> AsyncIterator[WorkloadApiClient]:
    async with WorkloadApiClient(f"unix://{socket_dir / 'agent.sock'}", timeout=2) as c:
        yield c


def jwks(jwk_of: Callable[..., dict[str, Any]], *pairs: tuple[Any, str], seq: int = 1) -> bytes:
    """A Workload API JWT bundle: a plain JWKS (keys without ``use``)."""
    keys = []
    for key, kid in pairs:
        jwk = jwk_of(key, kid, "jwt-svid")
        del jwk["use"]
        keys.append(jwk)
    return json.dumps({"keys": keys, "spiffe_sequence": seq}).encode()


async def wait_until(condition: Callable[[], bool], limit: float = 20.0) -> None:
    """Poll (the deadline only stops a hung test; nothing here measures speed)."""
    with anyio.fail_after(limit):
        while not condition():
            await anyio.sleep(0.01)


def quick(bundles: BundleSet, client: WorkloadApiClient) -> WorkloadApiBundleSource:
    return WorkloadApiBundleSource(bundles, client, backoff=0.01, max_backoff=0.05, rng=lambda: 1)


@asynccontextmanager
async def following(
    source: WorkloadApiBundleSource, agent: FakeAgent, first: dict[str, bytes]
) -> AsyncIterator[None]:
    """Run ``source`` against ``agent`` (which first sends ``first``) for the block's length."""
    async with anyio.create_task_group() as tg:
        await agent.bundle_updates.put(first)
        await tg.start(source.run)
        yield
        tg.cancel_scope.cancel()


# ----------------------------------------------------------------------------- addresses


def test_endpoint_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    assert endpoint_target("unix:///run/spire/agent.sock") == "unix:/run/spire/agent.sock"
    assert endpoint_target("/run/spire/agent.sock") == "unix:/run/spire/agent.sock"
    assert endpoint_target("tcp://127.0.0.1:8081") == "127.0.0.1:8081"
    assert endpoint_target("tcp://[::1]:8081") == "[::1]:8081"
    monkeypatch.setenv(ENDPOINT_ENV, "unix:///from/env.sock")
    assert endpoint_target() == "unix:/from/env.sock"
    monkeypatch.delenv(ENDPOINT_ENV)
    with pytest.raises(WorkloadApiError, match=f"set {ENDPOINT_ENV}"):
        endpoint_target()


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("unix://host/agent.sock", "no authority"),
        ("unix:relative.sock", "absolute path"),
        ("tcp://spire-agent:8081", "IP address, not a name"),
        ("tcp://127.0.0.1", "ip:port only"),
        ("http://127.0.0.1:8081", "scheme must be unix or tcp"),
        ("unix:///a.sock?x=1", "must not have query"),
    ],
)
def test_bad_endpoint_addresses(address: str, rule: str) -> None:
    with pytest.raises(WorkloadApiError, match=rule):
        endpoint_target(address)


# ----------------------------------------------------------------------------- unary calls


async def test_security_header_is_sent(server: AgentServer, client: WorkloadApiClient) -> None:
    # The fake agent rejects a call without the header (the attack: SSRF can't set metadata)...
    async with grpc.aio.insecure_channel(client.target) as channel:
        bare = channel.unary_unary(
            "/SpiffeWorkloadAPI/FetchJWTSVID",
            request_serializer=pb.JWTSVIDRequest.SerializeToString,
            response_deserializer=pb.JWTSVIDResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bare(pb.JWTSVIDRequest(audience=["svc"]))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # ...and the client's identical call, with the header, is served.
    (svid,) = await client.fetch_jwt_svids(["svc"])
    assert svid.spiffe_id == AGENT_ID and svid.expires_at == NOW + 600
    assert svid.token not in repr(svid)


async def test_validate_jwt_svid(server: AgentServer, client: WorkloadApiClient) -> None:
    validated = await client.validate_jwt_svid("a.b.c", "svc")
    assert validated.spiffe_id == AGENT_ID and validated.claims == {"aud": ["svc"]}


async def test_svid_source_caches_until_the_refresh_point(
    server: AgentServer, client: WorkloadApiClient, agent: FakeAgent
) -> None:
    clock = FakeClock(NOW)
    source = WorkloadApiSvidSource(client, refresh_before=0.5, clock=clock)
    first = await source.token("svc")
    clock.advance(299)  # half of the 600 s lifetime not yet used up
    assert await source.token("svc") == first and agent.svid_calls == 1
    clock.advance(2)
    await source.token("svc")
    assert agent.svid_calls == 2
    await source.token(["other"])  # another audience, another token
    assert agent.svid_calls == 3


async def test_missing_socket_is_a_typed_error(socket_dir: Path) -> None:
    async with WorkloadApiClient(f"unix://{socket_dir / 'absent.sock'}") as client:
        with pytest.raises(WorkloadApiUnavailable, match="no socket at that path"):
            await client.fetch_jwt_svids(["svc"])


async def test_server_gone_is_unavailable(socket_dir: Path, agent: FakeAgent) -> None:
    srv = AgentServer(socket_dir / "agent.sock", agent)
    await srv.start()
    await srv.stop()  # the socket file may stay behind, with nobody listening
    async with WorkloadApiClient(f"unix://{srv.path}", timeout=1) as client:
        with pytest.raises(WorkloadApiUnavailable):
            await client.fetch_jwt_svids(["svc"])


# ----------------------------------------------------------------------------- bundle stream


async def test_rotation_arrives_and_is_applied(
    server: AgentServer,
    client: WorkloadApiClient,
    agent: FakeAgent,
    keys: Keys,
    jwk_of: Callable[..., dict[str, Any]],
    forge: Callable[..., str],
    good_claims: dict[str, Any],
) -> None:
    bundles = BundleSet()
    source = quick(bundles, client)
    verifier = JwtSvidVerifier(bundles, ["svc"], clock=FakeClock(NOW))
    old = forge({"alg": "ES256", "kid": "k1"}, good_claims, keys.ec256)
    new = forge({"alg": "ES256", "kid": "k2"}, good_claims, keys.other)
    async with following(source, agent, {DOMAIN: jwks(jwk_of, (keys.ec256, "k1"), seq=1)}):
        assert verifier.verify(old).spiffe_id.trust_domain == "example.org"
        with pytest.raises(UnknownKey):
            verifier.verify(new)
        # Rotation: k2 introduced, k1 retired, in one complete message.
        await agent.bundle_updates.put({DOMAIN: jwks(jwk_of, (keys.other, "k2"), seq=2)})
        await wait_until(lambda: source.updates == 2)
        assert verifier.verify(new).spiffe_id.trust_domain == "example.org"
        with pytest.raises(UnknownKey):
            verifier.verify(old)


async def test_malformed_bundle_is_rejected_and_the_last_good_kept(
    server: AgentServer,
    client: WorkloadApiClient,
    agent: FakeAgent,
    keys: Keys,
    jwk_of: Callable[..., dict[str, Any]],
) -> None:
    bundles = BundleSet()
    source = quick(bundles, client)
    async with following(source, agent, {DOMAIN: jwks(jwk_of, (keys.ec256, "k1"))}):
        good = bundles.get("example.org")
        assert good is not None and good.jwt_key("k1") is not None
        await agent.bundle_updates.put({DOMAIN: b'{"keys": "not a list"}'})
        await wait_until(lambda: source.updates == 2)
        assert bundles.get("example.org") is good
        assert isinstance(source.last_error, InvalidWorkloadApiResponse)
        assert "kept the last good" in str(source.last_error)
        # An empty map violates a mandatory field: the message is discarded whole.
        await agent.bundle_updates.put({})
        await agent.bundle_updates.put({DOMAIN: jwks(jwk_of, (keys.other, "k2"), seq=3)})
        await wait_until(lambda: source.updates == 3)
        current = bundles.get("example.org")
        assert current is not None and current.jwt_key("k2") is not None


async def test_a_domain_left_out_of_a_message_is_unloaded(
    server: AgentServer,
    client: WorkloadApiClient,
    agent: FakeAgent,
    keys: Keys,
    jwk_of: Callable[..., dict[str, Any]],
) -> None:
    bundles = BundleSet()
    source = quick(bundles, client)
    both = {
        DOMAIN: jwks(jwk_of, (keys.ec256, "k1")),
        "spiffe://partner.org": jwks(jwk_of, (keys.other, "p1")),
    }
    async with following(source, agent, both):
        assert "partner.org" in bundles
        await agent.bundle_updates.put({DOMAIN: both[DOMAIN]})
        await wait_until(lambda: source.updates == 2)
        assert "partner.org" not in bundles and "example.org" in bundles


async def test_server_restart_mid_stream_reconnects(
    server: AgentServer,
    client: WorkloadApiClient,
    agent: FakeAgent,
    keys: Keys,
    jwk_of: Callable[..., dict[str, Any]],
) -> None:
    bundles = BundleSet()
    source = quick(bundles, client)
    async with following(source, agent, {DOMAIN: jwks(jwk_of, (keys.ec256, "k1"))}):
        kept = bundles.get("example.org")
        await server.stop()
        await wait_until(lambda: isinstance(source.last_error, WorkloadApiUnavailable))
        assert bundles.get("example.org") is kept  # the agent is away: keep the last good
        await agent.bundle_updates.put({DOMAIN: jwks(jwk_of, (keys.other, "k2"), seq=2)})
        await server.start()
        await wait_until(lambda: source.updates == 2)
        current = bundles.get("example.org")
        assert current is not None and current.jwt_key("k2") is not None
        assert source.reconnects >= 1 and source.last_error is None


async def test_source_waits_for_a_missing_socket(
    socket_dir: Path,
    agent: FakeAgent,
    keys: Keys,
    jwk_of: Callable[..., dict[str, Any]],
) -> None:
    bundles = BundleSet()
    async with WorkloadApiClient(f"unix://{socket_dir / 'agent.sock'}") as client:
        source = quick(bundles, client)
        async with anyio.create_task_group() as tg:
            await tg.start(source.run)  # starts (no hang) although nothing listens yet
            assert isinstance(source.last_error, WorkloadApiUnavailable)
            assert len(bundles) == 0
            srv = AgentServer(socket_dir / "agent.sock", agent)
            await agent.bundle_updates.put({DOMAIN: jwks(jwk_of, (keys.ec256, "k1"))})
            await srv.start()
            await wait_until(lambda: "example.org" in bundles)
            tg.cancel_scope.cancel()
        await srv.stop()


async def test_permission_denied_unloads_the_bundles(
    server: AgentServer,
    client: WorkloadApiClient,
    agent: FakeAgent,
    keys: Keys,
    jwk_of: Callable[..., dict[str, Any]],
) -> None:
    bundles = BundleSet()
    source = quick(bundles, client)
    async with following(source, agent, {DOMAIN: jwks(jwk_of, (keys.ec256, "k1"))}):
        await agent.bundle_updates.put(grpc.StatusCode.PERMISSION_DENIED)
        await wait_until(lambda: isinstance(source.last_error, WorkloadApiDenied))
        assert "example.org" not in bundles


async def test_invalid_argument_stops_the_source(
    server: AgentServer,
    client: WorkloadApiClient,
    agent: FakeAgent,
    keys: Keys,
    jwk_of: Callable[..., dict[str, Any]],
) -> None:
    source = quick(BundleSet(), client)
    await agent.bundle_updates.put({DOMAIN: jwks(jwk_of, (keys.ec256, "k1"))})
    await agent.bundle_updates.put(grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(WorkloadApiError, match="INVALID_ARGUMENT"):
        with anyio.fail_after(20):
            await source.run()


def test_wrong_key_use_is_not_trusted(keys: Keys, jwk_of: Callable[..., dict[str, Any]]) -> None:
    from tether.identity.workload_api import _jwt_bundle

    doc = {"keys": [jwk_of(keys.ec256, "k1", "wit-svid"), jwk_of(keys.other, "k2", "jwt-svid")]}
    bundle = _jwt_bundle(DOMAIN, json.dumps(doc).encode())
    assert bundle.jwt_key("k1") is None and bundle.wit_keys == ()
    assert bundle.jwt_key("k2") is not None


def test_invalid_signature_still_fails_after_normalising(
    keys: Keys, jwk_of: Callable[..., dict[str, Any]], forge: Callable[..., str]
) -> None:
    from tether.identity.workload_api import _jwt_bundle

    bundles = BundleSet([_jwt_bundle(DOMAIN, jwks(jwk_of, (keys.ec256, "k1")))])
    verifier = JwtSvidVerifier(bundles, ["svc"], clock=FakeClock(NOW))
    claims = {"sub": AGENT_ID, "aud": ["svc"], "exp": int(NOW) + 60}
    forged = forge({"alg": "ES256", "kid": "k1"}, claims, keys.attacker)
    with pytest.raises(InvalidSignature):
        verifier.verify(forged)
