"""Guard(store=...): revocations and budgets shared by Guards, as if in two processes.

Every test runs on the in-memory store (two Guards of one process) and on Redis (two
clients). Waiting for propagation polls with a deadline: it asserts what was observed.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.to_thread
import pytest
from tests.store.guard_world import ORCH, RESEARCHER, SEARCH, SHELL, SUMMARIZE, guard, until

from tether.store.memory_state import MemoryStore
from tether.store.shared_state import (
    Charge,
    Grant,
    Revocation,
    RevocationSnapshot,
    SharedStore,
    StoreUnavailable,
)
from tether.tasks import Denied, Guard, Task, TaskRevoked
from tether.tasks.shared import SharedBudgetDenied, SharedBudgets

pytestmark = pytest.mark.anyio


def revoked(task: Task) -> bool:
    return not task.authorize("call_tool", SEARCH).allowed


def spends(task: Task, tool: str = SEARCH) -> bool:
    """One budgeted decision; False when the shared budget refused it."""
    try:
        d = task.authorize("call_tool", tool)
    except Denied as exc:
        assert "shared budget `risk`" in str(exc)
        return False
    return d.allowed


# ----------------------------------------------------------------------------- revocation


async def test_revoke_in_one_guard_is_denied_in_the_other(
    pair: tuple[SharedStore, SharedStore],
) -> None:
    async with guard(pair[0]) as a, guard(pair[1]) as b:
        async with (
            a.task(ORCH, intent="x", txn="tree-1") as ta,
            b.task(ORCH, intent="x", txn="tree-1") as tb,
            b.task(ORCH, intent="x", txn="tree-2") as twin,
        ):
            assert not revoked(tb)
            n = await a.revoke(task="tree-1", reason="incident 9")
            assert n == 1 and revoked(ta)
            snapshot = await pair[0].revocations()  # durable before the await returned
            assert [r.key for r in snapshot.revocations] == ["task:tree-1"]
            await until(lambda: revoked(tb))
            message = tb.authorize("read", 'Dataset::"wiki"').message or ""
            assert "incident 9" in message
            assert not revoked(twin)  # the benign twin: another tree, still allowed


async def test_a_guard_loads_the_revocation_set_before_deciding(
    pair: tuple[SharedStore, SharedStore],
) -> None:
    async with guard(pair[0]) as a:
        await a.revoke(task="tree-old", reason="earlier")
        await a.revoke(agent=RESEARCHER, reason="compromised")
    async with guard(pair[1]) as b:  # started after: nothing to wait for
        with pytest.raises(TaskRevoked, match="earlier"):
            async with b.task(ORCH, intent="x", txn="tree-old"):
                pass
        with pytest.raises(TaskRevoked, match="compromised"):
            async with b.task(RESEARCHER, intent="x"):
                pass
        async with b.task(ORCH, intent="x", txn="tree-new") as fresh:
            assert not revoked(fresh)


async def test_agent_revocation_reaches_every_guard(
    pair: tuple[SharedStore, SharedStore],
) -> None:
    async with guard(pair[0]) as a, guard(pair[1]) as b:
        async with b.task(RESEARCHER, intent="x") as victim, b.task(ORCH, intent="x") as other:
            await a.revoke(agent=RESEARCHER, reason="key leaked")
            await until(lambda: revoked(victim))
            assert not revoked(other)


async def test_a_monitor_revocation_is_broadcast(pair: tuple[SharedStore, SharedStore]) -> None:
    async with guard(pair[0], max_deny_streak=2) as a, guard(pair[1]) as b:
        async with (
            a.task(ORCH, intent="x", txn="probe") as ta,
            b.task(ORCH, intent="x", txn="probe") as tb,
        ):
            for _ in range(2):  # probing a forbidden tool trips the deny streak in `a`
                assert not ta.authorize("call_tool", SHELL).allowed
            assert ta.revoked is not None
            await until(lambda: revoked(tb))
            assert "denials in a row" in (tb.revoked or "")


async def test_unstored_revocation_is_not_acknowledged() -> None:
    store = _Switchable()
    async with guard(store, max_staleness=0.2) as g:
        store.down = True
        pending = g.revoke(task="t-1", reason="while down")
        assert pending == 0  # applied here at once
        with pytest.raises(StoreUnavailable, match="switched off"):
            await pending
        store.down = False
        assert await pending == 0  # delivered now
        assert [r.subject for r in (await store.revocations()).revocations] == ["t-1"]


# ----------------------------------------------------------------------------- outages


class _Switchable(MemoryStore):
    """An in-memory store that can be switched off: calls then raise StoreUnavailable."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    @property
    def name(self) -> str:
        return "switchable"

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable(self.name, "switched off")

    async def revoke(self, revocation: Revocation) -> Revocation:
        self._check()
        return await super().revoke(revocation)

    async def revocations(self) -> RevocationSnapshot:
        self._check()
        return await super().revocations()

    async def revocations_after(self, seq: int, wait: float) -> Sequence[Revocation] | None:
        self._check()
        return await super().revocations_after(seq, min(wait, 0.01))

    async def reserve(
        self, charges: Sequence[Charge], amount: int, *, settle: int = 0, partial: bool = False
    ) -> Grant:
        self._check()
        return await super().reserve(charges, amount, settle=settle, partial=partial)


