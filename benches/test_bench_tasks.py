"""Task-decision latency on a ~1,000-policy set, state read and commit included.

Run: python -m pytest benches/test_bench_tasks.py --benchmark-only
(the median column is the p50). Nothing here asserts a timing.

The policy set is the example one plus 1,000 per-agent permits; the state is the example
`state.toml` with a budget limit high enough that every permit commits its spend.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import tether
from tether.engine import Engine
from tether.state import state_spec
from tether.tasks import Guard, Monitors

EXAMPLES = Path(tether.__file__).parent / "examples"
N_AGENTS = 1000
ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'


def _agent_id(i: int) -> str:
    return f"spiffe://example.org/agents/gen-{i}"


@cache
def build() -> Engine:
    policies = [(EXAMPLES / "agents.cedar").read_text("utf-8")]
    entities: list[dict[str, Any]] = json.loads((EXAMPLES / "entities.json").read_text("utf-8"))
    for i in range(N_AGENTS):
        policies.append(
            f'permit (principal == Agent::"{_agent_id(i)}", action == Action::"read", '
            f'resource == Dataset::"wiki");'
        )
        entities.append(
            {
                "uid": {"type": "Agent", "id": _agent_id(i)},
                "attrs": {"role": "worker", "clearance": 0, "tools": []},
                "parents": [],
            }
        )
    doc = tomllib.loads((EXAMPLES / "state.toml").read_text("utf-8"))
    doc["budgets"]["risk"]["limit"] = 2**62
    engine = Engine(
        "\n".join(policies),
        (EXAMPLES / "agents.cedarschema").read_text("utf-8"),
        json.dumps(entities),
        state=state_spec(doc),
    )
    assert engine.policy_count == N_AGENTS + 6
    return engine


# (action, resource): permits that read and commit state (counter, budget, label)
WORK = [
    ("call_tool", ("Tool", "search")),
    ("read", ("Dataset", "wiki")),
    ("call_tool", ("Tool", "summarize")),
    ("egress", ("Domain", "wiki.corp.internal")),
]


def _args(engine: Engine, handles: bool) -> list[tuple[Any, Any]]:
    if handles:
        return [(engine.entity("Action", a), engine.entity(*r)) for a, r in WORK]
    return [(f'Action::"{a}"', f'{r[0]}::"{r[1]}"') for a, r in WORK]


@pytest.mark.parametrize("handles", [False, True], ids=["strings", "handles"])
def test_task_authorize(benchmark: Any, handles: bool) -> None:
    engine = build()
    guard = Guard(
        engine, monitors=Monitors(max_deny_streak=0, max_deny_ratio=0), allow_unauthenticated=True
    )
    task = guard._open(ORCH, "bench", None, 3600.0, parent=None)
    reqs = itertools.cycle(_args(engine, handles))

    def one() -> bool:
        a, r = next(reqs)
        return task.authorize(a, r).allowed

    benchmark(one)
    assert task.revoked is None
    assert task.state()["budgets"]["risk"]["spent"] > 0


@pytest.mark.parametrize("handles", [False, True], ids=["strings", "handles"])
def test_engine_authorize_task(benchmark: Any, handles: bool) -> None:
    engine = build()
    handle = engine.open_task(ORCH)
    ctx = {"intent": "bench"}
    reqs = itertools.cycle(_args(engine, handles))

    def one() -> bool:
        a, r = next(reqs)
        return engine.authorize_task(handle, a, r, ctx).allowed

    benchmark(one)
    assert handle.revoked is None


def test_engine_authorize_task_generated_agent(benchmark: Any) -> None:
    """A generated agent whose permit is one of the 1,000 (principal-indexed lookup)."""
    engine = build()
    handle = engine.open_task(engine.entity("Agent", _agent_id(N_AGENTS // 2)))
    action, wiki = engine.entity("Action", "read"), engine.entity("Dataset", "wiki")
    ctx = {"intent": "bench"}
    assert engine.authorize_task(handle, action, wiki, ctx).allowed
    benchmark(lambda: engine.authorize_task(handle, action, wiki, ctx).allowed)


@pytest.mark.parametrize("handles", [False, True], ids=["strings", "handles"])
def test_task_authorize_three_deep(benchmark: Any, handles: bool) -> None:
    """A grandchild's decision: evaluated for it and both ancestors, and its state
    effects reserved on all three (budgets, counters, labels) under the chain's locks."""
    engine = build()
    guard = Guard(
        engine, monitors=Monitors(max_deny_streak=0, max_deny_ratio=0), allow_unauthenticated=True
    )
    root = guard._open(ORCH, "bench", None, 3600.0, parent=None)
    child = guard._open(ORCH, "bench", None, 3600.0, parent=root)
    task = guard._open(ORCH, "bench", None, 3600.0, parent=child)
    assert task.depth == 2
    reqs = itertools.cycle(_args(engine, handles))

    def one() -> bool:
        a, r = next(reqs)
        return task.authorize(a, r).allowed

    benchmark(one)
    assert task.revoked is None
    assert root.state()["budgets"]["risk"]["spent"] == task.state()["budgets"]["risk"]["spent"] > 0
