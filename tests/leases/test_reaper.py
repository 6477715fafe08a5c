"""Revocation retries with exponential backoff, and zombie reporting."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tether.leases import (
    CallbackProvider,
    CredentialBroker,
    IssuedCredential,
    IssueRequest,
    LeaseRevoked,
)
from tether.store import LeaseRecord, MemoryLeaseStore

pytestmark = pytest.mark.anyio


async def test_failed_revocation_retried_with_backoff_until_confirmed(
    make_broker: Any, make_task: Any, clock: Any, source: Any
) -> None:
    source.revoke_failures = 3
    store = MemoryLeaseStore()
    broker = make_broker(store=store, revoke_backoff=1.0, max_revoke_attempts=10)
    lease = await broker.issue(make_task(), "db")

    await broker.revoke(lease.lease_id)  # attempt 1 fails; the lease is dead locally anyway
    with pytest.raises(LeaseRevoked):
        broker.get(lease.lease_id)
    assert source.revoke_calls == 1
    assert broker.unconfirmed() == [lease.lease_id]
    record = await store.get(lease.lease_id)
    assert record is not None and record.status == "revoke_failed"
    assert record.revoke_attempts == 1 and "ConnectionError" in (record.last_error or "")

    # Backoff doubles: retries are due 1s, 2s and then 4s after each failure.
    for wait, calls_after in ((1.0, 2), (2.0, 3), (4.0, 4)):
        clock.advance(wait - 0.01)
        await broker.reap_once()
        assert source.revoke_calls == calls_after - 1, "retried before the backoff elapsed"
        clock.advance(0.01)
        await broker.reap_once()
        assert source.revoke_calls == calls_after

    assert source.revoked_ids == [lease.lease_id]
    assert broker.unconfirmed() == []
    assert broker.zombies() == []
    record = await store.get(lease.lease_id)
    assert record is not None and record.status == "revoked"


async def test_backoff_is_capped(make_broker: Any, make_task: Any, clock: Any, source: Any) -> None:
    source.revoke_failures = -1
    broker = make_broker(revoke_backoff=1.0, max_revoke_backoff=3.0, max_revoke_attempts=100)
    lease = await broker.issue(make_task(), "db")
    await broker.revoke(lease.lease_id)
    for _ in range(6):
        clock.advance(3.0)
        await broker.reap_once()
    assert source.revoke_calls == 7  # 1 + one retry every capped 3s


async def test_never_revocable_lease_is_reported_as_zombie(
    make_broker: Any,
    make_task: Any,
    clock: Any,
    source: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source.revoke_failures = -1
    broker = make_broker(revoke_backoff=1.0, max_revoke_backoff=1.0, max_revoke_attempts=3)
    lease = await broker.issue(make_task(), "db", ttl=10)
    clock.advance(11)
    caplog.set_level(logging.WARNING, logger="tether.leases")
    for _ in range(5):
        await broker.reap_once()
        clock.advance(1.0)
    zombies = broker.zombies()
    assert [z.lease_id for z in zombies] == [lease.lease_id]
    assert zombies[0].attempts >= 3 and zombies[0].provider_ref == "ref-1"
    assert "ConnectionError" in (zombies[0].last_error or "")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and lease.lease_id in errors[0].getMessage()  # reported once

    # A zombie keeps being retried; once the provider recovers it leaves the list.
    source.revoke_failures = 0
    await broker.reap_once()
    assert broker.zombies() == []
    assert source.revoked_ids == [lease.lease_id]


async def test_recovered_lease_of_unknown_provider_becomes_zombie(clock: Any) -> None:
    store = MemoryLeaseStore()
    await store.put(
        LeaseRecord(
            lease_id="tasks/t/gone/1",
            provider="gone",
            txn="t",
            agent="a",
            scope=(),
            issued_at=clock.now,
            ttl=5,
            max_ttl=5,
            expires_at=clock.now + 5,
            renewable=False,
            status="issued",
            provider_ref="r",
        )
    )

    async def issue(request: IssueRequest) -> IssuedCredential:
        raise AssertionError

    async def revoke(lease: Any) -> None:
        raise AssertionError

    broker = CredentialBroker(
        store, {"db": CallbackProvider(issue, revoke)}, clock=clock, max_revoke_attempts=1
    )
    report = await broker.recover()
    assert report.revoked == []
    assert [z.lease_id for z in report.zombies] == ["tasks/t/gone/1"]
    assert [z.lease_id for z in broker.zombies()] == ["tasks/t/gone/1"]
    record = await store.get("tasks/t/gone/1")
    assert record is not None and record.status == "revoke_failed"