async def test_store_outage_fails_closed_then_recovers() -> None:
    store = _Switchable()
    async with guard(store, max_staleness=0.2) as g:
        async with g.task(ORCH, intent="x", txn="t") as task:
            assert task.authorize("call_tool", SEARCH).allowed
            store.down = True

            def fails_closed() -> bool:
                try:
                    task.authorize("call_tool", SEARCH)
                except StoreUnavailable as exc:
                    assert exc.store == "switchable" and "switched off" in str(exc)
                    return True
                return False

            await until(fails_closed)
            with pytest.raises(StoreUnavailable):
                await task.require("call_tool", SEARCH)
            with pytest.raises(StoreUnavailable):  # no new task while the view is stale
                async with g.task(ORCH, intent="y"):
                    pass
            await MemoryStore.revoke(
                store, Revocation(kind="task", subject="t", reason="during outage", revoked_at=0.0)
            )
            store.down = False
            await until(lambda: task.revoked is not None)  # reloaded after reconnecting
            assert "during outage" in (task.revoked or "")
            async with g.task(ORCH, intent="z") as fresh:
                assert fresh.authorize("call_tool", SEARCH).allowed


async def test_allow_mode_decides_on_the_last_view_during_an_outage() -> None:
    store = _Switchable()
    async with guard(store, max_staleness=0.2, on_store_error="allow") as g:
        async with g.task(ORCH, intent="x") as task:
            store.down = True
            await until(lambda: g.feed is not None and not g.feed.healthy)
            assert task.authorize("call_tool", SEARCH).allowed


async def test_a_guard_not_entered_refuses_tasks() -> None:
    g = guard(MemoryStore())
    with pytest.raises(StoreUnavailable, match="not synced"):
        async with g.task(ORCH, intent="x"):
            pass


# ----------------------------------------------------------------------------- budgets


async def test_sliced_budget_is_shared_and_returned_on_task_end(
    pair: tuple[SharedStore, SharedStore],
) -> None:
    async with (
        guard(pair[0], mode="sliced", slice_size=12) as a,
        guard(pair[1], mode="sliced", slice_size=12) as b,
    ):
        async with a.task(ORCH, intent="x", txn="tree") as ta:
            assert sum(spends(ta) for _ in range(5)) == 5  # a holds the whole budget
            async with b.task(ORCH, intent="x", txn="tree") as tb:
                assert not spends(tb)  # attack: b would overspend what a holds
                async with b.task(ORCH, intent="x", txn="other-tree") as twin:
                    assert spends(twin)  # benign twin: another tree's budget
        # a's task ended: its unused 7 went back; b's slice takes them, and no more.
        async with b.task(ORCH, intent="x", txn="tree") as tb:
            await until(lambda: tb.shared is not None and tb.shared.slices["risk"].available == 7)
            assert sum(spends(tb) for _ in range(20)) == 7
        assert await pair[0].spent("tree/tree/risk") == 12


async def test_two_guards_spend_a_sliced_budget_exactly(
    pair: tuple[SharedStore, SharedStore],
) -> None:
    async with (
        guard(pair[0], mode="sliced", risk_limit=40, slice_size=3) as a,
        guard(pair[1], mode="sliced", risk_limit=40, slice_size=3) as b,
    ):
        async with (
            a.task(ORCH, intent="x", txn="t") as ta,
            b.task(ORCH, intent="x", txn="t") as tb,
        ):
            slices = [t.shared.slices["risk"] for t in (ta, tb) if t.shared is not None]
            spent = 0
            for _ in range(60):
                # Spend only what is held: a spend the slice cannot cover still counts in
                # the local Rust state (it denies sooner, never overspends).
                await until(lambda: all(s.available or s.exhausted for s in slices))
                spent += sum(
                    spends(t) for t, s in zip((ta, tb), slices, strict=True) if s.available
                )
            assert spent == 40  # every unit spent, none twice
            assert not any(spends(t) for t in (ta, tb))
            assert await pair[0].spent("tree/t/risk") == 40


