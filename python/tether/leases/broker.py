"""Just-in-time credential leases bound to tasks.

A :class:`CredentialBroker` hands an agent a secret only for the task it is working on: the
lease names the task (``tasks/<txn>/<provider>/<n>``), never outlives the task's deadline,
never covers more scope than the task, and is revoked at the provider when the task ends,
when it expires, or when the broker restarts after a crash.

Design notes (the why):

* Expiry is enforced where the secret is used (:meth:`Lease.check`, :attr:`Lease.secret`,
  :meth:`CredentialBroker.get`), so a stalled or absent reaper cannot extend a lease. The
  reaper exists to make the *provider* forget the credential too.
* Every lease is written to the store as ``pending`` before the provider is asked and as
  ``issued`` (with the provider's reference) before the secret is returned, so a crash at any
  point leaves a record that :meth:`CredentialBroker.recover` can act on.
* Revocation is marked locally first (the lease is unusable immediately) and confirmed at the
  provider afterwards; unconfirmed revocations are retried with exponential backoff and
  reported as zombies after ``max_revoke_attempts`` rather than dropped.
* Secrets live in :class:`Secret`, whose repr/str are masked and which refuses to pickle, and
  in a non-field slot of :class:`Lease`, so ``repr(lease)`` and ``msgspec.json.encode(lease)``
  (the form that ends up in logs) never contain them.
"""

from __future__ import annotations

import heapq
import hmac
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Final, Literal, NoReturn, Protocol, Self

import anyio
import msgspec
from anyio.abc import TaskGroup

from tether.store.lease_store import LIVE_STATUSES, LeaseRecord, LeaseStore

__all__ = [
    "CredentialBroker",
    "InvalidTaskToken",
    "IssuedCredential",
    "Lease",
    "LeaseError",
    "LeaseExpired",
    "LeaseNotFound",
    "LeaseRevoked",
    "LeaseScopeError",
    "NotRenewable",
    "Provider",
    "Secret",
    "TaskRef",
    "TokenNarrowingError",
    "Zombie",
]

log = logging.getLogger("tether.leases")

Clock = Callable[[], float]


# --------------------------------------------------------------------------- errors


class LeaseError(Exception):
    """Base class for every lease failure. Messages name leases, never secrets."""


class LeaseExpired(LeaseError):
    """The lease (or the task it is bound to) is past its expiry."""


class LeaseRevoked(LeaseError):
    """The lease, its task, or an ancestor task was revoked."""


class LeaseNotFound(LeaseError):
    """No lease with this id is known to the broker or its store."""


class LeaseScopeError(LeaseError):
    """The requested scope is not a subset of the task's scope."""


class NotRenewable(LeaseError):
    """The lease or its provider does not support renewal."""


class InvalidTaskToken(LeaseError):
    """A transaction token failed verification (signature, typ, exp, aud, claims)."""


class TokenNarrowingError(InvalidTaskToken):
    """A replacement token widens or re-targets the token it replaces."""


# --------------------------------------------------------------------------- values


