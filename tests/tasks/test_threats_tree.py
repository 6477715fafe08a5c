"""Threat catalogue: a delegation tree cannot be used to escape limits (issue 10,
items 1-4). Each attack has a benign twin differing in one essential respect; the
OWASP Agentic category is in the test name."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tether import DenialKind
from tether.identity import Agent
from tether.tasks import ApprovalRefused, ApprovalRequest, Guard, Monitors, Task

pytestmark = pytest.mark.anyio

SEARCH = 'Tool::"search"'
SUMMARIZE = 'Tool::"summarize"'
GITHUB = 'Domain::"api.github.com"'
PASTEBIN = 'Domain::"pastebin.com"'
WIKI = 'Dataset::"wiki"'
PAYROLL = 'Dataset::"payroll"'
QUIET = Monitors(max_deny_streak=0, max_deny_ratio=0, revoke_on_budget_exhausted=False)


async def _agents(guard: Guard, mint: Callable[[str], str], world: Any) -> tuple[Agent, Agent]:
    return await guard.authenticate(mint(world.ORCH_ID)), await guard.authenticate(
        mint(world.RES_ID)
    )


def _spend(task: Task, tool: str, times: int) -> int:
    return sum(task.authorize("call_tool", tool).allowed for _ in range(times))


# -- 1. budgets ----------------------------------------------------------------


@pytest.mark.parametrize("parent_spent", [11, 0], ids=["attack", "benign"])
async def test_asi03_budget_not_multiplied_by_delegation(
    world: Any, authenticator: Any, mint: Any, parent_spent: int
) -> None:
    """A task near its budget opens three sub-tasks that each try to spend the whole
    limit: together they get only what is left of the parent's budget."""
    engine = world.engine(state=world.with_risk_limit(12))
    guard = Guard(engine, authenticator, monitors=QUIET)
    orch, res = await _agents(guard, mint, world)
    async with guard.task(orch, intent="report") as parent:
        assert _spend(parent, SEARCH, parent_spent) == parent_spent
        children = [await parent.delegate(res) for _ in range(3)]
        spent_by_children = sum(_spend(c, SEARCH, 12) for c in children)
        root = parent.state()["budgets"]["risk"]
    assert spent_by_children == 12 - parent_spent
    assert root["spent"] == 12 and root["remaining"] == 0


async def test_asi03_budget_refusal_names_the_ancestor(
    world: Any, authenticator: Any, mint: Any
) -> None:
    """The child has budget left of its own; the refusal says whose budget ran out."""
    engine = world.engine(state=world.with_risk_limit(3))
    guard = Guard(engine, authenticator, monitors=QUIET)
    orch, res = await _agents(guard, mint, world)
    async with guard.task(orch, intent="report") as parent:
        assert _spend(parent, SEARCH, 2) == 2
        child = await parent.delegate(res)
        assert _spend(child, SEARCH, 1) == 1
        d = child.authorize("call_tool", SEARCH)
        assert not d.allowed and d.kind == DenialKind.BUDGET
        assert d.message is not None and f"of ancestor task {parent.handle.id}" in d.message
        assert child.state()["budgets"]["risk"]["spent"] == 1


# -- 2. counters -----------------------------------------------------------------

EGRESS_CAP = """
@id("egress-cap")
forbid (principal, action == Action::"egress", resource)
when { context has task && context.task.counters.egress_60s >= CAP };
"""


@pytest.mark.parametrize("cap", [5, 20], ids=["attack", "benign"])
async def test_asi02_counter_counts_children_for_the_parent(
    world: Any, authenticator: Any, mint: Any, cap: int
) -> None:
    """A counter forbids a 6th egress per task: four children sending five each are
    counted on the parent, so the tree sends five, not twenty."""
    engine = world.engine(policies=world.POLICIES + EGRESS_CAP.replace("CAP", str(cap)))
    guard = Guard(engine, authenticator, monitors=QUIET)
    orch, res = await _agents(guard, mint, world)
    async with guard.task(orch, intent="notify") as parent:
        children = [await parent.delegate(res) for _ in range(4)]
        sent = sum(c.authorize("egress", GITHUB).allowed for c in children for _ in range(5))
        counted = parent.state()["counters"]["egress_60s"]
    assert sent == min(cap, 20)
    assert counted == sent


# -- 3. obligations of ancestors ------------------------------------------------

OBLIGATED = """
@id("orch-external-egress")
{annotation}
permit (principal == Agent::"spiffe://example.org/agents/orchestrator",
        action == Action::"egress", resource in Domain::"com");
@id("researcher-external-egress")
permit (principal == Agent::"spiffe://example.org/agents/researcher",
        action == Action::"egress", resource in Domain::"com");
"""


@pytest.mark.parametrize("obligated", [True, False], ids=["attack", "benign"])
async def test_asi09_ancestor_obligation_holds_the_child(
    world: Any, authenticator: Any, mint: Any, obligated: bool
) -> None:
    """The parent's permit for external egress needs a human; the child's does not.
    Via the child the human is still asked (and a refusal refuses)."""
    note = '@obligation("human")' if obligated else ""
    engine = world.engine(policies=world.POLICIES + OBLIGATED.replace("{annotation}", note))
    asked: list[ApprovalRequest] = []

    async def human(req: ApprovalRequest) -> bool:
        asked.append(req)
        return False

    guard = Guard(engine, authenticator, approvers={"human": human}, monitors=QUIET)
    orch, res = await _agents(guard, mint, world)
    async with guard.task(orch, intent="notify") as parent:
        child = await parent.delegate(res)
        d = child.authorize("egress", PASTEBIN)
        if obligated:
            assert not d.allowed and d.kind == DenialKind.OBLIGATION
            assert d.obligations == ["human"]
            with pytest.raises(ApprovalRefused):
                await child.require("egress", PASTEBIN)
            assert [r.obligation for r in asked] == ["human"]
        else:
            assert d.allowed
            assert (await child.require("egress", PASTEBIN)).allowed
            assert asked == []