async def test_two_guards_never_overspend_a_sliced_budget(
    pair: tuple[SharedStore, SharedStore],
) -> None:
    async with (
        guard(pair[0], mode="sliced", risk_limit=40, slice_size=3) as a,
        guard(pair[1], mode="sliced", risk_limit=40, slice_size=3) as b,
    ):
        async with (
            a.task(ORCH, intent="x", txn="t") as ta,
            b.task(ORCH, intent="x", txn="t") as tb,
        ):
            spent = 0
            for _ in range(100):
                for t in (ta, tb):
                    spent += spends(t, SUMMARIZE) * 2 + spends(t) * 1
                await anyio.sleep(0)  # let the refills run
            assert 0 < spent <= await pair[0].spent("tree/t/risk") <= 40  # reserved covers spent


async def test_strict_budget_reserves_on_every_permit(
    pair: tuple[SharedStore, SharedStore],
) -> None:
    async with (
        guard(pair[0], mode="strict", risk_limit=5) as a,
        guard(pair[1], mode="strict", risk_limit=5) as b,
    ):
        async with (
            a.task(ORCH, intent="x", txn="t") as ta,
            b.task(ORCH, intent="x", txn="t") as tb,
        ):
            with pytest.raises(Denied, match="strict mode needs a round trip"):
                ta.authorize("call_tool", SEARCH)  # spending needs the round trip
            assert ta.authorize("egress", 'Domain::"github.com"').allowed  # spends nothing
            await ta.require("call_tool", SUMMARIZE)
            await tb.require("call_tool", SUMMARIZE)
            with pytest.raises(Denied, match="shared budget `risk` of tree t") as caught:
                await tb.require("call_tool", SUMMARIZE)  # 2 more would make 6 > 5
            assert caught.value.kind is not None
            await ta.require("call_tool", SEARCH)  # the benign twin: 1 more fits
            assert await pair[0].spent("tree/t/risk") == 5


async def test_undeclared_shared_budget_is_refused() -> None:
    g = Guard(
        guard(MemoryStore()).engine,
        store=MemoryStore(),
        shared_budgets=SharedBudgets(frozenset({"nope"})),
        allow_unauthenticated=True,
    )
    async with g:
        with pytest.raises(ValueError, match="not declared in the state file: nope"):
            async with g.task(ORCH, intent="x"):
                pass


def test_shared_budgets_need_a_store() -> None:
    with pytest.raises(ValueError, match="need a store"):
        Guard(guard(MemoryStore()).engine, shared_budgets=SharedBudgets(frozenset({"risk"})))


async def test_decisions_on_worker_threads_wake_the_refill(
    pair: tuple[SharedStore, SharedStore],
) -> None:
    # hold_ttl=None: nothing but a spend wakes the refill, here from another thread.
    async with guard(pair[0], mode="sliced", risk_limit=30, slice_size=3, hold_ttl=None) as g:
        async with g.task(ORCH, intent="x") as task:
            assert task.shared is not None
            held = task.shared.slices["risk"]
            spent = 0
            for _ in range(100):
                await until(lambda: held.available > 0 or held.exhausted)
                if not held.available:
                    break
                spent += await anyio.to_thread.run_sync(spends, task)
            assert spent == 30


async def test_a_late_refill_is_not_held_against_the_agent() -> None:
    store = MemoryStore()
    async with guard(store, mode="sliced", slice_size=1, max_deny_streak=2) as g:
        async with g.task(ORCH, intent="x") as task:
            assert spends(task)  # the slice of 1 is spent; its refill has not run yet
            for _ in range(3):  # benign: refused while the refill is on its way...
                with pytest.raises(SharedBudgetDenied, match="being refilled") as caught:
                    task.authorize("call_tool", SEARCH)
                assert not caught.value.counts
                assert task.state()["budgets"]["risk"]["spent"] == 1  # given back
            assert task.revoked is None  # ...which is no deny streak


async def test_hammering_an_exhausted_shared_budget_is_refused_then_revoked() -> None:
    store = MemoryStore()
    await store.reserve([Charge("tree/t/risk", 4)], 2)  # another process spent half
    async with guard(store, mode="sliced", risk_limit=4, slice_size=2, max_deny_streak=3) as g:
        async with g.task(ORCH, intent="x", txn="t") as task:
            assert spends(task) and spends(task)  # the rest of the shared budget
            for _ in range(2):  # attack: keep spending what is not there
                with pytest.raises(SharedBudgetDenied) as refused:
                    task.authorize("call_tool", SEARCH)
                assert refused.value.counts and "exhausted across processes" in str(refused.value)
                # Undone in Rust: only what happened is spent locally...
                assert task.state()["budgets"]["risk"]["spent"] == 2
                assert task.revoked is None
                await anyio.sleep(0)  # refills run in between: still nothing to take
            # ...and each refusal is a denial in a row (not a permit that reset the streak).
            with pytest.raises(SharedBudgetDenied) as third:
                task.authorize("call_tool", SEARCH)
            assert third.value.decision is not None
            assert third.value.decision.revoked == "monitor: 3 denials in a row"
            assert "3 denials in a row" in (task.revoked or "")
    assert await store.spent("tree/t/risk") == 4
