"""Issue / use / renew / expire / revoke lifecycles with an injected clock."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tether.leases import (
    CallbackProvider,
    CredentialBroker,
    IssuedCredential,
    IssueRequest,
    LeaseError,
    LeaseExpired,
    LeaseNotFound,
    LeaseRevoked,
    LeaseScopeError,
    NotRenewable,
    ProviderError,
    Secret,
)
from tether.store import MemoryLeaseStore

pytestmark = pytest.mark.anyio


async def test_issue_returns_task_bound_lease(make_broker: Any, make_task: Any, clock: Any) -> None:
    broker = make_broker()
    task = make_task()
    lease = await broker.issue(task, "db", scope={"db:read"}, ttl=60)

    assert lease.lease_id.startswith("tasks/txn-1/db/")
    assert lease.task == "txn-1"
    assert lease.agent == task.agent
    assert lease.scope == frozenset({"db:read"})
    assert lease.issued_at == clock.now
    assert lease.expires_at == clock.now + 60
    assert lease.ttl == 60
    assert lease.renewable is True
    assert lease.provider_ref == "ref-1"
    assert lease.secret.reveal() == "s3cr3t-value-000001"
    assert broker.get(lease.lease_id) is lease
    assert broker.active() == [lease]


async def test_lease_ids_are_unique_and_prefix_addressable(
    make_broker: Any, make_task: Any
) -> None:
    broker = make_broker()
    ids = {(await broker.issue(make_task(), "db", ttl=60)).lease_id for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("tasks/txn-1/db/") for i in ids)


async def test_scope_defaults_to_task_scope_and_must_be_subset(
    make_broker: Any, make_task: Any
) -> None:
    broker = make_broker()
    task = make_task(scope=frozenset({"db:read"}))
    assert (await broker.issue(task, "db")).scope == frozenset({"db:read"})
    with pytest.raises(LeaseScopeError, match="db:write"):
        await broker.issue(task, "db", scope={"db:read", "db:write"})


async def test_expiry_enforced_at_use_without_reaper(
    make_broker: Any, make_task: Any, clock: Any, source: Any
) -> None:
    broker = make_broker()
    lease = await broker.issue(make_task(), "db", ttl=30)
    clock.advance(29.9)
    lease.check()
    assert broker.get(lease.lease_id) is lease
    clock.advance(0.1)
    with pytest.raises(LeaseExpired):
        lease.check()
    with pytest.raises(LeaseExpired):
        broker.get(lease.lease_id)
    with pytest.raises(LeaseExpired):
        _ = lease.secret
    assert broker.active() == []
    # No reaper ran, so the provider has not been told yet...
    assert source.revoked == []
    # ...until one pass does; afterwards the lease reads as expired, not revoked.
    assert await broker.reap_once() == 1
    assert source.revoked_ids == [lease.lease_id]
    with pytest.raises(LeaseExpired):
        broker.get(lease.lease_id)


async def test_renew_counts_from_now_and_stops_at_max_ttl(
    make_broker: Any, make_task: Any, clock: Any, source: Any
) -> None:
    broker = make_broker()
    lease = await broker.issue(make_task(), "db", ttl=10, max_ttl=25)
    issued_at = lease.issued_at
    clock.advance(8)
    renewed = await broker.renew(lease.lease_id, 10)
    assert renewed is lease  # same handle: the agent's reference sees the renewal
    assert lease.expires_at == issued_at + 18
    clock.advance(8)
    await broker.renew(lease.lease_id, 10)
    assert lease.expires_at == issued_at + 25  # capped: 16 + 10 > 25
    clock.advance(5)
    await broker.renew(lease.lease_id, 10)
    assert lease.expires_at == issued_at + 25  # stays at the cap
    assert [ttl for _, ttl in source.renewed] == [10, 9, 4]
    clock.advance(4)
    with pytest.raises(LeaseExpired):
        await broker.renew(lease.lease_id, 10)


async def test_renew_capped_by_task_deadline(make_broker: Any, make_task: Any, clock: Any) -> None:
    broker = make_broker()
    task = make_task(deadline=clock.now + 15)
    lease = await broker.issue(task, "db", ttl=10, max_ttl=1000)
    await broker.renew(lease.lease_id, 100)
    assert lease.expires_at == task.deadline


async def test_renew_not_supported(make_broker: Any, make_task: Any, source: Any) -> None:
    broker = make_broker(providers={"db": source.provider(renewable=False)})
    lease = await broker.issue(make_task(), "db", ttl=10)
    assert lease.renewable is False
    with pytest.raises(NotRenewable):
        await broker.renew(lease.lease_id, 10)
    broker2 = make_broker()
    lease2 = await broker2.issue(make_task(), "db", ttl=10, renewable=False)
    with pytest.raises(NotRenewable):
        await broker2.renew(lease2.lease_id, 10)


async def test_lease_capped_by_task_deadline_and_known_parent(
    make_broker: Any, make_task: Any, clock: Any
) -> None:
    broker = make_broker()
    parent = make_task("parent", deadline=clock.now + 100)
    await broker.issue(parent, "db", ttl=10)
    # The child claims a later deadline than its parent; the broker knows better.
    child = make_task("child", deadline=clock.now + 500, parent_txn="parent")
    lease = await broker.issue(child, "db", ttl=1000, max_ttl=1000)
    assert lease.expires_at == parent.deadline
    own = make_task("solo", deadline=clock.now + 42)
    assert (await broker.issue(own, "db", ttl=1000)).expires_at == own.deadline


async def test_issue_refused_past_deadline(make_broker: Any, make_task: Any, clock: Any) -> None:
    broker = make_broker()
    with pytest.raises(LeaseExpired):
        await broker.issue(make_task(deadline=clock.now), "db")


async def test_revoke_is_immediate_and_idempotent(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    broker = make_broker()
    lease = await broker.issue(make_task(), "db", ttl=60)
    await broker.revoke(lease.lease_id)
    with pytest.raises(LeaseRevoked):
        broker.get(lease.lease_id)
    with pytest.raises(LeaseRevoked):
        lease.check()
    with pytest.raises(LeaseRevoked):
        _ = lease.secret
    await broker.revoke(lease.lease_id)
    assert source.revoked_ids == [lease.lease_id]
    with pytest.raises(LeaseNotFound):
        await broker.revoke("tasks/nope/db/0")
    with pytest.raises(LeaseNotFound):
        broker.get("tasks/nope/db/0")


async def test_revoke_prefix(make_broker: Any, make_task: Any, source: Any) -> None:
    broker = make_broker(providers={"db": source.provider(), "s3": source.provider()})
    a, b = make_task("a"), make_task("ab")  # "ab" must not match the prefix of task "a"
    a_db = await broker.issue(a, "db")
    a_s3 = await broker.issue(a, "s3")
    ab_db = await broker.issue(b, "db")
    assert await broker.revoke_prefix("tasks/a/s3/") == 1
    assert set(source.revoked_ids) == {a_s3.lease_id}
    assert await broker.revoke_prefix("tasks/a/") == 1
    assert set(source.revoked_ids) == {a_s3.lease_id, a_db.lease_id}
    assert await broker.revoke_prefix("tasks/a/") == 0
    assert broker.active() == [ab_db]
    with pytest.raises(ValueError):
        await broker.revoke_prefix("")


async def test_revoke_task_cascades_to_descendants(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    broker = make_broker()
    root = make_task("root")
    child = make_task("child", parent_txn="root")
    grandchild = make_task("grandchild", parent_txn="child")
    sibling = make_task("other")
    doomed = [
        await broker.issue(root, "db"),
        await broker.issue(child, "db"),
        await broker.issue(child, "db"),
        await broker.issue(grandchild, "db"),
    ]
    survivor = await broker.issue(sibling, "db")

    assert await broker.revoke_task("root") == 4
    assert sorted(source.revoked_ids) == sorted(lease.lease_id for lease in doomed)
    assert broker.active() == [survivor]
    assert await broker.revoke_task("root") == 0  # idempotent
    # Revoked tasks (and their descendants, even new ones) get no new leases.
    for task in (root, grandchild, make_task("late", parent_txn="child")):
        with pytest.raises(LeaseRevoked):
            await broker.issue(task, "db")


async def test_revoke_task_while_issuing_does_not_leak(make_task: Any, clock: Any) -> None:
    revoked: list[str] = []
    gate = anyio.Event()
    entered = anyio.Event()

    async def slow_issue(request: IssueRequest) -> IssuedCredential:
        entered.set()
        await gate.wait()
        return IssuedCredential(secret="x", provider_ref="slow")

    async def revoke(lease: Any) -> None:
        revoked.append(lease.provider_ref)

    broker = CredentialBroker(
        MemoryLeaseStore(), {"db": CallbackProvider(slow_issue, revoke)}, clock=clock
    )
    outcome: list[BaseException] = []

    async def issuer() -> None:
        try:
            await broker.issue(make_task(), "db")
        except LeaseError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(issuer)
        await entered.wait()
        await broker.revoke_task("txn-1")
        gate.set()
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseRevoked)
    assert revoked == ["slow"]
    assert broker.active() == []


async def test_failed_issue_records_nothing_live(make_task: Any, clock: Any) -> None:
    store = MemoryLeaseStore()

    async def broken(request: IssueRequest) -> IssuedCredential:
        raise RuntimeError("quota exceeded")

    async def revoke(lease: Any) -> None:
        raise AssertionError("nothing to revoke")

    broker = CredentialBroker(store, {"db": CallbackProvider(broken, revoke)}, clock=clock)
    with pytest.raises(ProviderError, match="quota") as caught:
        await broker.issue(make_task(), "db")
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert (await store.scan("default", 0.0)).records == []
    assert broker.active() == []


async def test_cancelled_issue_is_revoked_by_lease_id(make_task: Any, clock: Any) -> None:
    seen: list[tuple[str, str | None]] = []

    async def hang(request: IssueRequest) -> IssuedCredential:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def revoke(lease: Any) -> None:
        seen.append((lease.lease_id, lease.provider_ref))

    store = MemoryLeaseStore()
    broker = CredentialBroker(store, {"db": CallbackProvider(hang, revoke)}, clock=clock)
    with anyio.move_on_after(0.01):
        await broker.issue(make_task(), "db")
    assert len(broker.unconfirmed()) == 1
    await broker.reap_once()
    assert len(seen) == 1
    assert seen[0][0].startswith("tasks/txn-1/db/") and seen[0][1] is None
    assert broker.unconfirmed() == []
    assert (await store.scan("default", 0.0)).records == []


async def test_unknown_provider_and_bad_segments(make_broker: Any, make_task: Any) -> None:
    broker = make_broker()
    with pytest.raises(LeaseError, match="unknown provider"):
        await broker.issue(make_task(), "vault")
    with pytest.raises(ValueError):
        await broker.issue(make_task("a/b"), "db")
    with pytest.raises(ValueError):
        make_broker(providers={"a/b": object()})
    with pytest.raises(ValueError):
        await broker.issue(make_task(), "db", ttl=0)


async def test_background_reaper_revokes_expired(
    make_broker: Any, make_task: Any, clock: Any, source: Any
) -> None:
    broker = make_broker(reaper_interval=0.005)
    async with broker:
        lease = await broker.issue(make_task(), "db", ttl=5)
        clock.advance(6)
        with anyio.fail_after(5):  # a hang guard, not a timing assertion
            while not source.revoked:
                await anyio.sleep(0.005)
    assert source.revoked_ids == [lease.lease_id]


async def test_hundred_thousand_leases_then_revoke_task(make_task: Any, clock: Any) -> None:
    revoked = 0

    async def issue(request: IssueRequest) -> IssuedCredential:
        return IssuedCredential(secret=Secret("k"), provider_ref="r")

    async def revoke(lease: Any) -> None:
        nonlocal revoked
        revoked += 1

    store = MemoryLeaseStore()
    broker = CredentialBroker(store, {"p": CallbackProvider(issue, revoke)}, clock=clock)
    task = make_task()
    n = 100_000
    for _ in range(n):
        await broker.issue(task, "p", ttl=600)
    assert len(broker.active()) == n
    assert await broker.revoke_task(task.txn) == n
    assert revoked == n
    assert broker.active() == []
    assert broker.unconfirmed() == []
    assert (await store.scan("default", 0.0)).records == []
