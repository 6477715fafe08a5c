"""Differential tests: tether must decide exactly as Cedar (cedarpy) does.

For every generated request we compare, against cedarpy on the same policies and entities:
  * `authorize(..., reasons=True)`: allowed, sorted reasons, sorted erroring policy ids;
  * `authorize(...)` (fast path): same allowed, no reasons, errors a subset of Cedar's;
  * `is_allowed(...)` and `authorize_batch(...)`: same decision.

Worlds come from `tests/cedar_gen.py`. A world cedarpy cannot parse is a generator bug and fails
the test; nothing is filtered. Scale with TETHER_DIFF_EXAMPLES (Hypothesis examples, default 200).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings

from tests.cedar_gen import Request, World, cedar_uid, random_world, worlds

try:
    from tether import Engine

    _TETHER_IMPORT_ERROR: BaseException | None = None
except Exception as exc:  # the native module is not built: fail loudly, never skip
    Engine = None  # type: ignore[assignment,misc]
    _TETHER_IMPORT_ERROR = exc

EXAMPLES = int(os.environ.get("TETHER_DIFF_EXAMPLES", "200"))
MIN_CASES = 2000
ERR_RE = re.compile(r"^error while evaluating policy `([^`]+)`")
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


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
    # tether names a policy by its `@id` when it has one; Cedar by `policyN`.
    cedar_id = {name: f"policy{i}" for i, name in enumerate(eng.policy_ids())}
    batch: list[tuple[Any, ...]] = []
    for i, (req, exp) in enumerate(zip(world.requests, expected, strict=True)):
        p, a, r, ctx = tether_args(req, i)
        full = eng.authorize(p, a, r, ctx, reasons=True)
        got = (
            full.allowed,
            sorted(cedar_id[n] for n in full.reasons),
            sorted(cedar_id[n] for n in full.errors),
        )
        assert got == (exp.allowed, exp.reasons, exp.errors), mismatch(
            world, req, "authorize(reasons=True)", exp, full
        )

        fast = eng.authorize(p, a, r, ctx)
        assert fast.allowed == exp.allowed, mismatch(world, req, "authorize()", exp, fast)
        assert list(fast.reasons) == [], mismatch(
            world, req, "authorize() without reasons=True returned reasons", exp, fast
        )
        assert {cedar_id[n] for n in fast.errors} <= set(exp.errors), mismatch(
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


# ---------------------------------------------------------------------------------------------
# Tests


def test_differential_against_cedarpy() -> None:
    """>= 2,000 random requests over random worlds; every one must match Cedar exactly."""
    require_engine()
    tally = Tally()
    start = time.perf_counter()

    @SETTINGS
    @given(world=worlds())
    def run(world: World) -> None:
        compare_world(world, tally)

    run()
    print("\ndifferential: " + tally.summary(time.perf_counter() - start))
    if EXAMPLES >= 200:
        assert tally.cases >= MIN_CASES, f"only {tally.cases} cases compared (< {MIN_CASES})"


@pytest.mark.parametrize("seed", range(4))
def test_differential_large_policy_sets(seed: int) -> None:
    """A few 200-policy worlds every run (Hypothesis reaches them only now and then)."""
    tally = Tally()
    compare_world(random_world(10_000 + seed, n_policies=200, n_requests=60), tally)
    assert tally.cases == 60


def test_differential_deep_expressions() -> None:
    """Deeper expression trees than the default depth 3, from plain seeds."""
    from tests.cedar_gen import RandSrc, build_world

    tally = Tally()
    for seed in range(40):
        compare_world(build_world(RandSrc(seed), 8, 10, max_depth=6), tally)
    assert tally.cases == 400


# -- the generator itself (needs only cedarpy) ------------------------------------------------


def test_generator_worlds_parse_in_cedarpy() -> None:
    """cedarpy must parse >= 95% of generated policy sets (in practice: all of them), accept all
    entity stores, decide every request, and the worlds must exercise allow, deny and errors."""
    stats: Counter[str] = Counter()
    failures: list[str] = []

    # Derandomized: this checks the generator's coverage statistics, which a rare
    # unlucky draw could miss; the differential tests below stay random.
    @settings(SETTINGS, max_examples=200, derandomize=True, database=None)
    @given(world=worlds())
    def run(world: World) -> None:
        stats["worlds"] += 1
        try:
            ps = cedarpy.PolicySet.from_str(world.policy_text)
        except ValueError as e:
            failures.append(f"{e}\n{world.policy_text}")
            return
        es = cedarpy.Entities.from_json_str(world.entities_json)  # must never fail
        for res in cedarpy.is_authorized_batch([r.cedarpy() for r in world.requests], ps, es):
            stats[res.decision.name] += 1
            stats["with_errors"] += bool(res.diagnostics.errors)
            for msg in res.diagnostics.errors:
                assert ERR_RE.match(msg), msg
                stats["overflow"] += "overflow" in msg
                stats["type_error"] += "type error" in msg
                stats["missing"] += "does not have the attribute" in msg

    run()
    print(f"\ngenerator: {dict(stats)}")
    assert len(failures) <= 0.05 * stats["worlds"], "\n\n".join(failures[:5])
    assert stats["NoDecision"] == 0
    decided = stats["Allow"] + stats["Deny"]
    assert stats["Allow"] > 0.05 * decided and stats["Deny"] > 0.05 * decided, stats
    assert stats["with_errors"] > 0.05 * decided, stats
    for kind in ("overflow", "type_error", "missing"):
        assert stats[kind] > 0, f"no {kind} errors generated: {stats}"


def test_generator_large_worlds_parse_in_cedarpy() -> None:
    for seed in range(20):
        w = random_world(seed, n_policies=200, n_requests=5)
        cedarpy.PolicySet.from_str(w.policy_text)
        cedarpy.Entities.from_json_str(json.dumps(w.entities))
