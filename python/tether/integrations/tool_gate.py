"""The decision every adapter makes before a tool runs, framework-free.

A tool call is `Action::"call_tool"` (or a per-tool action) on `Tool::"<name>"`, decided
by `task.authorize` so the task's scope, state, budgets and taint all apply, with the
call's arguments in `context.arguments` (never as the principal: the principal is the
task's verified agent, whatever the arguments claim). Approval obligations are settled
by an approver the adapter supplies (elicitation, an interrupt) or else the Guard's
approvers; anything unexpected denies.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import anyio

from tether._core import Decision
from tether.identity import cedar_entity_uid
from tether.tasks import ApprovalRequest, Approver, Task, action_uid

log = logging.getLogger("tether.integrations")

__all__ = [
    "DEFAULT_POLICY",
    "Approver",
    "ToolPolicy",
    "Verdict",
    "authorize_tool_call",
    "cedar_arguments",
    "check_tool_call",
    "refusal",
    "tool_visible",
    "visible_tools",
]

_MAX_DEPTH = 16


@dataclass(frozen=True)
class ToolPolicy:
    """How a tool call is named to the engine.

    `action` is one action for every tool (`"call_tool"`) or a function of the tool
    name (per-tool actions such as `lambda tool: f"call_{tool}"`). `arguments` puts the
    call's arguments in `context.arguments`; an engine that validates requests against a
    schema then needs `arguments` declared in the action's context (per-tool actions type
    them best), else set `arguments=False` (argument checks are then impossible).
    """

    action: str | Callable[[str], str] = "call_tool"
    resource_type: str = "Tool"
    arguments: bool = True
    # tool name -> (action uid, resource uid); formatting them costs more than deciding.
    _names: dict[str, tuple[str, str]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def names(self, tool: str) -> tuple[str, str]:
        hit = self._names.get(tool)
        if hit is None:
            hit = (self.action_for(tool), self.resource_for(tool))
            if len(self._names) < 4096:
                self._names[tool] = hit
        return hit

    def context(self, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """The decision context for a call with these arguments."""
        return {"arguments": cedar_arguments(arguments)} if self.arguments else {}

    def action_for(self, tool: str) -> str:
        name = self.action(tool) if callable(self.action) else self.action
        return str(action_uid(name))

    def resource_for(self, tool: str) -> str:
        return cedar_entity_uid(self.resource_type, tool)


DEFAULT_POLICY = ToolPolicy()


@dataclass(frozen=True)
class Verdict:
    """The outcome of one tool call check. `reason` is written for the model: it says
    what was refused and why in a sentence, and names no policy or internal detail."""

    allowed: bool
    reason: str = ""
    decision: Decision | None = None


def _cedar_value(value: Any, depth: int) -> Any:
    # Cedar has no null and no float: drop nulls, carry floats as decimals (4 places)
    # when exact, else as their text, so policies can still compare them.
    if depth > _MAX_DEPTH:
        raise ValueError("tool arguments are nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 2**63:
            return int(value)
        try:
            d = Decimal(repr(value))
        except InvalidOperation:
            return repr(value)
        if d == d.quantize(Decimal("0.0001")) and abs(d) < 922_337_203_685_477:
            return {"__extn": {"fn": "decimal", "arg": f"{d:.4f}"}}
        return repr(value)
    if isinstance(value, Mapping):
        return {
            str(k): v
            for k, v in ((k, _cedar_value(v, depth + 1)) for k, v in value.items())
            if v is not None
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [v for v in (_cedar_value(v, depth + 1) for v in value) if v is not None]
    return str(value)


_PLAIN = (str, int)  # bool is an int


def cedar_arguments(arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    """Tool arguments as a Cedar record (nulls dropped, floats as decimals or text)."""
    if not arguments:
        return {}
    # Fast path: flat strings, ints and bools are already Cedar values.
    if all(type(v) in _PLAIN or type(v) is bool for v in arguments.values()):
        return {str(k): v for k, v in arguments.items()}
    out: dict[str, Any] = _cedar_value(dict(arguments), 0)
    return out


def _revoked_message(d: Decision) -> bool:
    return (d.message or "").startswith("task revoked")


def refusal(tool: str, d: Decision | None, why: str | None = None) -> Verdict:
    if why is None:
        if d is not None and (d.revoked is not None or _revoked_message(d)):
            why = "the task is no longer active"
        elif d is not None and d.obligations:
            why = "it needs an approval that was not given"
        else:
            why = "the policy does not permit it for this agent and task"
    return Verdict(False, f"Calling the tool `{tool}` was refused: {why}.", d)


Propagate = tuple[type[BaseException], ...]


def _approval_request(
    task: Task, obligation: str, action: str, resource: str, context: Mapping[str, Any]
) -> ApprovalRequest:
    return ApprovalRequest(task, obligation, action, resource, context)


async def _approve(
    task: Task,
    obligations: Iterable[str],
    action: str,
    resource: str,
    context: Mapping[str, Any],
    approver: Approver | None,
    propagate: Propagate,
) -> bool:
    """Every obligation approved, by `approver` or else by the Guard's approver for it."""
    guard = task.guard
    for obligation in obligations:
        fn = approver or guard.approvers.get(obligation)
        if fn is None:
            return False
        ok = False
        with anyio.move_on_after(guard.approval_timeout):
            try:
                req = _approval_request(task, obligation, action, resource, context)
                ok = await fn(req) is True
            except propagate:
                raise
            except Exception as e:  # an approver that fails must not approve
                log.warning("approver for %s failed: %s", obligation, type(e).__name__)
                ok = False
        if not ok:
            return False
    return True


