"""The shared-state protocol: what tether keeps outside one process.

Revocations, shared budgets and counters, agent-scoped labels and tree-wide monitor counts
are what several worker processes (or machines) must agree on. :class:`SharedStore` is the
one protocol the rest of tether talks to; :class:`~tether.store.memory_state.MemoryStore`
(one process, the default) and :class:`~tether.store.redis_state.RedisStore` (shared) both
implement it and pass one contract suite (``tests/store/test_shared_contract.py``).

Every operation that needs the store and cannot reach it raises :class:`StoreUnavailable`,
naming the store and the cause, so callers deny (fail closed) instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import msgspec

from tether._core import TetherError

__all__ = [
    "Charge",
    "Grant",
    "MonitorCounts",
    "Revocation",
    "RevocationKind",
    "RevocationSnapshot",
    "SharedStore",
    "StoreError",
    "StoreUnavailable",
]

RevocationKind = Literal["task", "agent", "trust_domain"]


class StoreError(TetherError):
    """A shared-state operation failed."""


class StoreUnavailable(StoreError):
    """The store could not be reached or did not answer; decisions needing it must deny."""

    def __init__(self, store: str, cause: str) -> None:
        self.store = store
        self.cause = cause
        super().__init__(f"shared store {store} unavailable: {cause}")


class Revocation(msgspec.Struct, frozen=True, kw_only=True):
    """One revoked subject. ``seq`` orders revocations store-wide (0 until stored)."""

    kind: RevocationKind
    subject: str
    reason: str
    revoked_at: float
    seq: int = 0

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"


@dataclass(frozen=True, slots=True)
class RevocationSnapshot:
    """The whole revocation set and the sequence number it is current as of."""

    revocations: tuple[Revocation, ...]
    seq: int


@dataclass(frozen=True, slots=True)
class Charge:
    """A budget key and its limit; a reservation applies to every charge of a request."""

    key: str
    limit: int


@dataclass(frozen=True, slots=True)
class Grant:
    """The outcome of a reservation.

    ``granted`` is what was reserved on every key (0 when refused); ``remaining`` is the
    smallest headroom left over all keys after the reservation (negative when settled debt
    pushed a key past its limit).
    """

    granted: int
    remaining: int


@dataclass(frozen=True, slots=True)
class MonitorCounts:
    """Decision counts over a whole task tree, as of the decision just recorded."""

    decisions: int
    denials: int
    deny_streak: int


@runtime_checkable
class SharedStore(Protocol):
    """What tether reads and writes across processes. All methods are atomic."""

    @property
    def name(self) -> str:
        """Identifies the store in errors and logs (credentials redacted)."""
        ...

    async def revoke(self, revocation: Revocation) -> Revocation:
        """Store durably and broadcast; returns the stored record with its ``seq``."""
        ...

    async def revocations(self) -> RevocationSnapshot:
        """The current revocation set, atomically with the sequence it is current as of."""
        ...

    async def revocations_after(self, seq: int, wait: float) -> Sequence[Revocation] | None:
        """Revocations with a sequence above ``seq``, in order, waiting up to ``wait`` seconds
        for the first. ``None`` means some were dropped from the log: reload the snapshot."""
        ...

    async def reserve(
        self, charges: Sequence[Charge], amount: int, *, settle: int = 0, partial: bool = False
    ) -> Grant:
        """Check and reserve ``amount`` on every charge in one atomic step.

        ``settle`` is added to every key first, unconditionally (spending that already
        happened). With ``partial`` the grant is the most every key can still take, up to
        ``amount``; without it, all of ``amount`` or nothing.
        """
        ...

    async def release(self, keys: Sequence[str], amount: int) -> None:
        """Give back an unspent reservation (never below zero)."""
        ...

    async def spent(self, key: str) -> int:
        """Total reserved on a budget key."""
        ...

    async def reserve_slice(
        self,
        charges: Sequence[Charge],
        amount: int,
        *,
        holder: str,
        ttl: float,
        used: int = 0,
        settle: int = 0,
    ) -> Grant:
        """Top up ``holder``'s slice by up to ``amount`` (a partial grant) in one atomic step.

        First, slices whose holder has not come back within its ``ttl`` (a crashed process)
        return to the budget. ``used`` is what the holder spent from its slice since its last
        call: it leaves the slice and stays spent (if the slice had expired meanwhile, it is
        charged again). ``settle`` is added unconditionally, as in :meth:`reserve`. The
        holder's slice then expires ``ttl`` seconds from now unless renewed by another call.
        """
        ...

    async def release_slice(self, keys: Sequence[str], *, holder: str, unspent: int) -> None:
        """End ``holder``'s slice: ``unspent`` goes back to the budget, the rest stays spent."""
        ...

    async def add_count(self, key: str, delta: int, *, now: float, window: float) -> int:
        """Add to a sliding-window counter and return its count over the last ``window``
        seconds (one-tenth-of-a-window buckets; ``now`` comes from the caller's clock)."""
        ...

    async def add_labels(self, agent: str, labels: Sequence[str]) -> frozenset[str]:
        """Add agent-scoped labels (they outlive tasks); returns the agent's full set."""
        ...

    async def labels(self, agent: str) -> frozenset[str]: ...

    async def record_decision(self, tree: str, allowed: bool) -> MonitorCounts:
        """Count one decision of a task tree; a permit resets the deny streak."""
        ...

    async def forget(self, keys: Sequence[str]) -> None:
        """Drop the budgets, window counters and monitor counts kept under ``keys`` (a task
        tree that ended). Revocations and agent-scoped labels are never dropped this way."""
        ...

    async def aclose(self) -> None: ...


def check_amount(name: str, value: int) -> None:
    """Budgets are Cedar Longs: whole, non-negative numbers."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def check_charges(charges: Sequence[Charge]) -> None:
    if not charges:
        raise ValueError("a reservation needs at least one charge")
    for c in charges:
        check_amount(f"limit of {c.key!r}", c.limit)
    if len({c.key for c in charges}) != len(charges):
        raise ValueError("a reservation names the same budget key twice")


def check_slice(charges: Sequence[Charge], amount: int, used: int, settle: int, ttl: float) -> None:
    check_charges(charges)
    for name, value in (("amount", amount), ("used", used), ("settle", settle)):
        check_amount(name, value)
    if not ttl > 0:
        raise ValueError(f"ttl must be positive seconds, got {ttl!r}")


def bucket_of(now: float, window: float) -> tuple[int, int]:
    """(current bucket index, oldest bucket index still in the window)."""
    if window <= 0:
        raise ValueError(f"window must be positive, got {window!r}")
    width = window / 10
    current = int(now // width)
    return current, current - 9
