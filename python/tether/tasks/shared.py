"""What a Guard shares with other processes through a store: revocations and budgets.

A :class:`SharedTree` is one task tree's shared state in this process. Every decision of
the tree goes through :meth:`SharedTree.decide`: a local freshness check of the revocation
feed (no I/O), then the Rust decision, then, for a permit, what it spent on each budget is
read from the tree's root (local) and charged to the shared budget's slice (sliced mode,
no I/O) or reserved on the store (strict mode, one round trip, done by the caller that
can await). A charge that cannot be covered turns the permit into a
:class:`SharedBudgetDenied` (kind ``BUDGET``): the permit is undone in Rust
(``engine.revert_permit``: what it spent goes back on the whole chain, and it counts as a
denial for the monitors) and the denial it becomes is the decision the receipts record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio
import msgspec

from tether._core import Decision, DenialKind, TaskHandle
from tether.store.budgets import BudgetSlice, StrictBudget
from tether.store.revocation_feed import RevocationFeed
from tether.store.shared_state import Charge, SharedStore, StoreUnavailable, check_amount
from tether.tasks.errors import Denied
from tether.tasks.shared_monitors import TreeMonitors

if TYPE_CHECKING:
    from tether.engine import Engine

__all__ = ["SharedBudgetDenied", "SharedBudgets", "SharedTree"]

log = logging.getLogger("tether.tasks")


class SharedBudgetDenied(Denied):
    """A permit whose spending the shared budget did not cover (kind ``BUDGET``).

    ``counts`` is False when the budget was not exhausted but this process's slice was
    empty while its refill was on the way: not the agent's doing, so not a denial for the
    task's monitors (deny streak, ratio).
    """

    def __init__(self, message: str, *, counts: bool, decision: Decision | None = None) -> None:
        super().__init__(message, decision, kind=DenialKind.BUDGET)
        self.counts = counts


@dataclass(frozen=True)
class SharedBudgets:
    """Which budgets of the state file a task tree shares through the Guard's store.

    The tree is named by its root task's txn (``guard.task(..., txn=...)`` lets several
    processes open the same tree); a budget's store key is ``tree/<txn>/<name>``.

    - ``mode="sliced"``: each process reserves ``slice_size`` ahead and spends it without
      I/O; a background task refills below ``low_water`` and renews the slice every
      ``hold_ttl / 3`` seconds. A process that crashed (or lost the store) for ``hold_ttl``
      loses its slice to the others. Worst-case overspend per budget: ``processes x
      overdraft`` (0 by default) plus ``slice_size`` per slice that lapsed that way
      (``hold_ttl=None``: slices never lapse, a crashed process's slice stays reserved).
    - ``mode="strict"``: one round trip per budgeted decision (``await task.require``),
      zero overspend. A synchronous ``task.authorize`` that would spend denies.
    """

    names: frozenset[str]
    mode: Literal["sliced", "strict"] = "sliced"
    slice_size: int = 10
    low_water: int | None = None
    overdraft: int = 0
    hold_ttl: float | None = 30.0

    def __post_init__(self) -> None:
        if self.mode not in ("sliced", "strict"):
            raise ValueError("mode must be 'sliced' or 'strict'")
        if isinstance(self.names, str) or not self.names:
            raise ValueError("names must be a non-empty set of budget names")
        object.__setattr__(self, "names", frozenset(self.names))
        check_amount("slice_size", self.slice_size)
        check_amount("overdraft", self.overdraft)
        if self.slice_size == 0:
            raise ValueError("slice_size must be positive")


class _Budget(msgspec.Struct):
    spent: int
    limit: int


class _TaskBudgets(msgspec.Struct):
    budgets: dict[str, _Budget]


# Reads only the budgets out of `context.task` (a tenth of a full json.loads).
_decode_budgets = msgspec.json.Decoder(_TaskBudgets).decode


def budget_key(txn: str, name: str) -> str:
    return f"tree/{txn}/{name}"


class SharedTree:
    """One task tree's shared state in this process (created with its root task)."""

    def __init__(
        self,
        *,
        txn: str,
        store: SharedStore,
        feed: RevocationFeed | None,
        fail_closed: bool,
        budgets: SharedBudgets | None,
        engine: Engine,
        root: TaskHandle,
        clock: Callable[[], float],
    ) -> None:
        self.txn = txn
        self.store = store
        self.feed = feed
        self.fail_closed = fail_closed
        self.config = budgets
        self._engine = engine
        self._root = root
        self._clock = clock
        self._lock = threading.Lock()
        self.slices: dict[str, BudgetSlice] = {}
        self.strict: dict[str, StrictBudget] = {}
        self._accounted: dict[str, int] = {}
        self._scope: anyio.CancelScope | None = None
        # Deny monitors over the tree across processes (`Guard(tree_monitors=True)`).
        self.monitors: TreeMonitors | None = None
        if budgets is None:
            return
        declared = self._read_budgets()
        unknown = budgets.names - declared.keys()
        if unknown:
            raise ValueError(
                f"shared budgets not declared in the state file: {', '.join(sorted(unknown))}"
            )
        # Every budget, shared or not: a refused permit gives back all it spent.
        self._accounted = {name: spent for name, (spent, _) in declared.items()}
        for name in sorted(budgets.names):
            limit = declared[name][1]
            charges = [Charge(budget_key(txn, name), limit)]
            if budgets.mode == "strict":
                self.strict[name] = StrictBudget(store, charges)
            else:
                self.slices[name] = BudgetSlice(
                    store,
                    charges,
                    slice_size=budgets.slice_size,
                    low_water=budgets.low_water,
                    overdraft=budgets.overdraft,
                    hold_ttl=budgets.hold_ttl,
                    clock=clock,
                )

    def _read_budgets(self) -> dict[str, tuple[int, int]]:
        """(spent, limit) of every budget of the tree, from its root (local, no I/O)."""
        state = _decode_budgets(self._engine.task_context(self._root, now=self._clock()))
        return {n: (b.spent, b.limit) for n, b in state.budgets.items()}

    def check_fresh(self) -> None:
        """Raise ``StoreUnavailable`` when the revocation view cannot be trusted."""
        if self.fail_closed and self.feed is not None:
            self.feed.check()

    def decide(
        self, handle: TaskHandle, decide: Callable[[], Decision]
    ) -> tuple[Decision, dict[str, int]]:
        """Decide and charge the shared slices; returns the decision and what a permit
        spent on each budget (strict budgets among them still need :meth:`reserve`).
        Raises :class:`SharedBudgetDenied` when a slice cannot cover a permit (undone)."""
        self.check_fresh()
        if self.config is None:
            return decide(), {}
        # Held across the decision so that what the root spent is this decision's doing.
        with self._lock:
            d = decide()
            if not d.allowed:
                return d, {}
            spent = self._read_budgets()
            owed: dict[str, int] = {}
            for name, before in self._accounted.items():
                now_spent = spent[name][0]
                if now_spent > before:
                    owed[name] = now_spent - before
                    self._accounted[name] = now_spent
            paid: list[str] = []
            short: list[str] = []
            for n in owed:
                if n in self.slices:
                    (paid if self.slices[n].try_spend(owed[n]) else short).append(n)
            if not short:
                return d, owed
            for n in paid:
                self.slices[n].refund(owed[n])
            if any(self.slices[n].exhausted for n in short):
                raise self._undo(handle, owed, short, "no budget left in this process's slice")
            # Not the agent's doing: the refill is on its way. Not a denial for monitors.
            raise self._undo(handle, owed, short, "this process's slice is being refilled", False)

    def owes(self, spent: dict[str, int]) -> list[str]:
        """The strict budgets a permit's spending must still be reserved on."""
        return [n for n in spent if n in self.strict] if self.strict else []

    async def reserve(
        self, handle: TaskHandle, spent: dict[str, int], report: Callable[[Decision], object]
    ) -> None:
        """Strict mode: reserve what a permit spent, one round trip per budget. Raises
        ``SharedBudgetDenied`` when the shared budget cannot cover it and
        ``StoreUnavailable`` when the store cannot answer (the denial the permit became is
        given to ``report`` first); either way the permit is undone (what was reserved on
        other budgets goes back)."""
        reserved: list[str] = []
        short: list[str] = []
        try:
            for n in self.owes(spent):
                if await self.strict[n].spend(spent[n]):
                    reserved.append(n)
                else:
                    short.append(n)
        except StoreUnavailable as exc:
            await self._give_back(reserved, spent)
            with self._lock:
                undone = self._undo(handle, spent, self.owes(spent), str(exc), False)
            if undone.decision is not None:
                report(undone.decision)
            raise
        if short:
            await self._give_back(reserved, spent)
            with self._lock:
                raise self._undo(handle, spent, short, "the shared budget cannot cover it")

    async def _give_back(self, names: list[str], spent: dict[str, int]) -> None:
        for n in names:
            try:
                await self.strict[n].refund(spent[n])
            except Exception as exc:  # stays reserved: over-counts, never overspends
                log.warning("reservation on %s not returned: %s", self.store.name, exc)

    def refuse(self, handle: TaskHandle, spent: dict[str, int], why: str) -> SharedBudgetDenied:
        """Undo a permit the caller cannot let stand (strict spending without a round trip)."""
        with self._lock:
            return self._undo(handle, spent, self.owes(spent), why)

    def _undo(
        self,
        handle: TaskHandle,
        spent: dict[str, int],
        names: list[str],
        why: str,
        counts: bool = True,
    ) -> SharedBudgetDenied:
        """With ``self._lock`` held: give back locally everything the permit spent (every
        task of its chain, and the root's accounting) and turn it into the denial."""
        for n, amount in spent.items():
            self._accounted[n] -= amount
        exc = self.denial(names, why, counts=counts)
        exc.decision = self._engine.revert_permit(handle, spent, message=str(exc), counts=counts)
        return exc

    def denial(self, names: list[str], why: str, *, counts: bool = True) -> SharedBudgetDenied:
        """A refusal by the shared budget; ``counts``: a denial for the task's monitors."""
        which = ", ".join(f"`{n}`" for n in sorted(names))
        if counts:
            what = "exhausted across processes"
        else:
            what = "not yet available here"
        return SharedBudgetDenied(
            f"shared budget {which} of tree {self.txn} {what}: {why}", counts=counts
        )

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Reserve the first slices, then keep them topped up in the background."""
        for s in self.slices.values():
            try:
                await s.refill()
            except Exception as exc:  # the background refill retries; spends deny meanwhile
                log.warning("first slice of tree %s on %s: %s", self.txn, self.store.name, exc)
        if self.slices:
            self._scope = anyio.CancelScope()
            tg.start_soon(self._refill_forever, self._scope)

    async def _refill_forever(self, scope: anyio.CancelScope) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                for s in self.slices.values():
                    tg.start_soon(s.run)

    async def release(self) -> None:
        """Give the unused slices back (on task end and revocation); later spends deny."""
        if self._scope is not None:
            self._scope.cancel()
        for s in self.slices.values():
            if s.closed:
                continue
            try:
                await s.release()
            except Exception as exc:
                # Stranded until the budget key expires (store state_ttl) or is forgotten.
                log.warning("slice of tree %s not returned to %s: %s", self.txn, s.store.name, exc)
