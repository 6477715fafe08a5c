"""Task lifecycles: closing on normal and exceptional exit, leases revoked with the
task, deadlines (checked on decisions and by the background watcher)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tether.leases import CredentialBroker
from tether.store import MemoryLeaseStore
from tether.tasks import Guard, Monitors, TaskRevoked

pytestmark = pytest.mark.anyio

ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'
WIKI = 'Dataset::"wiki"'
SEARCH = 'Tool::"search"'
RES_ID = "spiffe://example.org/agents/researcher"


async def wait_until(pred: Any, limit: float = 5.0) -> None:
    """Functional wait (not a timing assertion): poll until `pred()` holds."""
    with anyio.fail_after(limit):
        while not pred():
            await anyio.sleep(0.005)


async def test_normal_exit_revokes_and_later_decisions_deny(engine: Any) -> None:
    guard = Guard(engine, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="summarize", ttl=60) as task:
        assert task.revoked is None
        assert task.authorize("read", WIKI).allowed
        assert task.txn in guard.tasks
    assert task.revoked == "task ended"
    assert task.closed
    assert task.txn not in guard.tasks
    d = task.authorize("read", WIKI)
    assert not d.allowed
    assert d.message is not None and d.message.startswith("task revoked")
    assert "task ended" in d.message
    with pytest.raises(TaskRevoked):
        await task.require("read", WIKI)


async def test_exception_exit_revokes_with_exception_name(engine: Any) -> None:
    guard = Guard(engine, allow_unauthenticated=True)
    with pytest.raises(KeyError):
        async with guard.task(ORCH, intent="summarize") as task:
            assert task.authorize("read", WIKI).allowed
            raise KeyError("boom")
    assert task.revoked == "task ended by KeyError"
    d = task.authorize("read", WIKI)
    assert not d.allowed
    assert d.message == "task revoked: task ended by KeyError"


async def test_cancelled_task_still_closes(engine: Any) -> None:
    guard = Guard(engine, allow_unauthenticated=True)
    holder: list[Any] = []
    with anyio.CancelScope() as scope:
        async with guard.task(ORCH, intent="x") as task:
            holder.append(task)
            scope.cancel()
            await anyio.sleep(10)
    assert holder[0].revoked is not None
    assert not holder[0].authorize("read", WIKI).allowed


async def test_leases_revoked_at_normal_exit(engine: Any, broker: Any, source: Any) -> None:
    async with Guard(engine, broker=broker, allow_unauthenticated=True) as guard:
        async with guard.task(ORCH, intent="x") as task:
            a = await task.lease("db")
            b = await task.lease("db")
            assert source.revoked == []
            a.check()
        assert sorted(source.revoked) == sorted([a.lease_id, b.lease_id])


async def test_leases_revoked_at_exception_exit(engine: Any, broker: Any, source: Any) -> None:
    async with Guard(engine, broker=broker, allow_unauthenticated=True) as guard:
        with pytest.raises(RuntimeError):
            async with guard.task(ORCH, intent="x") as task:
                lease = await task.lease("db")
                raise RuntimeError("agent crashed")
        assert source.revoked == [lease.lease_id]


async def test_child_leases_revoked_when_parent_closes(
    engine: Any, broker: Any, source: Any, authenticator: Any, mint: Any
) -> None:
    async with Guard(engine, authenticator, broker=broker, allow_unauthenticated=True) as guard:
        async with guard.task(ORCH, intent="x") as parent:
            child = await parent.delegate(mint(RES_ID))
            c_lease = await child.lease("db")
            p_lease = await parent.lease("db")
        assert sorted(source.revoked) == sorted([c_lease.lease_id, p_lease.lease_id])
        assert child.revoked is not None and child.closed


async def test_parent_revoke_revokes_child_leases(
    engine: Any, broker: Any, source: Any, authenticator: Any, mint: Any
) -> None:
    async with Guard(engine, authenticator, broker=broker, allow_unauthenticated=True) as guard:
        async with guard.task(ORCH, intent="x") as parent:
            child = await parent.delegate(mint(RES_ID))
            c_lease = await child.lease("db")
            parent.revoke("incident")
            await wait_until(lambda: c_lease.lease_id in source.revoked)
            d = child.authorize("call_tool", SEARCH)
            assert not d.allowed
            assert d.message is not None and "ancestor task" in d.message
            assert "incident" in d.message


async def test_revoke_revokes_leases_in_background(engine: Any, broker: Any, source: Any) -> None:
    async with Guard(engine, broker=broker, allow_unauthenticated=True) as guard:
        async with guard.task(ORCH, intent="x") as task:
            lease = await task.lease("db")
            task.revoke("operator said so")
            # The decision flag is immediate; the lease follows in the background.
            assert not task.authorize("read", WIKI).allowed
            await wait_until(lambda: lease.lease_id in source.revoked)
            with pytest.raises(TaskRevoked):
                await task.lease("db")


async def test_guard_exit_closes_live_tasks(engine: Any, broker: Any, source: Any) -> None:
    async with Guard(engine, broker=broker, allow_unauthenticated=True) as guard:
        task = await guard.task(ORCH, intent="x").__aenter__()
        lease = await task.lease("db")
    assert task.revoked == "guard stopped"
    assert lease.lease_id in source.revoked
    assert not task.authorize("read", WIKI).allowed


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan"), float("inf")])
async def test_bad_ttl_refused(engine: Any, ttl: float) -> None:
    guard = Guard(engine, allow_unauthenticated=True)
    with pytest.raises(ValueError):
        async with guard.task(ORCH, intent="x", ttl=ttl):
            pass


# -- deadlines -----------------------------------------------------------------------


async def test_deadline_on_decision_with_fake_clock(engine: Any, clock: Any) -> None:
    guard = Guard(engine, clock=clock, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="x", ttl=10) as task:
        assert task.deadline == clock.now + 10
        clock.advance(9.9)
        assert task.authorize("read", WIKI).allowed
        clock.advance(0.1)
        d = task.authorize("read", WIKI)
        assert not d.allowed
        assert d.message == "task revoked: deadline passed"
        assert d.revoked == "deadline passed"
        assert task.revoked == "deadline passed"
        # and it stays revoked even if the clock were to go back
        clock.advance(-100)
        d = task.authorize("read", WIKI)
        assert not d.allowed and d.message == "task revoked: deadline passed"


async def test_task_context_reflects_clock(engine: Any, clock: Any) -> None:
    guard = Guard(engine, clock=clock, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="x", ttl=100) as task:
        assert task.authorize("call_tool", SEARCH).allowed
        assert task.state()["counters"]["tool_calls_60s"] == 1
        clock.advance(61)  # the 60 s window slid past the call
        assert task.state()["counters"]["tool_calls_60s"] == 0


async def watcher_pass(guard: Guard) -> None:
    """Wake the deadline watcher and wait for two full passes (it replaces its wake event at
    the end of each): the second began after this call, so it saw the clock as it is now."""
    for _ in range(2):
        before = guard._wake
        before.set()
        await wait_until(lambda: guard._wake is not before)  # noqa: B023 (waited on here)


async def test_watcher_revokes_idle_task(engine: Any, source: Any, clock: Any) -> None:
    broker = CredentialBroker(MemoryLeaseStore(), {"db": source.provider()}, clock=clock)
    async with Guard(engine, broker=broker, clock=clock, allow_unauthenticated=True) as guard:
        async with guard.task(ORCH, intent="x", ttl=30) as task:
            lease = await task.lease("db")
            # No decisions at all: only the watcher can notice the deadline.
            clock.advance(31)
            await watcher_pass(guard)
            assert task.revoked == "deadline passed"
            await wait_until(lambda: task.closed)
            assert lease.lease_id in source.revoked
            assert task.txn not in guard.tasks
            d = task.authorize("read", WIKI)
            assert not d.allowed and d.message == "task revoked: deadline passed"


async def test_watcher_with_fake_clock_and_wake(engine: Any, clock: Any) -> None:
    async with Guard(engine, clock=clock, allow_unauthenticated=True) as guard:
        async with guard.task(ORCH, intent="x", ttl=30) as task:
            other_cm = guard.task(ORCH, intent="y", ttl=300)
            other = await other_cm.__aenter__()
            await watcher_pass(guard)
            assert task.revoked is None  # the watcher looked and left it alone
            clock.advance(31)
            await watcher_pass(guard)
            assert task.revoked == "deadline passed"
            assert other.revoked is None  # the later deadline is untouched
            assert other.authorize("read", WIKI).allowed
            await other_cm.__aexit__(None, None, None)


async def test_watcher_revokes_at_the_deadline_exactly(engine: Any, clock: Any) -> None:
    """A deadline is the last instant a task lives: at it, the watcher revokes; a moment
    before, it does not."""
    async with Guard(engine, clock=clock, allow_unauthenticated=True) as guard:
        async with guard.task(ORCH, intent="x", ttl=30) as task:
            clock.advance(30 - 0.001)
            await watcher_pass(guard)
            assert task.revoked is None
            assert task.authorize("read", WIKI).allowed
            clock.advance(0.001)
            assert clock() == task.deadline
            await watcher_pass(guard)
            assert task.revoked == "deadline passed"


async def test_child_never_outlives_parent(
    engine: Any, clock: Any, authenticator: Any, mint: Any
) -> None:
    guard = Guard(
        engine,
        authenticator,
        clock=clock,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0),
        allow_unauthenticated=True,
    )
    async with guard.task(ORCH, intent="x", ttl=10) as parent:
        child = await parent.delegate(await guard.authenticate(mint(RES_ID)), ttl=1000)
        assert child.deadline <= parent.deadline
        clock.advance(10)
        d = child.authorize("call_tool", SEARCH)
        assert not d.allowed
        assert d.message is not None and d.message.startswith("task revoked")


async def test_authorize_from_worker_thread_revokes_leases(
    engine: Any, broker: Any, source: Any
) -> None:
    """A monitor tripping inside `authorize` called from a worker thread must return the
    decision (not raise for lack of an event loop) and still revoke the task's leases."""
    async with Guard(
        engine, broker=broker, monitors=Monitors(max_deny_streak=2), allow_unauthenticated=True
    ) as guard:
        async with guard.task(ORCH, intent="x") as task:
            lease = await task.lease("db")

            def work() -> list[Any]:
                return [task.authorize("call_tool", 'Tool::"shell"') for _ in range(3)]

            decisions = await anyio.to_thread.run_sync(work)
            assert [d.revoked for d in decisions] == [None, "monitor: 2 denials in a row", None]
            await wait_until(lambda: lease.lease_id in source.revoked)
            with pytest.raises(TaskRevoked):
                await task.lease("db")
