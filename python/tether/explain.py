"""Why a request was allowed or denied, per policy and per condition.

`explain()` runs the request through Cedar's own authorizer and evaluator (in Rust,
`rust/explain.rs`), not tether's compiled evaluator, so the explanation is exact by
construction; it also decides with the engine and records both verdicts, which always
agree unless the engine has a bug. Rendered for people by `render_tree` (the CLI's
`tether explain`) and for the model that made the call by `render_for_model`, which
names rules and the conditions that would have to change, never attribute values,
context values or error details.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from tether import _core
from tether.audit.log import uid_text

if TYPE_CHECKING:
    from tether._core import Decision
    from tether.engine import Engine


class Condition(msgspec.Struct, frozen=True):
    kind: str  # "when" | "unless"
    text: str
    value: str | None
    error: str | None
    task_reads: list[tuple[str, str]]

    @property
    def holds(self) -> bool:
        """The condition lets its policy apply (a `when` true, an `unless` false)."""
        return self.value == ("true" if self.kind == "when" else "false")


class PolicyExplanation(msgspec.Struct, frozen=True):
    id: str
    effect: str
    scope_matched: bool
    conditions: list[Condition]
    satisfied: bool
    error: str | None


class Explanation(msgspec.Struct, frozen=True):
    allowed: bool
    reasons: list[str]
    errors: list[str]
    policies: list[PolicyExplanation]
    action: str = ""
    engine_allowed: bool | None = None  # the compiled engine's verdict on the same request


_DECODE = msgspec.json.Decoder(Explanation)


def _json_default(o: Any) -> Any:
    t, i = getattr(o, "type", None), getattr(o, "id", None)
    if isinstance(t, str) and isinstance(i, str):
        return {"__entity": {"type": t, "id": i}}
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    raise TypeError(f"a {type(o).__name__} is not a Cedar value")


def explain(
    engine: Engine,
    principal: Any,
    action: Any,
    resource: Any,
    context: Mapping[str, Any] | None = None,
    *,
    entities: str | list[dict[str, Any]] | None = None,
    schema: str | None = None,
) -> Explanation:
    """Explain one request against `engine`'s policies. By default Cedar's evaluator
    reads the engine's own schema and entity store (`engine.explain(...)`); pass
    `entities` (Cedar JSON text or list) and `schema` (text) to explain against other
    data. For a task decision use `task.explain(...)`, which adds `context.task`."""
    from tether.tasks import action_uid

    a = uid_text(action_uid(action))
    p, r = uid_text(principal), uid_text(resource)
    ctx = json.dumps(dict(context or {}), default=_json_default)
    if entities is None and schema is None:
        raw = engine.explain_json(p, a, r, ctx)
    else:
        ents = entities if isinstance(entities, str) else json.dumps(entities or [])
        raw = _core.explain_json(engine.policy_text(), schema, ents, p, a, r, ctx)
    ex = _DECODE.decode(raw)
    try:
        engine_allowed = engine.authorize(principal, a, resource, context).allowed
    except _core.TetherError:
        engine_allowed = False  # the engine refuses the request (e.g. schema): a deny
    return msgspec.structs.replace(ex, action=a, engine_allowed=engine_allowed)


def _mark(c: Condition) -> str:
    if c.error is not None:
        return f"error: {c.error}"
    return f"{c.value}" + ("" if c.holds else "  ✗")


def render_tree(ex: Explanation) -> str:
    """The explanation as an indented tree (every policy, scope, condition, task reads)."""
    head = "ALLOW" if ex.allowed else "DENY"
    why = ", ".join(ex.reasons) if ex.reasons else "no policy applies"
    lines = [f"{head} {ex.action}  (decided by: {why})"]
    if ex.engine_allowed is not None and ex.engine_allowed != ex.allowed:
        lines.append("WARNING: tether's engine decided differently; please report this")
    for e in ex.errors:
        lines.append(f"error: {e}")
    for i, p in enumerate(ex.policies):
        last = i == len(ex.policies) - 1
        branch, stem = ("└─ ", "   ") if last else ("├─ ", "│  ")
        state = "applies" if p.satisfied else "does not apply"
        if not p.scope_matched:
            state = "scope does not match"
        lines.append(f"{branch}{p.effect} {p.id}: {state}")
        for j, c in enumerate(p.conditions):
            b2 = "└─ " if j == len(p.conditions) - 1 else "├─ "
            lines.append(f"{stem}{b2}{c.kind} {{ {c.text} }} = {_mark(c)}")
            s2 = "   " if j == len(p.conditions) - 1 else "│  "
            for path, value in c.task_reads:
                lines.append(f"{stem}{s2}  reads {path} = {value}")
    return "\n".join(lines)


def render_for_model(ex: Explanation) -> str:
    """A short refusal for the model: which rule, what would have to change; no data."""
    if ex.allowed:
        return "Allowed."
    forbids = [p for p in ex.policies if p.effect == "forbid" and p.satisfied]
    if forbids:
        parts = []
        for p in forbids:
            whens = [c.text for c in p.conditions if c.kind == "when"]
            unless = [c.text for c in p.conditions if c.kind == "unless"]
            change = []
            if whens:
                change.append("it applies while " + " and ".join(f"`{t}`" for t in whens))
            if unless:
                change.append("it would not apply if " + " or ".join(f"`{t}`" for t in unless))
            parts.append(
                f"Refused by rule `{p.id}`" + (f": {'; '.join(change)}." if change else ".")
            )
        return " ".join(parts)
    near = [p for p in ex.policies if p.effect == "permit" and p.scope_matched]
    if not near:
        return f"Refused: no rule permits {ex.action} for this agent on this resource."
    parts = []
    for p in near:
        failing = [c for c in p.conditions if not c.holds]
        need = [f"`{c.text}`" if c.kind == "when" else f"not `{c.text}`" for c in failing]
        if need:
            parts.append(f"`{p.id}` would permit it if " + " and ".join(need))
        else:
            parts.append(f"`{p.id}` matched but did not apply")
    return "Refused: no rule permits it. " + "; ".join(parts) + "."


def denial_for_model(decision: Decision | None) -> str:
    """A short refusal from a decision alone (rule names, nothing else)."""
    if decision is None or decision.allowed:
        return "Refused." if decision is None else "Allowed."
    if decision.revoked is not None:
        return "Refused: this task was revoked; start a new task if the work must continue."
    if decision.obligations:
        need = ", ".join(f"`{o}`" for o in decision.obligations)
        return f"Refused until approved: this action needs {need}."
    if decision.reasons:
        rules = ", ".join(f"`{r}`" for r in decision.reasons)
        return f"Refused by rule {rules}."
    return "Refused: no rule permits this action."
