"""In-process shared state: the default when everything runs in one process.

Every method completes without awaiting anything but its own waits, so each one is atomic
on the event loop; no lock is needed. Works on any anyio backend.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import anyio
import msgspec

from tether.store.shared_state import (
    Charge,
    Grant,
    MonitorCounts,
    Revocation,
    RevocationSnapshot,
    bucket_of,
    check_amount,
    check_charges,
    check_slice,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """:class:`~tether.store.shared_state.SharedStore` in a few dicts."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # when budget slices expire
        # Per budget key: holder -> [amount held, expiry on `clock`].
        self._slices: defaultdict[str, dict[str, list[float]]] = defaultdict(dict)
        self._revoked: dict[str, Revocation] = {}
        self._log: list[Revocation] = []
        self._changed = anyio.Event()
        self._spent: defaultdict[str, int] = defaultdict(int)
        self._windows: defaultdict[str, dict[int, int]] = defaultdict(dict)
        self._labels: defaultdict[str, set[str]] = defaultdict(set)
        self._monitors: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0, 0])

    @property
    def name(self) -> str:
        return "memory"

    async def revoke(self, revocation: Revocation) -> Revocation:
        stored = msgspec.structs.replace(revocation, seq=len(self._log) + 1)
        self._revoked[stored.key] = stored
        self._log.append(stored)
        self._changed.set()
        self._changed = anyio.Event()
        return stored

    async def revocations(self) -> RevocationSnapshot:
        return RevocationSnapshot(tuple(self._revoked.values()), len(self._log))

    async def revocations_after(self, seq: int, wait: float) -> Sequence[Revocation] | None:
        if seq >= len(self._log):
            with anyio.move_on_after(wait):
                await self._changed.wait()
        return self._log[seq:]

    async def reserve(
        self, charges: Sequence[Charge], amount: int, *, settle: int = 0, partial: bool = False
    ) -> Grant:
        check_charges(charges)
        check_amount("amount", amount)
        check_amount("settle", settle)
        for c in charges:
            self._spent[c.key] += settle
        room = min(c.limit - self._spent[c.key] for c in charges)
        if partial:
            granted = max(0, min(amount, room))
        else:
            granted = amount if amount <= room else 0
        for c in charges:
            self._spent[c.key] += granted
        return Grant(granted, room - granted)

    async def release(self, keys: Sequence[str], amount: int) -> None:
        check_amount("amount", amount)
        for key in keys:
            self._spent[key] = max(0, self._spent[key] - amount)

    async def spent(self, key: str) -> int:
        return self._spent.get(key, 0)

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
        check_slice(charges, amount, used, settle, ttl)
        now = self._clock()
        for c in charges:
            slices = self._slices[c.key]
            for h in [h for h, (_, exp) in slices.items() if exp <= now]:
                self._spent[c.key] -= int(slices.pop(h)[0])
            held = int(slices.get(holder, [0, 0])[0])
            from_slice = min(used, held)
            self._spent[c.key] += used - from_slice + settle
            slices[holder] = [held - from_slice, now + ttl]
        room = min(c.limit - self._spent[c.key] for c in charges)
        granted = max(0, min(amount, room))
        for c in charges:
            self._spent[c.key] += granted
            self._slices[c.key][holder][0] += granted
        return Grant(granted, room - granted)

    async def release_slice(self, keys: Sequence[str], *, holder: str, unspent: int) -> None:
        check_amount("unspent", unspent)
        for key in keys:
            held = self._slices[key].pop(holder, None)
            if held is not None:
                self._spent[key] = max(0, self._spent[key] - min(unspent, int(held[0])))

    async def add_count(self, key: str, delta: int, *, now: float, window: float) -> int:
        check_amount("delta", delta)
        current, oldest = bucket_of(now, window)
        buckets = self._windows[key]
        buckets[current] = buckets.get(current, 0) + delta
        for b in [b for b in buckets if b < oldest]:
            del buckets[b]
        return sum(buckets.values())

    async def add_labels(self, agent: str, labels: Sequence[str]) -> frozenset[str]:
        held = self._labels[agent]
        held.update(labels)
        return frozenset(held)

    async def labels(self, agent: str) -> frozenset[str]:
        return frozenset(self._labels.get(agent, ()))

    async def record_decision(self, tree: str, allowed: bool) -> MonitorCounts:
        counts = self._monitors[tree]
        counts[0] += 1
        if allowed:
            counts[2] = 0
        else:
            counts[1] += 1
            counts[2] += 1
        return MonitorCounts(*counts)

    async def forget(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._spent.pop(key, None)
            self._slices.pop(key, None)
            self._windows.pop(key, None)
            self._monitors.pop(key, None)

    async def aclose(self) -> None:
        return None
