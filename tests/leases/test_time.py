"""One notion of time: lease expiry on the broker's monotonic clock, wall time only stamps
records; a wall-clock step changes nothing; retention keeps the store bounded."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from tests.leases.ledger import LedgerProvider
from tests.support import FakeClock
from tether.engine import Engine
from tether.leases import (
    CallbackProvider,
    CredentialBroker,
    IssuedCredential,
    IssueRequest,
    Lease,
    LeaseExpired,
    TaskRef,
)
from tether.store import MemoryLeaseStore, SqliteLeaseStore
from tether.tasks import Guard

pytestmark = pytest.mark.anyio

WALL0 = 1_700_000_000.0
AGENT = 'Agent::"spiffe://example.org/agents/a"'


def _task(txn: str, deadline: float) -> TaskRef:
    return TaskRef(txn, "spiffe://example.org/agents/a", frozenset(), "t", (), deadline)


async def test_wall_clock_steps_do_not_move_expiry_or_deadlines() -> None:
    mono, wall = FakeClock(500.0), FakeClock(WALL0)
    ledger = LedgerProvider()
    store = MemoryLeaseStore()
    broker = CredentialBroker(store, {"db": ledger}, clock=mono, wall_clock=wall)
    lease = await broker.issue(_task("t", deadline=mono.now + 90), "db", ttl=60, max_ttl=600)
    capped = await broker.issue(_task("t", deadline=mono.now + 90), "db", ttl=600, max_ttl=600)
    record = await store.get(lease.lease_id)
    assert record is not None and record.expires_at == WALL0 + 60  # wall time, for people

    wall.advance(-3600)  # NTP steps the wall clock back an hour...
    mono.advance(59)
    lease.check()
    await broker.renew(lease.lease_id, 20)  # renewal counts from monotonic now
    assert lease.expires_at == mono.now + 20
    wall.advance(7200)  # ...then two hours forward
    lease.check()
    assert capped.expires_at == 500.0 + 90  # the task deadline, not moved by either step
    mono.advance(20)
    with pytest.raises(LeaseExpired):
        lease.check()
    await broker.reap_once()
    assert ledger.live() == [capped.lease_id]
    mono.advance(11)  # the deadline passes on the monotonic clock only
    with pytest.raises(LeaseExpired):
        capped.check()
    await broker.reap_once()
    assert ledger.live() == []


async def test_guard_clock_and_broker_clock_may_differ() -> None:
    """Guard(clock=...) on epoch time with the default (monotonic) broker: leases work and
    end with the task, because the task's deadline is handed over as time left."""
    ledger = LedgerProvider()
    broker = CredentialBroker(MemoryLeaseStore(), {"db": ledger})
    guard_clock = FakeClock(WALL0)
    engine = Engine("permit (principal, action, resource);")
    async with Guard(engine, broker=broker, clock=guard_clock, allow_unauthenticated=True) as guard:
        async with guard.task(AGENT, intent="x", ttl=30) as task:
            before = time.monotonic()
            lease = await task.lease("db", ttl=600)
            assert before + 30 - 1 <= lease.expires_at <= time.monotonic() + 30
            assert lease.secret.reveal().startswith("secret-")
    assert ledger.live() == []

    # The same with a monotonic guard clock (used to fail every lease with LeaseExpired).
    async with Guard(
        engine, broker=broker, clock=time.monotonic, allow_unauthenticated=True
    ) as guard:
        async with guard.task(AGENT, intent="x", ttl=30) as task:
            assert (await task.lease("db")).remaining() > 29
    assert ledger.live() == []


def test_store_stays_bounded_over_100k_expired_leases() -> None:
    mono, wall = FakeClock(0.0), FakeClock(WALL0)
    live: set[str] = set()

    async def issue(request: IssueRequest) -> IssuedCredential:
        live.add(request.lease_id)
        return IssuedCredential(secret="k", provider_ref=request.lease_id)

    async def revoke(lease: Lease) -> None:
        live.discard(lease.lease_id)

    store = MemoryLeaseStore()
    broker = CredentialBroker(
        store,
        {"db": CallbackProvider(issue, revoke)},
        clock=mono,
        wall_clock=wall,
        retention=20.0,
        tombstone_ttl=20.0,
        reaper_interval=1.0,
    )
    per_second, seconds = 1_000, 100

    async def run() -> int:
        largest = 0
        for second in range(seconds):
            task = _task(f"t{second}", deadline=mono.now + 5)
            for _ in range(per_second):
                await broker.issue(task, "db", ttl=1.0)
            mono.advance(1.0)
            wall.advance(1.0)
            await broker.reap_once()
            largest = max(largest, await store.size())
        return largest

    largest = anyio.run(run)
    assert not live  # every lease expired and was revoked at the provider
    # Retention 20 s, purge every 2 s, a lease lives 1 s: about 23 seconds' worth at most,
    # against 100 seconds' worth issued.
    assert largest <= 24 * per_second, largest
    stats = broker.stats()
    assert stats["tombstones"] <= 21 * per_second and stats["tasks"] <= 6, stats
    assert stats["expiry_heap"] == 0 and stats["live"] == 0, stats


async def test_retention_purges_only_terminal_records(tmp_path: Path) -> None:
    mono, wall = FakeClock(0.0), FakeClock(WALL0)
    store = SqliteLeaseStore(tmp_path / "leases.db", synchronous="NORMAL")
    ledger = LedgerProvider()
    broker = CredentialBroker(
        store, {"db": ledger}, clock=mono, wall_clock=wall, retention=60.0, reaper_interval=1.0
    )
    kept = await broker.issue(_task("live", deadline=1e9), "db", ttl=10_000)
    done = [await broker.issue(_task("done", deadline=1e9), "db") for _ in range(3)]
    await broker.revoke_task("done")
    assert await store.size() == 4
    mono.advance(59)
    wall.advance(59)
    await broker.reap_once()
    assert await store.size() == 4  # within retention: kept for people to read
    mono.advance(7)  # past retention and past the next purge (every retention / 10)
    wall.advance(7)
    await broker.reap_once()
    assert await store.size() == 1  # the revoked ones went; the live one never does
    record = await store.get(kept.lease_id)
    assert record is not None and record.status == "issued"
    assert [await store.get(lease.lease_id) for lease in done] == [None, None, None]
    await store.close()
