"""Revocation and deadlines at their edges: leases known only to the store, a store that is
down, renewals racing revocations, ancestors several levels up, inconsistent parent links,
and the exact instants at which the broker forgets a task, a mark or a tombstone."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.leases.test_broker_contract import FlakyStore
from tether.leases import (
    CallbackProvider,
    IssuedCredential,
    IssueRequest,
    Lease,
    LeaseExpired,
    LeaseNotFound,
    LeaseRevoked,
)
from tether.store import MemoryLeaseStore

pytestmark = pytest.mark.anyio


async def test_revoke_reaches_a_lease_known_only_to_the_store(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    store = MemoryLeaseStore()
    crashed = make_broker(store=store)  # issued, then died without revoking or recovering
    lease = await crashed.issue(make_task(), "db", ttl=60)
    done = await crashed.issue(make_task(), "db", ttl=60)
    await crashed.revoke(done.lease_id)
    assert source.revoked_ids == [done.lease_id]

    other = make_broker(store=store, owner="ops")
    await other.revoke(lease.lease_id)
    assert source.revoked_ids == [done.lease_id, lease.lease_id]
    record = await store.get(lease.lease_id)
    assert record is not None and record.status == "revoked"
    # Benign twins: a record already revoked is not revoked again; an unknown id is an error.
    await other.revoke(done.lease_id)
    assert source.revoked_ids == [done.lease_id, lease.lease_id]
    with pytest.raises(LeaseNotFound, match=r"^no lease tasks/txn-1/db/unknown$"):
        await other.revoke("tasks/txn-1/db/unknown")


async def test_revoking_a_live_lease_does_not_need_the_store(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    store = FlakyStore()
    broker = make_broker(store=store)
    lease = await broker.issue(make_task(), "db", ttl=60)
    store.fail_get = True
    await broker.revoke(lease.lease_id)
    with pytest.raises(LeaseRevoked):
        lease.check()
    assert source.revoked_ids == [lease.lease_id]


async def test_a_renewed_lease_outlives_its_original_expiry_in_the_reaper(
    make_broker: Any, make_task: Any, clock: Any, source: Any
) -> None:
    broker = make_broker()
    lease = await broker.issue(make_task(), "db", ttl=10, max_ttl=100)
    done = await broker.issue(make_task(), "db", ttl=5)
    await broker.revoke(done.lease_id)  # its expiry heap item outlives it
    await broker.renew(lease.lease_id, 50)
    clock.advance(20)
    await broker.reap_once()
    lease.check()  # the stale heap item of the original expiry revokes nothing
    assert source.revoked_ids == [done.lease_id]
    clock.advance(30)
    await broker.reap_once()
    with pytest.raises(LeaseExpired):
        lease.check()
    assert source.revoked_ids == [done.lease_id, lease.lease_id]


async def test_lease_capped_by_a_grandparent_deadline(
    make_broker: Any, make_task: Any, clock: Any
) -> None:
    broker = make_broker()
    await broker.issue(make_task("g", deadline=clock.now + 100), "db", ttl=10)
    await broker.issue(make_task("p", parent_txn="g", deadline=clock.now + 1000), "db", ttl=10)
    task = make_task("c", parent_txn="p", deadline=clock.now + 1000)
    lease = await broker.issue(task, "db", ttl=500)
    assert lease.expires_at == clock.now + 100


async def test_inconsistent_parent_links_neither_hang_nor_spare_a_lease(
    make_broker: Any, make_task: Any, clock: Any
) -> None:
    # Task refs come from the task layer; if they ever disagree (here "r" is registered
    # under two parents, both its own children), every walk must still end and cover all.
    broker = make_broker()
    leases = [
        await broker.issue(make_task("r", parent_txn="x"), "db", ttl=60),
        await broker.issue(make_task("x", parent_txn="r"), "db", ttl=60),
        await broker.issue(make_task("y", parent_txn="r"), "db", ttl=60),
        await broker.issue(make_task("r", parent_txn="y"), "db", ttl=60),
    ]
    assert broker.revoke_task_now("r") == 4
    for lease in leases:
        with pytest.raises(LeaseRevoked):
            lease.check()
    with pytest.raises(LeaseRevoked):
        await broker.issue(make_task("z", parent_txn="x"), "db", ttl=60)
    # Benign twin: a task outside the cycle still gets leases.
    await broker.issue(make_task("w"), "db", ttl=60)


async def test_renewal_racing_a_confirmed_revocation_is_revoked_again_until_confirmed(
    make_broker: Any, make_task: Any, clock: Any
) -> None:
    revoked: list[str] = []
    renewed: list[str] = []
    issued: list[str] = []

    async def issue(request: IssueRequest) -> IssuedCredential:
        issued.append(request.lease_id)
        return IssuedCredential(secret="s", provider_ref=f"ref-{len(issued)}")

    async def revoke(lease: Lease) -> None:
        revoked.append(lease.lease_id)
        if len(revoked) == 2:  # the second revocation, after the racing renewal, fails once
            raise ConnectionError("provider unavailable")

    async def renew(lease: Lease, ttl: float) -> None:
        await broker.revoke(lease.lease_id)  # confirmed while the provider renews
        renewed.append(lease.lease_id)  # ...and then the provider extends it anyway

    broker = make_broker(
        providers={"db": CallbackProvider(issue=issue, revoke=revoke, renew=renew)},
        tombstone_ttl=100.0,
    )
    lease = await broker.issue(make_task(), "db", ttl=10, max_ttl=100)
    with pytest.raises(LeaseRevoked, match=rf"^lease {re.escape(lease.lease_id)} was revoked$"):
        await broker.renew(lease.lease_id, 50)
    assert renewed == [lease.lease_id] and revoked == [lease.lease_id] * 2
    assert broker.unconfirmed() == [lease.lease_id]  # the provider may hold a live credential
    assert await broker.reap_once() == 0  # not due before its backoff
    with pytest.raises(LeaseRevoked):
        broker.get(lease.lease_id)
    await broker.revoke_task("txn-1")  # ending the task retries it at once
    assert revoked == [lease.lease_id] * 3
    assert broker.unconfirmed() == []
    clock.advance(100)
    await broker.reap_once()  # both confirmations' tombstones are forgotten together
    with pytest.raises(LeaseNotFound):
        broker.get(lease.lease_id)
    assert broker.stats()["tombstones"] == 0


async def test_a_revoked_task_stays_refused_until_its_deadline(
    make_broker: Any, make_task: Any, clock: Any
) -> None:
    broker = make_broker(tombstone_ttl=100.0)
    deadline = clock.now + 10_000
    await broker.issue(make_task("long", deadline=deadline), "db", ttl=60)
    await broker.revoke_task("long")
    broker.revoke_task_now("ghost")  # never seen: refused for tombstone_ttl
    clock.advance(99)
    await broker.reap_once()
    with pytest.raises(LeaseRevoked):
        await broker.issue(make_task("ghost"), "db", ttl=60)
    clock.advance(101)  # past tombstone_ttl, long before the long task's deadline
    await broker.reap_once()
    with pytest.raises(LeaseRevoked):
        await broker.issue(make_task("long", deadline=deadline), "db", ttl=60)
    await broker.issue(make_task("ghost"), "db", ttl=60)  # forgotten after tombstone_ttl
    await broker.issue(make_task("other"), "db", ttl=60)  # benign twin
    clock.now = deadline
    await broker.reap_once()
    with pytest.raises(LeaseRevoked):  # still the revocation, not the deadline, that refuses
        await broker.issue(make_task("long", deadline=deadline), "db", ttl=60)


async def test_a_parent_without_leases_keeps_capping_until_its_deadline(
    make_broker: Any, make_task: Any, clock: Any
) -> None:
    broker = make_broker()
    parent_deadline = clock.now + 100
    parent = await broker.issue(make_task("p", deadline=parent_deadline), "db", ttl=10)
    await broker.revoke(parent.lease_id)  # the parent now has no leases at all
    await broker.reap_once()
    child = make_task("c", parent_txn="p", deadline=clock.now + 1000)
    assert (await broker.issue(child, "db", ttl=500)).expires_at == parent_deadline
    clock.now = parent_deadline
    await broker.reap_once()
    with pytest.raises(LeaseExpired):  # at the parent's deadline the child gets nothing
        await broker.issue(child, "db", ttl=500)


async def test_tombstones_are_forgotten_exactly_after_tombstone_ttl(
    make_broker: Any, make_task: Any, clock: Any
) -> None:
    broker = make_broker(tombstone_ttl=100.0)
    lease = await broker.issue(make_task(), "db", ttl=60)
    await broker.revoke(lease.lease_id)
    clock.advance(99.5)
    await broker.reap_once()
    with pytest.raises(LeaseRevoked):
        broker.get(lease.lease_id)
    clock.advance(0.5)
    await broker.reap_once()
    with pytest.raises(LeaseNotFound):
        broker.get(lease.lease_id)
    assert broker.stats()["tombstones"] == 0


async def test_revoking_one_lease_keeps_the_tasks_other_leases_revocable(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    # Once one lease of a task is revoked and confirmed, revoking the task must still find
    # its other leases (the task's lease index must not be dropped while it has some).
    broker = make_broker()
    task = make_task("t")
    first = await broker.issue(task, "db", ttl=60)
    second = await broker.issue(task, "db", ttl=60)
    await broker.revoke(first.lease_id)
    assert await broker.revoke_task("t") == 1
    assert second.lease_id not in {lease.lease_id for lease in broker.active()}
    assert sorted(source.revoked_ids) == sorted([first.lease_id, second.lease_id])
