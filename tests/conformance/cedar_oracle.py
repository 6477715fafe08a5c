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


def cedar_oracle(world: World) -> list[Expected]:
    """cedarpy's answers for every request in `world`. Parse failures are generator bugs."""
    try:
        policies = cedarpy.PolicySet.from_str(world.policy_text)
    except ValueError as e:
        pytest.fail(f"generator bug: cedarpy cannot parse the policies: {e}\n{world.policy_text}")
    try:
        entities = cedarpy.Entities.from_json_str(world.entities_json)
    except ValueError as e:
        pytest.fail(f"generator bug: cedarpy rejects the entities: {e}\n{world.entities_json}")
    results = cedarpy.is_authorized_batch([r.cedarpy() for r in world.requests], policies, entities)
    out = []
    for req, res in zip(world.requests, results, strict=True):
        errs = list(res.diagnostics.errors)
        assert res.decision in (cedarpy.Decision.Allow, cedarpy.Decision.Deny), (
            f"generator bug: cedarpy gave {res.decision} for {req}: {errs}"
        )
        ids = []
        for msg in errs:
            m = ERR_RE.match(msg)
            assert m, f"unexpected cedarpy error format: {msg!r}"
            ids.append(m.group(1))
        out.append(
            Expected(
                allowed=res.decision == cedarpy.Decision.Allow,
                reasons=sorted(res.diagnostics.reasons),
                errors=sorted(ids),
                messages=errs,
            )
        )
    return out


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
            f"(allow {o['allow']}, deny {o['deny']}, with errors {o['errors']})"
        )


def tether_args(req: Request, i: int) -> tuple[Any, Any, Any, dict[str, Any] | None]:
    """Alternate the accepted request forms: `Type::"id"` strings and (type, id) tuples."""
    uids = (req.principal, req.action, req.resource)
    p: Any
    a: Any
    r: Any
    if i % 2 == 0:
        p, a, r = (cedar_uid(u) for u in uids)
    else:
        p, a, r = uids
    ctx = req.context if (req.context or i % 3) else None
    return p, a, r, ctx


def policies_named(world: World, ids: set[str]) -> str:
    by_id = {f"policy{i}": text for i, text in enumerate(world.policies)}
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
        f"policies involved:\n{policies_named(world, differing)}"
    )


def compare_world(world: World, tally: Tally) -> None:
    engine_cls = require_engine()
    expected = cedar_oracle(world)
    # Hand over the entities as a list or as JSON text, both documented.
    entities: Any = world.entities if len(world.policies) % 2 else world.entities_json
    eng = engine_cls(world.policy_text, None, entities)
    batch: list[tuple[Any, ...]] = []
    for i, (req, exp) in enumerate(zip(world.requests, expected, strict=True)):
        p, a, r, ctx = tether_args(req, i)
        full = eng.authorize(p, a, r, ctx, reasons=True)
        got = (full.allowed, sorted(full.reasons), sorted(full.errors))
        assert got == (exp.allowed, exp.reasons, exp.errors), mismatch(
            world, req, "authorize(reasons=True)", exp, full
        )

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

        batch.append((p, a, r) if ctx is None else (p, a, r, ctx))
        tally.cases += 1
        tally.outcomes["allow" if exp.allowed else "deny"] += 1
        tally.outcomes["errors"] += bool(exp.errors)
    got_batch = eng.authorize_batch(batch)
    assert list(got_batch) == [e.allowed for e in expected], "authorize_batch differs from Cedar"
    tally.worlds += 1
