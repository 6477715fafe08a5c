"""Differential tests: tether must decide exactly as Cedar (cedarpy) does.

For every generated request we compare, against cedarpy on the same policies and entities:
  * `authorize(..., reasons=True)`: allowed, sorted reasons, sorted erroring policy ids;
  * `authorize(...)` (fast path): same allowed, no reasons, errors a subset of Cedar's;
  * `is_allowed(...)` and `authorize_batch(...)`: same decision.

Worlds come from `tests/conformance/cedar_gen.py`; the oracle and the comparison from
`cedar_oracle.py`. A world cedarpy cannot parse is a generator bug and fails the test; nothing is
filtered. Scale with TETHER_DIFF_EXAMPLES (Hypothesis examples, default 220).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings

from tests.conformance.cedar_gen import World, random_world, worlds
from tests.conformance.cedar_oracle import ERR_RE, Tally, compare_world, require_engine
from tests.conformance.differential_count import record

EXAMPLES = int(os.environ.get("TETHER_DIFF_EXAMPLES", "220"))
MIN_CASES = 5000
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


# ---------------------------------------------------------------------------------------------
# Tests


def test_differential_against_cedarpy() -> None:
    """>= 5,000 random requests over random worlds; every one must match Cedar exactly."""
    require_engine()
    tally = Tally()
    start = time.perf_counter()

    @SETTINGS
    @given(world=worlds())
    def run(world: World) -> None:
        compare_world(world, tally)

    run()
    record("random worlds", tally.cases)
    print("\ndifferential: " + tally.summary(time.perf_counter() - start))
    if EXAMPLES >= 220:
        assert tally.cases >= MIN_CASES, f"only {tally.cases} cases compared (< {MIN_CASES})"


@pytest.mark.parametrize("seed", range(4))
def test_differential_large_policy_sets(seed: int) -> None:
    """A few 200-policy worlds every run (Hypothesis reaches them only now and then)."""
    tally = Tally()
    compare_world(random_world(10_000 + seed, n_policies=200, n_requests=60), tally)
    record("200-policy worlds", tally.cases)
    assert tally.cases == 120  # 60 requests, then the same 60 sharing one context


def test_differential_deep_expressions() -> None:
    """Deeper expression trees than the default depth 3, from plain seeds."""
    from tests.conformance.cedar_gen import RandSrc, build_world

    tally = Tally()
    for seed in range(40):
        compare_world(build_world(RandSrc(seed), 8, 10, max_depth=6), tally)
    record("deep expressions", tally.cases)
    assert tally.cases == 800


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
    """Large worlds parse whole in cedarpy: every policy, under the id tether will give it, and
    every request gets a decision."""
    for seed in range(20):
        w = random_world(seed, n_policies=200, n_requests=5)
        policies = cedarpy.PolicySet.from_str(w.policy_text)
        assert sorted(policies.to_pst().static_policies) == sorted(f"policy{i}" for i in range(200))
        entities = cedarpy.Entities.from_json_str(json.dumps(w.entities))
        results = cedarpy.is_authorized_batch([r.cedarpy() for r in w.requests], policies, entities)
        assert [r.decision != cedarpy.Decision.NoDecision for r in results] == [True] * 5


# -- known divergences in error messages (decisions and error ids agree) ----------------------

ONE_USER = [
    {"uid": {"type": "U", "id": "u"}, "attrs": {}, "parents": []},
    {"uid": {"type": "R", "id": "r"}, "attrs": {}, "parents": []},
]


def messages_of(policy: str, principal: str) -> tuple[list[str], list[str]]:
    request = {"principal": principal, "action": 'Action::"a"', "resource": 'R::"r"'}
    cedar = cedarpy.is_authorized({**request, "context": {}}, policy, ONE_USER)
    engine = require_engine()(policy, None, ONE_USER)
    got = engine.authorize(principal, 'Action::"a"', 'R::"r"', reasons=True)
    assert got.errors == ["policy0"] and not got.allowed and not cedar.allowed
    return list(cedar.diagnostics.errors), list(got.error_messages)


def test_first_error_is_cedars() -> None:
    cedar, got = messages_of(
        "permit (principal, action, resource) when { principal.a > resource.b };", 'U::"u"'
    )
    assert cedar == [
        'error while evaluating policy `policy0`: `U::"u"` does not have the attribute `a`'
    ]
    assert got == ["policy0: attribute `a` does not exist"]


def test_entity_ids_in_errors_are_escaped() -> None:
    cedar, got = messages_of(
        "permit (principal, action, resource) when { principal.a };", 'U::"o\\"neil"'
    )
    assert cedar == [
        'error while evaluating policy `policy0`: entity `U::"o\\"neil"` does not exist'
    ]
    assert got == ['policy0: entity `U::"o\\"neil"` does not exist']
