"""The cedarpy oracle and the comparison of tether against it, shared by the oracle suites.

`compare_world` checks every request of a generated world through `authorize(reasons=True)`,
the fast `authorize`, `is_allowed` and `authorize_batch` against cedarpy's answers.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import cedarpy
import pytest

from tests.conformance.cedar_gen import Request, World, cedar_uid

try:
    from tether import Engine

    _TETHER_IMPORT_ERROR: BaseException | None = None
except Exception as exc:  # the native module is not built: fail loudly, never skip
    Engine = None  # type: ignore[assignment,misc]
    _TETHER_IMPORT_ERROR = exc


ID_RE = re.compile(r'^@id\("([^"]*)"\)', re.M)
ERR_RE = re.compile(r"^error while evaluating policy `([^`]+)`")


def require_engine() -> Any:
    if _TETHER_IMPORT_ERROR is not None:
        pytest.fail(
            f"`from tether import Engine` failed: {_TETHER_IMPORT_ERROR!r}. "
            "Build the native module first (`pip install -e .` / `maturin develop`).",
            pytrace=False,
        )
    return Engine


# ---------------------------------------------------------------------------------------------
# Oracle


@dataclass(frozen=True)
class Expected:
    allowed: bool
    reasons: list[str]
    errors: list[str]
    messages: list[str]
    # policy id -> Cedar's message for its error, without the "error while evaluating" prefix
    bodies: dict[str, str] = field(default_factory=dict)


def policy_names(world: World) -> dict[str, str]:
    """Cedar's `policyN` -> the name tether reports: the `@id` annotation, if any."""
    out = {}
    for i, text in enumerate(world.policies):
        m = ID_RE.search(text)
        out[f"policy{i}"] = m.group(1) if m else f"policy{i}"
    return out


def cedar_oracle(
    world: World, schema: str | None = None, requests: list[Request] | None = None
) -> list[Expected]:
    """cedarpy's answers for `requests` (default: the world's). Parse failures are generator
    bugs."""
    try:
        policies = cedarpy.PolicySet.from_str(world.policy_text)
    except ValueError as e:
        pytest.fail(f"generator bug: cedarpy cannot parse the policies: {e}\n{world.policy_text}")
    try:
        entities = cedarpy.Entities.from_json_str(world.entities_json)
    except ValueError as e:
        pytest.fail(f"generator bug: cedarpy rejects the entities: {e}\n{world.entities_json}")
    requests = world.requests if requests is None else requests
    results = cedarpy.is_authorized_batch(
        [r.cedarpy() for r in requests], policies, entities, schema=schema
    )
    # Cedar names policies `policyN`; tether names one by its `@id` when it has one.
    name = policy_names(world)
    out = []
    for req, res in zip(requests, results, strict=True):
        errs = list(res.diagnostics.errors)
        assert res.decision in (cedarpy.Decision.Allow, cedarpy.Decision.Deny), (
            f"generator bug: cedarpy gave {res.decision} for {req}: {errs}"
        )
        bodies = {}
        for msg in errs:
            m = ERR_RE.match(msg)
            assert m, f"unexpected cedarpy error format: {msg!r}"
            bodies[name[m.group(1)]] = msg[m.end() :].removeprefix(": ")
        out.append(
            Expected(
                allowed=res.decision == cedarpy.Decision.Allow,
                reasons=sorted(name[r] for r in res.diagnostics.reasons),
                errors=sorted(bodies),
                messages=errs,
                bodies=bodies,
            )
        )
    return out


# Cedar's evaluation-error messages and tether's wording of the same error. Where Cedar's text
# carries detail tether does not reproduce (the operands of an overflow, the entity lacking an
# attribute or tag) the rest is compared; type errors are compared by kind only (Cedar's wording
# of the expected types is not stable across versions); everything else must be identical.
_ATTR = re.compile(r"^(?:`.*` |record )does not have the attribute `(.*)`$", re.S)
_TAG = re.compile(r"^`.*` does not have the tag `(.*)`$", re.S)
_KINDS = {
    "type": re.compile(r"^type error: "),
    "overflow": re.compile(r"^integer overflow"),
    "attribute": re.compile(r"does not have the attribute|^attribute `.*` does not exist$", re.S),
    "tag": re.compile(r"does not have the tag|^tag `.*` does not exist$", re.S),
    "entity": re.compile(r"^entity `.*` does not exist$", re.S),
    "extension": re.compile(r"^error while evaluating `.*` extension function"),
}


