"""The pydantic-ai capability, run with pydantic-ai's FunctionModel (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("pydantic_ai", reason="tether[pydantic-ai] not installed")

from pydantic_ai import Agent, DeferredToolRequests, DeferredToolResults
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.integrations.world import ORCH, RESEARCHER, world
from tether.integrations.pydantic_ai import TetherCapability
from tether.tasks import Task

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # pydantic-ai runs on asyncio


@asynccontextmanager
async def agent_task(who: str) -> AsyncIterator[Task]:
    w = world()
    async with w.guard, w.guard.task(await w.agent(who), intent="tests") as task:
        yield task


class Script:
    """A FunctionModel body: one tool call per step, then a final answer; records offers."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        self.calls, self.offered = list(calls), []  # type: ignore[var-annotated]

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.offered.append([t.name for t in info.function_tools])
        if self.calls:
            name, args = self.calls.pop(0)
            return ModelResponse(
                parts=[ToolCallPart(name, args, tool_call_id=f"c{len(self.offered)}")]
            )
        return ModelResponse(parts=[TextPart("done")])


def make_agent(
    task: Task, script: Script, ran: list[str], *, hide: bool = True
) -> Agent[None, Any]:
    agent: Agent[None, Any] = Agent(
        FunctionModel(script),
        output_type=[str, DeferredToolRequests],
        capabilities=[TetherCapability(task, hide_tools=hide)],
    )

    @agent.tool_plain
    def search(q: str) -> str:
        ran.append("search")
        return "results"

    @agent.tool_plain
    def read_payroll() -> str:
        ran.append("read_payroll")
        return "payroll"

    @agent.tool_plain
    def post_web(url: str) -> str:
        ran.append("post_web")
        return "posted"

    @agent.tool_plain
    def deploy(env: str) -> str:
        ran.append("deploy")
        return "deployed"

    return agent


def returns(result: Any) -> list[str]:
    return [
        str(p.content)
        for m in result.all_messages()
        for p in getattr(m, "parts", [])
        if isinstance(p, ToolReturnPart)
    ]


async def test_refused_call_never_runs_and_the_model_reads_why() -> None:
    async with agent_task(RESEARCHER) as task:
        ran: list[str] = []
        script = Script([("search", {"q": "admin password"}), ("search", {"q": "handbook"})])
        result = await make_agent(task, script, ran).run("go")
        refused, allowed = returns(result)
        assert "`search` was refused" in refused and allowed == "results"
        assert ran == ["search"]
        assert script.offered[0] == ["search"]  # the model is offered only what it may call


async def test_hidden_tool_called_anyway_is_refused() -> None:
    async with agent_task(RESEARCHER) as task:
        ran: list[str] = []
        script = Script([("read_payroll", {})])
        result = await make_agent(task, script, ran, hide=False).run("go")
        assert "refused" in returns(result)[0] and ran == []
    async with agent_task(ORCH) as task:
        script = Script([("read_payroll", {})])
        result = await make_agent(task, script, ran, hide=False).run("go")
        assert returns(result) == ["payroll"] and ran == ["read_payroll"]


async def test_tainted_task_blocked_from_egress_tool() -> None:
    async with agent_task(ORCH) as task:
        ran: list[str] = []
        calls = [("post_web", {"url": "u"}), ("read_payroll", {}), ("post_web", {"url": "u"})]
        result = await make_agent(task, Script(calls), ran, hide=False).run("go")
        assert "refused" in returns(result)[-1]
        assert ran == ["post_web", "read_payroll"]


@pytest.mark.parametrize("approve", [True, False])
async def test_obligation_defers_for_approval_then_resumes(approve: bool) -> None:
    async with agent_task(ORCH) as task:
        ran: list[str] = []
        agent = make_agent(task, Script([("deploy", {"env": "prod"})]), ran)
        first = await agent.run("go")
        assert isinstance(first.output, DeferredToolRequests) and ran == []
        (pending,) = first.output.approvals
        assert first.output.metadata[pending.tool_call_id]["tether"]["obligations"] == ["approval"]
        results = DeferredToolResults(approvals={pending.tool_call_id: approve})
        await agent.run(message_history=first.all_messages(), deferred_tool_results=results)
        assert ran == (["deploy"] if approve else [])


async def test_revoked_task_stops_the_next_call() -> None:
    async with agent_task(ORCH) as task:
        ran: list[str] = []
        await make_agent(task, Script([("search", {"q": "x"})]), ran).run("go")
        task.revoke("operator")
        result = await make_agent(task, Script([("search", {"q": "x"})]), ran, hide=False).run("go")
        assert "no longer active" in returns(result)[-1] and ran == ["search"]
