"""One contract for every SharedStore: the in-memory store and the Redis store both pass it."""

from __future__ import annotations

import anyio
import pytest
from tests.support import FakeClock

from tether.store.budgets import BudgetSlice, StrictBudget
from tether.store.revocation_feed import RevocationFeed
from tether.store.shared_state import (
    Charge,
    MonitorCounts,
    Revocation,
    SharedStore,
    StoreUnavailable,
)

pytestmark = pytest.mark.anyio


def rev(subject: str, kind: str = "task", reason: str = "test") -> Revocation:
    return Revocation(kind=kind, subject=subject, reason=reason, revoked_at=1.5)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- revocations


async def test_revocations_are_numbered_and_form_the_current_set(store: SharedStore) -> None:
    a = await store.revoke(rev("t1", reason="deny streak"))
    b = await store.revoke(rev("spiffe://example.org/agent/x", kind="agent"))
    assert (a.seq, b.seq) == (1, 2)
    snapshot = await store.revocations()
    assert snapshot.seq == 2
    assert {r.key for r in snapshot.revocations} == {
        "task:t1",
        "agent:spiffe://example.org/agent/x",
    }
    assert snapshot.revocations[0] == a  # reason and time survive the round trip


async def test_revoking_again_replaces_the_record(store: SharedStore) -> None:
    await store.revoke(rev("t1", reason="first"))
    again = await store.revoke(rev("t1", reason="second"))
    snapshot = await store.revocations()
    assert snapshot.revocations == (again,)
    assert again.reason == "second" and again.seq == 2


async def test_log_follows_from_a_cursor(store: SharedStore) -> None:
    for name in ("a", "b", "c"):
        await store.revoke(rev(name))
    after = await store.revocations_after(1, 0.01)
    assert after is not None
    assert [r.subject for r in after] == ["b", "c"]
    assert await store.revocations_after(3, 0.01) == []


async def test_a_waiting_reader_receives_a_new_revocation(store: SharedStore) -> None:
    received: list[str] = []

    async def wait() -> None:
        while not received:  # an empty answer (the wait ran out on a slow machine) is fine
            entries = await store.revocations_after(0, 0.5)
            assert entries is not None
            received.extend(r.subject for r in entries)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0)  # let the reader block first (either order must work)
            await store.revoke(rev("late"))
    assert received == ["late"]


async def test_feed_applies_the_snapshot_then_the_log(store: SharedStore) -> None:
    await store.revoke(rev("before"))
    applied: list[str] = []
    feed = RevocationFeed(store, lambda r: applied.append(r.subject), poll=0.01)
    with pytest.raises(StoreUnavailable, match="has not synced"):
        feed.check()
    await feed.sync()
    feed.check()
    await store.revoke(rev("after"))
    await feed.poll_once()
    assert applied == ["before", "after"]
    assert feed.seq == 2


async def test_feed_redelivers_when_apply_fails(store: SharedStore) -> None:
    seen: list[str] = []
    fail = [True]

    def apply(r: Revocation) -> None:
        if fail[0]:
            fail[0] = False
            raise RuntimeError("engine busy")
        seen.append(r.subject)

    feed = RevocationFeed(store, apply, poll=0.01)
    await feed.sync()
    await store.revoke(rev("x"))
    with pytest.raises(RuntimeError):
        await feed.poll_once()
    assert feed.seq == 0  # not acknowledged
    await feed.poll_once()
    assert seen == ["x"] and feed.seq == 1


async def test_feed_goes_stale_without_word_from_the_store(store: SharedStore) -> None:
    clock = FakeClock(100.0)
    feed = RevocationFeed(store, lambda r: None, max_staleness=5.0, poll=0.01, clock=clock)
    await feed.sync()
    clock.advance(4.9)
    feed.check()
    clock.advance(0.2)
    with pytest.raises(StoreUnavailable, match=r"no word from the store for 5\.1s"):
        feed.check()
    await feed.poll_once()  # an empty poll is still contact
    feed.check()


# ----------------------------------------------------------------------------- budgets


async def test_reserve_is_all_or_nothing_across_a_tree(store: SharedStore) -> None:
    child, parent = Charge("tree/child/risk", 100), Charge("tree/root/risk", 10)
    refused = await store.reserve([child, parent], 11)
    assert refused.granted == 0
    assert await store.spent("tree/child/risk") == 0  # nothing reserved on either key
    assert await store.spent("tree/root/risk") == 0
    ok = await store.reserve([child, parent], 10)  # the benign twin: within both limits
    assert (ok.granted, ok.remaining) == (10, 0)
    assert await store.spent("tree/child/risk") == 10
    assert await store.spent("tree/root/risk") == 10


