"""The LangChain v1 middleware and the LangGraph ToolNode wrapper, with a fake chat model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("langchain", reason="tether[langchain] not installed")

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command

from tests.integrations.world import ORCH, RESEARCHER, world
from tether.integrations.langchain import TetherMiddleware, guarded_tool_node
from tether.tasks import Task

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # LangChain runs on asyncio


class ScriptedModel(GenericFakeChatModel):
    """Replies from a script; records the tools it was offered each turn."""

    offered: list[list[str]] = []  # noqa: RUF012 - pydantic field default, copied per instance

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        self.offered.append([getattr(t, "name", None) or t["name"] for t in tools])
        return self


def call(name: str, args: dict[str, Any], n: int = 1) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call-{n}"}])


def make_tools(ran: list[str]) -> list[Any]:
    @tool
    def search(q: str) -> str:
        """Search the web."""
        ran.append("search")
        return "results"

    @tool
    def shell(cmd: str) -> str:
        """Run a shell command."""
        ran.append("shell")
        return "ran"

    @tool
    def read_payroll() -> str:
        """Read payroll."""
        ran.append("read_payroll")
        return "payroll"

    @tool
    def post_web(url: str) -> str:
        """Post to the web."""
        ran.append("post_web")
        return "posted"

    @tool
    def deploy(env: str) -> str:
        """Deploy."""
        ran.append("deploy")
        return "deployed"

    return [search, shell, read_payroll, post_web, deploy]


@asynccontextmanager
async def agent_task(agent: str) -> AsyncIterator[Task]:
    w = world()
    async with w.guard, w.guard.task(await w.agent(agent), intent="tests") as task:
        yield task


def agent(task: Task, script: list[AIMessage], ran: list[str]) -> tuple[Any, ScriptedModel]:
    model = ScriptedModel(messages=iter([*script, AIMessage("done")]))
    graph = create_agent(
        model, make_tools(ran), middleware=[TetherMiddleware(task)], checkpointer=InMemorySaver()
    )
    return graph, model


def tool_messages(result: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in result["messages"] if isinstance(m, ToolMessage)]


CFG = {"configurable": {"thread_id": "t1"}}


async def test_refused_call_never_runs_and_the_model_reads_why() -> None:
    async with agent_task(RESEARCHER) as task:
        ran: list[str] = []
        graph, model = agent(
            task, [call("shell", {"cmd": "ls"}), call("search", {"q": "x"}, 2)], ran
        )
        result = await graph.ainvoke({"messages": [("user", "go")]}, CFG)
        refused, allowed = tool_messages(result)
        assert refused.status == "error" and "`shell` was refused" in str(refused.content)
        assert allowed.status != "error" and ran == ["search"]
        assert model.offered[0] == ["search"]  # the model is offered only what it may call


async def test_tainted_task_blocked_from_egress_tool() -> None:
    async with agent_task(ORCH) as task:
        ran: list[str] = []
        script = [
            call("post_web", {"url": "u"}),
            call("read_payroll", {}, 2),
            call("post_web", {"url": "u"}, 3),
        ]
        graph, _ = agent(task, script, ran)
        result = await graph.ainvoke({"messages": [("user", "go")]}, CFG)
        assert [m.status for m in tool_messages(result)] == ["success", "success", "error"]
        assert ran == ["post_web", "read_payroll"]


@pytest.mark.parametrize(
    ("resume", "runs"), [(True, True), ({"approve": True}, True), (False, False)]
)
async def test_approval_pauses_with_interrupt_and_resumes(resume: Any, runs: bool) -> None:
    async with agent_task(ORCH) as task:
        ran: list[str] = []
        graph, _ = agent(task, [call("deploy", {"env": "prod"})], ran)
        paused = await graph.ainvoke({"messages": [("user", "go")]}, CFG)
        assert paused["__interrupt__"][0].value["type"] == "tether_approval" and ran == []
        result = await graph.ainvoke(Command(resume=resume), CFG)
        assert (ran == ["deploy"]) is runs
        assert tool_messages(result)[-1].status == ("success" if runs else "error")


async def test_revoked_task_stops_the_next_call() -> None:
    async with agent_task(ORCH) as task:
        ran: list[str] = []
        graph, _ = agent(task, [call("search", {"q": "x"})], ran)
        await graph.ainvoke({"messages": [("user", "go")]}, CFG)
        task.revoke("operator")
        graph2, _ = agent(task, [call("search", {"q": "x"})], ran)
        result = await graph2.ainvoke(
            {"messages": [("user", "go")]}, {"configurable": {"thread_id": "t2"}}
        )
        assert "no longer active" in str(tool_messages(result)[-1].content)
        assert ran == ["search"]


def test_sync_run_refuses_and_allows() -> None:
    import asyncio

    async def main() -> None:
        async with agent_task(RESEARCHER) as task:
            ran: list[str] = []
            graph, _ = agent(
                task, [call("shell", {"cmd": "ls"}), call("search", {"q": "x"}, 2)], ran
            )
            result = await asyncio.to_thread(graph.invoke, {"messages": [("user", "go")]}, CFG)
            assert [m.status for m in tool_messages(result)] == ["error", "success"]
            assert ran == ["search"]

    asyncio.run(main())


async def test_tool_node_wrapper_for_plain_graphs() -> None:
    async with agent_task(RESEARCHER) as task:
        ran: list[str] = []
        graph = StateGraph(MessagesState)
        graph.add_node("tools", guarded_tool_node(make_tools(ran), task))
        graph.add_edge(START, "tools")
        graph.add_edge("tools", END)
        node = graph.compile()
        msg = AIMessage(
            "",
            tool_calls=[
                {"name": "shell", "args": {"cmd": "ls"}, "id": "a"},
                {"name": "search", "args": {"q": "x"}, "id": "b"},
            ],
        )
        out = await node.ainvoke({"messages": [msg]})
        by_id = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
        assert by_id["a"].status == "error" and by_id["b"].status == "success"
        assert ran == ["search"]


@pytest.mark.parametrize("answer", [True, False])
async def test_guard_approvers_instead_of_interrupt(answer: bool) -> None:
    async def approver(req: Any) -> bool:
        return answer

    w = world({"approval": approver})
    ran: list[str] = []
    async with w.guard, w.guard.task(await w.agent(ORCH), intent="tests") as task:
        model = ScriptedModel(messages=iter([call("deploy", {"env": "prod"}), AIMessage("done")]))
        graph: Any = create_agent(
            model,
            make_tools(ran),
            middleware=[TetherMiddleware(task, approval="guard")],
            checkpointer=InMemorySaver(),
        )
        result = await graph.ainvoke({"messages": [("user", "go")]}, CFG)
        assert "__interrupt__" not in result
        assert ran == (["deploy"] if answer else [])
