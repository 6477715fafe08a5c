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
        # A bundle map is sent, a status aborts the stream, None ends it cleanly.
        self.bundle_updates: asyncio.Queue[dict[str, bytes] | grpc.StatusCode | None] = (
            asyncio.Queue()
        )
        self.forge = forge
        self.key = key
        self.svid_calls = 0
        self.exp = int(NOW) + 600
        self.svid_requests: list[pb.JWTSVIDRequest] = []
        self.validate_requests: list[pb.ValidateJWTSVIDRequest] = []
        # What FetchJWTSVID answers instead of a good SVID, when set.
        self.svids: list[pb.JWTSVID] | None = None
        self.svid_abort: grpc.StatusCode | None = None
        self.svid_hangs = False
        self.validate_id = AGENT_ID

    async def _require_header(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if dict(context.invocation_metadata() or ()).get("workload.spiffe.io") != "true":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing")

    async def FetchJWTBundles(
        self, request: pb.JWTBundlesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.JWTBundlesResponse]:
        await self._require_header(context)
        while True:
            item = await self.bundle_updates.get()
            if item is None:
                return
            if isinstance(item, grpc.StatusCode):
                await context.abort(item, "test says so")
            else:
                yield pb.JWTBundlesResponse(bundles=item)

    async def FetchJWTSVID(
        self, request: pb.JWTSVIDRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.JWTSVIDResponse:
        await self._require_header(context)
        self.svid_calls += 1
        self.svid_requests.append(request)
        if self.svid_abort is not None:
            await context.abort(self.svid_abort, "agent says no")
        if self.svid_hangs:
            await asyncio.Event().wait()
        if self.svids is not None:
            return pb.JWTSVIDResponse(svids=self.svids)
        claims = {"sub": AGENT_ID, "aud": list(request.audience), "exp": self.exp}
        token = self.forge({"alg": "ES256", "kid": "k1", "typ": "JWT"}, claims, self.key)
        return pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id=AGENT_ID, svid=token)])

    async def ValidateJWTSVID(
        self, request: pb.ValidateJWTSVIDRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ValidateJWTSVIDResponse:
        await self._require_header(context)
        self.validate_requests.append(request)
        response = pb.ValidateJWTSVIDResponse(spiffe_id=self.validate_id)
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


async def test_stream_failures_are_logged_with_what_happened(
    server: AgentServer,
    client: WorkloadApiClient,
    agent: FakeAgent,
    keys: Keys,
    jwk_of: Callable[..., dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An operator reading the log sees each failure once, as raised, and whether the
    domain's bundles were unloaded (denied) or kept (unavailable)."""
    source = quick(BundleSet(), client)
    with caplog.at_level("WARNING", logger="tether.identity"):
        async with following(source, agent, {DOMAIN: jwks(jwk_of, (keys.ec256, "k1"))}):
            await agent.bundle_updates.put(grpc.StatusCode.PERMISSION_DENIED)
            await wait_until(lambda: isinstance(source.last_error, WorkloadApiDenied))
            denied = str(source.last_error)
            await agent.bundle_updates.put(grpc.StatusCode.UNAVAILABLE)
            await wait_until(lambda: not isinstance(source.last_error, WorkloadApiDenied))
            unavailable = str(source.last_error)
    assert f"{denied}: unloading its bundles" in caplog.messages
    assert unavailable in caplog.messages
    assert "UNAVAILABLE" in unavailable


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


# ----------------------------------------------------------------------------- contracts
# Smaller promises, written against mutmut's survivors (issue 15).


async def test_fetch_sends_the_audience_and_identity_asked_for(
    server: AgentServer, client: WorkloadApiClient, agent: FakeAgent
) -> None:
    bad_audiences: list[Any] = ["svc", [], ()]
    for bad in bad_audiences:
        with pytest.raises(ValueError, match=r"^audience must be a non-empty sequence of strings$"):
            await client.fetch_jwt_svids(bad)
    assert agent.svid_calls == 0
    await client.fetch_jwt_svids(["a", "b"])
    await client.fetch_jwt_svids(["c"], AGENT_ID)
    first, second = agent.svid_requests
    assert (list(first.audience), first.spiffe_id) == (["a", "b"], "")
    assert (list(second.audience), second.spiffe_id) == (["c"], AGENT_ID)


async def test_malformed_svid_answers_are_named(
    server: AgentServer, client: WorkloadApiClient, agent: FakeAgent
) -> None:
    where = f"Workload API {client.target}"
    cases = [
        ([], f"{where}: no JWT-SVIDs returned"),
        (
            [pb.JWTSVID(spiffe_id=AGENT_ID, svid="")],
            f"{where}: JWT-SVID without spiffe_id or token",
        ),
        ([pb.JWTSVID(spiffe_id="", svid="a.b.c")], f"{where}: JWT-SVID without spiffe_id or token"),
        (
            [pb.JWTSVID(spiffe_id=AGENT_ID, svid="a.b.c")],
            f"{where}: JWT-SVID for {AGENT_ID} is malformed",
        ),
    ]
    for svids, message in cases:
        agent.svids = svids
        with pytest.raises(InvalidWorkloadApiResponse) as e:
            await client.fetch_jwt_svids(["svc"])
        assert str(e.value) == message


async def test_svid_hint_is_kept(
    server: AgentServer,
    client: WorkloadApiClient,
    agent: FakeAgent,
    forge: Callable[..., str],
    keys: Keys,
) -> None:
    token = forge({"alg": "ES256"}, {"sub": AGENT_ID, "exp": agent.exp}, keys.ec256)
    agent.svids = [pb.JWTSVID(spiffe_id=AGENT_ID, svid=token, hint="internal")]
    (svid,) = await client.fetch_jwt_svids(["svc"])
    assert (svid.spiffe_id, svid.token, svid.hint, svid.expires_at) == (
        AGENT_ID,
        token,
        "internal",
        agent.exp,
    )


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, WorkloadApiDenied),
        (grpc.StatusCode.UNAVAILABLE, WorkloadApiUnavailable),
        (grpc.StatusCode.UNIMPLEMENTED, WorkloadApiError),
    ],
)
async def test_call_errors_say_what_failed(
    server: AgentServer, client: WorkloadApiClient, agent: FakeAgent, code: Any, error: Any
) -> None:
    agent.svid_abort = code
    with pytest.raises(error) as e:
        await client.fetch_jwt_svids(["svc"])
    assert type(e.value) is error
    assert str(e.value) == f"Workload API {client.target} FetchJWTSVID: {code.name}: agent says no"


