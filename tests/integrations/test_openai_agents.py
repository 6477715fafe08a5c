"""The OpenAI Agents SDK hooks, run with the SDK's own ScriptedModel (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("agents", reason="tether[openai-agents] not installed")

from agents import (
    Agent,
    FunctionTool,
    Runner,
    ToolCallOutputItem,
    function_tool,
    set_tracing_disabled,
)
from agents.exceptions import ModelBehaviorError
from agents.testing import ScriptedModel, assistant_message, function_call

from tests.integrations.world import ORCH, RESEARCHER, world
from tether.integrations.openai_agents import TetherTools
from tether.tasks import Task

pytestmark = pytest.mark.anyio
set_tracing_disabled(True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Agents SDK runs on asyncio


def make_tools(ran: list[str]) -> list[FunctionTool]:
    @function_tool
    def search(q: str) -> str:
        """Search."""
        ran.append("search")
        return "results"

    @function_tool
    def shell(cmd: str) -> str:
        """Shell."""
        ran.append("shell")
        return "ran"

    @function_tool
    def read_payroll() -> str:
        """Payroll."""
        ran.append("read_payroll")
        return "payroll"

    @function_tool
    def post_web(url: str) -> str:
        """Post."""
        ran.append("post_web")
        return "posted"

    @function_tool
    def deploy(env: str) -> str:
        """Deploy."""
        ran.append("deploy")
        return "deployed"

    return [search, shell, read_payroll, post_web, deploy]


@asynccontextmanager
async def agent_task(who: str) -> AsyncIterator[Task]:
    w = world()
    async with w.guard, w.guard.task(await w.agent(who), intent="tests") as task:
        yield task


def run_agent(
    task: Task, calls: list[tuple[str, dict[str, Any]]], ran: list[str], *, hide: bool = True
) -> tuple[Agent[Any], ScriptedModel]:
    steps: list[Any] = [
        [function_call(name, args, call_id=f"c{i}")] for i, (name, args) in enumerate(calls)
    ]
    model = ScriptedModel([*steps, [assistant_message("done")]])
    tools = TetherTools(task, hide_tools=hide).protect(make_tools(ran))
    return Agent(name="worker", model=model, tools=list(tools)), model


def outputs(result: Any) -> list[str]:
    return [str(i.output) for i in result.new_items if isinstance(i, ToolCallOutputItem)]


async def test_refused_call_never_runs_and_the_model_reads_why() -> None:
    async with agent_task(RESEARCHER) as task:
        ran: list[str] = []
        calls = [("search", {"q": "admin password"}), ("search", {"q": "admin handbook"})]
        agent, model = run_agent(task, calls, ran)
        result = await Runner.run(agent, "go")
        refused, allowed = outputs(result)
        assert "`search` was refused" in refused and allowed == "results"
        assert ran == ["search"]
        assert [t.name for t in model.calls[0].tools] == ["search"]  # only what it may call


async def test_tool_the_task_may_not_call_is_not_offered_nor_run() -> None:
    async with agent_task(RESEARCHER) as task:
        ran: list[str] = []
        agent, _ = run_agent(task, [("shell", {"cmd": "ls"})], ran)
        with pytest.raises(ModelBehaviorError):  # the SDK refuses a tool it never offered
            await Runner.run(agent, "go")
        assert ran == []
        agent, _ = run_agent(task, [("read_payroll", {})], ran)
        with pytest.raises(ModelBehaviorError):
            await Runner.run(agent, "go")
        assert ran == []
    async with agent_task(ORCH) as task:  # twin: the orchestrator is offered it and it runs
        agent, _ = run_agent(task, [("read_payroll", {})], ran)
        await Runner.run(agent, "go")
        assert ran == ["read_payroll"]


async def test_tainted_task_blocked_from_egress_tool() -> None:
    calls = [("post_web", {"url": "u"}), ("read_payroll", {}), ("post_web", {"url": "u"})]
    async with agent_task(ORCH) as task:
        ran: list[str] = []
        agent, _ = run_agent(task, calls, ran, hide=False)
        result = await Runner.run(agent, "go")
        assert "refused" in outputs(result)[-1]  # the guardrail's readable refusal
        assert ran == ["post_web", "read_payroll"]
    async with agent_task(ORCH) as task:  # with hiding, the tainted task loses the tool
        ran = []
        agent, model = run_agent(task, calls, ran)
        with pytest.raises(ModelBehaviorError):
            await Runner.run(agent, "go")
        assert "post_web" in [t.name for t in model.calls[0].tools]
        assert "post_web" not in [t.name for t in model.calls[2].tools]
        assert ran == ["post_web", "read_payroll"]


@pytest.mark.parametrize("approve", [True, False])
async def test_obligation_interrupts_for_approval_then_resumes(approve: bool) -> None:
    async with agent_task(ORCH) as task:
        ran: list[str] = []
        agent, _ = run_agent(task, [("deploy", {"env": "prod"})], ran)
        paused = await Runner.run(agent, "go")
        assert [i.name for i in paused.interruptions] == ["deploy"] and ran == []
        state = paused.to_state()
        if approve:
            state.approve(paused.interruptions[0])
        else:
            state.reject(paused.interruptions[0])
        await Runner.run(agent, state)
        assert ran == (["deploy"] if approve else [])


async def test_guardrail_alone_enforces_and_fails_closed_on_obligations() -> None:
    # Without needs_approval (e.g. a tool protected by the guardrail only), an obligation
    # with no approver refuses; a plain permit runs.
    async with agent_task(ORCH) as task:
        ran: list[str] = []
        hooks = TetherTools(task)
        tools = make_tools(ran)
        for t in tools:
            t.tool_input_guardrails = [hooks.input_guardrail]
        steps: list[Any] = [
            [function_call("deploy", {"env": "prod"}, call_id="c1")],
            [function_call("search", {"q": "x"}, call_id="c2")],
            [assistant_message("done")],
        ]
        agent = Agent(name="w", model=ScriptedModel(steps), tools=list(tools))
        result = await Runner.run(agent, "go")
        assert "refused" in outputs(result)[0] and ran == ["search"]


async def test_revoked_task_stops_the_next_call() -> None:
    async with agent_task(ORCH) as task:
        ran: list[str] = []
        agent, _ = run_agent(task, [("search", {"q": "x"})], ran)
        await Runner.run(agent, "go")
        task.revoke("operator")
        agent2, _ = run_agent(task, [("search", {"q": "x"})], ran, hide=False)
        result = await Runner.run(agent2, "go")
        assert "no longer active" in outputs(result)[-1] and ran == ["search"]


async def test_mcp_tool_filter() -> None:
    class McpTool:
        def __init__(self, name: str) -> None:
            self.name = name

    async with agent_task(RESEARCHER) as task:
        hooks = TetherTools(task)
        names = ["search", "shell", "read_payroll"]
        assert [n for n in names if hooks.mcp_tool_filter(None, McpTool(n))] == ["search"]
