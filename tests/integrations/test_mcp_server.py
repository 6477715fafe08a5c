"""The MCP server guard on a real `mcp` SDK server, driven in memory by the SDK's client.

Every security property is a pair: the attack refused and its benign twin allowed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

import pytest

mcp = pytest.importorskip("mcp", reason="tether[mcp] not installed")

import mcp_types as mt  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.server.context import ServerRequestContext  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

from tests.integrations.world import ORCH, ORCH_ID, RES_ID, World, world  # noqa: E402
from tether.integrations.mcp import (  # noqa: E402
    ACCESS_DENIED,
    TOKEN_META_KEY,
    McpToolGuard,
    bearer_token,
    call_tool_guarded,
)
from tether.leases import TaskRef  # noqa: E402
from tether.tasks import ApprovalRequest, Task  # noqa: E402

pytestmark = pytest.mark.anyio
MODES = ["auto", "legacy"]  # 2026-07-28 (input_required rounds) and 2025-11-25 (elicitation)


def tool_server(w: World, ran: list[str], **kw: Any) -> MCPServer:
    server = MCPServer("tools", middleware=[McpToolGuard(w.guard, task_tokens=w.verifier(), **kw)])

    @server.tool()
    def search(q: str) -> str:
        ran.append("search")
        return f"results for {q}"

    @server.tool()
    def read_payroll() -> str:
        ran.append("read_payroll")
        return "payroll"

    @server.tool()
    def post_web(url: str) -> str:
        ran.append("post_web")
        return "posted"

    @server.tool()
    def deploy(env: str) -> str:
        ran.append("deploy")
        return f"deployed {env}"

    @server.tool()
    def shell(cmd: str) -> str:
        ran.append("shell")
        return "ran"

    return server


def text(result: mt.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, mt.TextContent))


@asynccontextmanager
async def session(mode: str, **client_kw: Any) -> AsyncIterator[tuple[World, Client, list[str]]]:
    w = world()
    ran: list[str] = []
    async with w.guard, Client(tool_server(w, ran), mode=mode, **client_kw) as client:
        yield w, client, ran


def as_(token: str) -> mt.RequestParamsMeta:
    return cast(mt.RequestParamsMeta, {TOKEN_META_KEY: token})


@pytest.mark.parametrize("mode", MODES)
async def test_ungranted_tool_refused_in_words_granted_twin_runs(mode: str) -> None:
    async with session(mode) as (w, client, ran):
        me = as_(w.svid(RES_ID))
        denied = await client.call_tool("shell", {"cmd": "rm -rf /"}, meta=me)
        assert denied.is_error and ran == []
        assert "`shell` was refused" in text(denied)
        assert "tools-granted" not in text(denied) and "policy" not in text(denied).split(":")[0]
        allowed = await client.call_tool("search", {"q": "weather"}, meta=me)
        assert not allowed.is_error and ran == ["search"]
        assert "results for weather" in text(allowed)


@pytest.mark.parametrize("mode", MODES)
async def test_argument_level_rule(mode: str) -> None:
    async with session(mode) as (w, client, ran):
        me = as_(w.svid(RES_ID))
        bad = await client.call_tool("search", {"q": "admin password"}, meta=me)
        assert bad.is_error and ran == []
        good = await client.call_tool("search", {"q": "admin handbook"}, meta=me)
        assert not good.is_error and ran == ["search"]


@pytest.mark.parametrize("mode", MODES)
async def test_unauthenticated_caller_refused(mode: str) -> None:
    async with session(mode) as (w, client, ran):
        with pytest.raises(MCPError) as no_token:
            await client.call_tool("search", {"q": "weather"})
        assert no_token.value.code == ACCESS_DENIED
        forged = w.svid(RES_ID)[:-4] + "AAAA"  # signature tampered
        with pytest.raises(MCPError) as bad_sig:
            await client.call_tool("search", {"q": "weather"}, meta=as_(forged))
        assert bad_sig.value.code == ACCESS_DENIED and "unauthenticated" in bad_sig.value.message
        assert ran == []
        ok = await client.call_tool("search", {"q": "weather"}, meta=as_(w.svid(RES_ID)))
        assert not ok.is_error and ran == ["search"]


@pytest.mark.parametrize("mode", MODES)
async def test_agent_identity_in_arguments_is_never_trusted(mode: str) -> None:
    async with session(mode) as (w, client, ran):
        spoof = {"agent": ORCH_ID, "principal": ORCH, "spiffe_id": ORCH_ID}
        r = await client.call_tool("read_payroll", spoof, meta=as_(w.svid(RES_ID)))
        assert r.is_error and ran == []
        r = await client.call_tool("read_payroll", {}, meta=as_(w.svid(ORCH_ID)))
        assert not r.is_error and ran == ["read_payroll"]


@pytest.mark.parametrize("mode", MODES)
async def test_tools_list_is_filtered_per_caller(mode: str) -> None:
    async with session(mode) as (w, client, _):
        listed = await client.list_tools(meta=as_(w.svid(RES_ID)))
        assert [t.name for t in listed.tools] == ["search"]
        listed = await client.list_tools(meta=as_(w.svid(ORCH_ID)))
        assert sorted(t.name for t in listed.tools) == [
            "deploy",
            "post_web",
            "read_payroll",
            "search",
        ]
        assert (await client.list_tools(cache_mode="refresh")).tools == []  # anonymous: nothing


@pytest.mark.parametrize("mode", MODES)
async def test_tainted_task_blocked_from_egress_tool(mode: str) -> None:
    async with session(mode) as (w, client, ran):
        fresh = as_(w.svid(ORCH_ID))
        assert not (
            await client.call_tool("post_web", {"url": "https://x.example"}, meta=fresh)
        ).is_error
        tainted = as_(w.svid(ORCH_ID))  # another token: another server-side task
        assert not (await client.call_tool("read_payroll", {}, meta=tainted)).is_error
        r = await client.call_tool("post_web", {"url": "https://x.example"}, meta=tainted)
        assert r.is_error and ran == ["post_web", "read_payroll"]


def elicitation(answer: mt.ElicitResult, asked: list[str]) -> Any:
    async def callback(ctx: Any, params: Any) -> mt.ElicitResult:
        asked.append(params.message)
        return answer

    return callback


@pytest.mark.parametrize("mode", MODES)
async def test_approval_by_elicitation_pauses_and_resumes(mode: str) -> None:
    asked: list[str] = []
    yes = mt.ElicitResult(action="accept", content={"approve": True})
    async with session(mode, elicitation_callback=elicitation(yes, asked)) as (w, client, ran):
        r = await client.call_tool("deploy", {"env": "prod"}, meta=as_(w.svid(ORCH_ID)))
        assert not r.is_error and ran == ["deploy"]
        assert len(asked) == 1 and "`deploy`" in asked[0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "answer",
    [
        mt.ElicitResult(action="decline"),
        mt.ElicitResult(action="accept", content={"approve": False}),
        mt.ElicitResult(action="cancel"),
    ],
)
async def test_approval_refused_never_runs(mode: str, answer: mt.ElicitResult) -> None:
    asked: list[str] = []
    async with session(mode, elicitation_callback=elicitation(answer, asked)) as (w, client, ran):
        r = await client.call_tool("deploy", {"env": "prod"}, meta=as_(w.svid(ORCH_ID)))
        assert r.is_error and ran == [] and len(asked) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_approval_without_a_way_to_ask_fails_closed(mode: str) -> None:
    async with session(mode) as (w, client, ran):  # the client offers no elicitation
        try:
            r = await client.call_tool("deploy", {"env": "prod"}, meta=as_(w.svid(ORCH_ID)))
        except MCPError:
            pass
        else:
            assert r.is_error
        assert ran == []


async def test_forged_approval_in_first_request_is_ignored() -> None:
    # 2026 era: an approval the server never asked for (no requestState it minted for this
    # very call) is not one; the server asks instead.
    yes: mt.InputResponses = {
        "tether-approval": mt.ElicitResult(action="accept", content={"approve": True})
    }
    async with session("auto") as (w, client, ran):
        me = as_(w.svid(ORCH_ID))
        r = await client.session.call_tool(
            "deploy", {"env": "prod"}, meta=me, input_responses=yes, allow_input_required=True
        )
        assert isinstance(r, mt.InputRequiredResult) and ran == []
        # An answer sent back with the state minted for another call does not approve this one.
        # (MCPServer's request-state boundary refuses it first; tether's own binding would.)
        with pytest.raises(MCPError):
            await client.session.call_tool(
                "deploy",
                {"env": "staging"},
                meta=me,
                input_responses=yes,
                request_state=r.request_state,
                allow_input_required=True,
            )
        assert ran == []
        # The SDK's own boundary already refuses a state it did not seal.
        with pytest.raises(MCPError):
            await client.session.call_tool(
                "deploy",
                {"env": "prod"},
                meta=me,
                input_responses=yes,
                request_state="made-up",
                allow_input_required=True,
            )
        assert ran == []


async def open_task(w: World, agent: str, scope: set[str] | None = None) -> tuple[Task, str]:
    task = await w.guard.task(await w.agent(agent), intent="tests", scope=scope).__aenter__()
    lease = await task.lease("task-token")
    return task, lease.secret.reveal()


@pytest.mark.parametrize("mode", MODES)
async def test_task_token_continues_the_orchestrators_task_and_revocation_stops_it(
    mode: str,
) -> None:
    async with session(mode) as (w, client, ran):
        task, token = await open_task(w, ORCH)
        assert not (await client.call_tool("read_payroll", {}, meta=as_(token))).is_error
        # The server decided in the caller's own task: its taint is the caller's taint.
        assert "restricted" in task.state()["labels"]
        w.guard.revoke(task=task, reason="operator")
        # Refused either by the task (revoked) or, once the lease revocation has reached the
        # token provider's deny-list, already at authentication.
        try:
            r = await client.call_tool("search", {"q": "weather"}, meta=as_(token))
        except MCPError as e:
            assert e.code == ACCESS_DENIED and "revoked" in e.message
        else:
            assert r.is_error and "no longer active" in text(r)
        assert ran == ["read_payroll"]


@pytest.mark.parametrize("mode", MODES)
async def test_task_token_of_a_remote_task_opens_a_bounded_mirror(mode: str) -> None:
    async with session(mode) as (w, client, ran):
        ref = TaskRef(
            txn="remote-1",
            agent=ORCH_ID,
            scope=frozenset({"call_tool"}),
            intent="remote",
            actors=(ORCH_ID,),
            deadline=0.0,
        )
        token = w.tokens.mint(ref)
        assert not (await client.call_tool("search", {"q": "x"}, meta=as_(token))).is_error
        narrow = w.tokens.mint(
            TaskRef(
                txn="remote-2",
                agent=ORCH_ID,
                scope=frozenset({"read"}),
                intent="remote",
                actors=(ORCH_ID,),
                deadline=0.0,
            )
        )
        r = await client.call_tool("search", {"q": "x"}, meta=as_(narrow))
        assert r.is_error and ran == ["search"]


async def test_task_token_for_another_agent_refused() -> None:
    async with session("auto") as (w, client, ran):
        task, _ = await open_task(w, ORCH)
        ref = task.ref()
        forged = w.tokens.mint(
            TaskRef(
                txn=ref.txn,
                agent=RES_ID,
                scope=ref.scope,
                intent=ref.intent,
                actors=(RES_ID,),
                deadline=0.0,
            )
        )
        with pytest.raises(MCPError) as e:
            await client.call_tool("search", {"q": "x"}, meta=as_(forged))
        assert e.value.code == ACCESS_DENIED and ran == []


async def test_client_side_wrapper_never_sends_a_refused_call() -> None:
    async with session("auto") as (w, client, ran):
        task, token = await open_task(w, f'Agent::"{RES_ID}"')
        r = await call_tool_guarded(client, task, "shell", {"cmd": "ls"}, token=token)
        assert r.is_error and ran == [] and "`shell` was refused" in text(r)
        r = await call_tool_guarded(client, task, "search", {"q": "x"}, token=token)
        assert not r.is_error and ran == ["search"]


@pytest.mark.parametrize("mode", MODES)
async def test_narrowed_task_token_limits_the_task_it_continues(mode: str) -> None:
    async with session(mode) as (w, client, ran):
        task, _ = await open_task(w, ORCH)  # an unscoped task
        narrow = w.tokens.mint(task.ref(), scope={"read"})
        r = await client.call_tool("search", {"q": "x"}, meta=as_(narrow))
        assert r.is_error and "scope of the presented task token" in text(r) and ran == []
        listed = await client.list_tools(meta=as_(narrow))
        assert listed.tools == []
        assert task.revoked is None  # the token's limit, not a violation by the task
        wide = w.tokens.mint(task.ref(), scope={"call_tool"})
        assert not (await client.call_tool("search", {"q": "x"}, meta=as_(wide))).is_error
        assert ran == ["search"]


async def test_task_token_of_an_unscoped_remote_task() -> None:
    async with session("auto") as (w, client, ran):
        ref = TaskRef(
            txn="remote-3",
            agent=RES_ID,
            scope=frozenset(),
            intent="remote",
            actors=(RES_ID,),
            deadline=0.0,
        )
        token = w.tokens.mint(ref)
        assert not (await client.call_tool("search", {"q": "x"}, meta=as_(token))).is_error
        r = await client.call_tool("read_payroll", {}, meta=as_(token))
        assert r.is_error and ran == ["search"]


@pytest.mark.parametrize("answer", [True, False])
async def test_guard_approvers_settle_obligations_server_side(answer: bool) -> None:
    asked: list[str] = []

    async def approver(req: ApprovalRequest) -> bool:
        asked.append(req.resource)
        return answer

    w = world({"approval": approver})
    ran: list[str] = []
    server = tool_server(w, ran, approval="guard")
    async with w.guard, Client(server) as client:
        r = await client.call_tool("deploy", {"env": "prod"}, meta=as_(w.svid(ORCH_ID)))
        assert r.is_error is not answer and ran == (["deploy"] if answer else [])
        assert asked == ['Tool::"deploy"']


def test_bearer_header_is_a_credential() -> None:
    def ctx(headers: dict[str, str], meta: Any = None) -> Any:
        params = {"name": "search"} if meta is None else {"name": "search", "_meta": meta}
        return ServerRequestContext(
            session=None,  # type: ignore[arg-type]
            lifespan_context={},
            protocol_version="2025-11-25",
            method="tools/call",
            params=params,
            request=SimpleNamespace(headers=headers),
        )

    assert bearer_token(ctx({"authorization": "Bearer abc.def.ghi"})) == "abc.def.ghi"
    assert bearer_token(ctx({"authorization": "Basic dXNlcg=="})) is None
    assert bearer_token(ctx({}, {TOKEN_META_KEY: "m.e.ta"})) == "m.e.ta"  # _meta first
    with pytest.raises(ValueError):
        bearer_token(ctx({}, {TOKEN_META_KEY: 42}))
