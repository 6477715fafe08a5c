"""OpenAI Agents SDK: authorize every function tool call, approvals through the SDK's flow.

`TetherTools(task).protect(tools)` sets, on each `FunctionTool`:

- `needs_approval`: decides the call with `task.authorize` when the SDK plans it; a permit
  that carries an obligation returns True, so the SDK interrupts the run for the human
  (`result.interruptions`, then `state.approve(...)` / `state.reject(...)`);
- a `tool_input_guardrail` that enforces that decision before the tool runs: a refusal is
  `reject_content` with a sentence the model reads; an approved call is re-authorized with
  its obligations met; a call the guardrail has no decision for is decided there (with the
  Guard's approvers for obligations), so the guardrail alone is enough to enforce;
- `is_enabled` (unless `hide_tools=False`): the model is only offered the tools the task
  may call, re-checked every turn (a tool the task was tainted out of disappears; the SDK
  refuses a call to a tool it did not offer).

`mcp_tool_filter` is a `tool_filter` for the SDK's MCP servers (`MCPServerStdio(...,
tool_filter=tools.mcp_tool_filter)`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agents import FunctionTool, RunContextWrapper, ToolGuardrailFunctionOutput
from agents.tool_guardrails import ToolInputGuardrail, ToolInputGuardrailData

from tether._core import Decision
from tether.integrations.tool_gate import (
    DEFAULT_POLICY,
    ToolPolicy,
    approve_always,
    authorize_tool_call,
    refusal,
    settle_obligations,
    tool_visible,
)
from tether.integrations.tool_gate import needs_approval as waits_on_approval
from tether.tasks import Task

__all__ = ["TetherTools"]

_MAX_PENDING = 10_000


@dataclass(frozen=True)
class _Planned:
    """The decision `needs_approval` made for one call id."""

    tool: str
    decision: Decision
    action: str
    resource: str
    context: dict[str, Any]


class TetherTools:
    """The tether hooks for one task's run."""

    def __init__(
        self, task: Task, *, policy: ToolPolicy = DEFAULT_POLICY, hide_tools: bool = True
    ) -> None:
        self.task = task
        self.policy = policy
        self.hide_tools = hide_tools
        self._planned: OrderedDict[str, _Planned] = OrderedDict()
        self.input_guardrail: ToolInputGuardrail[Any] = ToolInputGuardrail(
            guardrail_function=self._guardrail, name="tether"
        )

    def protect(self, tools: Iterable[FunctionTool]) -> list[FunctionTool]:
        """Install the hooks on each tool (in place) and return them."""
        out = []
        for tool in tools:
            tool.tool_input_guardrails = [*(tool.tool_input_guardrails or []), self.input_guardrail]
            tool.needs_approval = self.needs_approval_for(tool.name)
            if self.hide_tools:
                tool.is_enabled = self._enabled(tool.name)
            out.append(tool)
        return out

    def needs_approval_for(self, tool: str) -> Any:
        """A `needs_approval` callable for `tool`: decides the call when the SDK plans it,
        and answers True when the permit waits on an obligation."""

        async def needs_approval(
            ctx: RunContextWrapper[Any], params: dict[str, Any], call_id: str
        ) -> bool:
            try:
                action, resource = self.policy.names(tool)
                context = self.policy.context(params)
                d = self.task.authorize(action, resource, context)
            except Exception:
                return False  # no plan: the guardrail decides, and fails closed
            self._planned[call_id] = _Planned(tool, d, action, resource, context)
            while len(self._planned) > _MAX_PENDING:
                self._planned.popitem(last=False)
            return bool(d.obligations) and not d.allowed and d.revoked is None

        return needs_approval

    async def _guardrail(self, data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        tc = data.context
        planned = self._planned.pop(tc.tool_call_id, None)
        if planned is not None and planned.tool == tc.tool_name:
            d = planned.decision
            if d.allowed:
                return ToolGuardrailFunctionOutput.allow()
            if waits_on_approval(d):
                # Running at all means the SDK's approval flow approved this call.
                verdict = await settle_obligations(
                    self.task,
                    tc.tool_name,
                    planned.action,
                    planned.resource,
                    planned.context,
                    approve_always,
                )
                if verdict.allowed:
                    return ToolGuardrailFunctionOutput.allow()
                return ToolGuardrailFunctionOutput.reject_content(verdict.reason)
            return ToolGuardrailFunctionOutput.reject_content(refusal(tc.tool_name, d).reason)
        try:
            arguments = json.loads(tc.tool_arguments or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("tool arguments are not an object")
        except ValueError:
            reason = refusal(tc.tool_name, None, "its arguments are not a JSON object")
            return ToolGuardrailFunctionOutput.reject_content(reason.reason)
        verdict = await authorize_tool_call(self.task, tc.tool_name, arguments, policy=self.policy)
        if verdict.allowed:
            return ToolGuardrailFunctionOutput.allow()
        return ToolGuardrailFunctionOutput.reject_content(verdict.reason)

    def _enabled(self, name: str) -> Any:
        def enabled(ctx: RunContextWrapper[Any], agent: Any) -> bool:
            return tool_visible(self.task, name, policy=self.policy)

        return enabled

    def mcp_tool_filter(self, ctx: Any, tool: Any) -> bool:
        """`tool_filter` for the SDK's MCP servers: only tools the task may call."""
        name = getattr(tool, "name", None)
        return isinstance(name, str) and tool_visible(self.task, name, policy=self.policy)
