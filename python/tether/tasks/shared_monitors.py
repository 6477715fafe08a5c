"""Deny-streak and deny-ratio monitors over a task tree that spans processes.

Each process's Rust monitors count its own decisions. With ``Guard(tree_monitors=True)``
every counted decision of a shared tree is also sent (in the background, in order) to the
store's ``record_decision``, which keeps the tree's counts across processes; when they pass
the Guard's :class:`~tether.tasks.monitors.Monitors` thresholds the tree's root is revoked
here and, through the store, in every process. Decisions never wait on it: the tree is
revoked a round trip after the decision that tripped it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

from tether.store.shared_state import MonitorCounts, SharedStore
from tether.tasks.monitors import Monitors
from tether.tasks.retrying import RetryingSender

__all__ = ["TreeMonitors"]


class TreeMonitors:
    """Sends a tree's decisions to the store; trips on the counts it answers."""

    def __init__(
        self,
        store: SharedStore,
        key: str,
        monitors: Monitors,
        *,
        trip: Callable[[str], None],
        in_background: Callable[[Callable[[], Any]], None],
    ) -> None:
        self.store = store
        self.key = key
        self.monitors = monitors
        self._trip = trip
        self.pending: deque[bool] = deque()
        self.tripped: str | None = None
        self._lock = anyio.Lock()
        self._sender = RetryingSender(
            self.flush,
            lambda: bool(self.pending) and self.tripped is None,
            in_background=in_background,
            what=f"tree decisions in {store.name}",
        )

    def record(self, allowed: bool) -> None:
        """Queue one counted decision (a permit, or a denial that counts for monitors)."""
        if self.tripped is not None:
            return
        self.pending.append(allowed)
        self._sender.kick()

    async def flush(self) -> None:
        """Send every queued decision now, in order (raises ``StoreUnavailable``)."""
        async with self._lock:
            while self.pending and self.tripped is None:
                counts = await self.store.record_decision(self.key, self.pending[0])
                self.pending.popleft()
                self._check(counts)

    def _check(self, c: MonitorCounts) -> None:
        m = self.monitors
        why = None
        if m.max_deny_streak and c.deny_streak >= m.max_deny_streak:
            why = f"{c.deny_streak} denials in a row"
        elif m.max_deny_ratio and c.denials >= max(m.min_denials, 1):
            ratio = c.denials / c.decisions
            if ratio > m.max_deny_ratio:
                why = f"deny ratio {ratio:.2f} ({c.denials} of {c.decisions} decisions denied)"
        if why is not None:
            self.tripped = f"tree monitor: {why} across the tree's processes"
            self.pending.clear()
            self._trip(self.tripped)
