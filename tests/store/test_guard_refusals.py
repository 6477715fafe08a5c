"""A permit the shared budget refuses is undone: spent given back locally, a denial for
the monitors, and a receipt that says deny (in both budget modes)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from tests.store.guard_world import ORCH, SEARCH, SUMMARIZE, guard

from tether.audit import AuditLog
from tether.store.memory_state import MemoryStore
from tether.store.shared_state import Charge, Grant, SharedStore, StoreUnavailable
from tether.tasks import Task
from tether.tasks.shared import SharedBudgetDenied

pytestmark = pytest.mark.anyio


def spent_here(task: Task) -> int:
    value: int = task.state()["budgets"]["risk"]["spent"]
    return value


async def test_strict_refusals_give_back_and_count_as_denials(
    pair: tuple[SharedStore, SharedStore],
) -> None:
    async with (
        guard(pair[0], mode="strict", risk_limit=5) as a,
        guard(pair[1], mode="strict", risk_limit=5, max_deny_streak=2) as b,
    ):
        async with (
            a.task(ORCH, intent="x", txn="t") as ta,
            b.task(ORCH, intent="x", txn="t") as tb,
        ):
            await ta.require("call_tool", SUMMARIZE)
            await ta.require("call_tool", SUMMARIZE)  # 4 of 5 spent, by the other process
            await tb.require("call_tool", SEARCH)  # benign: the last 1 fits
            assert spent_here(tb) == 1
            with pytest.raises(SharedBudgetDenied, match="cannot cover") as first:
                await tb.require("call_tool", SEARCH)  # attack: nothing left
            assert first.value.counts and spent_here(tb) == 1 and tb.revoked is None
            with pytest.raises(SharedBudgetDenied):
                await tb.require("call_tool", SEARCH)
            assert "2 denials in a row" in (tb.revoked or "")
            assert spent_here(tb) == 1
    assert await pair[0].spent("tree/t/risk") == 5


async def test_strict_spend_without_a_round_trip_is_given_back() -> None:
    async with guard(MemoryStore(), mode="strict", risk_limit=5) as g:
        async with g.task(ORCH, intent="x") as task:
            with pytest.raises(SharedBudgetDenied, match="round trip"):
                task.authorize("call_tool", SEARCH)
            assert spent_here(task) == 0  # the local budget did not keep it
            await task.require("call_tool", SEARCH)  # the twin that awaits: spent once
            assert spent_here(task) == 1


class FailingReserve(MemoryStore):
    """A store whose budget reservations fail: the store is down for them."""

    async def reserve(
        self, charges: Sequence[Charge], amount: int, *, settle: int = 0, partial: bool = False
    ) -> Grant:
        raise StoreUnavailable("memory", "connection refused")


async def test_a_store_outage_in_strict_mode_gives_back_without_a_denial() -> None:
    async with guard(FailingReserve(), mode="strict", risk_limit=5, max_deny_streak=1) as g:
        async with g.task(ORCH, intent="x") as task:
            with pytest.raises(StoreUnavailable):
                await task.require("call_tool", SEARCH)
            assert spent_here(task) == 0
            assert task.revoked is None  # not the agent's doing: no deny streak


async def test_refused_actions_get_deny_receipts() -> None:
    got: list[bytes] = []
    store = MemoryStore()
    await store.reserve([Charge("tree/t/risk", 2)], 1)  # another process spent half
    with AuditLog(got.append) as log:
        async with guard(store, mode="sliced", risk_limit=2, slice_size=1, audit=log) as g:
            async with g.task(ORCH, intent="x", txn="t") as task:
                task.authorize("call_tool", SEARCH)  # the benign twin: the last 1
                with pytest.raises(SharedBudgetDenied):
                    task.authorize("call_tool", SEARCH)  # refused by the shared budget
    decisions = [r for r in map(json.loads, got) if r.get("decision")]
    assert [(r["action"], r["decision"]) for r in decisions] == [
        ('Action::"call_tool"', "allow"),
        ('Action::"call_tool"', "deny"),
    ]
    assert decisions[1]["txn"] == "t" and decisions[1]["denial"] == "no-permit"