async def test_partial_grant_and_settled_debt(store: SharedStore) -> None:
    budget = [Charge("b", 10)]
    assert (await store.reserve(budget, 7, partial=True)).granted == 7
    grant = await store.reserve(budget, 7, partial=True)
    assert (grant.granted, grant.remaining) == (3, 0)
    # Debt is settled even past the limit, and the remaining headroom goes negative.
    grant = await store.reserve(budget, 5, settle=2, partial=True)
    assert (grant.granted, grant.remaining) == (0, -2)
    assert await store.spent("b") == 12


async def test_release_gives_back_and_never_goes_negative(store: SharedStore) -> None:
    await store.reserve([Charge("b", 10)], 6)
    await store.release(["b"], 4)
    assert await store.spent("b") == 2
    await store.release(["b"], 5)
    assert await store.spent("b") == 0


@pytest.mark.parametrize(
    ("charges", "amount", "message"),
    [
        ([Charge("b", 10)], -1, "amount must be a non-negative integer"),
        ([Charge("b", -1)], 1, "limit of 'b'"),
        ([Charge("b", 1), Charge("b", 2)], 1, "same budget key twice"),
        ([], 1, "at least one charge"),
    ],
)
async def test_bad_reservations_are_refused(
    store: SharedStore, charges: list[Charge], amount: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await store.reserve(charges, amount)


async def test_strict_budget_spends_exactly_the_limit(store: SharedStore) -> None:
    budget = StrictBudget(store, [Charge("s", 5)])
    results = [await budget.spend(2) for _ in range(3)]
    assert results == [True, True, False]
    assert await budget.spend(1) is True
    assert await store.spent("s") == 5


async def test_slice_spends_locally_and_returns_the_unused_part(store: SharedStore) -> None:
    budget = BudgetSlice(store, [Charge("sl", 100)], slice_size=10)
    assert budget.try_spend(1) is False  # nothing reserved yet, no overdraft
    assert await budget.refill() == 10
    assert await store.spent("sl") == 10
    assert all(budget.try_spend(1) for _ in range(4))
    assert await store.spent("sl") == 10  # spending did not touch the store
    await budget.release()
    assert await store.spent("sl") == 4
    assert budget.try_spend(1) is False  # released: deny


async def test_slice_overdraft_is_bounded_and_stops_at_the_limit(store: SharedStore) -> None:
    budget = BudgetSlice(store, [Charge("od", 12)], slice_size=10, overdraft=3)
    await budget.refill()
    spent = sum(1 for _ in range(20) if budget.try_spend(1))
    assert spent == 13  # the slice plus the overdraft, no more
    await budget.refill()  # settles the debt of 3, which takes the key past its limit
    assert await store.spent("od") == 13
    assert budget.exhausted
    assert budget.try_spend(1) is False  # past the limit: no more overdraft
    await budget.release()
    assert await store.spent("od") == 13  # overspend 1 <= overdraft 3


async def test_slice_without_overdraft_never_passes_the_limit(store: SharedStore) -> None:
    budget = BudgetSlice(store, [Charge("nd", 12)], slice_size=10)
    total = 0
    for _ in range(5):
        await budget.refill()
        total += sum(1 for _ in range(20) if budget.try_spend(1))
    await budget.release()
    assert total == 12 and await store.spent("nd") == 12


# ----------------------------------------------------------------------------- counters, labels


async def test_window_counts_drop_old_buckets(store: SharedStore) -> None:
    assert await store.add_count("egress", 1, now=1000.0, window=10.0) == 1
    assert await store.add_count("egress", 2, now=1005.0, window=10.0) == 3
    assert await store.add_count("egress", 1, now=1009.5, window=10.0) == 4
    assert await store.add_count("egress", 1, now=1011.0, window=10.0) == 4  # t=1000 left
    assert await store.add_count("other", 1, now=1011.0, window=10.0) == 1


async def test_agent_labels_accumulate_per_agent(store: SharedStore) -> None:
    assert await store.labels("agent-a") == frozenset()
    assert await store.add_labels("agent-a", ["restricted"]) == {"restricted"}
    assert await store.add_labels("agent-a", ["pii", "restricted"]) == {"restricted", "pii"}
    assert await store.labels("agent-a") == {"restricted", "pii"}
    assert await store.labels("agent-b") == frozenset()


async def test_tree_monitor_counts(store: SharedStore) -> None:
    counts = [
        await store.record_decision("tree-1", allowed) for allowed in (False, False, True, False)
    ]
    assert counts[1] == MonitorCounts(decisions=2, denials=2, deny_streak=2)
    assert counts[3] == MonitorCounts(decisions=4, denials=3, deny_streak=1)
    assert await store.record_decision("tree-2", True) == MonitorCounts(1, 0, 0)


async def test_forget_drops_a_finished_tree_but_not_revocations_or_labels(
    store: SharedStore,
) -> None:
    await store.reserve([Charge("tree-9/risk", 10)], 7)
    await store.record_decision("tree-9", False)
    await store.add_count("tree-9", 1, now=10.0, window=10.0)
    await store.reserve([Charge("tree-8/risk", 10)], 3)
    await store.revoke(rev("tree-9"))
    await store.add_labels("agent-a", ["restricted"])
    await store.forget(["tree-9/risk", "tree-9"])
    assert await store.spent("tree-9/risk") == 0
    assert await store.record_decision("tree-9", False) == MonitorCounts(1, 1, 1)
    assert await store.add_count("tree-9", 1, now=10.0, window=10.0) == 1
    assert await store.spent("tree-8/risk") == 3  # another tree is untouched
    assert len((await store.revocations()).revocations) == 1
    assert await store.labels("agent-a") == {"restricted"}


# ----------------------------------------------------------------------------- held slices


async def until_granted(store: SharedStore, holder: str, want: int, key: str = "h") -> int:
    """Ask for a slice until something is granted (a deadline, not a sleep, fails it)."""
    with anyio.fail_after(10):
        while True:
            grant = await store.reserve_slice([Charge(key, 10)], want, holder=holder, ttl=60)
            if grant.granted:
                return grant.granted
            await anyio.sleep(0.01)


async def test_a_silent_holders_slice_returns_after_its_ttl(store: SharedStore) -> None:
    crashed = await store.reserve_slice([Charge("h", 10)], 10, holder="crashed", ttl=0.1)
    assert crashed.granted == 10
    assert await until_granted(store, "survivor", 4) == 4
    assert await store.spent("h") == 4  # the silent holder's 10 went back


async def test_a_renewed_slice_is_kept(store: SharedStore) -> None:
    await store.reserve_slice([Charge("h", 10)], 10, holder="alive", ttl=60)
    other = await store.reserve_slice([Charge("h", 10)], 4, holder="other", ttl=60)
    assert (other.granted, other.remaining) == (0, 0)
    renewed = await store.reserve_slice([Charge("h", 10)], 0, holder="alive", ttl=60, used=3)
    assert renewed.granted == 0 and await store.spent("h") == 10


async def test_ending_a_slice_returns_only_the_unspent_part(store: SharedStore) -> None:
    await store.reserve_slice([Charge("h", 10)], 10, holder="a", ttl=60)
    await store.reserve_slice([Charge("h", 10)], 0, holder="a", ttl=60, used=4)
    await store.release_slice(["h"], holder="a", unspent=6)
    assert await store.spent("h") == 4
    await store.release_slice(["h"], holder="a", unspent=6)  # ended already: no effect
    assert await store.spent("h") == 4


async def test_spending_reported_after_a_lapse_is_charged_again(store: SharedStore) -> None:
    await store.reserve_slice([Charge("h", 10)], 10, holder="late", ttl=0.1)
    assert await until_granted(store, "other", 10) == 10  # late's slice lapsed, went back
    back = await store.reserve_slice([Charge("h", 10)], 5, holder="late", ttl=60, used=3)
    assert back.granted == 0 and back.remaining == -3  # the 3 it spent count again
    assert await store.spent("h") == 13


async def test_held_budget_slice_renews_and_stops_when_lapsed(store: SharedStore) -> None:
    clock = FakeClock(100.0)
    budget = BudgetSlice(store, [Charge("hs", 20)], slice_size=5, hold_ttl=30, clock=clock)
    assert await budget.refill() == 5
    assert budget.try_spend(2)
    clock.advance(31)  # not renewed within hold_ttl: the store may give it away
    assert not budget.try_spend(1)  # attack on a lapsed slice: refused
    await budget.refill()  # renewal: reports the 2 spent, takes a fresh slice
    assert budget.try_spend(1)  # benign twin: a renewed slice spends
    await budget.release()
    # 3 spent; the 3 the lapsed slice still held are written off (never handed out twice).
    assert await store.spent("hs") == 6
