"""What each adapter adds to one tool call, next to the framework's own per-call cost.

    PYTHONPATH=python python benches/bench_integrations.py

For every framework the same tool call runs through the framework without tether and with
the adapter installed (an allowed call: the adapter decides and then the tool runs). The
difference is the adapter's added latency. Each row is the median over passes of the mean
per call. The frameworks' fake/scripted models stand in for a real model (no network), so
the framework column is the framework's own overhead, not a model's latency.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tether.engine import Engine
from tether.identity import Authenticator, LocalIssuer
from tether.integrations.tool_gate import authorize_tool_call, check_tool_call
from tether.leases import CredentialBroker, TaskTokenProvider, TaskTokenVerifier
from tether.store import MemoryLeaseStore
from tether.tasks import Guard, Task

AGENT_ID = "spiffe://example.org/agents/bench"
POLICY = """
permit (principal, action == Action::"call_tool", resource == Tool::"search");
forbid (principal, action == Action::"call_tool", resource == Tool::"search")
when { context has arguments && context.arguments has q
       && context.arguments.q like "*password*" };
"""
ENTITIES = [
    {"uid": {"type": "Agent", "id": AGENT_ID}, "attrs": {}, "parents": []},
    {"uid": {"type": "Tool", "id": "search"}, "attrs": {}, "parents": []},
]
ARGS = {"q": "quarterly report"}
PASSES = 5


async def per_call(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    """Median over passes of the mean seconds per call."""
    for _ in range(max(n // 10, 3)):  # warm caches (token verification, schemas)
        await fn()
    samples = []
    for _ in range(PASSES):
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        samples.append((time.perf_counter() - t0) / n)
    return statistics.median(samples)


def row(name: str, base: float, guarded: float) -> None:
    us = 1e6
    print(
        f"| {name} | {base * us:,.1f} µs | {guarded * us:,.1f} µs | "
        f"{(guarded - base) * us:+,.1f} µs |"
    )


async def bench_decision(task: Task) -> None:
    async def raw() -> Any:
        return task.authorize("call_tool", 'Tool::"search"', {"arguments": ARGS})

    async def gate() -> Any:
        return await authorize_tool_call(task, "search", ARGS)

    async def gate_sync() -> Any:
        return check_tool_call(task, "search", ARGS)

    base = await per_call(raw, 5000)
    row(
        "tether decision: `task.authorize` vs `authorize_tool_call`",
        base,
        await per_call(gate, 5000),
    )
    row(
        "tether decision: `task.authorize` vs `check_tool_call` (sync)",
        base,
        await per_call(gate_sync, 5000),
    )


async def bench_mcp(
    guard: Guard, issuer: LocalIssuer, tokens: TaskTokenProvider, task: Task
) -> None:
    from mcp import Client
    from mcp.server.context import ServerRequestContext
    from mcp.server.mcpserver import MCPServer

    from tether.integrations.mcp import TOKEN_META_KEY, McpToolGuard

    def server(guarded: bool) -> MCPServer:
        verifier = TaskTokenVerifier(tokens.jwks(), "bench")
        mw = [McpToolGuard(guard, task_tokens=verifier)] if guarded else []
        s = MCPServer("bench", middleware=mw)

        @s.tool()
        def search(q: str) -> str:
            return "ok"

        return s

    svid: Any = {TOKEN_META_KEY: issuer.mint_svid("/agents/bench", audience="bench", ttl=3600)}
    lease = await task.lease("task-token")
    txn: Any = {TOKEN_META_KEY: lease.secret.reveal()}
    # End to end. Caveat: the SDK client re-lists tools without `_meta` after each call to
    # validate results; the guard answers an anonymous listing with no tools, so each guarded
    # call here also pays one extra (empty) `tools/list` round trip. Over HTTP the bearer
    # header authenticates that listing too.
    async with Client(server(False)) as plain, Client(server(True)) as guarded:
        base = await per_call(lambda: plain.call_tool("search", ARGS), 300)
        with_svid = await per_call(lambda: guarded.call_tool("search", ARGS, meta=svid), 300)
        with_txn = await per_call(lambda: guarded.call_tool("search", ARGS, meta=txn), 300)
    row("MCP `tools/call` end to end, in-memory; JWT-SVID caller", base, with_svid)
    row("MCP `tools/call` end to end, in-memory; task-token caller", base, with_txn)

    # The middleware alone, on the server's request context, with a no-op rest of the chain.
    verifier = TaskTokenVerifier(tokens.jwks(), "bench")
    mw = McpToolGuard(guard, task_tokens=verifier)

    async def rest(ctx: Any) -> Any:
        return {"content": []}

    def ctx(meta: dict[str, str]) -> ServerRequestContext[Any, Any]:
        params = {"name": "search", "arguments": ARGS, "_meta": meta}
        return ServerRequestContext(
            session=None,  # type: ignore[arg-type]
            lifespan_context={},
            protocol_version="2025-11-25",
            method="tools/call",
            params=params,
            request_id=1,
        )

    c_svid, c_txn = ctx(svid), ctx(txn)
    none = await per_call(lambda: rest(c_svid), 3000)
    row(
        "MCP guard middleware alone; JWT-SVID caller",
        none,
        await per_call(lambda: mw(c_svid, rest), 3000),
    )
    row(
        "MCP guard middleware alone; task-token caller",
        none,
        await per_call(lambda: mw(c_txn, rest), 1000),
    )


async def bench_langchain(task: Task) -> None:
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    from tether.integrations.langchain import guarded_tool_node

    @tool
    def search(q: str) -> str:
        """Search."""
        return "ok"

    def graph(node: Any) -> Any:
        g = StateGraph(MessagesState)
        g.add_node("tools", node)
        g.add_edge(START, "tools")
        g.add_edge("tools", END)
        return g.compile()

    msg = {"messages": [AIMessage("", tool_calls=[{"name": "search", "args": ARGS, "id": "1"}])]}
    plain, guarded = graph(ToolNode([search])), graph(guarded_tool_node([search], task))
    base = await per_call(lambda: plain.ainvoke(msg), 200)
    row(
        "LangGraph `ToolNode` graph, one tool call",
        base,
        await per_call(lambda: guarded.ainvoke(msg), 200),
    )


async def bench_openai_agents(task: Task) -> None:
    from agents import Agent, Runner, function_tool, set_tracing_disabled
    from agents.testing import ScriptedModel, assistant_message, function_call

    from tether.integrations.openai_agents import TetherTools

    set_tracing_disabled(True)

    def make(guarded: bool) -> Callable[[], Awaitable[Any]]:
        @function_tool
        def search(q: str) -> str:
            """Search."""
            return "ok"

        tools = TetherTools(task).protect([search]) if guarded else [search]

        async def run() -> Any:
            model = ScriptedModel(
                [[function_call("search", ARGS, call_id="c1")], [assistant_message("done")]]
            )
            return await Runner.run(Agent(name="b", model=model, tools=list(tools)), "go")

        return run

    base = await per_call(make(False), 40)
    row("OpenAI Agents `Runner.run`, one tool call + answer", base, await per_call(make(True), 40))


async def bench_pydantic_ai(task: Task) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import FunctionModel

    from tether.integrations.pydantic_ai import TetherCapability

    def model(messages: Any, info: Any) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("search", ARGS)])
        return ModelResponse(parts=[TextPart("done")])

    def make(guarded: bool) -> Agent[None, str]:
        agent: Agent[None, str] = Agent(
            FunctionModel(model), capabilities=[TetherCapability(task)] if guarded else []
        )

        @agent.tool_plain
        def search(q: str) -> str:
            return "ok"

        return agent

    plain, guarded = make(False), make(True)
    base = await per_call(lambda: plain.run("go"), 100)
    row(
        "pydantic-ai `agent.run`, one tool call + answer",
        base,
        await per_call(lambda: guarded.run("go"), 100),
    )


async def main() -> None:
    issuer = LocalIssuer("example.org")
    tokens = TaskTokenProvider("bench", ttl=3600)
    guard = Guard(
        Engine(POLICY, None, json.dumps(ENTITIES)),
        Authenticator(issuer.bundle_set(), audience="bench"),
        broker=CredentialBroker(MemoryLeaseStore(), {"task-token": tokens}),
    )
    svid = issuer.mint_svid("/agents/bench", audience="bench", ttl=3600)
    async with guard, guard.task(await guard.authenticate(svid), intent="bench") as task:
        print("| tool call through | without tether | with the adapter | added |")
        print("|---|---:|---:|---:|")
        await bench_decision(task)
        await bench_mcp(guard, issuer, tokens, task)
        await bench_langchain(task)
        await bench_openai_agents(task)
        await bench_pydantic_ai(task)


if __name__ == "__main__":
    asyncio.run(main())
