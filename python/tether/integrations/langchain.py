"""LangChain v1 / LangGraph: an `AgentMiddleware` that authorizes every tool call.

- `wrap_tool_call` / `awrap_tool_call`: the call is decided by `task.authorize`; a refusal
  is returned as an error `ToolMessage` the model reads, and the tool never runs;
- `wrap_model_call` / `awrap_model_call`: the model is only offered the tools the task
  may call;
- approval obligations pause the graph with LangGraph's `interrupt()` (resume with
  `Command(resume=True)` to approve; anything else refuses). This needs a checkpointer,
  as every LangGraph interrupt does. `approval="guard"` uses the Guard's approvers instead
  (async runs only; a synchronous run then refuses).

`guarded_tool_node(tools, task)` gives plain LangGraph graphs a `ToolNode` with the same check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from langchain.agents.middleware import AgentMiddleware
from langchain.agents.middleware.types import ModelRequest, ModelResponse, ToolCallRequest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode
from langgraph.types import Command, interrupt

from tether.integrations.tool_gate import (
    DEFAULT_POLICY,
    ToolPolicy,
    Verdict,
    approve_always,
    authorize_tool_call,
    check_tool_call,
    needs_approval,
    prepare_call,
    refusal,
    settle_obligations,
    visible_tools,
)
from tether.tasks import ApprovalRequest, Task

__all__ = ["TetherMiddleware", "guarded_tool_node"]

ToolResult = ToolMessage | Command[Any]


def _interrupt(tool: str, obligations: list[str], context: dict[str, Any]) -> bool:
    """Pause the graph for a human (raises LangGraph's interrupt the first time; returns
    the resume value when the run resumes)."""
    answer = interrupt(
        {
            "type": "tether_approval",
            "tool": tool,
            "obligations": obligations,
            "arguments": dict(context.get("arguments", {})),
        }
    )
    return answer is True or (isinstance(answer, dict) and answer.get("approve") is True)


async def _refuse(req: ApprovalRequest) -> bool:
    return False


def _tool_name(tool: BaseTool | dict[str, Any]) -> str | None:
    if isinstance(tool, BaseTool):
        return tool.name
    name = tool.get("name")
    if name is None and isinstance(tool.get("function"), dict):
        name = tool["function"].get("name")
    return name if isinstance(name, str) else None


class TetherMiddleware(AgentMiddleware):
    """Authorize every tool call of a LangChain agent in `task`."""

    def __init__(
        self,
        task: Task,
        *,
        policy: ToolPolicy = DEFAULT_POLICY,
        approval: Literal["interrupt", "guard"] = "interrupt",
        hide_tools: bool = True,
    ) -> None:
        super().__init__()
        self.task = task
        self.policy = policy
        self.approval = approval
        self.hide_tools = hide_tools

    def _refusal(self, request: ToolCallRequest, verdict: Verdict) -> ToolMessage:
        call = request.tool_call
        return ToolMessage(
            content=verdict.reason, tool_call_id=call["id"], name=call["name"], status="error"
        )

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], ToolResult]
    ) -> ToolResult:
        call = request.tool_call
        # Approvals are asynchronous in tether: a synchronous run refuses obligations.
        verdict = check_tool_call(self.task, call["name"], call.get("args"), policy=self.policy)
        return handler(request) if verdict.allowed else self._refusal(request, verdict)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolResult]],
    ) -> ToolResult:
        call = request.tool_call
        verdict = await self._decide(call["name"], call.get("args"))
        return await handler(request) if verdict.allowed else self._refusal(request, verdict)

    async def _decide(self, tool: str, args: Any) -> Verdict:
        if self.approval == "guard":
            return await authorize_tool_call(self.task, tool, args, policy=self.policy)
        try:
            action, resource, context, d = prepare_call(self.task, tool, args, self.policy)
        except Exception:
            return refusal(tool, None, "the authorization check could not be completed")
        if d.allowed:
            return Verdict(True, "", d)
        if not needs_approval(d):
            return refusal(tool, d)
        # The interrupt happens here, outside tether's approver call, so the pause reaches
        # LangGraph; on resume the human's answer settles the obligations.
        approved = _interrupt(tool, list(d.obligations), context)
        return await settle_obligations(
            self.task,
            tool,
            action,
            resource,
            context,
            approve_always if approved else _refuse,
        )

    def _visible(self, request: ModelRequest) -> ModelRequest:
        if not self.hide_tools:
            return request
        names = [_tool_name(t) for t in request.tools]
        visible = visible_tools(self.task, (n for n in names if n), policy=self.policy)
        tools = [t for t, n in zip(request.tools, names, strict=True) if n in visible]
        return request.override(tools=tools)

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        return handler(self._visible(request))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        return await handler(self._visible(request))


def guarded_tool_node(
    tools: Sequence[BaseTool | Callable[..., Any]],
    task: Task,
    *,
    policy: ToolPolicy = DEFAULT_POLICY,
    approval: Literal["interrupt", "guard"] = "interrupt",
    **kwargs: Any,
) -> ToolNode:
    """A LangGraph `ToolNode` whose every call is authorized in `task`."""
    mw = TetherMiddleware(task, policy=policy, approval=approval)
    return ToolNode(
        list(tools), wrap_tool_call=mw.wrap_tool_call, awrap_tool_call=mw.awrap_tool_call, **kwargs
    )
