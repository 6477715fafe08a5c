"""The broker's observable contract in detail: what the store records at each step, the exact
errors a caller gets, and what operators read in the logs.

Written against the surviving mutants of a mutmut run (docs/mutation-survivors-leases.md):
each test pins one promise a user or operator relies on, on the injected clocks only.
"""

from __future__ import annotations

import logging
import pickle
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support import FakeClock
from tether.leases import (
    CallbackProvider,
    CredentialBroker,
    IssuedCredential,
    IssueRequest,
    Lease,
    LeaseExpired,
    LeaseNotFound,
    LeaseRevoked,
    LeaseStoreBusy,
    LeaseStoreError,
    NotRenewable,
    ProviderError,
    ProviderTimeout,
    RecoveryReport,
    Secret,
    Zombie,
)
from tether.store import LeaseRecord, MemoryLeaseStore, QuarantinedRow, StoreScan

pytestmark = pytest.mark.anyio

WALL0 = 5_000.0
HANG_GUARD = 20.0  # only ever reached if the code under test hangs
LOGGER = "tether.leases"


class FlakyStore(MemoryLeaseStore):
    """A memory store whose operations fail on demand (a full disk, a lost connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_put: Callable[[LeaseRecord], bool] = lambda record: False
        self.fail_get = False
        self.fail_scan = False
        self.fail_purge = False

    async def put(self, record: LeaseRecord) -> None:
        if self.fail_put(record):
            raise LeaseStoreError(f"disk full writing {record.lease_id}")
        await super().put(record)

    async def get(self, lease_id: str) -> LeaseRecord | None:
        if self.fail_get:
            raise LeaseStoreError("store unreachable")
        return await super().get(lease_id)

    async def scan(self, owner: str, now: float) -> StoreScan:
        if self.fail_scan:
            raise LeaseStoreError("store unreachable")
        return await super().scan(owner, now)

    async def purge(self, before: float) -> int:
        if self.fail_purge:
            raise RuntimeError("purge exploded")
        return await super().purge(before)


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


# ------------------------------------------------------------------------ what the store holds


async def test_issue_records_its_intent_before_the_provider_is_asked(
    make_broker: Any, make_task: Any, source: Any, clock: Any
) -> None:
    store = MemoryLeaseStore()
    wall = FakeClock(WALL0)
    seen: list[LeaseRecord | None] = []

    async def issue(request: IssueRequest) -> IssuedCredential:
        seen.append(await store.get(request.lease_id))  # what a crash here would leave
        wall.advance(1)
        result: IssuedCredential = await source.issue(request)
        return result

    provider = CallbackProvider(issue=issue, revoke=source.revoke, renew=source.renew)
    broker = make_broker(store=store, providers={"db": provider}, wall_clock=wall, owner="b1")
    task = make_task("child-1", parent_txn="parent-1", scope=frozenset({"db:write", "db:read"}))
    lease = await broker.issue(task, "db", ttl=60, max_ttl=600)

    assert seen == [
        LeaseRecord(
            lease_id=lease.lease_id,
            provider="db",
            txn="child-1",
            agent=task.agent,
            scope=("db:read", "db:write"),
            issued_at=WALL0,
            ttl=60.0,
            max_ttl=600.0,
            expires_at=WALL0 + 60,
            renewable=True,
            status="pending",
            parent_txn="parent-1",
            provider_ref=None,
            owner="b1",
            updated_at=WALL0,
        )
    ]
    final = await store.get(lease.lease_id)
    assert final is not None
    assert (final.status, final.provider_ref, final.updated_at) == ("issued", "ref-1", WALL0 + 1)
    assert (lease.provider, lease.task, lease.max_ttl) == ("db", "child-1", 600.0)


async def test_a_provider_without_a_renewable_attribute_gives_renewable_leases(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    class PlainProvider:  # keeps the Provider protocol, says nothing about renewal
        async def issue(self, request: IssueRequest) -> IssuedCredential:
            result: IssuedCredential = await source.issue(request)
            return result

        async def renew(self, lease: Lease, ttl: float) -> None:
            await source.renew(lease, ttl)

        async def revoke(self, lease: Lease) -> None:
            await source.revoke(lease)

    store = MemoryLeaseStore()
    broker = make_broker(store=store, providers={"db": PlainProvider()})
    lease = await broker.issue(make_task(), "db", ttl=60)
    record = await store.get(lease.lease_id)
    assert lease.renewable and record is not None and record.renewable
    await broker.renew(lease.lease_id, 30)
    assert source.renewed == [(lease.lease_id, 30.0)]


async def test_failed_issue_is_recorded_terminal_with_its_cause(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    store = MemoryLeaseStore()
    wall = FakeClock(WALL0)
    ids: list[str] = []

    async def refuse(request: IssueRequest) -> IssuedCredential:
        ids.append(request.lease_id)
        wall.advance(2)
        raise PermissionError("role db-reader does not exist")

    provider = CallbackProvider(issue=refuse, revoke=source.revoke)
    broker = make_broker(store=store, providers={"db": provider}, wall_clock=wall)
    with pytest.raises(ProviderError) as caught:
        await broker.issue(make_task(), "db", ttl=60)
    assert str(caught.value) == (
        f"provider 'db' did not issue {ids[0]}: PermissionError: role db-reader does not exist"
    )
    assert isinstance(caught.value.__cause__, PermissionError)
    record = await store.get(ids[0])
    assert record is not None
    assert (record.status, record.last_error, record.updated_at) == (
        "failed",
        "PermissionError: role db-reader does not exist",
        WALL0 + 2,
    )


@pytest.mark.parametrize(
    ("length", "kept"),
    [(299, True), (300, True), (301, False), (400, False)],
)
async def test_provider_errors_are_cut_to_300_characters(
    make_broker: Any, make_task: Any, source: Any, length: int, kept: bool
) -> None:
    prefix = "RuntimeError: "
    text = prefix + "x" * (length - len(prefix))
    store = MemoryLeaseStore()
    ids: list[str] = []

    async def refuse(request: IssueRequest) -> IssuedCredential:
        ids.append(request.lease_id)
        raise RuntimeError(text[len(prefix) :])

    broker = make_broker(store=store, providers={"db": CallbackProvider(refuse, source.revoke)})
    with pytest.raises(ProviderError):
        await broker.issue(make_task(), "db", ttl=60)
    record = await store.get(ids[0])
    assert record is not None
    assert record.last_error == (text if kept else text[:297] + "...")
    assert len(record.last_error) == min(length, 300)


async def test_renewal_is_recorded_from_now(make_broker: Any, make_task: Any, clock: Any) -> None:
    store = MemoryLeaseStore()
    wall = FakeClock(WALL0)
    broker = make_broker(store=store, wall_clock=wall)
    lease = await broker.issue(make_task(), "db", ttl=10, max_ttl=100)
    clock.advance(5)
    wall.advance(7)  # the wall clock may step; the record follows it, expiry does not
    await broker.renew(lease.lease_id, 30)
    assert (lease.ttl, lease.expires_at) == (30.0, clock.now + 30)
    record = await store.get(lease.lease_id)
    assert record is not None
    assert (record.ttl, record.expires_at, record.updated_at) == (30.0, WALL0 + 37, WALL0 + 7)


async def test_failed_revocation_is_recorded_with_its_cause(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    store = MemoryLeaseStore()
    wall = FakeClock(WALL0)
    broker = make_broker(store=store, wall_clock=wall)
    lease = await broker.issue(make_task(), "db", ttl=60)
    source.revoke_failures = 1
    wall.advance(3)
    await broker.revoke(lease.lease_id)
    record = await store.get(lease.lease_id)
    assert record is not None
    assert (record.status, record.revoke_attempts, record.last_error, record.updated_at) == (
        "revoke_failed",
        1,
        "ConnectionError: provider unavailable",
        WALL0 + 3,
    )


# ------------------------------------------------------------------------ exact errors


async def test_bad_arguments_name_the_argument(make_broker: Any, make_task: Any) -> None:
    broker = make_broker()
    with pytest.raises(ValueError, match=r"^txn must be non-empty, without '/'.*: 'a/b'$"):
        await broker.issue(make_task("a/b"), "db")
    with pytest.raises(ValueError, match=r"^ttl must be a positive finite number of seconds$"):
        await broker.issue(make_task(), "db", ttl=0)
    with pytest.raises(ValueError, match=r"^max_ttl must be a positive finite number"):
        await broker.issue(make_task(), "db", ttl=10, max_ttl=-1)
    lease = await broker.issue(make_task(), "db", ttl=10)
    with pytest.raises(ValueError, match=r"^increment must be a positive finite number"):
        await broker.renew(lease.lease_id, float("nan"))
    with pytest.raises(ValueError, match=r"^prefix must be non-empty$"):
        await broker.revoke_prefix("")


async def test_refusals_name_the_task_or_lease(
    make_broker: Any, make_task: Any, clock: Any
) -> None:
    broker = make_broker()
    broker.revoke_task_now("gone")
    with pytest.raises(LeaseRevoked, match=r"^task gone or an ancestor was revoked$"):
        await broker.issue(make_task("gone"), "db")
    with pytest.raises(LeaseExpired, match=r"^task late is past its deadline$"):
        await broker.issue(make_task("late", deadline=clock.now), "db")
    with pytest.raises(LeaseNotFound, match=r"^no lease tasks/x/db/nope$"):
        broker.get("tasks/x/db/nope")

    revoked = await broker.issue(make_task(), "db", ttl=60)
    await broker.revoke(revoked.lease_id)
    with pytest.raises(LeaseRevoked, match=rf"^lease {re.escape(revoked.lease_id)} was revoked$"):
        broker.get(revoked.lease_id)

    unreaped = await broker.issue(make_task(), "db", ttl=10)
    reaped = await broker.issue(make_task(), "db", ttl=10)
    clock.advance(10)
    with pytest.raises(LeaseExpired, match=rf"^lease {re.escape(unreaped.lease_id)} expired$"):
        unreaped.check()
    await broker.reap_once()  # confirmed revoked at the provider because it expired
    with pytest.raises(LeaseExpired, match=rf"^lease {re.escape(reaped.lease_id)} expired$"):
        reaped.check(clock.now - 5)  # the reason, not the clock, decides once reaped
    with pytest.raises(LeaseExpired, match=rf"^lease {re.escape(reaped.lease_id)} expired$"):
        broker.get(reaped.lease_id)


async def test_provider_failures_on_renewal_name_the_lease_and_cause(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    async def broken_renew(lease: Lease, ttl: float) -> None:
        raise RuntimeError("vault sealed")

    unrenewable = CallbackProvider(issue=source.issue, revoke=source.revoke)
    broken = CallbackProvider(issue=source.issue, revoke=source.revoke, renew=broken_renew)
    broker = make_broker(providers={"fixed": unrenewable, "broken": broken})
    fixed = await broker.issue(make_task(), "fixed", ttl=10)
    name = re.escape(fixed.lease_id)
    with pytest.raises(NotRenewable, match=rf"^lease {name} is not renewable$"):
        await broker.renew(fixed.lease_id, 10)
    with pytest.raises(NotRenewable, match=rf"^provider of lease {name} cannot renew$"):
        await unrenewable.renew(fixed, 10)
    lease = await broker.issue(make_task(), "broken", ttl=10)
    message = rf"^renewal of lease {re.escape(lease.lease_id)} failed: RuntimeError: vault sealed$"
    with pytest.raises(ProviderError, match=message) as caught:
        await broker.renew(lease.lease_id, 10)
    assert isinstance(caught.value.__cause__, RuntimeError)


async def test_renewal_exactly_at_a_late_known_ancestor_deadline_is_refused(
    make_broker: Any, make_task: Any, clock: Any, source: Any
) -> None:
    # The parent becomes known after the child's lease was issued; at its deadline the
    # child's lease has nothing left to renew into.
    broker = make_broker()
    child = await broker.issue(make_task("c", parent_txn="p"), "db", ttl=100, max_ttl=1000)
    await broker.issue(make_task("p", deadline=clock.now + 50), "db", ttl=10)
    clock.advance(50)
    with pytest.raises(
        LeaseExpired, match=rf"^lease {re.escape(child.lease_id)} cannot be renewed past its cap$"
    ):
        await broker.renew(child.lease_id, 10)
    assert source.renewed == []


async def test_provider_timeouts_name_the_call(make_task: Any, clock: Any, source: Any) -> None:
    async def hang_issue(request: IssueRequest) -> IssuedCredential:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def hang_renew(lease: Lease, ttl: float) -> None:
        await anyio.sleep_forever()

    providers = {
        "hung": CallbackProvider(issue=hang_issue, revoke=source.revoke),
        "db": CallbackProvider(issue=source.issue, revoke=source.revoke, renew=hang_renew),
    }
    broker = CredentialBroker(MemoryLeaseStore(), providers, clock=clock, provider_timeout=0.01)
    with anyio.fail_after(HANG_GUARD):
        message = r"^provider issue of lease tasks/txn-1/hung/\w+ timed out after 0.01s$"
        with pytest.raises(ProviderTimeout, match=message):
            await broker.issue(make_task(), "hung", ttl=10)
        lease = await broker.issue(make_task(), "db", ttl=10)
        message = rf"^provider renewal of lease {re.escape(lease.lease_id)} timed out after 0.01s$"
        with pytest.raises(ProviderTimeout, match=message):
            await broker.renew(lease.lease_id, 10)


async def test_a_provider_returning_the_wrong_type_is_refused_and_revoked(
    make_broker: Any, make_task: Any, source: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ids: list[str] = []

    async def sloppy(request: IssueRequest) -> IssuedCredential:
        ids.append(request.lease_id)
        return {"secret": "s", "provider_ref": "r"}  # type: ignore[return-value]

    broker = make_broker(providers={"db": CallbackProvider(issue=sloppy, revoke=source.revoke)})
    caplog.set_level(logging.WARNING, LOGGER)
    with pytest.raises(ProviderError) as caught:
        await broker.issue(make_task(), "db", ttl=10)
    assert str(caught.value) == f"provider 'db' returned dict for {ids[0]}, not IssuedCredential"
    assert f"lease {ids[0]} orphaned during issue; queued for revocation" in _messages(
        caplog, logging.WARNING
    )
    assert broker.unconfirmed() == ids
    await broker.reap_once()  # whatever it created is revoked by lease id
    assert source.revoked_ids == ids


async def test_a_store_failure_after_issue_hands_out_nothing_and_revokes(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    store = FlakyStore()
    store.fail_put = lambda record: record.status == "issued"
    broker = make_broker(store=store)
    with pytest.raises(LeaseStoreError, match=r"^disk full writing tasks/txn-1/db/"):
        await broker.issue(make_task(), "db", ttl=10)
    assert broker.active() == []
    (lease_id,) = broker.unconfirmed()
    await broker.reap_once()
    assert source.revoked_ids == [lease_id]
    record = await store.get(lease_id)
    assert record is not None and record.status == "revoked"


async def test_revoked_while_issuing_is_refused_with_the_reason(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    broker: CredentialBroker
    ids: list[str] = []

    async def issue(request: IssueRequest) -> IssuedCredential:
        ids.append(request.lease_id)
        broker.revoke_task_now(request.txn)  # the task ends while the provider works
        result: IssuedCredential = await source.issue(request)
        return result

    broker = make_broker(providers={"db": CallbackProvider(issue=issue, revoke=source.revoke)})
    with pytest.raises(LeaseRevoked, match=r"^task txn-1 was revoked while issuing$"):
        await broker.issue(make_task(), "db", ttl=10)
    assert source.revoked_ids == ids  # told at once, not left to the reaper
    assert broker.unconfirmed() == [] and broker.active() == []


async def test_stats_name_every_bounded_structure(
    make_broker: Any, make_task: Any, source: Any
) -> None:
    broker = make_broker(max_revoke_attempts=1)
    kept = await broker.issue(make_task("a"), "db", ttl=60)
    stuck = await broker.issue(make_task("b"), "db", ttl=60)
    source.revoke_failures = -1
    await broker.revoke(stuck.lease_id)
    assert kept.lease_id in {lease.lease_id for lease in broker.active()}
    assert broker.stats() == {
        "live": 2,
        "unconfirmed": 1,
        "zombies": 1,
        "tombstones": 0,
        "tasks": 2,
        "expiry_heap": 2,
    }


async def test_a_second_start_is_refused(make_broker: Any) -> None:
    broker = make_broker()
    async with broker:
        with pytest.raises(RuntimeError, match=r"^broker already running$"):
            await broker.__aenter__()


async def test_a_closed_broker_must_claim_its_owner_again(make_broker: Any, make_task: Any) -> None:
    store = MemoryLeaseStore()
    first = make_broker(store=store)
    await first.issue(make_task(), "db", ttl=10)
    await first.close()
    second = make_broker(store=store)
    await second.issue(make_task(), "db", ttl=10)  # the owner is free after close()
    with pytest.raises(LeaseStoreBusy):  # attack: the closed broker issuing as a live owner
        await first.issue(make_task(), "db", ttl=10)
    await second.close()
    await first.issue(make_task(), "db", ttl=10)  # benign twin: nobody holds it now


# ------------------------------------------------------------------------ values


def test_secret_refusals_say_what_is_wrong() -> None:
    with pytest.raises(TypeError, match=r"^Secret wraps a str$"):
        Secret(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^Secret cannot be pickled$"):
        pickle.dumps(Secret("s"))


def test_store_errors_name_their_file_only_when_there_is_one() -> None:
    assert LeaseStoreError("store unreachable").path is None
    assert LeaseStoreError("bad file", Path("/var/lib/leases.db")).path == "/var/lib/leases.db"


def _bare_lease(expires_at: float) -> Lease:
    # A lease rebuilt from a log line or message: no broker state, so the monotonic clock.
    return Lease(
        lease_id="tasks/t/db/1",
        provider="db",
        task="t",
        agent="a",
        scope=frozenset(),
        issued_at=0.0,
        ttl=1.0,
        max_ttl=1.0,
        expires_at=expires_at,
        renewable=False,
    )


async def test_remaining_counts_on_the_broker_clock(
    make_broker: Any, make_task: Any, clock: Any
) -> None:
    lease = await make_broker().issue(make_task(), "db", ttl=60)
    assert lease.remaining() == 60.0
    clock.advance(45)
    assert lease.remaining() == 15.0
    assert lease.remaining(clock.now + 5) == 10.0
    clock.advance(30)
    assert lease.remaining() == 0.0


def test_a_lease_without_broker_state_uses_the_monotonic_clock() -> None:
    far = _bare_lease(time.monotonic() + 10_000)
    far.check()
    assert 0.0 < far.remaining() <= 10_000
    past = _bare_lease(time.monotonic() - 1)
    with pytest.raises(LeaseExpired, match=r"^lease tasks/t/db/1 expired$"):
        past.check()
    assert past.remaining() == 0.0


# ------------------------------------------------------------------------ what operators read


async def test_revocation_failures_and_zombies_are_logged_with_their_cause(
    make_broker: Any, make_task: Any, source: Any, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(max_revoke_attempts=2, revoke_backoff=1.0)
    lease = await broker.issue(make_task(), "db", ttl=60)
    source.revoke_failures = -1
    caplog.set_level(logging.WARNING, LOGGER)
    await broker.revoke(lease.lease_id)
    clock.advance(1)
    await broker.reap_once()
    cause = "ConnectionError: provider unavailable"
    assert _messages(caplog, logging.WARNING) == [
        f"revoking lease {lease.lease_id} failed (attempt 1, retry in 1.000s): {cause}"
    ]
    assert _messages(caplog, logging.ERROR) == [
        f"ZOMBIE lease {lease.lease_id} (provider db, ref ref-1):"
        f" revocation failed 2 times: {cause}"
    ]
    assert broker.zombies() == [Zombie(lease.lease_id, "db", "ref-1", 2, cause)]


async def test_unrecordable_failures_are_logged_not_raised(
    make_broker: Any, make_task: Any, source: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    ids: list[str] = []

    async def refuse(request: IssueRequest) -> IssuedCredential:
        ids.append(request.lease_id)
        raise PermissionError("no")

    providers = {"db": source.provider(), "bad": CallbackProvider(refuse, source.revoke)}
    broker = make_broker(store=store, providers=providers)
    lease = await broker.issue(make_task(), "db", ttl=60)
    store.fail_put = lambda record: record.status in ("failed", "revoke_failed")
    caplog.set_level(logging.ERROR, LOGGER)
    with pytest.raises(ProviderError):  # the provider's failure, not the store's
        await broker.issue(make_task(), "bad", ttl=60)
    source.revoke_failures = 1
    await broker.revoke(lease.lease_id)
    assert _messages(caplog, logging.ERROR) == [
        f"could not record failed issue of {ids[0]}",
        f"could not record failed revocation of {lease.lease_id}",
    ]


async def test_lifecycle_is_logged_by_lease_and_task(
    make_broker: Any, make_task: Any, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryLeaseStore()
    wall = FakeClock(WALL0)
    broker = make_broker(store=store, wall_clock=wall, retention=10.0)
    caplog.set_level(logging.DEBUG, LOGGER)
    first = await broker.issue(make_task("a"), "db", ttl=60)
    await broker.renew(first.lease_id, 30)
    await broker.issue(make_task("b"), "db", ttl=60)
    assert await broker.revoke_tasks(["a", "b"]) == 2
    wall.advance(11)
    await broker.reap_once()
    debug = _messages(caplog, logging.DEBUG)
    assert f"issued lease {first.lease_id} (expires_at={clock.now + 60:.3f})" in debug
    assert f"renewed lease {first.lease_id} (expires_at={clock.now + 30:.3f})" in debug
    assert "purged 2 terminal lease record(s)" in debug
    assert _messages(caplog, logging.INFO) == ["revoked 2 lease(s) of task(s) a, b and descendants"]


async def test_reaper_and_recovery_failures_are_logged(
    make_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    store.fail_purge = True
    store.fail_scan = True
    broker = make_broker(store=store)
    caplog.set_level(logging.ERROR, LOGGER)
    report = await broker.recover()
    assert report == RecoveryReport([], [], [], ["store unreachable"])
    assert not report.clean
    async with broker:
        await anyio.wait_all_tasks_blocked()  # the first reaper pass has run
    assert _messages(caplog, logging.ERROR) == [
        "lease recovery could not read the store: store unreachable",
        "lease reaper pass failed",
    ]


# ------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    "name",
    [
        "provider_timeout",
        "reaper_interval",
        "default_ttl",
        "default_max_ttl",
        "revoke_backoff",
        "max_revoke_backoff",
        "retention",
    ],
)
@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan")])
def test_each_duration_setting_is_checked_by_name(name: str, bad: float) -> None:
    message = rf"^{name} must be a positive finite number of seconds$"
    with pytest.raises(ValueError, match=message):
        CredentialBroker(MemoryLeaseStore(), {}, **{name: bad})  # type: ignore[arg-type]


def test_counts_and_provider_names_are_checked(source: Any) -> None:
    message = r"^max_revoke_attempts and revoke_concurrency must be >= 1$"
    with pytest.raises(ValueError, match=message):
        CredentialBroker(MemoryLeaseStore(), {}, max_revoke_attempts=0)
    with pytest.raises(ValueError, match=message):
        CredentialBroker(MemoryLeaseStore(), {}, revoke_concurrency=0)
    with pytest.raises(ValueError, match=r"^provider name must be non-empty.*: 'a/b'$"):
        CredentialBroker(MemoryLeaseStore(), {"a/b": source.provider()})
    with pytest.raises(ValueError, match=r"^owner must match"):
        CredentialBroker(MemoryLeaseStore(), {}, owner="a b")
    # Benign twins: the smallest legal values.
    CredentialBroker(MemoryLeaseStore(), {}, max_revoke_attempts=1, revoke_concurrency=1)


async def test_documented_defaults(make_task: Any, clock: Any, source: Any) -> None:
    store = MemoryLeaseStore()
    wall = FakeClock(WALL0)
    broker = CredentialBroker(store, {"db": source.provider()}, clock=clock, wall_clock=wall)
    assert broker.provider_timeout == 10.0
    assert repr(broker) == (
        "CredentialBroker(owner='default', providers=['db'], live=0, unconfirmed=0, zombies=0)"
    )
    lease = await broker.issue(make_task(), "db")
    assert (lease.ttl, lease.max_ttl) == (300.0, 3600.0)
    assert (await broker.issue(make_task(), "db", ttl=7200)).max_ttl == 7200.0

    # Revocations are retried after 1, 2, 4 and 8 s; the fifth failure makes a zombie.
    source.revoke_failures = -1
    await broker.revoke(lease.lease_id)
    for attempt, delay in enumerate([1.0, 2.0, 4.0, 8.0], start=2):
        clock.advance(delay - 0.5)
        assert await broker.reap_once() == 0
        assert broker.zombies() == []
        clock.advance(0.5)
        assert await broker.reap_once() == 1
        record = await store.get(lease.lease_id)
        assert record is not None and record.revoke_attempts == attempt
    assert [z.attempts for z in broker.zombies()] == [5]

    # A confirmed revocation is remembered for an hour; its record is kept for an hour and
    # purged by the next purge pass (at most a minute apart) after that.
    source.revoke_failures = 0
    done = await broker.issue(make_task(), "db", ttl=60)
    await broker.revoke(done.lease_id)
    clock.advance(3599)
    await broker.reap_once()  # purges (nothing old enough yet); the next pass is due in 60 s
    with pytest.raises(LeaseRevoked):
        broker.get(done.lease_id)
    clock.advance(1)
    await broker.reap_once()
    with pytest.raises(LeaseNotFound):
        broker.get(done.lease_id)
    assert await store.get(done.lease_id) is not None
    wall.advance(3600.5)
    clock.advance(59)
    await broker.reap_once()
    assert await store.get(done.lease_id) is None


async def test_recovery_reports_and_logs_what_it_could_not_finish(
    make_broker: Any, make_task: Any, source: Any, caplog: pytest.LogCaptureFixture
) -> None:
    row = QuarantinedRow(key="lease:tasks/x/db/1", reason="bad msgpack", lease_id=None)

    class DamagedStore(MemoryLeaseStore):
        async def scan(self, owner: str, now: float) -> StoreScan:
            found = await super().scan(owner, now)
            return StoreScan(found.records, [row], ["page 7 unreadable"])

    store = DamagedStore()
    crashed = make_broker(store=store)
    lease = await crashed.issue(make_task(), "db", ttl=60)
    await store.release("default")  # the process died; its owner claim went with it
    source.revoke_failures = -1
    caplog.set_level(logging.INFO, LOGGER)
    report = await make_broker(store=store).recover()
    cause = "ConnectionError: provider unavailable"
    assert report == RecoveryReport(
        [], [Zombie(lease.lease_id, "db", "ref-1", 1, cause)], [row], ["page 7 unreadable"]
    )
    assert _messages(caplog, logging.ERROR) == [
        "quarantined lease store row lease:tasks/x/db/1: bad msgpack",
        "lease store damage: page 7 unreadable",
    ]
    assert _messages(caplog, logging.INFO) == [
        "recovered 1 lease(s): 0 confirmed revoked, 1 unconfirmed"
    ]


async def test_recovery_hands_the_provider_the_lease_on_the_new_clock(
    make_broker: Any, make_task: Any, source: Any, clock: Any
) -> None:
    store = MemoryLeaseStore()
    wall = FakeClock(WALL0)
    crashed = make_broker(store=store, wall_clock=wall)
    task = make_task(scope=frozenset({"db:read", "db:write"}))
    original = await crashed.issue(task, "db", scope={"db:read"}, ttl=60, max_ttl=600)
    await store.release("default")  # the process died
    seen: list[tuple[Lease, float]] = []

    async def revoke(lease: Lease) -> None:
        seen.append((lease, lease.remaining()))

    clock.advance(1000)  # a new process: its monotonic clock owes nothing to the old one
    wall.advance(0.5)  # half a second of real time passed
    provider = CallbackProvider(issue=source.issue, revoke=revoke)
    report = await make_broker(store=store, wall_clock=wall, providers={"db": provider}).recover()
    assert report.revoked == [original.lease_id]
    ((lease, remaining),) = seen
    assert (lease.lease_id, lease.provider, lease.task, lease.agent, lease.scope) == (
        original.lease_id,
        "db",
        "txn-1",
        task.agent,
        frozenset({"db:read"}),
    )
    assert (lease.issued_at, lease.ttl, lease.max_ttl, lease.expires_at) == (
        clock.now - 0.5,
        60.0,
        600.0,
        clock.now + 59.5,
    )
    assert (lease.renewable, lease.provider_ref, remaining) == (True, "ref-1", 59.5)


async def test_a_zombie_finally_revoked_is_logged_and_no_longer_reported(
    make_broker: Any, make_task: Any, source: Any, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(max_revoke_attempts=2, revoke_backoff=1.0)
    lease = await broker.issue(make_task(), "db", ttl=60)
    source.revoke_failures = -1
    await broker.revoke(lease.lease_id)
    clock.advance(1)
    await broker.reap_once()
    assert [z.lease_id for z in broker.zombies()] == [lease.lease_id]
    # The provider comes back: the next retry (2 s later) confirms the revocation.
    source.revoke_failures = 0
    caplog.clear()
    caplog.set_level(logging.DEBUG, LOGGER)
    clock.advance(2)
    await broker.reap_once()
    assert broker.zombies() == []
    assert _messages(caplog, logging.WARNING) == [f"zombie lease {lease.lease_id} finally revoked"]
    assert f"lease {lease.lease_id} revoked at provider (revoked)" in _messages(
        caplog, logging.DEBUG
    )


async def test_a_revocation_confirmed_only_on_retry_is_not_a_zombie(
    make_broker: Any, make_task: Any, source: Any, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The benign twin: a revocation that failed once, below the zombie threshold.
    broker = make_broker(max_revoke_attempts=2, revoke_backoff=1.0)
    lease = await broker.issue(make_task(), "db", ttl=60)
    source.revoke_failures = 1
    await broker.revoke(lease.lease_id)
    caplog.set_level(logging.WARNING, LOGGER)
    clock.advance(1)
    await broker.reap_once()
    assert broker.zombies() == []
    assert not any("finally revoked" in m for m in _messages(caplog, logging.WARNING))
