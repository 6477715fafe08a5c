"""pydantic-ai: a capability that authorizes every tool call before it executes.

`Agent(model, tools=[...], capabilities=[TetherCapability(task)], output_type=[str,
DeferredToolRequests])`:

- `prepare_tools` offers the model only the tools the task may call (every step);
- `before_tool_execute` decides each call with `task.authorize` (arguments as validated):
  a refusal skips the tool and hands the model a sentence saying why (`SkipToolExecution`);
  a permit with an obligation raises `ApprovalRequired`, so the run ends with
  `DeferredToolRequests`; resuming with `DeferredToolResults(approvals={id: True})`
  re-authorizes the call with its obligations met. Any error refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import ApprovalRequired, SkipToolExecution
from pydantic_ai.messages import ToolCallPart
from pydantic_ai.tools import ToolDefinition

from tether.integrations.tool_gate import (
    DEFAULT_POLICY,
    ToolPolicy,
    approve_always,
    needs_approval,
    prepare_call,
    refusal,
    settle_obligations,
    visible_tools,
)
from tether.tasks import Task

__all__ = ["TetherCapability"]


@dataclass
class TetherCapability(AbstractCapability[Any]):
    """Authorize every function tool call of a pydantic-ai agent in `task`."""

    task: Task
    policy: ToolPolicy = DEFAULT_POLICY
    hide_tools: bool = True

    async def prepare_tools(
        self, ctx: RunContext[Any], tool_defs: list[ToolDefinition]
    ) -> list[ToolDefinition]:
        if not self.hide_tools:
            return tool_defs
        visible = visible_tools(self.task, (t.name for t in tool_defs), policy=self.policy)
        return [t for t in tool_defs if t.name in visible]

    async def before_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: dict[str, Any],
    ) -> dict[str, Any]:
        tool = call.tool_name
        try:
            action, resource, context, d = prepare_call(self.task, tool, args, self.policy)
        except Exception:
            reason = refusal(tool, None, "the authorization check could not be completed").reason
            raise SkipToolExecution(reason) from None
        if d.allowed:
            return args
        if not needs_approval(d):
            raise SkipToolExecution(refusal(tool, d).reason)
        if not ctx.tool_call_approved:
            raise ApprovalRequired({"tether": {"obligations": list(d.obligations)}})
        # The run was resumed with this call approved: that approval settles the obligations.
        verdict = await settle_obligations(
            self.task, tool, action, resource, context, approve_always
        )
        if verdict.allowed:
            return args
        raise SkipToolExecution(verdict.reason)