def _prepare(
    task: Task, tool: str, arguments: Mapping[str, Any] | None, policy: ToolPolicy
) -> tuple[str, str, dict[str, Any], Decision]:
    action, resource = policy.names(tool)
    context = policy.context(arguments)
    return action, resource, context, task.authorize(action, resource, context)


def _needs_approval(d: Decision) -> bool:
    return bool(d.obligations) and d.revoked is None and not _revoked_message(d)


def _after_approval(
    task: Task, tool: str, action: str, resource: str, context: dict[str, Any], d: Decision
) -> Verdict:
    d2 = task.authorize(action, resource, context, approved=d.obligations)
    return Verdict(True, "", d2) if d2.allowed else refusal(tool, d2)


def _failed(tool: str, e: Exception) -> Verdict:
    log.warning("tool call check for %s failed: %s: %s", tool, type(e).__name__, e)
    return refusal(tool, None, "the authorization check could not be completed")


async def authorize_tool_call(
    task: Task,
    tool: str,
    arguments: Mapping[str, Any] | None,
    *,
    policy: ToolPolicy = DEFAULT_POLICY,
    approver: Approver | None = None,
    propagate: Propagate = (),
) -> Verdict:
    """Decide one tool call for `task`; a permit commits the task's state effects.

    Obligations go to `approver` (else the Guard's approvers). Exceptions of the
    `propagate` types (a framework's pause signal) pass through; any other error denies.
    """
    try:
        action, resource, context, d = _prepare(task, tool, arguments, policy)
        if d.allowed:
            return Verdict(True, "", d)
        if not _needs_approval(d):
            return refusal(tool, d)
        if not await _approve(task, d.obligations, action, resource, context, approver, propagate):
            return refusal(tool, d)
        return _after_approval(task, tool, action, resource, context, d)
    except propagate:
        raise
    except Exception as e:  # fail closed: a check that cannot be made denies
        return _failed(tool, e)


def check_tool_call(
    task: Task,
    tool: str,
    arguments: Mapping[str, Any] | None,
    *,
    policy: ToolPolicy = DEFAULT_POLICY,
    approve: Callable[[ApprovalRequest], bool] | None = None,
    propagate: Propagate = (),
) -> Verdict:
    """`authorize_tool_call` for synchronous hooks: obligations need a synchronous
    `approve` (the Guard's approvers are async, so without one an obligation denies)."""
    try:
        action, resource, context, d = _prepare(task, tool, arguments, policy)
        if d.allowed:
            return Verdict(True, "", d)
        if not _needs_approval(d) or approve is None:
            return refusal(tool, d)
        for obligation in d.obligations:
            req = _approval_request(task, obligation, action, resource, context)
            if approve(req) is not True:
                return refusal(tool, d)
        return _after_approval(task, tool, action, resource, context, d)
    except propagate:
        raise
    except Exception as e:
        return _failed(tool, e)


def visible_tools(
    task: Task, tools: Iterable[str], *, policy: ToolPolicy = DEFAULT_POLICY
) -> set[str]:
    """The tools the task may call at all (without arguments). Commits nothing.

    Decided on one snapshot of the task's state, so listing never spends a budget or
    counts as a call. A permit that carries an obligation counts as visible (the call
    will ask for approval). Any error hides the tool.
    """
    names = list(tools)
    try:
        if task.revoked is not None:
            return set()
        scope = None if task.scope is None else {action_uid(a) for a in task.scope}
        ctx = {"intent": task.intent, "task": task.state()}
        decide = task.guard.engine.authorize
    except Exception as e:
        log.warning("tool visibility check failed: %s", type(e).__name__)
        return set()
    out = set()
    for tool in names:
        try:
            action, resource = policy.names(tool)
            if scope is not None and action not in scope:
                continue
            if decide(task.agent_uid, action, resource, ctx).allowed:
                out.add(tool)
        except Exception as e:
            log.warning("tool visibility check for %s failed: %s", tool, type(e).__name__)
    return out


def tool_visible(task: Task, tool: str, *, policy: ToolPolicy = DEFAULT_POLICY) -> bool:
    """`visible_tools` for one tool."""
    return tool in visible_tools(task, (tool,), policy=policy)