def error_kind(message: str) -> str:
    message = message.removeprefix("extension error: ")
    return next((k for k, rx in _KINDS.items() if rx.search(message)), "other")


def message_verdict(cedar: str, tether: str) -> str:
    """ "same" when tether words Cedar's error as expected; "unescaped id" when they differ only
    by tether printing an entity id's quotes unescaped; "another error first" when tether
    reports another error of the same policy, or the same kind of error about another attribute,
    entity or tag (it evaluated the operands in another order);
    "different" otherwise."""
    tether = tether.removeprefix("extension error: ")
    if error_kind(cedar) != error_kind(tether):
        return "another error first"
    if cedar.startswith("integer overflow while attempting to"):
        ok = tether == "integer overflow"
    elif m := _ATTR.match(cedar):
        ok = tether == f"attribute `{m.group(1)}` does not exist"
    elif m := _TAG.match(cedar):
        ok = tether == f"tag `{m.group(1)}` does not exist"
    elif error_kind(cedar) == "type":
        ok = True
    else:
        ok = cedar == tether
    if ok:
        return "same"
    if cedar.replace('\\"', '"') == tether:
        return "unescaped id"
    # The same kind of error about another attribute, entity or tag: another operand first.
    if error_kind(cedar) in ("attribute", "entity", "tag"):
        return "another error first"
    return "different"


# ---------------------------------------------------------------------------------------------
# Comparison


@dataclass
class Tally:
    worlds: int = 0
    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def summary(self, seconds: float) -> str:
        o = self.outcomes
        return (
            f"{self.cases} requests over {self.worlds} worlds in {seconds:.1f}s "
            f"(allow {o['allow']}, deny {o['deny']}, with errors {o['errors']}, "
            f"error messages: {o['message same']} as Cedar's, {o['message unescaped id']} with an "
            f"unescaped id, {o['message another error first']} another error first; "
            f"entity handles {o['handles']}, "
            f"shared-context batch requests {o['shared']})"
        )


def tether_args(req: Request, i: int, engine: Any) -> tuple[Any, Any, Any, dict[str, Any] | None]:
    """Rotate the accepted request forms: `Type::"id"` strings, (type, id) tuples and the
    engine's entity handles."""
    uids = (req.principal, req.action, req.resource)
    p: Any
    a: Any
    r: Any
    if i % 3 == 0:
        p, a, r = (cedar_uid(u) for u in uids)
    elif i % 3 == 1:
        p, a, r = uids
    else:
        p, a, r = (engine.entity(*u) for u in uids)
    ctx = req.context if (req.context or i % 4) else None
    return p, a, r, ctx


def policies_named(world: World, ids: set[str]) -> str:
    names = policy_names(world)
    by_id = {names[f"policy{i}"]: text for i, text in enumerate(world.policies)}
    return "\n".join(f"  {pid}: {by_id.get(pid, '<no such policy>')}" for pid in sorted(ids))


def mismatch(world: World, req: Request, what: str, exp: Expected, got: Any) -> str:
    got_r = sorted(getattr(got, "reasons", []) or [])
    got_e = sorted(getattr(got, "errors", []) or [])
    differing = set(exp.reasons) ^ set(got_r) | set(exp.errors) ^ set(got_e)
    return (
        f"{what} differs from Cedar for\n  {req}\n"
        f"  cedar : allowed={exp.allowed} reasons={exp.reasons} errors={exp.errors}\n"
        f"  tether: allowed={getattr(got, 'allowed', got)!r} reasons={got_r} errors={got_e}\n"
        f"  cedar messages: {exp.messages}\n"
        f"  tether messages: {list(getattr(got, 'error_messages', []) or [])}\n"
        f"policies involved:\n{policies_named(world, differing)}"
    )


def outcome(decision: Any) -> tuple[bool, list[str], list[str]]:
    return decision.allowed, sorted(decision.reasons), sorted(decision.errors)


