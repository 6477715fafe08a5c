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
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from tether._core import Decision
from tether.identity import cedar_entity_uid
from tether.tasks import ApprovalRequest, Approver, Denied, Task, action_uid

log = logging.getLogger("tether.integrations")

__all__ = [
    "DEFAULT_POLICY",
    "Approver",
    "ToolPolicy",
    "Verdict",
    "approve_always",
    "authorize_tool_call",
    "cedar_arguments",
    "check_tool_call",
    "needs_approval",
    "prepare_call",
    "refusal",
    "settle_obligations",
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

# The approver of the adapter call in progress. tether discharges an obligation only through
# `task.require`, which asks the Guard's approver for it; the dispatcher installed there
# hands the question to this call's approver (an elicitation, an interrupt, a framework's
# own approval), or to the Guard's original approver when the adapter has none.
_CALL_APPROVER: ContextVar[Approver | None] = ContextVar("tether_call_approver", default=None)


def _dispatcher(fallback: Approver | None) -> Approver:
    async def dispatch(req: ApprovalRequest) -> bool:
        fn = _CALL_APPROVER.get()
        if fn is None:
            fn = fallback
        return fn is not None and await fn(req) is True

    dispatch.__dict__["tether_dispatch"] = True
    return dispatch


def _install_dispatch(task: Task, obligations: Iterable[str]) -> None:
    approvers = task.guard.approvers
    for obligation in obligations:
        current = approvers.get(obligation)
        if current is None or not getattr(current, "tether_dispatch", False):
            approvers[obligation] = _dispatcher(current)


def prepare_call(
    task: Task, tool: str, arguments: Mapping[str, Any] | None, policy: ToolPolicy
) -> tuple[str, str, dict[str, Any], Decision]:
    """(action, resource, context, first decision) for a tool call."""
    action, resource = policy.names(tool)
    context = policy.context(arguments)
    return action, resource, context, task.authorize(action, resource, context)


def needs_approval(d: Decision) -> bool:
    """A permit waiting on obligations (not a refusal, not a revoked task)."""
    return bool(d.obligations) and d.revoked is None and not _revoked_message(d)


async def approve_always(req: ApprovalRequest) -> bool:
    """For frameworks whose own approval flow already approved this very call."""
    return True


async def settle_obligations(
    task: Task,
    tool: str,
    action: str,
    resource: str,
    context: dict[str, Any],
    approver: Approver | None,
    propagate: Propagate = (),
) -> Verdict:
    """Discharge a permit's obligations through `task.require` (single-use grants bound to
    this request), asking `approver` (else the Guard's approver); refusals deny."""
    _install_dispatch(task, _obligation_names(task))
    token = _CALL_APPROVER.set(approver)
    try:
        d = await task.require(action, resource, context)
        return Verdict(True, "", d)
    except propagate:
        raise
    except Denied as e:
        return refusal(tool, e.decision, None if e.decision is not None else _why_refused(e))
    finally:
        _CALL_APPROVER.reset(token)


def _obligation_names(task: Task) -> set[str]:
    # Every obligation name a policy declares (so a dispatcher is in place before asking).
    names: set[str] = set()
    engine = task.guard.engine
    for pid in engine.policy_ids():
        for key, value in engine.annotations(pid):
            if key == "obligation":
                names.add(value)
    return names


def _why_refused(e: Exception) -> str:
    return "it needs an approval that was not given"


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

    Obligations go to `approver` (else the Guard's approvers) through `task.require`.
    Exceptions of the `propagate` types (a framework's pause signal) pass through; any
    other error denies.
    """
    try:
        action, resource, context, d = prepare_call(task, tool, arguments, policy)
        if d.allowed:
            return Verdict(True, "", d)
        if not needs_approval(d):
            return refusal(tool, d)
        return await settle_obligations(task, tool, action, resource, context, approver, propagate)
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
) -> Verdict:
    """`authorize_tool_call` for synchronous hooks. Approvals are asynchronous in tether
    (`task.require`), so here an obligation refuses (fail closed)."""
    try:
        _, _, _, d = prepare_call(task, tool, arguments, policy)
        return Verdict(True, "", d) if d.allowed else refusal(tool, d)
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
