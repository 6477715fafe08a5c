"""The FastMCP middleware, on a real FastMCP server driven by FastMCP's in-memory client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("fastmcp", reason="fastmcp not installed")

import mcp_types as mt
from fastmcp import Client, FastMCP
from fastmcp.exceptions import ToolError
from mcp.shared.exceptions import MCPError

from tests.integrations.world import ORCH, ORCH_ID, RES_ID, World, world
from tether.integrations.fastmcp import FastMcpToolGuard
from tether.integrations.mcp import ACCESS_DENIED, TOKEN_META_KEY
from tether.tasks import ApprovalRequest

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serve(
    approvers: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[World, Client[Any], list[str]]]:
    w = world(approvers)
    ran: list[str] = []
    server = FastMCP("tools", middleware=[FastMcpToolGuard(w.guard, task_tokens=w.verifier())])

    @server.tool
    def search(q: str) -> str:
        ran.append("search")
        return "results"

    @server.tool
    def read_payroll() -> str:
        ran.append("read_payroll")
        return "payroll"

    @server.tool
    def post_web(url: str) -> str:
        ran.append("post_web")
        return "posted"

    @server.tool
    def deploy(env: str) -> str:
        ran.append("deploy")
        return "deployed"

    async with w.guard, Client(server) as client:
        yield w, client, ran


def me(w: World, spiffe: str) -> Any:  # fastmcp and mcp_types type `_meta` differently
    return {TOKEN_META_KEY: w.svid(spiffe)}


async def refused(client: Client[Any], name: str, args: dict[str, Any], meta: Any) -> str:
    with pytest.raises(ToolError) as e:
        await client.call_tool(name, args, meta=meta)
    return str(e.value)


async def test_refused_in_words_allowed_twin_runs() -> None:
    async with serve() as (w, client, ran):
        why = await refused(client, "read_payroll", {"agent": ORCH_ID}, me(w, RES_ID))
        assert "`read_payroll` was refused" in why and ran == []
        assert (await client.call_tool("read_payroll", {}, meta=me(w, ORCH_ID))).data == "payroll"
        assert ran == ["read_payroll"]


async def test_argument_rule_and_unauthenticated_caller() -> None:
    async with serve() as (w, client, ran):
        await refused(client, "search", {"q": "password"}, me(w, RES_ID))
        with pytest.raises(MCPError) as e:
            await client.call_tool("search", {"q": "weather"})
        assert e.value.code == ACCESS_DENIED
        await client.call_tool("search", {"q": "weather"}, meta=me(w, RES_ID))
        assert ran == ["search"]


async def test_tools_list_filtered() -> None:
    async with serve() as (w, client, _):
        listed = await client.session.list_tools(
            params=mt.PaginatedRequestParams(_meta=me(w, RES_ID))
        )
        assert [t.name for t in listed.tools] == ["search"]
        anonymous = await client.session.list_tools()
        assert anonymous.tools == []


async def test_taint_blocks_egress_and_revocation_stops_calls() -> None:
    async with serve() as (w, client, ran):
        task = await w.guard.task(await w.agent(ORCH), intent="t").__aenter__()
        token = {TOKEN_META_KEY: (await task.lease("task-token")).secret.reveal()}
        await client.call_tool("read_payroll", {}, meta=token)
        await refused(client, "post_web", {"url": "u"}, token)
        task.revoke("operator")
        try:
            await client.call_tool("search", {"q": "x"}, meta=token)
        except Exception as e:  # refused by the task or, once the lease is revoked, at login
            assert "revoked" in str(e) or "no longer active" in str(e)
        else:
            pytest.fail("a revoked task's call ran")
        assert ran == ["read_payroll"]


@pytest.mark.parametrize("answer", [True, False])
async def test_obligation_goes_to_the_guards_approver(answer: bool) -> None:
    async def approver(req: ApprovalRequest) -> bool:
        return answer

    async with serve({"approval": approver}) as (w, client, ran):
        if answer:
            await client.call_tool("deploy", {"env": "prod"}, meta=me(w, ORCH_ID))
        else:
            await refused(client, "deploy", {"env": "prod"}, me(w, ORCH_ID))
        assert ran == (["deploy"] if answer else [])