# -- 4. monitors over the tree -----------------------------------------------------


@pytest.mark.parametrize("calls_each", [4, 1], ids=["attack", "benign"])
async def test_asi10_rate_monitor_counts_the_whole_tree(
    world: Any, authenticator: Any, mint: Any, clock: Any, calls_each: int
) -> None:
    """Five children share out calls, each far under the rate limit, while the tree
    (five delegations and the children's calls) exceeds it: the parent is revoked,
    and with it every child."""
    monitors = Monitors(max_deny_streak=0, max_deny_ratio=0, max_rate=12, rate_window=1.0)
    guard = Guard(world.engine(), authenticator, monitors=monitors, clock=clock)
    orch, res = await _agents(guard, mint, world)
    async with guard.task(orch, intent="crawl") as parent:
        children = [await parent.delegate(res) for _ in range(5)]
        results = [c.authorize("call_tool", SEARCH) for c in children for _ in range(calls_each)]
        if calls_each == 4:
            assert all(d.allowed for d in results[:7])  # 5 + 7 = 12: at the limit
            assert results[7].kind == DenialKind.MONITOR
            assert parent.revoked is not None and "rate spike" in parent.revoked
            assert children[-1].authorize("call_tool", SEARCH).kind == DenialKind.REVOKED
        else:
            assert all(d.allowed for d in results)
            assert parent.revoked is None


@pytest.mark.parametrize("violators", [3, 2], ids=["attack", "benign"])
async def test_asi10_children_revoked_for_violations_flag_the_parent(
    world: Any, authenticator: Any, mint: Any, violators: int
) -> None:
    """Each child revoked for a scope violation is a denial for its parent: three in a
    row trip the parent's deny-streak monitor."""
    monitors = Monitors(max_deny_streak=3, max_deny_ratio=0)
    guard = Guard(world.engine(), authenticator, monitors=monitors)
    orch, res = await _agents(guard, mint, world)
    async with guard.task(orch, intent="research") as parent:
        children = [await parent.delegate(res, scope=["call_tool"]) for _ in range(violators)]
        for child in children:
            d = child.authorize("read", WIKI)
            assert d.kind == DenialKind.SCOPE and child.revoked is not None
        if violators >= 3:
            assert parent.revoked is not None and "denials in a row" in parent.revoked
        else:
            assert parent.revoked is None


@pytest.mark.parametrize("denials_per_allow", [4, 1], ids=["attack", "benign"])
async def test_asi10_deny_ratio_catches_interleaved_probes(
    world: Any, denials_per_allow: int
) -> None:
    """160 denials interleaved with benign calls never make a streak of five, but the
    deny ratio catches them; a task with one denial per allowed call is fine."""
    monitors = Monitors(max_deny_streak=5, max_deny_ratio=0.6, min_denials=20)
    guard = Guard(world.engine(), monitors=monitors, allow_unauthenticated=True)
    async with guard.task(world.RESEARCHER, intent="probe") as task:
        denied = 0
        while denied < 160 and task.revoked is None:
            for _ in range(denials_per_allow):
                task.authorize("read", PAYROLL)  # clearance 1 < 3: denied
                denied += 1
            task.authorize("read", WIKI)
        if denials_per_allow == 4:
            assert task.revoked is not None and "deny ratio" in task.revoked
            assert denied == 20
        else:
            assert task.revoked is None and denied == 160


# -- the race: children and grandchildren spending in several threads ---------------

TREE_POLICIES = """
@id("delegate-any")
permit (principal, action == Action::"delegate", resource);
@id("search")
permit (principal, action == Action::"call_tool", resource == Tool::"search");
"""


def _spend_together(engine: Any, workers: list[Any], attempts: int) -> list[int]:
    """Each worker task tries `attempts` searches from its own thread, all released
    together by a barrier; returns how many each was allowed."""
    barrier = threading.Barrier(len(workers))
    allowed = [0] * len(workers)

    def spend(i: int) -> None:
        barrier.wait()
        for _ in range(attempts):
            d = engine.authorize_task(workers[i], 'Action::"call_tool"', SEARCH, None, 1.0)
            allowed[i] += d.allowed

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return allowed


def test_asi08_budget_race_never_overspends_any_ancestor(world: Any) -> None:
    """Two children and four grandchildren spend from six threads released together by
    a barrier, many rounds: no task's spend ever exceeds its limit, and every ancestor
    was charged exactly what its subtree spent. (The Rust unit test
    `tree_budget_race_in_threads` runs the same race without the GIL.)"""
    limit = 37
    engine = world.engine(policies=TREE_POLICIES, state=world.with_risk_limit(limit))

    def spent(h: Any) -> int:
        return int(json.loads(engine.task_context(h, now=1.0))["budgets"]["risk"]["spent"])

    for round_ in range(30):
        root = engine.open_task(world.ORCH, now=0.0)
        kids = [engine.open_task(world.RESEARCHER, parent=root, now=0.0) for _ in range(2)]
        leaves = [engine.open_task(world.ORCH, parent=k, now=0.0) for k in kids for _ in range(2)]
        allowed = _spend_together(engine, [*kids, *leaves], limit)
        assert sum(allowed) == limit, round_
        assert spent(root) == limit
        subtree = [allowed[0] + allowed[2] + allowed[3], allowed[1] + allowed[4] + allowed[5]]
        for k, own in zip(kids, subtree, strict=True):
            assert spent(k) == own <= limit
