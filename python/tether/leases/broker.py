"""The credential broker: issues, renews and revokes task-bound leases.

A :class:`CredentialBroker` hands an agent a secret only for the task it is working on: the
lease names the task (``tasks/<txn>/<provider>/<n>``), never outlives the task's deadline,
never covers more scope than the task, and is revoked at the provider when the task ends,
when it expires, or when the broker restarts after a crash.

Design notes (the why):

* Expiry is enforced where the secret is used (:meth:`Lease.check`, :attr:`Lease.secret`,
  :meth:`CredentialBroker.get`), on a monotonic clock, so neither a stalled reaper nor a
  wall-clock step can extend a lease. The reaper exists to make the *provider* forget it too.
* Every lease is written to the store as ``pending`` before the provider is asked, and the
  provider is told the lease id, so a crash at any point leaves a record :meth:`recover` can
  revoke by id even when the provider's answer was never recorded.
* Revocation is marked locally first, synchronously and from any thread
  (:meth:`revoke_task_now`), and confirmed at the provider afterwards; unconfirmed
  revocations are retried with exponential backoff and reported as zombies.
* Every provider call is bounded by ``provider_timeout``: a hung provider delays nothing but
  its own lease, and a task's revocation returns within the timeout.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Final, Literal, Self, TypeVar

import anyio
import msgspec

from tether.leases.errors import (
    CorruptLeaseStore,
    LeaseError,
    LeaseExpired,
    LeaseNotFound,
    LeaseRevoked,
    LeaseScopeError,
    LeaseStoreBusy,
    LeaseStoreError,
    NotRenewable,
    ProviderError,
    ProviderTimeout,
)
from tether.leases.types import (
    Clock,
    IssuedCredential,
    IssueRequest,
    Lease,
    LeaseState,
    Provider,
    RecoveryReport,
    Secret,
    TaskRef,
    Zombie,
)
from tether.store.records import LIVE_STATUSES, LeaseRecord, LeaseStore, valid_owner

__all__ = ["CredentialBroker"]

log = logging.getLogger("tether.leases")
T = TypeVar("T")
_UNKNOWN_PROVIDER: Final = "provider not configured in this broker"
_BAD_SEGMENT: Final = re.compile(r'[/"\x00-\x1f]')


class _Entry:
    __slots__ = (
        "attempts",
        "inflight",
        "last_error",
        "lease",
        "next_attempt",
        "provider",
        "record",
        "state",
    )

    def __init__(
        self, lease: Lease, record: LeaseRecord, provider: Provider | None, state: LeaseState
    ) -> None:
        self.lease = lease
        self.record = record
        self.provider = provider
        self.state = state
        self.attempts = record.revoke_attempts
        self.next_attempt = -math.inf
        self.last_error: str | None = record.last_error
        self.inflight = False


def _segment(kind: str, value: str) -> str:
    # Lease ids are paths whose prefixes name a task or provider; a '/' inside a segment
    # would let one task's prefix match another's leases.
    if not value or _BAD_SEGMENT.search(value):
        raise ValueError(
            f"{kind} must be non-empty, without '/', quotes or control chars: {value!r}"
        )
    return value


def _duration(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number of seconds")
    return value


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


class CredentialBroker:
    """Issues, renews and revokes task-bound leases; see the module docstring for guarantees.

    ``owner`` names this broker in the store: :meth:`recover` revokes only its own owner's
    unconfirmed leases, and the store refuses a second live broker with the same owner, so a
    restarted broker reclaims its predecessor's leases and never another live broker's.
    ``clock`` (monotonic) decides expiry, deadlines and backoff; ``wall_clock`` only stamps
    store records (for people and for ``retention``, after which terminal records are purged).
    """

    def __init__(
        self,
        store: LeaseStore,
        providers: Mapping[str, Provider],
        *,
        owner: str = "default",
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        provider_timeout: float = 10.0,
        reaper_interval: float = 1.0,
        default_ttl: float = 300.0,
        default_max_ttl: float = 3600.0,
        revoke_backoff: float = 1.0,
        max_revoke_backoff: float = 300.0,
        max_revoke_attempts: int = 5,
        revoke_concurrency: int = 64,
        tombstone_ttl: float = 3600.0,
        retention: float = 3600.0,
    ) -> None:
        for name in providers:
            _segment("provider name", name)
        if max_revoke_attempts < 1 or revoke_concurrency < 1:
            raise ValueError("max_revoke_attempts and revoke_concurrency must be >= 1")
        self._store = store
        self._providers: dict[str, Provider] = dict(providers)
        self._owner = valid_owner(owner)
        self.clock = clock
        self._wall = wall_clock
        self.provider_timeout = _duration("provider_timeout", provider_timeout)
        self._reaper_interval = _duration("reaper_interval", reaper_interval)
        self._default_ttl = _duration("default_ttl", default_ttl)
        self._default_max_ttl = _duration("default_max_ttl", default_max_ttl)
        self._backoff = _duration("revoke_backoff", revoke_backoff)
        self._max_backoff = _duration("max_revoke_backoff", max_revoke_backoff)
        self._max_attempts = max_revoke_attempts
        self._concurrency = revoke_concurrency
        self._tombstone_ttl = float(tombstone_ttl)
        self._retention = _duration("retention", retention)
        self._purge_every = max(self._reaper_interval, min(self._retention / 10, 60.0))
        self._next_purge = -math.inf

        # Guards the maps below: revoke_task_now() may run in any thread.
        self._mutex = threading.RLock()
        # Leases not yet confirmed revoked at the provider (usable or not).
        self._live: dict[str, _Entry] = {}
        self._by_txn: dict[str, set[str]] = {}
        self._tasks: dict[str, TaskRef] = {}
        self._children: dict[str, set[str]] = {}
        self._revoked_txns: dict[str, float] = {}
        # Min-heap of (expires_at, lease_id); renewals push a new item and stale ones are
        # skipped on pop, which keeps issue/renew O(log n) and reaping O(expired).
        self._expiry: list[tuple[float, str]] = []
        self._retry: dict[str, _Entry] = {}
        self._zombies: dict[str, Zombie] = {}
        # Confirmed-revoked ids, so get() can say "revoked"/"expired" instead of "not found";
        # forgotten tombstone_ttl seconds after confirmation to bound memory.
        self._tombstones: dict[str, Literal["revoked", "expired"]] = {}
        self._tomb_queue: deque[tuple[float, str]] = deque()
        self._claimed = False
        self._stack: AsyncExitStack | None = None
        self._stop: anyio.Event | None = None

    # ----------------------------------------------------------------- issue / use

    async def issue(
        self,
        task: TaskRef,
        provider: str,
        *,
        scope: Iterable[str] | None = None,
        ttl: float | None = None,
        max_ttl: float | None = None,
        renewable: bool = True,
    ) -> Lease:
        """Lease a credential from ``provider`` for ``task``.

        ``scope`` defaults to the whole task scope and must be a subset of it. The lease expires
        at the earliest of ``now + ttl``, ``now + max_ttl``, the task's deadline and every known
        ancestor task's deadline. Provider failures raise :class:`ProviderError` (cause
        attached), storage failures :class:`LeaseStoreError`.
        """
        prov = self._providers.get(provider)
        if prov is None:
            raise LeaseError(f"unknown provider {provider!r}")
        _segment("txn", task.txn)
        wanted = task.scope if scope is None else frozenset(scope)
        if not wanted <= task.scope:
            extra = sorted(wanted - task.scope)
            raise LeaseScopeError(f"scope {extra} is outside task {task.txn}'s scope")
        if self._txn_revoked(task):
            raise LeaseRevoked(f"task {task.txn} or an ancestor was revoked")
        ttl = self._default_ttl if ttl is None else _duration("ttl", ttl)
        max_ttl = (
            max(self._default_max_ttl, ttl) if max_ttl is None else _duration("max_ttl", max_ttl)
        )
        ttl = min(ttl, max_ttl)
        await self._ensure_owner()

        now = self.clock()
        with self._mutex:
            self._register_task(task)
            expires_at = min(now + ttl, self._deadline_cap(task))
        if expires_at <= now:
            raise LeaseExpired(f"task {task.txn} is past its deadline")

        lease_id = f"tasks/{task.txn}/{provider}/{secrets.token_hex(8)}"
        wall = self._wall()
        record = LeaseRecord(
            lease_id=lease_id,
            provider=provider,
            txn=task.txn,
            agent=task.agent,
            scope=tuple(sorted(wanted)),
            issued_at=wall,
            ttl=expires_at - now,
            max_ttl=max_ttl,
            expires_at=wall + (expires_at - now),
            renewable=renewable and bool(getattr(prov, "renewable", True)),
            status="pending",
            parent_txn=task.parent_txn,
            owner=self._owner,
            updated_at=wall,
        )
        # Durable intent first: if we crash while the provider works, recover() still knows.
        await self._put(record)
        request = IssueRequest(lease_id=lease_id, task=task, scope=wanted, ttl=expires_at - now)
        try:
            cred = await self._provider_call(
                f"issue of lease {lease_id}", self._deadline(), prov.issue, request
            )
        except ProviderTimeout:
            # The credential may exist: queue a revocation by lease id.
            self._schedule_orphan(record, prov)
            raise
        except Exception as exc:
            # Provider contract: raising means nothing was created, so the record is terminal.
            failed = msgspec.structs.replace(
                record, status="failed", last_error=_describe(exc), updated_at=self._wall()
            )
            try:
                await self._put(failed)
            except LeaseStoreError:
                log.exception("could not record failed issue of %s", lease_id)
            if isinstance(exc, LeaseError):
                raise
            raise ProviderError(
                f"provider {provider!r} did not issue {lease_id}: {_describe(exc)}"
            ) from exc
        except BaseException:
            # Cancelled mid-call: the credential may exist. Queue a revocation by lease_id;
            # the pending record covers the crash case.
            self._schedule_orphan(record, prov)
            raise

        if not isinstance(cred, IssuedCredential):
            # Something may have been created: treat it as an orphan, revoked by lease id.
            self._schedule_orphan(record, prov)
            raise ProviderError(
                f"provider {provider!r} returned {type(cred).__name__} for {lease_id},"
                " not IssuedCredential"
            )
        record = msgspec.structs.replace(
            record, status="issued", provider_ref=cred.provider_ref, updated_at=self._wall()
        )
        try:
            await self._put(record)
        except BaseException:
            # Never hand out a secret the store does not know about.
            self._schedule_orphan(record, prov)
            raise

        state = LeaseState(self.clock)
        lease = Lease(
            lease_id=lease_id,
            provider=provider,
            task=task.txn,
            agent=task.agent,
            scope=wanted,
            issued_at=now,
            ttl=expires_at - now,
            max_ttl=max_ttl,
            expires_at=expires_at,
            renewable=record.renewable,
            provider_ref=cred.provider_ref,
        )
        secret = cred.secret if isinstance(cred.secret, Secret) else Secret(cred.secret)
        msgspec.structs.force_setattr(lease, "_secret", secret)
        msgspec.structs.force_setattr(lease, "_state", state)
        entry = _Entry(lease, record, prov, state)
        with self._mutex:
            # Checked and inserted under one lock: a revoke_task_now() in another thread
            # either sees this lease or has already marked the task revoked.
            revoked = self._txn_revoked(task)
            self._live[lease_id] = entry
            self._by_txn.setdefault(task.txn, set()).add(lease_id)
            if revoked:
                self._begin_revoke(entry, "revoked")
            else:
                heapq.heappush(self._expiry, (expires_at, lease_id))
        if revoked:
            # revoke_task() ran while the provider was issuing: do not hand this one out.
            await self._attempt(entry, self._deadline())
            raise LeaseRevoked(f"task {task.txn} was revoked while issuing")
        log.debug("issued lease %s (expires_at=%.3f)", lease_id, expires_at)
        return lease

    def get(self, lease_id: str) -> Lease:
        """The usable lease with this id; raises if expired, revoked or unknown."""
        entry = self._live.get(lease_id)
        if entry is None:
            reason = self._tombstones.get(lease_id)
            if reason is None:
                raise LeaseNotFound(f"no lease {lease_id}")
            if reason == "expired":
                raise LeaseExpired(f"lease {lease_id} expired")
            raise LeaseRevoked(f"lease {lease_id} was revoked")
        entry.lease.check(self.clock())
        return entry.lease

    def active(self, prefix: str = "") -> list[Lease]:
        """Leases usable now whose id starts with ``prefix``."""
        now = self.clock()
        with self._mutex:
            return [
                e.lease
                for k, e in self._live.items()
                if k.startswith(prefix) and not e.state.revoked and e.lease.expires_at > now
            ]

    def unconfirmed(self) -> list[str]:
        """Ids of leases revoked locally whose revocation the provider has not confirmed."""
        with self._mutex:
            return sorted(self._retry)

    def zombies(self) -> list[Zombie]:
        """Leases whose revocation failed ``max_revoke_attempts`` times (still retried)."""
        return list(self._zombies.values())

    def stats(self) -> dict[str, int]:
        """Sizes of the broker's in-memory state (all bounded; see ``tombstone_ttl``)."""
        with self._mutex:
            return {
                "live": len(self._live),
                "unconfirmed": len(self._retry),
                "zombies": len(self._zombies),
                "tombstones": len(self._tombstones),
                "tasks": len(self._tasks),
                "expiry_heap": len(self._expiry),
            }

    async def renew(self, lease_id: str, increment: float) -> Lease:
        """Extend a lease to ``now + increment``, capped at ``issued_at + max_ttl`` and at the
        task's (and known ancestors') deadline. Returns the same, updated handle. A lease
        revoked before or during the provider's renewal stays revoked."""
        increment = _duration("increment", increment)
        lease = self.get(lease_id)
        entry = self._live[lease_id]
        if not lease.renewable or entry.provider is None:
            raise NotRenewable(f"lease {lease_id} is not renewable")
        now = self.clock()
        cap = lease.issued_at + lease.max_ttl
        with self._mutex:
            task = self._tasks.get(lease.task)
            if task is not None:
                cap = min(cap, self._deadline_cap(task))
        new_expiry = min(now + increment, cap)
        if new_expiry <= now:
            raise LeaseExpired(f"lease {lease_id} cannot be renewed past its cap")
        try:
            await self._provider_call(
                f"renewal of lease {lease_id}",
                self._deadline(),
                entry.provider.renew,
                lease,
                new_expiry - now,
            )
        except LeaseError:
            raise
        except Exception as exc:
            raise ProviderError(f"renewal of lease {lease_id} failed: {_describe(exc)}") from exc
        if entry.state.revoked:
            # Revoked while the provider was renewing: the renewal must not resurrect it,
            # here or at the provider (which may have extended what it had just revoked),
            # so the revocation is sent again.
            with self._mutex:
                self._requeue(entry)
            await self._attempt(entry, self._deadline())
            raise LeaseRevoked(f"lease {lease_id} was revoked")
        wall = self._wall()
        entry.record = msgspec.structs.replace(
            entry.record,
            expires_at=wall + (new_expiry - now),
            ttl=new_expiry - now,
            updated_at=wall,
        )
        await self._put(entry.record)
        msgspec.structs.force_setattr(lease, "expires_at", new_expiry)
        msgspec.structs.force_setattr(lease, "ttl", new_expiry - now)
        with self._mutex:
            heapq.heappush(self._expiry, (new_expiry, lease_id))
        log.debug("renewed lease %s (expires_at=%.3f)", lease_id, new_expiry)
        return lease

    # ----------------------------------------------------------------- revocation

    async def revoke(self, lease_id: str) -> None:
        """Revoke one lease. Idempotent; unusable at once, confirmed at the provider now
        (within ``provider_timeout``) or by the reaper's retries. Raises
        :class:`LeaseNotFound` only for ids never seen."""
        entry = self._live.get(lease_id)
        if entry is None:
            if lease_id in self._tombstones:
                return
            record = await self._store.get(lease_id)
            if record is None:
                raise LeaseNotFound(f"no lease {lease_id}")
            if record.status not in LIVE_STATUSES:
                return
            with self._mutex:
                entry = self._live.get(lease_id) or self._adopt(record)
        with self._mutex:
            self._begin_revoke(entry, "revoked")
        await self._attempt(entry, self._deadline())

    async def revoke_prefix(self, prefix: str) -> int:
        """Revoke every lease whose id starts with ``prefix`` (``tasks/<txn>/`` names a task,
        ``tasks/<txn>/<provider>/`` one provider's leases for it). Returns how many were newly
        revoked. Idempotent; returns within ``provider_timeout``."""
        if not prefix:
            raise ValueError("prefix must be non-empty")
        with self._mutex:
            doomed = [
                e for k, e in self._live.items() if k.startswith(prefix) and self._begin_revoke(e)
            ]
        await self._attempt_many(doomed, self._deadline())
        return len(doomed)

    def revoke_task_now(self, txn: str) -> int:
        """Make every lease of ``txn`` and its descendants unusable before returning, and
        refuse new ones for them; safe from any thread, no I/O. The provider is told later
        (:meth:`revoke_task`, or the reaper). Returns how many leases were newly revoked."""
        now = self.clock()
        count = 0
        with self._mutex:
            pending = [txn]
            seen: set[str] = set()
            while pending:
                current = pending.pop()
                if current in seen:
                    continue
                seen.add(current)
                known = self._tasks.get(current)
                forget_at = known.deadline if known is not None else now + self._tombstone_ttl
                self._revoked_txns[current] = max(forget_at, self._revoked_txns.get(current, 0.0))
                for lease_id in self._by_txn.get(current, ()):
                    if self._begin_revoke(self._live[lease_id]):
                        count += 1
                pending.extend(self._children.get(current, ()))
        return count

    async def revoke_task(self, txn: str) -> int:
        """Revoke all leases of ``txn`` and of every descendant task, and refuse new ones for
        them. Returns how many leases were newly revoked. Idempotent. Waits for the provider
        at most ``provider_timeout``; what it did not confirm by then the reaper retries."""
        return await self.revoke_tasks([txn])

    async def revoke_tasks(self, txns: Iterable[str]) -> int:
        """:meth:`revoke_task` for several tasks, sharing one ``provider_timeout``."""
        txns = list(txns)
        count = sum(self.revoke_task_now(txn) for txn in txns)
        with self._mutex:
            family = self._family(txns)
            due = [
                self._live[lease_id]
                for t in family
                for lease_id in self._by_txn.get(t, ())
                if lease_id in self._retry
            ]
        await self._attempt_many(due, self._deadline())
        if count:
            log.info("revoked %d lease(s) of task(s) %s and descendants", count, ", ".join(txns))
        return count

    # ----------------------------------------------------------------- reaping / recovery

    async def reap_once(self) -> int:
        """Revoke expired leases, retry due revocations and purge old records, once.
        Returns the revocation attempts made. Bounded by ``provider_timeout``."""
        now = self.clock()
        with self._mutex:
            while self._expiry and self._expiry[0][0] <= now:
                expires_at, lease_id = heapq.heappop(self._expiry)
                entry = self._live.get(lease_id)
                if entry is None or entry.lease.expires_at != expires_at:
                    continue  # already revoked, or renewed (a later heap item covers it)
                self._begin_revoke(entry, "expired")
            due = [e for e in self._retry.values() if e.next_attempt <= now and not e.inflight]
        await self._attempt_many(due, self._deadline())
        self._prune(now)
        if now >= self._next_purge:
            self._next_purge = now + self._purge_every
            purged = await self._store.purge(self._wall() - self._retention)
            if purged:
                log.debug("purged %d terminal lease record(s)", purged)
        return len(due)

    async def recover(self) -> RecoveryReport:
        """Revoke every lease of this broker's owner that the store does not record as
        confirmed revoked (crash recovery). Run once at startup, before issuing.

        Damage never stops it: undecodable rows are quarantined and their leases revoked by
        id, unreadable files are salvaged, and the report names what could not be recovered.
        Only :class:`LeaseStoreBusy` (another live broker holds this owner) is raised.
        """
        await self._ensure_owner()
        try:
            scan = await self._store.scan(self._owner, self._wall())
        except LeaseStoreBusy:
            raise
        except LeaseStoreError as exc:
            log.error("lease recovery could not read the store: %s", exc)
            return RecoveryReport([], [], [], [str(exc)])
        with self._mutex:
            entries = [self._adopt(r) for r in scan.records if r.lease_id not in self._live]
            for entry in entries:
                self._begin_revoke(entry, "revoked")
        await self._attempt_many(entries, None)
        confirmed = [e.lease.lease_id for e in entries if e.lease.lease_id not in self._live]
        zombies = [
            Zombie(
                lease_id=e.lease.lease_id,
                provider=e.lease.provider,
                provider_ref=e.lease.provider_ref,
                attempts=e.attempts,
                last_error=e.last_error,
            )
            for e in entries
            if e.lease.lease_id in self._live
        ]
        for row in scan.quarantined:
            log.error("quarantined lease store row %s: %s", row.key, row.reason)
        for note in scan.damage:
            log.error("lease store damage: %s", note)
        log.info(
            "recovered %d lease(s): %d confirmed revoked, %d unconfirmed",
            len(entries),
            len(confirmed),
            len(zombies),
        )
        return RecoveryReport(confirmed, zombies, scan.quarantined, scan.damage)

    async def close(self) -> None:
        """Release this broker's owner claim on the store (another broker may then recover
        its leases). The store itself stays open: it belongs to the caller."""
        if self._claimed:
            self._claimed = False
            await self._store.release(self._owner)

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("broker already running")
        async with AsyncExitStack() as stack:
            await self._ensure_owner()
            tg = await stack.enter_async_context(anyio.create_task_group())
            self._stop = stop = anyio.Event()
            # Stop by signalling rather than cancelling, so an in-flight revocation pass
            # finishes (bounded by provider_timeout) and its outcome is recorded.
            stack.callback(stop.set)
            tg.start_soon(self._reaper_loop, stop)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        assert stack is not None
        return await stack.__aexit__(exc_type, exc, tb)

    async def _reaper_loop(self, stop: anyio.Event) -> None:
        while not stop.is_set():
            try:
                await self.reap_once()
            except Exception:
                # Keep reaping: a failing store must not silently stop revocations.
                log.exception("lease reaper pass failed")
            with anyio.move_on_after(self._reaper_interval):
                await stop.wait()

    # ----------------------------------------------------------------- internals

    def _deadline(self) -> float:
        return anyio.current_time() + self.provider_timeout

    async def _provider_call(
        self, what: str, deadline: float, fn: Callable[..., Awaitable[T]], *args: object
    ) -> T:
        # Cancellation can only land at an await: a provider that blocks the thread without
        # awaiting cannot be bounded here (run blocking clients in a worker thread).
        with anyio.CancelScope(deadline=deadline):
            return await fn(*args)
        raise ProviderTimeout(f"provider {what} timed out after {self.provider_timeout:g}s")

    async def _put(self, record: LeaseRecord) -> None:
        try:
            await self._store.put(record)
        except LeaseStoreError:
            raise
        except Exception as exc:
            raise LeaseStoreError(f"lease store write of {record.lease_id} failed: {exc}") from exc

    async def _ensure_owner(self) -> None:
        if not self._claimed:
            await self._store.claim(self._owner)
            self._claimed = True

    def _family(self, txns: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        pending = list(txns)
        while pending:
            current = pending.pop()
            if current not in seen:
                seen.add(current)
                pending.extend(self._children.get(current, ()))
        return seen

    def _deadline_cap(self, task: TaskRef) -> float:
        cap = task.deadline
        parent = task.parent_txn
        seen = {task.txn}
        while parent is not None and parent not in seen:
            seen.add(parent)
            known = self._tasks.get(parent)
            if known is None:
                break
            cap = min(cap, known.deadline)
            parent = known.parent_txn
        return cap

    def _txn_revoked(self, task: TaskRef) -> bool:
        if task.txn in self._revoked_txns:
            return True
        parent = task.parent_txn
        seen = {task.txn}
        while parent is not None and parent not in seen:
            if parent in self._revoked_txns:
                return True
            seen.add(parent)
            known = self._tasks.get(parent)
            parent = known.parent_txn if known is not None else None
        return False

    def _register_task(self, task: TaskRef) -> None:
        self._tasks[task.txn] = task
        if task.parent_txn is not None:
            self._children.setdefault(task.parent_txn, set()).add(task.txn)

    def _adopt(self, record: LeaseRecord) -> _Entry:
        """Track a record from the store (no secret) so it can be revoked and retried."""
        state = LeaseState(self.clock)
        now = self.clock()
        lease = Lease(
            lease_id=record.lease_id,
            provider=record.provider,
            task=record.txn,
            agent=record.agent,
            scope=frozenset(record.scope),
            issued_at=now - max(0.0, self._wall() - record.issued_at),
            ttl=record.ttl,
            max_ttl=record.max_ttl,
            expires_at=now + (record.expires_at - self._wall()),
            renewable=record.renewable,
            provider_ref=record.provider_ref,
        )
        msgspec.structs.force_setattr(lease, "_state", state)
        entry = _Entry(lease, record, self._providers.get(record.provider), state)
        self._live[record.lease_id] = entry
        self._by_txn.setdefault(record.txn, set()).add(record.lease_id)
        return entry

    def _requeue(self, entry: _Entry) -> None:
        """Queue a revoked lease for one more provider revocation (under mutex)."""
        lease_id = entry.lease.lease_id
        self._live[lease_id] = entry
        self._by_txn.setdefault(entry.lease.task, set()).add(lease_id)
        entry.next_attempt = -math.inf
        self._retry[lease_id] = entry

    def _schedule_orphan(self, record: LeaseRecord, provider: Provider) -> None:
        with self._mutex:
            entry = self._adopt(record)
            entry.provider = provider
            self._begin_revoke(entry, "revoked")
        log.warning("lease %s orphaned during issue; queued for revocation", record.lease_id)

    def _begin_revoke(
        self, entry: _Entry, reason: Literal["revoked", "expired"] = "revoked"
    ) -> bool:
        """Make the lease unusable now and queue it for provider revocation (under mutex)."""
        if not entry.state.kill(reason):
            return False
        entry.next_attempt = -math.inf
        self._retry[entry.lease.lease_id] = entry
        return True

    async def _attempt_many(self, entries: list[_Entry], deadline: float | None) -> None:
        """Attempt each revocation once; with a ``deadline`` (anyio time) none runs past it
        and those not started stay queued for the reaper."""
        if not entries:
            return
        todo = iter(entries)
        # With a shared deadline one scope bounds the whole batch: a scope per call costs
        # more than a local provider's whole revocation. Without one, each call gets its own.
        batch = deadline is not None and len(entries) > 1

        async def worker() -> None:
            for entry in todo:
                if deadline is not None and anyio.current_time() >= deadline:
                    return
                await self._attempt(entry, deadline, batch=batch)

        if len(entries) == 1:
            await worker()
            return
        # Bounded fan-out: providers are usually remote, so sequential revocation of a big
        # task would be slow, but one task per lease would swamp both loop and provider.
        with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
            async with anyio.create_task_group() as tg:
                for _ in range(min(self._concurrency, len(entries))):
                    tg.start_soon(worker)

    async def _attempt(self, entry: _Entry, deadline: float | None, *, batch: bool = False) -> bool:
        """One provider revocation attempt; never raises (failures are queued/reported).
        ``batch``: the caller's scope enforces ``deadline``, so no scope of its own."""
        lease_id = entry.lease.lease_id
        if entry.inflight or lease_id not in self._retry:
            return False
        entry.inflight = True
        try:
            try:
                if entry.provider is None:
                    raise LeaseError(_UNKNOWN_PROVIDER)
                if batch:
                    await entry.provider.revoke(entry.lease)
                else:
                    await self._provider_call(
                        f"revocation of lease {lease_id}",
                        self._deadline() if deadline is None else deadline,
                        entry.provider.revoke,
                        entry.lease,
                    )
            except anyio.get_cancelled_exc_class():
                if batch and deadline is not None and anyio.current_time() >= deadline:
                    timeout = ProviderTimeout(
                        f"provider revocation of lease {lease_id} timed out after"
                        f" {self.provider_timeout:g}s"
                    )
                    with anyio.CancelScope(shield=True):
                        await self._failed(entry, timeout)
                raise
            except Exception as exc:
                await self._failed(entry, exc)
                return False
            entry.record = msgspec.structs.replace(
                entry.record,
                status="revoked",
                revoke_attempts=entry.attempts + 1,
                last_error=None,
                updated_at=self._wall(),
            )
            try:
                await self._put(entry.record)
            except CorruptLeaseStore as exc:
                # Nowhere to record it; a restart on the damaged file would revoke it again,
                # which the provider contract makes harmless.
                log.warning("lease %s revoked but not recorded: %s", lease_id, exc)
            except LeaseStoreError as exc:
                # Provider confirmed but we could not record it: retry (revoke is idempotent)
                # rather than let a restart re-revoke unknowingly or lose track.
                await self._failed(entry, exc)
                return False
            self._confirmed(entry)
            return True
        finally:
            entry.inflight = False

    async def _failed(self, entry: _Entry, exc: Exception) -> None:
        lease_id = entry.lease.lease_id
        entry.attempts += 1
        entry.last_error = _describe(exc)
        delay = min(self._backoff * 2 ** (entry.attempts - 1), self._max_backoff)
        entry.next_attempt = self.clock() + delay
        if entry.attempts >= self._max_attempts:
            if lease_id not in self._zombies:
                log.error(
                    "ZOMBIE lease %s (provider %s, ref %s): revocation failed %d times: %s",
                    lease_id,
                    entry.lease.provider,
                    entry.lease.provider_ref,
                    entry.attempts,
                    entry.last_error,
                )
            self._zombies[lease_id] = Zombie(
                lease_id=lease_id,
                provider=entry.lease.provider,
                provider_ref=entry.lease.provider_ref,
                attempts=entry.attempts,
                last_error=entry.last_error,
            )
        else:
            log.warning(
                "revoking lease %s failed (attempt %d, retry in %.3fs): %s",
                lease_id,
                entry.attempts,
                delay,
                entry.last_error,
            )
        entry.record = msgspec.structs.replace(
            entry.record,
            status="revoke_failed",
            revoke_attempts=entry.attempts,
            last_error=entry.last_error,
            updated_at=self._wall(),
        )
        try:
            await self._put(entry.record)
        except LeaseStoreError:
            # The previous status is also a live status, so recover() still covers it.
            log.exception("could not record failed revocation of %s", lease_id)

    def _confirmed(self, entry: _Entry) -> None:
        lease_id = entry.lease.lease_id
        with self._mutex:
            self._live.pop(lease_id, None)
            self._retry.pop(lease_id, None)
            txn_leases = self._by_txn.get(entry.lease.task)
            if txn_leases is not None:
                txn_leases.discard(lease_id)
                if not txn_leases:
                    del self._by_txn[entry.lease.task]
        if self._zombies.pop(lease_id, None) is not None:
            log.warning("zombie lease %s finally revoked", lease_id)
        self._tombstones[lease_id] = entry.state.reason
        # Queue order is by forget time because the monotonic clock only moves forward.
        self._tomb_queue.append((self.clock() + self._tombstone_ttl, lease_id))
        log.debug("lease %s revoked at provider (%s)", lease_id, entry.state.reason)

    def _prune(self, now: float) -> None:
        while self._tomb_queue and self._tomb_queue[0][0] <= now:
            _, lease_id = self._tomb_queue.popleft()
            self._tombstones.pop(lease_id, None)
        with self._mutex:
            for txn in [t for t, until in self._revoked_txns.items() if until < now]:
                del self._revoked_txns[txn]
            # Forget finished tasks with no leases; they can no longer cap or be revoked.
            for txn in [
                t
                for t, task in self._tasks.items()
                if task.deadline < now and t not in self._by_txn
            ]:
                del self._tasks[txn]
                self._children.pop(txn, None)

    def __repr__(self) -> str:
        return (
            f"CredentialBroker(owner={self._owner!r}, providers={sorted(self._providers)},"
            f" live={len(self._live)}, unconfirmed={len(self._retry)},"
            f" zombies={len(self._zombies)})"
        )