def compare_messages(world: World, req: Request, exp: Expected, got: Any, tally: Tally) -> None:
    for line in got.error_messages:
        pid, _, body = line.partition(": ")
        assert pid in exp.bodies, mismatch(world, req, f"error message of {pid}", exp, got)
        verdict = message_verdict(exp.bodies[pid], body)
        assert verdict != "different", mismatch(world, req, f"error message of {pid}", exp, got)
        tally.outcomes[f"message {verdict}"] += 1


def compare_world(world: World, tally: Tally, schema: str | None = None) -> None:
    """Every request of `world` through every entry point, against cedarpy: the default engine
    (reasons, errors and their messages), a fail-closed `on_error="deny"` engine (oracle:
    Cedar's decision, and deny if any policy errored) and a batch sharing one context."""
    engine_cls = require_engine()
    expected = cedar_oracle(world, schema)
    # Hand over the entities as a list or as JSON text, both documented.
    entities: Any = world.entities if len(world.policies) % 2 else world.entities_json
    eng = engine_cls(world.policy_text, schema, entities)
    closed = engine_cls(world.policy_text, schema, entities, on_error="deny")
    batch: list[tuple[Any, ...]] = []
    for i, (req, exp) in enumerate(zip(world.requests, expected, strict=True)):
        p, a, r, ctx = tether_args(req, i, eng)
        full = eng.authorize(p, a, r, ctx, reasons=True)
        assert outcome(full) == (exp.allowed, exp.reasons, exp.errors), mismatch(
            world, req, "authorize(reasons=True)", exp, full
        )
        compare_messages(world, req, exp, full, tally)

        fast = eng.authorize(p, a, r, ctx)
        assert fast.allowed == exp.allowed, mismatch(world, req, "authorize()", exp, fast)
        assert list(fast.reasons) == [], mismatch(
            world, req, "authorize() without reasons=True returned reasons", exp, fast
        )
        assert set(fast.errors) <= set(exp.errors), mismatch(
            world, req, "authorize() reported errors Cedar does not have", exp, fast
        )
        assert bool(fast) == exp.allowed

        allowed = eng.is_allowed(p, a, r, ctx)
        assert allowed is exp.allowed, mismatch(world, req, "is_allowed()", exp, allowed)

        # Fail-closed: the handles above belong to `eng`, so `closed` gets plain strings.
        fail_closed = exp.allowed and not exp.errors
        cp, ca, cr = (cedar_uid(u) for u in (req.principal, req.action, req.resource))
        got_closed = closed.authorize(cp, ca, cr, ctx, reasons=True)
        assert got_closed.allowed is fail_closed, mismatch(
            world, req, 'on_error="deny" authorize(reasons=True)', exp, got_closed
        )
        # It may stop at the first error it meets: the errors it names are Cedar's.
        assert set(got_closed.errors) <= set(exp.errors), mismatch(
            world, req, 'on_error="deny" errors', exp, got_closed
        )
        assert bool(got_closed.errors) == bool(exp.errors)
        assert closed.is_allowed(cp, ca, cr, ctx) is fail_closed, mismatch(
            world, req, 'on_error="deny" is_allowed()', exp, fail_closed
        )

        batch.append((p, a, r) if ctx is None else (p, a, r, ctx))
        tally.cases += 1
        tally.outcomes["allow" if exp.allowed else "deny"] += 1
        tally.outcomes["errors"] += bool(exp.errors)
        tally.outcomes["handles"] += i % 3 == 2
    got_batch = eng.authorize_batch(batch)
    assert list(got_batch) == [e.allowed for e in expected], "authorize_batch differs from Cedar"
    compare_shared_context(world, tally, schema, eng)
    tally.worlds += 1


def compare_shared_context(world: World, tally: Tally, schema: str | None, eng: Any) -> None:
    """`authorize_batch(requests, context)`: one context, converted once, for every request."""
    if not world.requests:
        return
    shared = world.requests[0].context
    requests = [Request(r.principal, r.action, r.resource, shared) for r in world.requests]
    expected = cedar_oracle(world, schema, requests)
    triples = [tether_args(r, i, eng)[:3] for i, r in enumerate(requests)]
    got = eng.authorize_batch(triples, shared)
    assert list(got) == [e.allowed for e in expected], (
        f"authorize_batch with a shared context differs from Cedar: context {shared}"
    )
    tally.cases += len(requests)
    tally.outcomes["shared"] += len(requests)
