"""Replay: a task decision equals Cedar's own (cedarpy) decision on the same request with
`context.task` set to the snapshot `task.state()` returned just before it."""

from __future__ import annotations

import json
from typing import Any

import anyio
import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.tasks import Guard, Monitors

ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'
RESEARCHER = 'Agent::"spiffe://example.org/agents/researcher"'

# Extra rules that read counters, budgets, depth and actors, so the replay covers them.
STATEFUL = """
@id("tool-rate")
forbid (principal, action == Action::"call_tool", resource)
when { context has task && context.task.counters.tool_calls_60s >= 4 };

@id("low-budget-no-egress")
forbid (principal, action == Action::"egress", resource)
when { context has task && context.task.budgets.risk.remaining < 6 };

@id("root-only-reads")
forbid (principal, action == Action::"read", resource)
when { context has task && context.task.depth > 0 &&
       context.task.actors.contains("nobody") };
"""

STEPS = [
    ("read", 'Dataset::"wiki"'),
    ("read", 'Dataset::"payroll"'),
    ("egress", 'Domain::"api.github.com"'),
    ("egress", 'Domain::"pastebin.com"'),
    ("egress", 'Domain::"wiki.corp.internal"'),
    ("call_tool", 'Tool::"search"'),
    ("call_tool", 'Tool::"summarize"'),
    ("call_tool", 'Tool::"shell"'),
    ("call_tool", 'Tool::"deploy"'),
]


def replay(
    world: Any, policies: str, principal: str, steps: list[tuple[str, str]], dt: list[float]
) -> int:
    """Run `steps` in one task; check each policy decision against cedarpy. Returns
    how many decisions were compared."""
    engine = world.engine(policies=policies)
    now = [world.T0]
    guard = Guard(
        engine,
        clock=lambda: now[0],
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0),
        allow_unauthenticated=True,
    )
    ents = json.dumps(world.ENTITIES)
    schema = world.SCHEMA
    compared = 0

    async def run() -> None:
        nonlocal compared
        async with guard.task(principal, intent="replay", ttl=10_000) as task:
            for (action, resource), delta in zip(steps, dt, strict=True):
                now[0] += delta
                snapshot = task.state()
                d = task.authorize(action, resource)
                if d.message is not None:
                    continue  # tether's own denials (budget, obligations) are not Cedar's
                request = {
                    "principal": principal,
                    "action": f'Action::"{action}"',
                    "resource": resource,
                    "context": {"intent": "replay", "task": snapshot},
                }
                want = cedarpy.is_authorized(request, policies, ents, schema=schema)
                assert want.diagnostics.errors == [], want.diagnostics.errors
                assert d.allowed == want.allowed, (action, resource, snapshot)
                compared += 1

    anyio.run(run)
    return compared


@pytest.mark.parametrize("extra", ["", STATEFUL], ids=["example", "example+stateful"])
@pytest.mark.parametrize("principal", [ORCH, RESEARCHER])
def test_fixed_sequence_replays(world: Any, extra: str, principal: str) -> None:
    steps = STEPS + STEPS[::-1] + STEPS
    n = replay(world, world.POLICIES + extra, principal, steps, [1.0] * len(steps))
    assert n >= len(steps) // 2


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.lists(
        st.tuples(st.sampled_from(STEPS), st.sampled_from([0.0, 1.0, 20.0, 70.0])),
        min_size=1,
        max_size=20,
    ),
    principal=st.sampled_from([ORCH, RESEARCHER]),
)
def test_random_sequences_replay(world: Any, data: Any, principal: str) -> None:
    steps = [s for s, _ in data]
    dt = [t for _, t in data]
    replay(world, world.POLICIES + STATEFUL, principal, steps, dt)


def test_replay_detects_a_wrong_snapshot(world: Any) -> None:
    """Guard against a vacuous replay: the taint snapshot matters to Cedar."""
    ents = json.dumps(world.ENTITIES)
    request = {
        "principal": ORCH,
        "action": 'Action::"egress"',
        "resource": 'Domain::"api.github.com"',
        "context": {
            "intent": "x",
            "task": {
                "labels": ["restricted"],
                "counters": {"tool_calls_60s": 0, "egress_60s": 0},
                "budgets": {"risk": {"spent": 0, "limit": 12, "remaining": 12}},
                "depth": 0,
                "actors": [],
                "intent": "x",
                "id": 1,
                "agent": {"__entity": {"type": "Agent", "id": ORCH.split('"')[1]}},
                "escalated": [],
                "escalated_until": 0,
            },
        },
    }
    tainted = cedarpy.is_authorized(request, world.POLICIES, ents, schema=world.SCHEMA)
    assert not tainted.allowed
    request["context"]["task"]["labels"] = []  # type: ignore[index]
    clean = cedarpy.is_authorized(request, world.POLICIES, ents, schema=world.SCHEMA)
    assert clean.allowed