class Secret:
    """A credential value that masks itself everywhere except :meth:`reveal`.

    Not picklable and not hashable: both are ways a value ends up copied somewhere it was not
    meant to go (caches, task queues, crash dumps).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, so comparing a guess against a secret leaks nothing about prefixes.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled")


class TaskRef(msgspec.Struct, frozen=True):
    """The slice of a task that leases depend on; built by the task layer."""

    txn: str
    agent: str
    scope: frozenset[str]
    intent: str
    actors: tuple[str, ...]
    deadline: float
    parent_txn: str | None = None


class IssuedCredential(msgspec.Struct, frozen=True):
    """What a provider returns. ``provider_ref`` is stored; ``secret`` never is.

    ``provider_ref`` must let the provider revoke the credential later without the secret
    (a token id, a database user name, an API key id).
    """

    secret: Secret | str
    provider_ref: str

    def __post_init__(self) -> None:
        # Accept a plain str for convenience but never keep it unmasked.
        if isinstance(self.secret, str):
            msgspec.structs.force_setattr(self, "secret", Secret(self.secret))


class _LeaseState:
    """Mutable state shared by a Lease handle and the broker (no reference cycle)."""

    __slots__ = ("clock", "reason", "revoked")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.revoked = False
        self.reason: Literal["revoked", "expired"] = "revoked"


class Lease(msgspec.Struct, frozen=True, dict=True, eq=False, kw_only=True):
    """A handle on one leased credential.

    Fields are the lease's public, loggable description; the secret is kept outside the fields
    so repr, str and every msgspec encoding omit it. The broker updates ``expires_at``/``ttl``
    in place on renewal, so a handle held by the agent sees renewals and revocations.
    """

    lease_id: str
    provider: str
    task: str
    agent: str
    scope: frozenset[str]
    issued_at: float
    ttl: float
    max_ttl: float
    expires_at: float
    renewable: bool
    provider_ref: str | None = None

    @property
    def secret(self) -> Secret:
        """The credential; raises :class:`LeaseExpired`/:class:`LeaseRevoked` if unusable."""
        self.check()
        value: Secret | None = self.__dict__.get("_secret")
        if value is None:
            raise LeaseError(f"lease {self.lease_id} carries no secret (recovered from store)")
        return value

    def check(self, now: float | None = None) -> None:
        """Raise unless the lease is usable at ``now`` (default: the broker's clock)."""
        state: _LeaseState | None = self.__dict__.get("_state")
        if state is not None and state.revoked:
            if state.reason == "expired":
                raise LeaseExpired(f"lease {self.lease_id} expired")
            raise LeaseRevoked(f"lease {self.lease_id} was revoked")
        if now is None:
            now = state.clock() if state is not None else time.time()
        if now >= self.expires_at:
            raise LeaseExpired(f"lease {self.lease_id} expired")

    def remaining(self, now: float | None = None) -> float:
        """Seconds left before expiry (0 if expired)."""
        state: _LeaseState | None = self.__dict__.get("_state")
        if now is None:
            now = state.clock() if state is not None else time.time()
        return max(0.0, self.expires_at - now)


class Zombie(msgspec.Struct, frozen=True):
    """A lease the provider has not confirmed revoked after ``max_revoke_attempts``."""

    lease_id: str
    provider: str
    provider_ref: str | None
    attempts: int
    last_error: str | None


class Provider(Protocol):
    """A source of secrets. ``revoke`` must be idempotent: retries and crash recovery may call
    it for a credential that is already gone, and with ``provider_ref=None`` when the broker
    crashed between asking for a credential and recording the answer (the provider then only
    knows ``lease.lease_id``). ``issue`` raising means nothing was created.

    A provider may set ``renewable = False`` to make its leases non-renewable.
    """

    async def issue(self, task: TaskRef, scope: frozenset[str], ttl: float) -> IssuedCredential: ...

    async def renew(self, lease: Lease, ttl: float) -> None: ...

    async def revoke(self, lease: Lease) -> None: ...


# --------------------------------------------------------------------------- broker


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
        self, lease: Lease, record: LeaseRecord, provider: Provider | None, state: _LeaseState
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
    if not value or "/" in value:
        raise ValueError(f"{kind} must be non-empty and contain no '/': {value!r}")
    return value


def _duration(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number of seconds")
    return value


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


_UNKNOWN_PROVIDER: Final = "provider not configured in this broker"


class CredentialBroker:
    """Issues, renews and revokes task-bound leases; see the module docstring for guarantees.

    One broker per store: :meth:`recover` revokes every unconfirmed lease in the store that this
    broker did not issue itself, which would include another live broker's leases.
    """

    def __init__(
        self,
        store: LeaseStore,
        providers: Mapping[str, Provider],
        *,
        clock: Clock = time.time,
        reaper_interval: float = 1.0,
        default_ttl: float = 300.0,
        default_max_ttl: float = 3600.0,
        revoke_backoff: float = 1.0,
        max_revoke_backoff: float = 300.0,
        max_revoke_attempts: int = 5,
        revoke_concurrency: int = 64,
        tombstone_ttl: float = 3600.0,
    ) -> None:
        for name in providers:
            _segment("provider name", name)
        if max_revoke_attempts < 1 or revoke_concurrency < 1:
            raise ValueError("max_revoke_attempts and revoke_concurrency must be >= 1")
        self._store = store
        self._providers: dict[str, Provider] = dict(providers)
        self._clock = clock
        self._reaper_interval = _duration("reaper_interval", reaper_interval)
        self._default_ttl = _duration("default_ttl", default_ttl)
        self._default_max_ttl = _duration("default_max_ttl", default_max_ttl)
        self._backoff = _duration("revoke_backoff", revoke_backoff)
        self._max_backoff = _duration("max_revoke_backoff", max_revoke_backoff)
        self._max_attempts = max_revoke_attempts
        self._concurrency = revoke_concurrency
        self._tombstone_ttl = float(tombstone_ttl)

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
        self._tg: TaskGroup | None = None
        self._stop: anyio.Event | None = None  # created in __aenter__: needs a running loop

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
        ancestor task's deadline.
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

        now = self._clock()
        expires_at = min(now + ttl, self._deadline_cap(task))
        if expires_at <= now:
            raise LeaseExpired(f"task {task.txn} is past its deadline")
        self._register_task(task)

        lease_id = f"tasks/{task.txn}/{provider}/{secrets.token_hex(8)}"
        record = LeaseRecord(
            lease_id=lease_id,
            provider=provider,
            txn=task.txn,
            agent=task.agent,
            scope=tuple(sorted(wanted)),
            issued_at=now,
            ttl=expires_at - now,
            max_ttl=max_ttl,
            expires_at=expires_at,
            renewable=renewable and bool(getattr(prov, "renewable", True)),
            status="pending",
            parent_txn=task.parent_txn,
        )
        # Durable intent first: if we crash while the provider works, recover() still knows.
        await self._store.put(record)
        try:
            cred = await prov.issue(task, wanted, expires_at - now)
        except Exception as exc:
            # Provider contract: raising means nothing was created, so the record is terminal.
            await self._store.put(
                msgspec.structs.replace(record, status="failed", last_error=_describe(exc))
            )
            raise
        except BaseException:
            # Cancelled mid-call: the credential may exist. Queue a revocation by lease_id;
            # the pending record covers the crash case.
            self._schedule_orphan(record, prov)
            raise

        record = msgspec.structs.replace(record, status="issued", provider_ref=cred.provider_ref)
        try:
            await self._store.put(record)
        except BaseException:
            # Never hand out a secret the store does not know about.
            self._schedule_orphan(record, prov)
            raise

        state = _LeaseState(self._clock)
        lease = Lease(
            lease_id=lease_id,
            provider=provider,
            task=task.txn,
            agent=task.agent,
            scope=wanted,
            issued_at=now,
            ttl=record.ttl,
            max_ttl=max_ttl,
            expires_at=expires_at,
            renewable=record.renewable,
            provider_ref=cred.provider_ref,
        )
        secret = cred.secret if isinstance(cred.secret, Secret) else Secret(cred.secret)
        msgspec.structs.force_setattr(lease, "_secret", secret)
        msgspec.structs.force_setattr(lease, "_state", state)
        entry = _Entry(lease, record, prov, state)
        self._live[lease_id] = entry
        self._by_txn.setdefault(task.txn, set()).add(lease_id)
        heapq.heappush(self._expiry, (expires_at, lease_id))

        if self._txn_revoked(task):
            # revoke_task() ran while the provider was issuing: do not hand this one out.
            self._begin_revoke(entry, "revoked")
            await self._attempt(entry)
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
        entry.lease.check(self._clock())
        return entry.lease

    def active(self, prefix: str = "") -> list[Lease]:
        """Leases usable now whose id starts with ``prefix``."""
        now = self._clock()
        return [
            e.lease
            for k, e in self._live.items()
            if k.startswith(prefix) and not e.state.revoked and e.lease.expires_at > now
        ]

    def unconfirmed(self) -> list[str]:
        """Ids of leases revoked locally whose revocation the provider has not confirmed."""
        return sorted(self._retry)

    def zombies(self) -> list[Zombie]:
        """Leases whose revocation failed ``max_revoke_attempts`` times (still retried)."""
        return list(self._zombies.values())

    async def renew(self, lease_id: str, increment: float) -> Lease:
        """Extend a lease to ``now + increment``, capped at ``issued_at + max_ttl`` and at the
        task's (and known ancestors') deadline. Returns the same, updated handle."""
        increment = _duration("increment", increment)
        lease = self.get(lease_id)
        entry = self._live[lease_id]
        if not lease.renewable or entry.provider is None:
            raise NotRenewable(f"lease {lease_id} is not renewable")
        now = self._clock()
        cap = lease.issued_at + lease.max_ttl
        task = self._tasks.get(lease.task)
        if task is not None:
            cap = min(cap, self._deadline_cap(task))
        new_expiry = min(now + increment, cap)
        if new_expiry <= now:
            raise LeaseExpired(f"lease {lease_id} cannot be renewed past its cap")
        await entry.provider.renew(lease, new_expiry - now)
        if entry.state.revoked:
            # Revoked while the provider was renewing: the renewal must not resurrect it.
            raise LeaseRevoked(f"lease {lease_id} was revoked")
        entry.record = msgspec.structs.replace(
            entry.record, expires_at=new_expiry, ttl=new_expiry - now
        )
        await self._store.put(entry.record)
        msgspec.structs.force_setattr(lease, "expires_at", new_expiry)
        msgspec.structs.force_setattr(lease, "ttl", new_expiry - now)
        heapq.heappush(self._expiry, (new_expiry, lease_id))
        log.debug("renewed lease %s (expires_at=%.3f)", lease_id, new_expiry)
        return lease

    # ----------------------------------------------------------------- revocation

    async def revoke(self, lease_id: str) -> None:
        """Revoke one lease. Idempotent; unusable at once, confirmed at the provider now or
        by the reaper's retries. Raises :class:`LeaseNotFound` only for ids never seen."""
        entry = self._live.get(lease_id)
        if entry is None:
            if lease_id in self._tombstones:
                return
            record = await self._store.get(lease_id)
            if record is None:
                raise LeaseNotFound(f"no lease {lease_id}")
            if record.status not in LIVE_STATUSES or lease_id in self._live:
                return
            entry = self._adopt(record)
        if self._begin_revoke(entry, "revoked") or lease_id in self._retry:
            await self._attempt(entry)

    async def revoke_prefix(self, prefix: str) -> int:
        """Revoke every lease whose id starts with ``prefix`` (``tasks/<txn>/`` names a task,
        ``tasks/<txn>/<provider>/`` one provider's leases for it). Returns how many were newly
        revoked. Idempotent."""
        if not prefix:
            raise ValueError("prefix must be non-empty")
        doomed = [
            e for k, e in self._live.items() if k.startswith(prefix) and self._begin_revoke(e)
        ]
        await self._attempt_many(doomed)
        return len(doomed)

    async def revoke_task(self, txn: str) -> int:
        """Revoke all leases of ``txn`` and of every descendant task, and refuse new ones for
        them. Returns how many leases were newly revoked. Idempotent."""
        now = self._clock()
        doomed: list[_Entry] = []
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
                entry = self._live[lease_id]
                if self._begin_revoke(entry):
                    doomed.append(entry)
            pending.extend(self._children.get(current, ()))
        await self._attempt_many(doomed)
        if doomed:
            log.info("revoked %d lease(s) of task %s and its descendants", len(doomed), txn)
        return len(doomed)

    # ----------------------------------------------------------------- reaping / recovery

    async def reap_once(self) -> int:
        """Revoke expired leases and retry due revocations once. Returns attempts made."""
        now = self._clock()
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, lease_id = heapq.heappop(self._expiry)
            entry = self._live.get(lease_id)
            if entry is None or entry.lease.expires_at != expires_at:
                continue  # already revoked, or renewed (a later heap item covers it)
            self._begin_revoke(entry, "expired")
        due = [e for e in self._retry.values() if e.next_attempt <= now and not e.inflight]
        await self._attempt_many(due)
        self._prune(now)
        return len(due)

    async def recover(self) -> list[str]:
        """Revoke every lease the store does not record as confirmed revoked (crash recovery).

        Run once at startup, before issuing. Returns the ids confirmed revoked now; the rest
        stay queued for the reaper (and show up in :meth:`zombies` if they keep failing).
        """
        entries = [
            self._adopt(r) for r in await self._store.unrevoked() if r.lease_id not in self._live
        ]
        for entry in entries:
            self._begin_revoke(entry, "revoked")
        await self._attempt_many(entries)
        confirmed = [e.lease.lease_id for e in entries if e.lease.lease_id not in self._live]
        log.info("recovered %d lease(s), %d confirmed revoked", len(entries), len(confirmed))
        return confirmed

    async def __aenter__(self) -> Self:
        if self._tg is not None:
            raise RuntimeError("broker already running")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._stop = stop = anyio.Event()
        tg.start_soon(self._reaper_loop, stop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        assert tg is not None and self._stop is not None
        # Stop by signalling rather than cancelling, so an in-flight revocation pass finishes
        # and its outcome is recorded instead of being cut off half-way.
        self._stop.set()
        return await tg.__aexit__(exc_type, exc, tb)

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
        state = _LeaseState(self._clock)
        lease = Lease(
            lease_id=record.lease_id,
            provider=record.provider,
            task=record.txn,
            agent=record.agent,
            scope=frozenset(record.scope),
            issued_at=record.issued_at,
            ttl=record.ttl,
            max_ttl=record.max_ttl,
            expires_at=record.expires_at,
            renewable=record.renewable,
            provider_ref=record.provider_ref,
        )
        msgspec.structs.force_setattr(lease, "_state", state)
        entry = _Entry(lease, record, self._providers.get(record.provider), state)
        self._live[record.lease_id] = entry
        self._by_txn.setdefault(record.txn, set()).add(record.lease_id)
        return entry

    def _schedule_orphan(self, record: LeaseRecord, provider: Provider) -> None:
        entry = self._adopt(record)
        entry.provider = provider
        self._begin_revoke(entry, "revoked")
        log.warning("lease %s orphaned during issue; queued for revocation", record.lease_id)

    def _begin_revoke(
        self, entry: _Entry, reason: Literal["revoked", "expired"] = "revoked"
    ) -> bool:
        """Make the lease unusable now and queue it for provider revocation."""
        if entry.state.revoked:
            return False
        entry.state.revoked = True
        entry.state.reason = reason
        entry.next_attempt = -math.inf
        self._retry[entry.lease.lease_id] = entry
        return True

    async def _attempt_many(self, entries: list[_Entry]) -> None:
        if len(entries) <= 1:
            for entry in entries:
                await self._attempt(entry)
            return
        # Bounded fan-out: providers are usually remote, so sequential revocation of a big
        # task would be slow, but one task per lease would swamp both loop and provider.
        todo = iter(entries)

        async def worker() -> None:
            for entry in todo:
                await self._attempt(entry)

        async with anyio.create_task_group() as tg:
            for _ in range(min(self._concurrency, len(entries))):
                tg.start_soon(worker)

    async def _attempt(self, entry: _Entry) -> bool:
        """One provider revocation attempt; never raises (failures are queued/reported)."""
        lease_id = entry.lease.lease_id
        if entry.inflight or lease_id not in self._retry:
            return False
        entry.inflight = True
        try:
            try:
                if entry.provider is None:
                    raise LeaseError(_UNKNOWN_PROVIDER)
                await entry.provider.revoke(entry.lease)
            except Exception as exc:
                await self._failed(entry, exc)
                return False
            entry.record = msgspec.structs.replace(
                entry.record,
                status="revoked",
                revoke_attempts=entry.attempts + 1,
                last_error=None,
            )
            try:
                await self._store.put(entry.record)
            except Exception as exc:
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
        entry.next_attempt = self._clock() + delay
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
        )
        try:
            await self._store.put(entry.record)
        except Exception:
            # The previous status is also a live status, so recover() still covers it.
            log.exception("could not record failed revocation of %s", lease_id)

    def _confirmed(self, entry: _Entry) -> None:
        lease_id = entry.lease.lease_id
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
        # Queue order is by forget time because the clock only moves forward.
        self._tomb_queue.append((self._clock() + self._tombstone_ttl, lease_id))
        log.debug("lease %s revoked at provider (%s)", lease_id, entry.state.reason)

    def _prune(self, now: float) -> None:
        while self._tomb_queue and self._tomb_queue[0][0] <= now:
            _, lease_id = self._tomb_queue.popleft()
            self._tombstones.pop(lease_id, None)
        for txn in [t for t, until in self._revoked_txns.items() if until < now]:
            del self._revoked_txns[txn]
        # Forget finished tasks with no leases; they can no longer cap or be revoked usefully.
        for txn in [
            t for t, task in self._tasks.items() if task.deadline < now and t not in self._by_txn
        ]:
            del self._tasks[txn]
            self._children.pop(txn, None)

    def __repr__(self) -> str:
        return (
            f"CredentialBroker(providers={sorted(self._providers)}, live={len(self._live)}, "
            f"unconfirmed={len(self._retry)}, zombies={len(self._zombies)})"
        )
