"""`Guard(tree_monitors=True)`: a deny streak split over the processes of one task tree
(each too short to trip its own monitors) revokes the tree in all of them."""

from __future__ import annotations

import pytest
from tests.store.guard_world import ORCH, SEARCH, SHELL, guard, until

from tether.store.memory_state import MemoryStore
from tether.store.shared_state import SharedStore
from tether.tasks import Guard, Task

pytestmark = pytest.mark.anyio


async def step(task: Task, tool: str) -> None:
    """One decision, counted on the store before the next (fixes the tree-wide order)."""
    task.authorize("call_tool", tool)
    assert task.shared is not None and task.shared.monitors is not None
    await task.shared.monitors.flush()


@pytest.mark.parametrize(
    ("steps", "tripped"),
    [
        # Attack: probes spread over two workers, 2 each (the local limit is 3).
        ("a:shell a:shell b:shell b:shell", True),
        # Twin: the same probes with a permit between them: no 3 denials in a row.
        ("a:shell a:shell b:search b:shell b:shell", False),
    ],
)
async def test_a_deny_streak_across_processes_revokes_the_tree(
    pair: tuple[SharedStore, SharedStore], steps: str, tripped: bool
) -> None:
    async with (
        guard(pair[0], max_deny_streak=3, tree_monitors=True) as a,
        guard(pair[1], max_deny_streak=3, tree_monitors=True) as b,
    ):
        async with (
            a.task(ORCH, intent="x", txn="probe") as ta,
            b.task(ORCH, intent="x", txn="probe") as tb,
        ):
            for s in steps.split():
                who, tool = s.split(":")
                await step(ta if who == "a" else tb, SHELL if tool == "shell" else SEARCH)
            if tripped:
                await until(lambda: ta.revoked is not None and tb.revoked is not None)
                assert "3 denials in a row across the tree's processes" in (tb.revoked or "")
            else:
                assert ta.revoked is None and tb.revoked is None


def test_tree_monitors_need_a_store() -> None:
    with pytest.raises(ValueError, match="tree_monitors need a store"):
        Guard(guard(MemoryStore()).engine, tree_monitors=True)
