"""Spending a budget shared by many processes, in two modes.

**Strict** (:class:`StrictBudget`): every spend is one atomic check-and-reserve on the
store, one round trip per budgeted decision, zero overspend, no budget stranded anywhere.

**Sliced** (:class:`BudgetSlice`): the process reserves a slice of the shared budget ahead
of time and spends from it synchronously, with no I/O on the decision path; a background
task tops the slice up when it runs low and gives the unused part back on release. Since
every slice is reserved before it is spent, slices alone never overspend. What they cost
is early denials: up to ``slice_size`` per process can sit reserved but unused while
another process is refused (and a process that crashes strands its slice).

``overdraft`` lets a process keep spending while a refill is in flight (or the store is
down) by running a debt, settled unconditionally at the next refill. A process stops
overdrafting for good once it has seen the shared budget at or past its limit, so each
slice holder can overspend at most ``overdraft`` and the worst case for a budget is
``processes x overdraft``. The default overdraft is 0: sliced mode then never overspends.

With ``hold_ttl`` the slice is held under a holder id that expires unless renewed: the
background task renews it (and reports what was spent from it) every ``hold_ttl / 3``
seconds, and a process that crashed gives its slice back to the others after ``hold_ttl``
instead of stranding it. The price is that the part of a crashed process's slice it had
spent since its last renewal is given back too: at most ``slice_size`` per crash, on top of
the overdraft bound. The same holds for a live process cut off from the store for longer
than ``hold_ttl``: it stops spending its slice before the store gives it away, but what it
spent since its last renewal is handed out again (and charged to it when it reports back).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskStatus

from tether.store.shared_state import Charge, SharedStore, check_amount, check_charges

__all__ = ["BudgetSlice", "StrictBudget"]

log = logging.getLogger("tether.store")


class StrictBudget:
    """One round trip per spend; never overspends."""

    def __init__(self, store: SharedStore, charges: Sequence[Charge]) -> None:
        check_charges(charges)
        self.store = store
        self.charges = tuple(charges)

    async def spend(self, amount: int) -> bool:
        """Reserve ``amount`` on every charge, or nothing (raises ``StoreUnavailable``)."""
        grant = await self.store.reserve(self.charges, amount)
        return grant.granted == amount

    async def refund(self, amount: int) -> None:
        """Give back a reservation whose action did not happen (raises ``StoreUnavailable``)."""
        await self.store.release([c.key for c in self.charges], amount)


class BudgetSlice:
    """A per-process slice of a shared budget, spent without I/O."""

    def __init__(
        self,
        store: SharedStore,
        charges: Sequence[Charge],
        *,
        slice_size: int,
        low_water: int | None = None,
        overdraft: int = 0,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        hold_ttl: float | None = None,
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_charges(charges)
        check_amount("slice_size", slice_size)
        check_amount("overdraft", overdraft)
        if slice_size == 0:
            raise ValueError("slice_size must be positive")
        if hold_ttl is not None and not hold_ttl > 0:
            raise ValueError(f"hold_ttl must be positive seconds, got {hold_ttl!r}")
        self.hold_ttl = hold_ttl
        self.holder = holder or secrets.token_hex(8)
        self._clock = clock
        # With hold_ttl: what was spent from the slice since the last renewal, and until
        # when (on `clock`) the store keeps the slice for us.
        self._used = 0
        self._valid_until = -1.0 if hold_ttl is not None else float("inf")
        self.store = store
        self.charges = tuple(charges)
        self.slice_size = slice_size
        self.low_water = slice_size // 2 if low_water is None else low_water
        self.overdraft = overdraft
        self.available = 0  # reserved on the store, not yet spent
        self.debt = 0  # spent beyond the reservation, not yet settled
        self.closed = False
        self.last_error: Exception | None = None
        self._overdraft_ok = overdraft > 0
        self._exhausted = False
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._backoff = backoff
        self._max_backoff = max_backoff
        # Where run() waits: a spend on another thread wakes it through the loop.
        self._loop_thread: int | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None

    def _poke(self) -> None:
        """Wake the background refill, from the event loop's thread or any other."""
        if self._loop_thread is None or threading.get_ident() == self._loop_thread:
            self._wake.set()
            return
        try:
            anyio.from_thread.run_sync(self._wake.set, token=self._token)
        except RuntimeError:  # the loop has stopped: nothing left to wake
            pass

    def try_spend(self, amount: int) -> bool:
        """Spend from the slice (or the overdraft) without I/O; False means deny."""
        check_amount("amount", amount)
        if self.closed:
            return False
        held = self.available
        if self.hold_ttl is not None and self._clock() >= self._valid_until:
            held = 0  # lapsed: the store may have given it to someone else
        if amount <= held:
            self.available -= amount
            self._used += amount
        elif self._overdraft_ok and self.debt + amount - held <= self.overdraft:
            self.debt += amount - held
            self.available -= held
            self._used += held
        else:
            self._poke()
            return False
        if self.available < self.low_water:
            self._poke()
        return True

    def refund(self, amount: int) -> None:
        """Undo the :meth:`try_spend` just made (its action did not happen): debt first,
        then the slice. What a renewal already reported as used stays spent (it may
        over-count, never overspend)."""
        check_amount("amount", amount)
        if self._lock.locked():
            # A refill (maybe on another thread) is settling debt and usage: keep it spent.
            return
        from_debt = min(self.debt, amount)
        self.debt -= from_debt
        back = min(amount - from_debt, self._used)
        self._used -= back
        self.available += back

    async def refill(self) -> int:
        """Settle the debt and top the slice up to ``slice_size``; returns what was granted.

        Raises ``StoreUnavailable``; the slice keeps what it holds, which stays safe to spend.
        """
        async with self._lock:
            if self.closed:
                return 0
            debt = self.debt
            want = max(0, self.slice_size - self.available)
            if self.hold_ttl is None:
                grant = await self.store.reserve(self.charges, want, settle=debt, partial=True)
            else:
                used = self._used
                if self._clock() >= self._valid_until:
                    # The store may have given our slice away: what we held is gone.
                    self.available = 0
                    want = self.slice_size
                sent = self._clock()  # the store's expiry starts after this
                grant = await self.store.reserve_slice(
                    self.charges,
                    want,
                    holder=self.holder,
                    ttl=self.hold_ttl,
                    used=used,
                    settle=debt,
                )
                self._used -= used
                self._valid_until = sent + self.hold_ttl
            self.debt -= debt
            self.available += grant.granted
            if grant.remaining <= 0:
                # The shared budget is spent: from now on a debt could only be overspend.
                self._overdraft_ok = False
                self._exhausted = True
            return grant.granted

    @property
    def exhausted(self) -> bool:
        """The store has reported the shared budget used up (as of the last refill)."""
        return self._exhausted

    async def release(self) -> None:
        """Settle the debt and give the unused slice back; later spends deny."""
        async with self._lock:
            self.closed = True
            keys = [c.key for c in self.charges]
            if self.debt:
                await self.store.reserve(self.charges, 0, settle=self.debt)
                self.debt = 0
            if self.hold_ttl is not None:
                # Report what was spent first: should the store have let the slice lapse,
                # that spending is charged again instead of being handed out twice.
                lapsed = self._clock() >= self._valid_until
                await self.store.reserve_slice(
                    self.charges, 0, holder=self.holder, ttl=self.hold_ttl, used=self._used
                )
                self._used = 0
                unspent = 0 if lapsed else self.available
                await self.store.release_slice(keys, holder=self.holder, unspent=unspent)
                self.available = 0
            elif self.available:
                await self.store.release(keys, self.available)
                self.available = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Refill whenever the slice runs low. Started after the first try; returns once
        released or once the store reports the budget used up (refill() still works)."""
        started = False
        delay = self._backoff
        self._loop_thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()
        while not self.closed:
            failed = False
            try:
                await self.refill()
                self.last_error = None
                delay = self._backoff
            except Exception as exc:
                # Keep refilling in the background whatever failed; spends meanwhile use
                # what the slice holds, then deny (the overdraft still bounds any debt).
                self.last_error = exc
                failed = True
                log.warning("budget slice refill on %s failed: %s", self.store.name, exc)
            if not started:
                started = True
                task_status.started()
            if failed:
                await anyio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            if self.available >= self.low_water and not self._exhausted:
                self._wake = anyio.Event()
                # With hold_ttl, renew well before the store would give the slice away.
                with anyio.move_on_after(self._renew_every):
                    await self._wake.wait()
            elif self._exhausted and self.hold_ttl is None:
                return
            elif self._exhausted:
                # Keep the (empty) slice renewed; it still reports what gets spent.
                with anyio.move_on_after(self._renew_every):
                    await anyio.sleep_forever()

    @property
    def _renew_every(self) -> float:
        return float("inf") if self.hold_ttl is None else self.hold_ttl / 3
