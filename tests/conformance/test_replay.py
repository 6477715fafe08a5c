"""Replay: every task decision equals Cedar's (cedarpy's) decision, reasons and errors on the
same request, with `context.task` computed by this test from the state file's rules, not read
back from the code under test.

`TaskModel` is the reference: labels set by permitted actions, counters over the documented
sliding window (16 buckets of window/16: an event counts while its bucket is one of the last 16),
budgets reserved by permitted actions and refused (tether's own deny, with a message) when the
limit would be exceeded, which also revokes the task (every later decision denies); a permit
carrying an obligation holds the action (not allowed, no effects) until approved. The engine's
own `task.state()` must equal the model's, too.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import anyio
import cedarpy
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tether.tasks import Guard, Monitors

ORCH_ID = "spiffe://example.org/agents/orchestrator"
ORCH = f'Agent::"{ORCH_ID}"'
RESEARCHER_ID = "spiffe://example.org/agents/researcher"
RESEARCHER = f'Agent::"{RESEARCHER_ID}"'

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
WINDOW_MS = 60_000
BUCKET_MS = WINDOW_MS // 16


def attrs_of(world: ModuleType, uid: str) -> dict[str, Any]:
    ty, _, rest = uid.partition("::")
    for e in world.ENTITIES:
        if e["uid"] == {"type": ty, "id": json.loads(rest)}:
            return dict(e["attrs"])
    return {}


@dataclass
class TaskModel:
    """The example state file (`examples/state.toml`) evaluated by hand."""

    agent_id: str
    limit: int
    labels: set[str] = field(default_factory=set)
    events: dict[str, list[int]] = field(
        default_factory=lambda: {"tool_calls_60s": [], "egress_60s": []}
    )
    spent: int = 0
    revoked: bool = False  # a budget that cannot cover a permitted action revokes the task
    task_id: int = 1  # the engine's number for the task (an identifier, not state)

    def count(self, name: str, now_ms: int) -> int:
        cur = now_ms // BUCKET_MS
        return sum(1 for t in self.events[name] if t // BUCKET_MS + 16 > cur)

    def context_task(self, now: float) -> dict[str, Any]:
        now_ms = int(now * 1000)
        return {
            "labels": sorted(self.labels),
            "counters": {name: self.count(name, now_ms) for name in self.events},
            "budgets": {
                "risk": {
                    "spent": self.spent,
                    "limit": self.limit,
                    "remaining": self.limit - self.spent,
                }
            },
            "depth": 0,
            "actors": [self.agent_id],
            "intent": "replay",
            "id": self.task_id,
            "agent": {"__entity": {"type": "Agent", "id": self.agent_id}},
            "escalated": [],
            "escalated_until": 0,
        }

    def cost(self, action: str, resource: dict[str, Any]) -> int:
        return int(resource.get("risk", 0)) if action == "call_tool" else 0

    def commit(self, action: str, resource: dict[str, Any], now: float) -> None:
        if action == "read" and resource.get("sensitivity", 0) >= 3:
            self.labels.add("restricted")
        counter = {"call_tool": "tool_calls_60s", "egress": "egress_60s"}.get(action)
        if counter:
            self.events[counter].append(int(now * 1000))
        self.spent += self.cost(action, resource)


def replay(
    world: ModuleType,
    policies: str,
    principal: str,
    steps: list[tuple[str, str]],
    dt: list[float],
    risk_limit: int = 12,
) -> Counter[str]:
    """Run `steps` in one task; check each decision against cedarpy given the model's context.
    Returns what kinds of decisions were seen."""
    engine = world.engine(policies=policies, risk_limit=risk_limit)
    cedar_id = {tid: f"policy{i}" for i, tid in enumerate(engine.policy_ids())}
    now = [world.T0]
    guard = Guard(
        engine,
        clock=lambda: now[0],
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0),
        allow_unauthenticated=True,
    )
    entities = json.dumps(world.ENTITIES)
    model = TaskModel(json.loads(principal.partition("::")[2]), risk_limit)
    seen: Counter[str] = Counter()

    async def run() -> None:
        async with guard.task(principal, intent="replay", ttl=10_000) as task:
            model.task_id = task.handle.id
            for (action, resource), delta in zip(steps, dt, strict=True):
                now[0] += delta
                context = {"intent": "replay", "task": model.context_task(now[0])}
                assert task.state() == context["task"], "task.state() differs from the model"
                d = task.authorize(action, resource, reasons=True)
                if model.revoked:
                    assert not d.allowed and d.message is not None, (action, resource)
                    seen["after revocation"] += 1
                    continue
                request = {
                    "principal": principal,
                    "action": f'Action::"{action}"',
                    "resource": resource,
                    "context": context,
                }
                want = cedarpy.is_authorized(request, policies, entities, schema=world.SCHEMA)
                assert want.decision != cedarpy.Decision.NoDecision, want.diagnostics.errors
                reasons = sorted(cedar_id[r] for r in d.reasons)
                errors = sorted(cedar_id[e] for e in d.errors)
                target = attrs_of(world, resource)
                over_budget = model.spent + model.cost(action, target) > model.limit
                if d.obligations:
                    # A permit with `@obligation` holds the action until an approver agrees.
                    assert want.allowed and not d.allowed, (action, resource, context)
                    assert reasons == sorted(want.diagnostics.reasons)
                    assert d.obligations == ["approval"]
                    seen["held for approval"] += 1
                    continue
                if want.allowed and over_budget:
                    # tether's own deny: Cedar permits, the budget cannot cover it.
                    assert not d.allowed and d.message is not None, (action, resource, context)
                    assert d.revoked is not None and "budget" in d.revoked
                    model.revoked = True
                    seen["budget deny"] += 1
                    continue
                assert (d.allowed, reasons, errors) == (
                    want.allowed,
                    sorted(want.diagnostics.reasons),
                    sorted(e.split("`")[1] for e in want.diagnostics.errors),
                ), (action, resource, context, want.diagnostics.errors)
                assert d.message is None
                if d.allowed:
                    model.commit(action, target, now[0])
                seen["allow" if d.allowed else "deny"] += 1
                seen["tainted"] += "restricted" in model.labels

    anyio.run(run)
    return seen


@pytest.mark.parametrize("extra", ["", STATEFUL], ids=["example", "example+stateful"])
@pytest.mark.parametrize("principal", [ORCH, RESEARCHER])
def test_fixed_sequence_replays(world: ModuleType, extra: str, principal: str) -> None:
    steps = STEPS + STEPS[::-1] + STEPS
    seen = replay(world, world.POLICIES + extra, principal, steps, [1.0] * len(steps))
    assert seen["allow"] > 0 and seen["deny"] > 0, seen


def test_fixed_sequence_meets_every_kind_of_decision(world: ModuleType) -> None:
    """A sequence that reaches the taint, an obligation and the budget's limit."""
    steps = [STEPS[1], STEPS[2], STEPS[8]] + [STEPS[6]] * 7
    seen = replay(world, world.POLICIES, ORCH, steps, [1.0] * len(steps))
    assert seen == {
        "allow": 7,  # the read, then six 2-point summaries (12 of 12)
        "deny": 1,  # the egress after the restricted read
        "held for approval": 1,  # deploy
        "budget deny": 1,  # a seventh summary would spend 14 of 12
        "tainted": 8,
    }, seen