async def test_a_hung_agent_times_out(
    socket_dir: Path, server: AgentServer, agent: FakeAgent
) -> None:
    agent.svid_hangs = True
    async with WorkloadApiClient(f"unix://{server.path}", timeout=0.2) as client:
        with anyio.fail_after(20):  # stops a hung test only
            with pytest.raises(WorkloadApiUnavailable, match="DEADLINE_EXCEEDED"):
                await client.fetch_jwt_svids(["svc"])


async def test_validate_sends_the_token_and_needs_an_identity_back(
    server: AgentServer, client: WorkloadApiClient, agent: FakeAgent
) -> None:
    await client.validate_jwt_svid("a.b.c", "svc")
    (req,) = agent.validate_requests
    assert (req.svid, req.audience) == ("a.b.c", "svc")
    agent.validate_id = ""
    with pytest.raises(InvalidWorkloadApiResponse) as e:
        await client.validate_jwt_svid("a.b.c", "svc")
    assert str(e.value) == f"Workload API {client.target}: no spiffe_id"


async def test_client_reopens_after_aclose(server: AgentServer, client: WorkloadApiClient) -> None:
    await client.fetch_jwt_svids(["svc"])
    await client.aclose()
    (svid,) = await client.fetch_jwt_svids(["svc"])
    assert svid.spiffe_id == AGENT_ID


