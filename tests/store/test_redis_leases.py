"""Lease records in Redis: every broker sees them; owners, damage and outages."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio
from tests.store.redis_server import RedisServer, free_port, require_redis_server

from tether.leases import (
    CallbackProvider,
    CredentialBroker,
    IssuedCredential,
    IssueRequest,
    Lease,
    LeaseStoreBusy,
    LeaseStoreError,
    Secret,
    TaskRef,
)
from tether.store.redis_leases import RedisLeaseStore

pytestmark = pytest.mark.anyio


class Source:
    """A secret source recording what it issued and revoked."""

    def __init__(self) -> None:
        self.n = 0
        self.revoked: list[str] = []

    async def issue(self, request: IssueRequest) -> IssuedCredential:
        self.n += 1
        return IssuedCredential(secret=Secret(f"s3cret-{self.n}"), provider_ref=f"ref-{self.n}")

    async def revoke(self, lease: Lease) -> None:
        self.revoked.append(lease.lease_id)

    def provider(self) -> CallbackProvider:
        return CallbackProvider(issue=self.issue, revoke=self.revoke)


def task(txn: str = "txn-1") -> TaskRef:
    return TaskRef(
        txn=txn,
        agent="spiffe://example.org/agents/a",
        scope=frozenset({"read"}),
        intent="test",
        actors=("spiffe://example.org/agents/a",),
        deadline=time.monotonic() + 300,
        parent_txn=None,
    )


@pytest.fixture
async def stores(
    redis_server: RedisServer, prefix: str
) -> AsyncIterator[tuple[RedisLeaseStore, RedisLeaseStore]]:
    """Two processes' handles on one Redis."""
    a = RedisLeaseStore.from_url(redis_server.url, prefix=prefix, claim_ttl=0.5)
    b = RedisLeaseStore.from_url(redis_server.url, prefix=prefix, claim_ttl=0.5)
    yield a, b
    await a.close()
    await b.close()


async def test_every_broker_sees_every_lease_record(
    stores: tuple[RedisLeaseStore, RedisLeaseStore],
) -> None:
    a, b = stores
    source = Source()
    async with CredentialBroker(a, {"db": source.provider()}, owner="worker-a") as broker:
        lease = await broker.issue(task(), "db")
        seen = await b.get(lease.lease_id)  # another process's store handle
        assert seen is not None and seen.status == "issued" and seen.owner == "worker-a"
        assert "s3cret" not in repr(seen)  # the record never holds the secret
        await broker.revoke(lease.lease_id)
    assert source.revoked == [lease.lease_id]
    after = await b.get(lease.lease_id)
    assert after is not None and after.status == "revoked"


async def test_a_successor_recovers_a_dead_brokers_leases(
    stores: tuple[RedisLeaseStore, RedisLeaseStore],
) -> None:
    a, b = stores
    source = Source()
    first = CredentialBroker(a, {"db": source.provider()}, owner="worker")
    alive = await first.issue(task(), "db")
    # The first broker dies without closing: its claim stops being renewed.
    a._claims["worker"][1].cancel()
    second = CredentialBroker(b, {"db": source.provider()}, owner="worker")
    with anyio.fail_after(10):
        while True:
            try:
                report = await second.recover()
                break
            except LeaseStoreBusy:
                await anyio.sleep(0.05)  # until the dead claim expires
    assert report.revoked == [alive.lease_id] and source.revoked == [alive.lease_id]
    await second.close()


async def test_an_owner_name_is_held_by_one_live_broker(
    stores: tuple[RedisLeaseStore, RedisLeaseStore],
) -> None:
    a, b = stores
    await a.claim("worker")
    with pytest.raises(LeaseStoreBusy, match="held by a live broker"):
        await b.claim("worker")  # attack: a second broker taking over a live one's leases
    await b.claim("other-worker")  # benign twin: another name
    await anyio.sleep(0.6)  # longer than claim_ttl: the renewal keeps it
    with pytest.raises(LeaseStoreBusy):
        await b.claim("worker")
    await a.release("worker")
    await b.claim("worker")


async def test_damaged_rows_are_quarantined_and_revoked_by_id(
    redis_server: RedisServer, prefix: str, stores: tuple[RedisLeaseStore, RedisLeaseStore]
) -> None:
    a, _ = stores
    lease_id = "tasks/txn-9/db/0123456789abcdef"
    raw = redis.asyncio.Redis.from_url(redis_server.url)
    await raw.hset(f"{prefix}lease:records", lease_id, b"{not json")
    await raw.hset(f"{prefix}lease:records", "junk", b"\xff")
    await raw.aclose()
    scan = await a.scan("worker", 0.0)
    assert [r.lease_id for r in scan.records] == [lease_id]
    assert scan.records[0].status == "pending" and scan.records[0].provider == "db"
    assert sorted((q.key, q.lease_id) for q in scan.quarantined) == [
        ("junk", None),
        (lease_id, lease_id),
    ]
    again = await a.scan("worker", 0.0)  # the stand-in decodes: never quarantined twice
    assert again.quarantined == [] and [r.lease_id for r in again.records] == [lease_id]


async def test_purge_drops_old_terminal_records_only(
    stores: tuple[RedisLeaseStore, RedisLeaseStore],
) -> None:
    a, _ = stores
    source = Source()
    async with CredentialBroker(a, {"db": source.provider()}, owner="w") as broker:
        kept = await broker.issue(task(), "db")
        gone = await broker.issue(task("txn-2"), "db")
        await broker.revoke(gone.lease_id)
        assert await a.size() == 2
        assert await a.purge(time.time() + 1) == 1
        assert await a.get(gone.lease_id) is None and await a.get(kept.lease_id) is not None


async def test_unreachable_redis_is_a_lease_store_error() -> None:
    require_redis_server()
    store = RedisLeaseStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(LeaseStoreError, match=r"lease store redis redis://127\.0\.0\.1"):
        await store.size()
    await store.close()