COVERAGE: Counter[str] = Counter()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    # Every step, or only the paid tools and a restricted read (so budgets run out).
    data=st.sampled_from([STEPS, [STEPS[1], STEPS[5], STEPS[6]]]).flatmap(
        lambda pool: st.lists(
            st.tuples(st.sampled_from(pool), st.sampled_from([0.0, 1.0, 20.0, 70.0])),
            min_size=1,
            max_size=24,
        )
    ),
    principal=st.sampled_from([ORCH, RESEARCHER]),
    stateful=st.booleans(),
    risk_limit=st.sampled_from([1, 2, 4, 12]),  # small limits: some sequences exhaust them
)
def test_random_sequences_replay(
    world: ModuleType, data: Any, principal: str, stateful: bool, risk_limit: int
) -> None:
    steps = [s for s, _ in data]
    dt = [t for _, t in data]
    policies = world.POLICIES + (STATEFUL if stateful else "")
    seen = replay(world, policies, principal, steps, dt, risk_limit)
    for kind in seen:
        event(kind)
    COVERAGE.update(k for k in seen if seen[k])
    COVERAGE["examples"] += 1


def test_random_sequences_were_not_trivial() -> None:
    """Runs after the property test (file order): a share of its examples met each kind."""
    if COVERAGE["examples"] == 0:
        pytest.skip("the property test did not run in this session")
    for kind in ("allow", "deny", "tainted", "budget deny"):
        assert COVERAGE[kind] >= COVERAGE["examples"] // 30, dict(COVERAGE)


def test_replay_detects_a_wrong_snapshot(world: ModuleType) -> None:
    """Guard against a vacuous replay: the taint snapshot matters to Cedar."""
    entities = json.dumps(world.ENTITIES)
    model = TaskModel(ORCH_ID, 12)
    request = {
        "principal": ORCH,
        "action": 'Action::"egress"',
        "resource": 'Domain::"api.github.com"',
        "context": {"intent": "x", "task": model.context_task(world.T0)},
    }
    clean = cedarpy.is_authorized(request, world.POLICIES, entities, schema=world.SCHEMA)
    assert clean.allowed
    model.labels.add("restricted")
    request["context"] = {"intent": "x", "task": model.context_task(world.T0)}
    tainted = cedarpy.is_authorized(request, world.POLICIES, entities, schema=world.SCHEMA)
    assert not tainted.allowed
