"""Revocation is effective before the revoking call returns, from any thread, and nothing
(a racing renewal included) brings a revoked lease back."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.leases.ledger import LedgerProvider
from tether.engine import Engine
from tether.leases import CallbackProvider, CredentialBroker, Lease, LeaseRevoked, TaskRef
from tether.store import MemoryLeaseStore
from tether.tasks import Guard

pytestmark = pytest.mark.anyio

AGENT = 'Agent::"spiffe://example.org/agents/a"'
ENGINE = Engine("permit (principal, action, resource);")


def _reveal(lease: Lease) -> str:
    try:
        return lease.secret.reveal()
    except LeaseRevoked:
        return "REFUSED"


async def test_revoked_in_a_worker_thread_unrevealable_before_revoke_returns() -> None:
    ledger = LedgerProvider()
    broker = CredentialBroker(MemoryLeaseStore(), {"db": ledger})
    async with Guard(ENGINE, broker=broker, allow_unauthenticated=True) as guard:
        async with guard.task(AGENT, intent="a") as doomed, guard.task(AGENT, intent="b") as kept:
            bad, good = await doomed.lease("db"), await kept.lease("db")

            def operator() -> tuple[str, str]:
                guard.revoke(task=doomed)
                # Same thread, no await: the event loop has not run since.
                return _reveal(bad), _reveal(good)

            assert await anyio.to_thread.run_sync(operator) == ("REFUSED", good.secret.reveal())
        assert ledger.live() == []


async def test_revoking_decision_in_a_worker_thread_kills_the_lease_at_once() -> None:
    broker = CredentialBroker(MemoryLeaseStore(), {"db": LedgerProvider()})
    async with Guard(ENGINE, broker=broker, allow_unauthenticated=True) as guard:
        async with guard.task(AGENT, intent="x", scope={"read"}) as task:
            lease = await task.lease("db")

            def agent(action: str) -> tuple[bool, str]:
                decision = task.authorize(action, 'Doc::"d"')
                return decision.allowed, _reveal(lease)

            # Benign twin: an in-scope action leaves the lease usable.
            allowed, revealed = await anyio.to_thread.run_sync(agent, "read")
            assert allowed and revealed == lease.secret.reveal()
            # Acting outside the scope revokes the task; its lease dies in the same call.
            allowed, revealed = await anyio.to_thread.run_sync(agent, "write")
            assert not allowed and task.revoked is not None
            assert revealed == "REFUSED"


async def test_revoke_task_now_is_synchronous_and_covers_descendants(clock: Any) -> None:
    broker = CredentialBroker(MemoryLeaseStore(), {"db": LedgerProvider()}, clock=clock)

    def ref(txn: str, parent: str | None = None) -> TaskRef:
        return TaskRef(txn, "a", frozenset(), "t", (), clock.now + 60, parent)

    parent = await broker.issue(ref("p"), "db")
    child = await broker.issue(ref("c", "p"), "db")
    other = await broker.issue(ref("o"), "db")
    revoked = await anyio.to_thread.run_sync(broker.revoke_task_now, "p")
    assert revoked == 2
    assert [_reveal(parent), _reveal(child)] == ["REFUSED", "REFUSED"]
    assert _reveal(other) != "REFUSED"
    assert sorted(broker.unconfirmed()) == sorted([parent.lease_id, child.lease_id])
    await broker.reap_once()  # the provider hears of it on the loop
    assert broker.unconfirmed() == []


async def test_renew_racing_a_revocation_does_not_resurrect_the_lease(clock: Any) -> None:
    ledger = LedgerProvider()
    entered, release = anyio.Event(), anyio.Event()

    async def slow_renew(lease: Lease, ttl: float) -> None:
        entered.set()
        await release.wait()
        await ledger.renew(lease, ttl)  # extends the credential, revoked or not

    provider = CallbackProvider(issue=ledger.issue, revoke=ledger.revoke, renew=slow_renew)
    store = MemoryLeaseStore()
    broker = CredentialBroker(store, {"db": provider}, clock=clock)
    task = TaskRef("t", "a", frozenset(), "t", (), clock.now + 600)
    lease = await broker.issue(task, "db", ttl=10, max_ttl=100)
    expires_at = lease.expires_at
    outcome: list[BaseException] = []

    async def renewer() -> None:
        try:
            await broker.renew(lease.lease_id, 50)
        except LeaseRevoked as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(renewer)
        await entered.wait()
        await broker.revoke(lease.lease_id)
        assert ledger.live() == []
        release.set()

    assert len(outcome) == 1  # the renewal reports the revocation...
    assert lease.expires_at == expires_at  # ...extends nothing here...
    assert ledger.live() == []  # ...and the provider's late extension was revoked again
    record = await store.get(lease.lease_id)
    assert record is not None and record.status == "revoked"
    assert _reveal(lease) == "REFUSED"
    with pytest.raises(LeaseRevoked):  # and a later renewal is refused outright
        await broker.renew(lease.lease_id, 50)
