"""Task state: taint labels, sliding counters and budgets with check-and-reserve under
contention from coroutines and OS threads."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import pytest

from tether import DenialKind
from tether.tasks import Guard, Monitors

ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'
RESEARCHER = 'Agent::"spiffe://example.org/agents/researcher"'
PAYROLL = 'Dataset::"payroll"'
WIKI = 'Dataset::"wiki"'
GITHUB = 'Domain::"api.github.com"'
CORP = 'Domain::"wiki.corp.internal"'
COST = {'Tool::"search"': 1, 'Tool::"summarize"': 2}
QUIET = Monitors(max_deny_streak=0, max_deny_ratio=0, revoke_on_budget_exhausted=False)


@pytest.mark.anyio
async def test_taint_set_by_permitted_read_blocks_external_egress(engine: Any) -> None:
    guard = Guard(engine, monitors=QUIET, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="report") as task:
        assert task.authorize("egress", GITHUB).allowed
        assert task.authorize("read", WIKI).allowed
        assert task.state()["labels"] == []
        assert task.authorize("egress", GITHUB).allowed
        assert task.authorize("read", PAYROLL).allowed
        assert task.state()["labels"] == ["restricted"]
        d = task.authorize("egress", GITHUB, reasons=True)
        assert not d.allowed
        assert d.message is None  # a policy decision (the forbid), not a tether denial
        # the 4th policy, no-exfiltration (ids may come from `@id` annotations one day)
        assert d.reasons in (["policy3"], ["no-exfiltration"])
        # the internal network stays reachable
        assert task.authorize("egress", CORP).allowed
        # never cleared: harmless actions, time and further reads leave it set
        for _ in range(5):
            assert task.authorize("read", WIKI).allowed
            assert task.authorize("call_tool", 'Tool::"search"').allowed
        assert task.state()["labels"] == ["restricted"]
        assert not task.authorize("egress", GITHUB).allowed
        assert not task.authorize("egress", 'Domain::"github.com"').allowed


@pytest.mark.anyio
async def test_denied_read_does_not_taint(engine: Any) -> None:
    guard = Guard(engine, monitors=QUIET, allow_unauthenticated=True)
    async with guard.task(RESEARCHER, intent="x") as task:
        assert not task.authorize("read", PAYROLL).allowed  # clearance 1 < 3
        assert task.state()["labels"] == []
        assert task.authorize("egress", GITHUB).allowed  # untainted: allowed


@pytest.mark.anyio
async def test_taint_is_per_task(engine: Any) -> None:
    guard = Guard(engine, monitors=QUIET, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="a") as a, guard.task(ORCH, intent="b") as b:
        assert a.authorize("read", PAYROLL).allowed
        assert not a.authorize("egress", GITHUB).allowed
        assert b.authorize("egress", GITHUB).allowed


@pytest.mark.anyio
async def test_caller_cannot_spoof_task_state(engine: Any) -> None:
    guard = Guard(engine, monitors=QUIET, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="x") as task:
        assert task.authorize("read", PAYROLL).allowed
        fake = {
            "labels": [],
            "counters": {"tool_calls_60s": 0, "egress_60s": 0},
            "budgets": {"risk": {"spent": 0, "limit": 12, "remaining": 12}},
            "depth": 0,
            "actors": [],
            "intent": "x",
            "id": task.handle.id,
            "agent": {"__entity": {"type": "Agent", "id": ORCH.split('"')[1]}},
            "escalated": [],
            "escalated_until": 0,
        }
        assert not task.authorize("egress", GITHUB, {"task": fake}).allowed


@pytest.mark.anyio
async def test_counters_count_only_permitted_matching_actions(engine: Any, clock: Any) -> None:
    guard = Guard(engine, clock=clock, monitors=QUIET, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="x", ttl=1000) as task:
        for _ in range(3):
            assert task.authorize("call_tool", 'Tool::"search"').allowed
            clock.advance(10)
        assert not task.authorize("call_tool", 'Tool::"shell"').allowed  # denied: not counted
        assert task.authorize("egress", CORP).allowed
        s = task.state()["counters"]
        assert s == {"tool_calls_60s": 3, "egress_60s": 1}
        clock.advance(35)  # first call is now 65 s old
        assert task.state()["counters"]["tool_calls_60s"] == 2
        clock.advance(60)
        assert task.state()["counters"] == {"tool_calls_60s": 0, "egress_60s": 0}


@pytest.mark.anyio
async def test_budget_spend_and_reserve(engine: Any) -> None:
    guard = Guard(engine, monitors=QUIET, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="x") as task:
        for _ in range(5):
            assert task.authorize("call_tool", 'Tool::"summarize"').allowed
        assert task.state()["budgets"]["risk"] == {"spent": 10, "limit": 12, "remaining": 2}
        # a discharged obligation still cannot overspend (deploy costs 8)
        d = engine.authorize_task(
            task.handle,
            'Action::"call_tool"',
            'Tool::"deploy"',
            None,
            guard.clock(),
            approved=["approval"],
        )
        assert not d.allowed and d.kind == DenialKind.BUDGET
        d = task.authorize("call_tool", 'Tool::"summarize"')
        assert d.allowed  # exactly reaches the limit
        d = task.authorize("call_tool", 'Tool::"search"')
        assert not d.allowed
        assert d.message == "budget `risk` exhausted: spent 12 + 1 would exceed limit 12"
        assert d.revoked is None and task.revoked is None  # monitor disabled
        assert task.state()["budgets"]["risk"]["spent"] == 12
        # actions outside the budget's `when` still pass
        assert task.authorize("read", WIKI).allowed


@pytest.mark.anyio
async def test_budget_contention_coroutines(world: Any) -> None:
    limit = 301
    engine = world.engine(state=world.with_risk_limit(limit))
    guard = Guard(engine, monitors=QUIET, allow_unauthenticated=True)
    permitted: list[int] = []

    async with guard.task(ORCH, intent="x") as task:

        async def spender(i: int) -> None:
            tool = 'Tool::"search"' if i % 3 else 'Tool::"summarize"'
            for _ in range(40):
                await anyio.sleep(0)
                if task.authorize("call_tool", tool).allowed:
                    permitted.append(COST[tool])

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(spender, i)
        spent = task.state()["budgets"]["risk"]["spent"]
    assert spent == sum(permitted)
    assert spent <= limit
    assert spent >= limit - 1  # 2,000 attempts: the budget was really contended
    assert task.revoked == "task ended"


def _run_threads(n: int, fn: Any) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            fn(i)
        except BaseException as e:  # surface failures in the main thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("revoke_on_exhaustion", [False, True])
def test_budget_contention_threads_task_authorize(world: Any, revoke_on_exhaustion: bool) -> None:
    limit = 997
    engine = world.engine(state=world.with_risk_limit(limit))
    guard = Guard(
        engine,
        monitors=Monitors(
            max_deny_streak=0, max_deny_ratio=0, revoke_on_budget_exhausted=revoke_on_exhaustion
        ),
        allow_unauthenticated=True,
    )
    task = guard._open(ORCH, "threads", None, 300.0, parent=None)
    permitted: list[int] = []
    lock = threading.Lock()

    def spend(i: int) -> None:
        tool = 'Tool::"search"' if i % 2 else 'Tool::"summarize"'
        mine = 0
        for _ in range(150):
            if task.authorize("call_tool", tool).allowed:
                mine += 1
        with lock:
            permitted.append(mine * COST[tool])

    _run_threads(16, spend)
    spent = task.state()["budgets"]["risk"]["spent"]
    assert spent == sum(permitted)
    assert spent <= limit
    if revoke_on_exhaustion:
        assert task.revoked is not None and task.revoked.startswith("budget `risk` exhausted")
    else:
        assert spent >= limit - 1
        assert task.revoked is None


def test_budget_contention_threads_raw_engine(world: Any) -> None:
    limit = 500
    engine = world.engine(state=world.with_risk_limit(limit))
    handle = engine.open_task(ORCH, revoke_on_budget_exhausted=False)
    search = engine.entity("Tool", "search")
    summarize = engine.entity("Tool", "summarize")
    action = engine.entity("Action", "call_tool")
    counts = [0] * 12

    def spend(i: int) -> None:
        tool = search if i % 2 else summarize
        for _ in range(200):
            d = engine.authorize_task(handle, action, tool, {"intent": "t"})
            if d.allowed:
                counts[i] += 1 if i % 2 else 2
            else:
                assert d.message is not None and d.message.startswith("budget `risk`")

    _run_threads(12, spend)
    ctx = json.loads(engine.task_context(handle))
    assert ctx["budgets"]["risk"]["spent"] == sum(counts)
    assert ctx["budgets"]["risk"]["spent"] <= limit
    assert ctx["budgets"]["risk"]["remaining"] == limit - sum(counts)


def revocation_round(engine: Any, deciders: int) -> tuple[list[int], Any]:
    """Deciding threads, each permitted once, then (after a barrier) revoked mid-decisions.
    Returns the threads that got a permit after `revoke` returned, and the task."""
    guard = Guard(
        engine, monitors=Monitors(max_deny_streak=0, max_deny_ratio=0), allow_unauthenticated=True
    )
    task = guard._open(ORCH, "threads", None, 300.0, parent=None)
    all_permitted = threading.Barrier(deciders + 1)
    revoked_at = threading.Event()
    late_permits: list[int] = []

    def body(i: int) -> None:
        if i == 0:
            all_permitted.wait()
            guard.revoke(task=task, reason="stop")
            revoked_at.set()
            return
        assert task.authorize("call_tool", 'Tool::"search"').allowed
        all_permitted.wait()
        while True:
            after = revoked_at.is_set()
            d = task.authorize("call_tool", 'Tool::"search"')
            if after:
                if d.allowed:
                    late_permits.append(i)
                return

    _run_threads(deciders + 1, body)
    return late_permits, task


def test_threads_vs_revocation_no_permit_after_revoke(world: Any) -> None:
    """Once `revoke` returned, no thread gets a permit (the flag is checked under lock).
    Each round the revocation lands while every deciding thread is mid-decisions (they were
    all permitted once, then met at a barrier); 20 rounds give a broken check many chances."""
    engine = world.engine(state=world.with_risk_limit(10**9))
    for _ in range(20):
        late_permits, task = revocation_round(engine, deciders=7)
        assert late_permits == []
        assert task.revoked == "stop"