def test_backoff_doubles_from_its_default_with_jitter_and_a_cap() -> None:
    client = WorkloadApiClient("unix:///nowhere.sock")
    low = WorkloadApiBundleSource(BundleSet(), client, rng=lambda: 0.0)
    high = WorkloadApiBundleSource(BundleSet(), client, rng=lambda: 1.0)
    assert (low.backoff, low.max_backoff) == (0.1, 30.0)
    assert [high.next_delay(a) for a in (0, 1, 3)] == [0.1, 0.2, 0.8]
    assert [low.next_delay(a) for a in (0, 1, 3)] == [0.05, 0.1, 0.4]
    half = WorkloadApiBundleSource(BundleSet(), client, rng=lambda: 0.5)
    assert half.next_delay(2) == 0.4 * 0.75
    assert high.next_delay(20) == 30.0 and low.next_delay(20) == 15.0
    uncapped = WorkloadApiBundleSource(
        BundleSet(), client, backoff=1.0, max_backoff=float("inf"), rng=lambda: 1.0
    )
    assert uncapped.next_delay(40) == 2.0**32  # the exponent stops growing at 32
    assert (low.reconnects, low.updates, low.last_error, low.managed) == (0, 0, None, set())


def test_apply_keeps_going_past_a_bad_domain_and_names_each(
    keys: Keys, jwk_of: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    client = WorkloadApiClient("unix:///nowhere.sock")
    bundles = BundleSet()
    source = WorkloadApiBundleSource(bundles, client)
    with pytest.raises(InvalidWorkloadApiResponse) as e:
        source.apply({})
    assert str(e.value) == f"Workload API {client.target}: JWTBundlesResponse without bundles"
    message = {
        "spiffe://bad-one.org": b"{",
        "spiffe://bad-two.org": b"[]",
        DOMAIN: jwks(jwk_of, (keys.ec256, "k1")),
    }
    with caplog.at_level("WARNING", logger="tether.identity"):
        source.apply(message)
    assert "example.org" in bundles
    text = str(source.last_error)
    assert text.startswith(
        f"Workload API {client.target}: rejected bundle(s), kept the last good: "
        "spiffe://bad-one.org: "
    )
    assert "; spiffe://bad-two.org: " in text
    assert text in caplog.messages


class _Recording(WorkloadApiBundleSource):
    """Records the attempt number of each reconnect instead of sleeping."""

    attempts: list[int]

    def next_delay(self, attempt: int) -> float:
        self.attempts.append(attempt)
        return 0.0


async def test_reconnects_count_attempts_from_zero_and_reset_after_a_message(
    server: AgentServer,
    client: WorkloadApiClient,
    agent: FakeAgent,
    keys: Keys,
    jwk_of: Callable[..., dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bundles = BundleSet()
    source = _Recording(bundles, client)
    source.attempts = []
    good = {DOMAIN: jwks(jwk_of, (keys.ec256, "k1"))}
    with caplog.at_level("WARNING", logger="tether.identity"):
        async with following(source, agent, good):
            # An empty message is discarded with its error recorded; the stream stays.
            await agent.bundle_updates.put({})
            await wait_until(lambda: source.last_error is not None)
            assert source.updates == 1 and source.reconnects == 0
            empty = f"Workload API {client.target}: JWTBundlesResponse without bundles"
            assert str(source.last_error) == empty and empty in caplog.messages
            await agent.bundle_updates.put(grpc.StatusCode.UNAVAILABLE)
            await wait_until(lambda: source.reconnects == 1)
            assert str(source.last_error).startswith(
                f"Workload API {client.target} FetchJWTBundles: UNAVAILABLE"
            )
            await agent.bundle_updates.put(good)  # a message resets the attempts
            await wait_until(lambda: source.updates == 2)
            await agent.bundle_updates.put(grpc.StatusCode.PERMISSION_DENIED)
            await wait_until(lambda: source.reconnects == 2)
            assert "example.org" not in bundles
            await agent.bundle_updates.put(grpc.StatusCode.UNAVAILABLE)  # no message between
            await wait_until(lambda: source.reconnects == 3)
            await agent.bundle_updates.put(good)  # the agent vouches again
            await wait_until(lambda: "example.org" in bundles)
    # Attempts count from 0, grow while failures follow each other, reset on a message.
    assert source.attempts == [0, 0, 1]


async def test_a_stream_the_agent_ends_is_unavailable_and_keeps_the_bundles(
    server: AgentServer,
    client: WorkloadApiClient,
    agent: FakeAgent,
    keys: Keys,
    jwk_of: Callable[..., dict[str, Any]],
) -> None:
    """The bundle stream is meant to last; an agent that ends it is treated as gone for
    now (the source reconnects and keeps what it has), not as a verdict on the bundles."""
    bundles = BundleSet()
    source = quick(bundles, client)
    async with following(source, agent, {DOMAIN: jwks(jwk_of, (keys.ec256, "k1"))}):
        await agent.bundle_updates.put(None)
        await wait_until(lambda: source.reconnects == 1)
        assert isinstance(source.last_error, WorkloadApiUnavailable)
        assert (
            str(source.last_error) == f"Workload API {client.target} FetchJWTBundles: stream ended"
        )
        assert "example.org" in bundles


async def test_attempts_grow_across_consecutive_failures_from_the_start(
    server: AgentServer,
    client: WorkloadApiClient,
    agent: FakeAgent,
    keys: Keys,
    jwk_of: Callable[..., dict[str, Any]],
) -> None:
    """Back-off attempts count from 0 before any message and keep growing while failures
    follow each other (0, 1, 2: not stuck at 1)."""
    bundles = BundleSet()
    source = _Recording(bundles, client)
    source.attempts = []
    for _ in range(3):
        await agent.bundle_updates.put(grpc.StatusCode.UNAVAILABLE)
    await agent.bundle_updates.put({DOMAIN: jwks(jwk_of, (keys.ec256, "k1"))})
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        await wait_until(lambda: "example.org" in bundles)
        tg.cancel_scope.cancel()
    assert source.attempts == [0, 1, 2]


def test_apply_names_a_rolled_back_domain(
    keys: Keys, jwk_of: Callable[..., dict[str, Any]]
) -> None:
    """A bundle older than the one held is refused (the newer keys stay) and named."""
    client = WorkloadApiClient("unix:///nowhere.sock")
    bundles = BundleSet()
    source = WorkloadApiBundleSource(bundles, client)
    source.apply({DOMAIN: jwks(jwk_of, (keys.ec256, "k1"), seq=2)})
    held = bundles.get("example.org")
    source.apply({DOMAIN: jwks(jwk_of, (keys.other, "o1"), seq=1)})
    assert bundles.get("example.org") is held
    assert str(source.last_error) == (
        f"Workload API {client.target}: rejected bundle(s), kept the last good: "
        f"{DOMAIN}: bundle for 'example.org' has sequence 1, older than current 2"
    )


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.5])
def test_refresh_fraction_must_be_inside_the_lifetime(fraction: float) -> None:
    client = WorkloadApiClient("unix:///nowhere.sock")
    with pytest.raises(
        ValueError, match=r"^refresh_before is a fraction of the lifetime, in \(0, 1\)$"
    ):
        WorkloadApiSvidSource(client, refresh_before=fraction)
    assert WorkloadApiSvidSource(client, refresh_before=0.999).refresh_before == 0.999


async def test_svid_source_defaults_and_boundaries(
    server: AgentServer, client: WorkloadApiClient, agent: FakeAgent
) -> None:
    """By default refetched once half the lifetime is used, at that instant exactly;
    a string audience is one audience; an expired answer is never cached."""
    clock = FakeClock(NOW)
    source = WorkloadApiSvidSource(client, clock=clock)
    await source.token("svc")
    assert list(agent.svid_requests[-1].audience) == ["svc"]
    clock.advance(299.999)
    await source.token("svc")
    assert agent.svid_calls == 1
    clock.advance(0.001)
    await source.token("svc")
    assert agent.svid_calls == 2
    agent.exp = int(NOW) - 10
    other = WorkloadApiSvidSource(client, clock=FakeClock(NOW))
    await other.token(["x"])
    await other.token(["x"])
    assert agent.svid_calls == 4


async def test_svid_source_asks_for_its_identity_and_checks_it(
    server: AgentServer, client: WorkloadApiClient, agent: FakeAgent
) -> None:
    mine = WorkloadApiSvidSource(client, spiffe_id=AGENT_ID, clock=FakeClock(NOW))
    assert (await mine.svid("svc")).spiffe_id == AGENT_ID
    assert agent.svid_requests[-1].spiffe_id == AGENT_ID
    wanted = "spiffe://example.org/someone-else"
    theirs = WorkloadApiSvidSource(client, spiffe_id=wanted, clock=FakeClock(NOW))
    with pytest.raises(InvalidWorkloadApiResponse) as e:
        await theirs.svid("svc")
    assert str(e.value) == f"Workload API {client.target}: asked for {wanted}, got {AGENT_ID}"
