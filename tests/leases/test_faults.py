"""Providers that hang, raise or are slow delay nothing but their own leases.

Provider timeouts run on real time (they are anyio deadlines); every wait below is bounded
by a hang guard, and no assertion depends on how long anything took.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.leases.ledger import LedgerProvider
from tether.engine import Engine
from tether.leases import (
    CallbackProvider,
    CredentialBroker,
    IssuedCredential,
    IssueRequest,
    Lease,
    LeaseRevoked,
    LeaseStoreBusy,
    ProviderTimeout,
    TaskRef,
)
from tether.store import MemoryLeaseStore
from tether.tasks import Guard

pytestmark = pytest.mark.anyio

HANG_GUARD = 20.0  # only ever reached if the code under test hangs
AGENT = 'Agent::"spiffe://example.org/agents/a"'


def _task(txn: str, deadline: float = 1e12) -> TaskRef:
    return TaskRef(txn, "spiffe://example.org/agents/a", frozenset(), "t", (), deadline)


async def _wait_until(cond: Any) -> None:
    with anyio.fail_after(HANG_GUARD):
        while not cond():
            await anyio.sleep(0.005)


async def test_hung_raising_and_slow_providers_do_not_stall_the_others(clock: Any) -> None:
    ledgers = {
        "ok": LedgerProvider(),
        "hang": LedgerProvider(revoke_behaviour="hang"),
        "raise": LedgerProvider(revoke_behaviour="raise"),
        "slow": LedgerProvider(revoke_behaviour="slow", slow=0.02),
    }
    broker = CredentialBroker(
        MemoryLeaseStore(),
        ledgers,
        clock=clock,
        provider_timeout=0.5,
        max_revoke_attempts=1,
        revoke_backoff=1.0,
    )
    leases: dict[str, list[Lease]] = {
        name: [await broker.issue(_task("t"), name) for _ in range(4)] for name in ledgers
    }
    with anyio.fail_after(HANG_GUARD):
        assert await broker.revoke_task("t") == 16  # returns although one provider hangs

    assert ledgers["ok"].live() == [] and ledgers["slow"].live() == []
    stuck = {lease.lease_id for name in ("hang", "raise") for lease in leases[name]}
    assert set(ledgers["hang"].live()) | set(ledgers["raise"].live()) == stuck
    zombies = {z.lease_id: z for z in broker.zombies()}
    assert set(zombies) == stuck  # reported, with why
    assert ProviderTimeout.__name__ in (zombies[leases["hang"][0].lease_id].last_error or "")
    assert "ConnectionError" in (zombies[leases["raise"][0].lease_id].last_error or "")
    for group in leases.values():  # unusable everywhere, confirmed or not
        for lease in group:
            with pytest.raises(LeaseRevoked):
                _ = lease.secret

    # The providers come back: the retries (after backoff) confirm everything.
    for ledger in ledgers.values():
        ledger.revoke_behaviour = "ok"
    clock.advance(1.0)
    with anyio.fail_after(HANG_GUARD):
        await broker.reap_once()
    assert all(ledger.live() == [] for ledger in ledgers.values())
    assert broker.zombies() == [] and broker.unconfirmed() == []


async def test_reaper_keeps_going_past_a_stuck_lease(clock: Any) -> None:
    stuck, fine = LedgerProvider(revoke_behaviour="hang"), LedgerProvider()
    broker = CredentialBroker(
        MemoryLeaseStore(),
        {"stuck": stuck, "fine": fine},
        clock=clock,
        provider_timeout=0.2,
        reaper_interval=0.01,
        max_revoke_attempts=1,
    )
    async with broker:
        hung = await broker.issue(_task("a"), "stuck", ttl=5)
        first = [await broker.issue(_task("b"), "fine", ttl=5) for _ in range(10)]
        clock.advance(6)  # all expired: the reaper meets the stuck one among them
        await _wait_until(lambda: fine.live() == [])
        later = [await broker.issue(_task("c"), "fine", ttl=5) for _ in range(10)]
        clock.advance(6)
        await _wait_until(lambda: fine.live() == [])  # still reaping after the stuck lease
        await _wait_until(lambda: [z.lease_id for z in broker.zombies()] == [hung.lease_id])
        with anyio.fail_after(HANG_GUARD):
            await broker.revoke(hung.lease_id)  # returns; the provider still has it
        assert stuck.live() == [hung.lease_id]
    assert len(first) + len(later) == 20 and fine.issued() == 20


async def test_slow_issue_times_out_and_is_revoked_by_lease_id(clock: Any) -> None:
    ledger = LedgerProvider()
    release = anyio.Event()

    async def hook_issue(request: IssueRequest) -> IssuedCredential:
        cred = await ledger.issue(request)  # created at the provider...
        await release.wait()  # ...but the answer never comes back in time
        return cred

    provider = CallbackProvider(issue=hook_issue, revoke=ledger.revoke)
    broker = CredentialBroker(
        MemoryLeaseStore(), {"db": provider}, clock=clock, provider_timeout=0.2
    )
    with anyio.fail_after(HANG_GUARD), pytest.raises(ProviderTimeout):
        await broker.issue(_task("t"), "db")
    (lease_id,) = broker.unconfirmed()
    assert ledger.live() == [lease_id]
    await broker.reap_once()  # revoked by lease id: the broker never learned the ref
    assert ledger.live() == [] and ledger.revoked_by_lease_id() == 1


async def test_task_exit_is_bounded_and_cancellable_with_a_hung_provider() -> None:
    hang, fine = LedgerProvider(revoke_behaviour="hang"), LedgerProvider()
    broker = CredentialBroker(
        MemoryLeaseStore(),
        {"hang": hang, "fine": fine},
        provider_timeout=0.3,
        max_revoke_attempts=1,
    )
    engine = Engine("permit (principal, action, resource);")
    ran_after_exit = False
    with anyio.fail_after(HANG_GUARD):
        async with Guard(engine, broker=broker, allow_unauthenticated=True) as guard:
            with anyio.move_on_after(0.05) as outer:  # the caller gives up early
                async with guard.task(AGENT, intent="x") as task:
                    stuck = await task.lease("hang")
                    ok = await task.lease("fine")
                    await anyio.sleep_forever()  # cancelled here; exit runs, bounded
                ran_after_exit = True
            assert outer.cancelled_caught and not ran_after_exit
            assert fine.live() == []  # revoked during the exit
            assert hang.live() == [stuck.lease_id]
            assert [z.lease_id for z in broker.zombies()] == [stuck.lease_id]
            for lease in (stuck, ok):
                with pytest.raises(LeaseRevoked):
                    _ = lease.secret


async def test_recover_reports_what_a_hung_provider_did_not_confirm(clock: Any) -> None:
    store = MemoryLeaseStore()
    fine, hung = LedgerProvider(), LedgerProvider(revoke_behaviour="hang")
    dead = CredentialBroker(store, {"fine": fine, "hung": hung}, clock=clock)
    left = [await dead.issue(_task("t"), name) for name in ("fine", "hung", "fine")]
    await dead.close()  # the process died without revoking

    successor = CredentialBroker(
        store, {"fine": fine, "hung": hung}, clock=clock, provider_timeout=0.2
    )
    with anyio.fail_after(HANG_GUARD):
        report = await successor.recover()  # returns although one revocation never does
    assert sorted(report.revoked) == sorted([left[0].lease_id, left[2].lease_id])
    assert [z.lease_id for z in report.zombies] == [left[1].lease_id]
    assert "ProviderTimeout" in (report.zombies[0].last_error or "")
    assert fine.live() == [] and hung.live() == [left[1].lease_id]
    assert successor.unconfirmed() == [left[1].lease_id]  # still retried by the reaper


async def test_guard_start_failing_in_the_broker_leaves_nothing_running() -> None:
    store = MemoryLeaseStore()
    holder = CredentialBroker(store, {"db": LedgerProvider()}, owner="w")
    await holder.recover()  # claims owner "w" on the store
    clash = CredentialBroker(store, {"db": LedgerProvider()}, owner="w")
    guard = Guard(
        Engine("permit (principal, action, resource);"), broker=clash, allow_unauthenticated=True
    )
    with pytest.raises(LeaseStoreBusy, match="'w'"):
        async with guard:
            pass
    assert guard._tg is None and guard._stack is None  # no watcher left behind
    # Benign twin: once the holder is gone the same guard starts and stops cleanly.
    await holder.close()
    async with guard:
        async with guard.task(AGENT, intent="x") as task:
            assert (await task.lease("db")).secret.reveal().startswith("secret-")
