"""Keeps one process's view of the revocation set in step with a shared store.

On start and after every reconnect the feed loads the whole set (a process that was away
may have missed broadcasts), then follows the store's log. Each revocation is handed to
``apply`` (which updates the in-process engine state) *before* the feed acknowledges it by
advancing its cursor: if ``apply`` fails, the same revocation is delivered again.

Whether the view can be trusted is :meth:`RevocationFeed.check`: it raises
:class:`StoreUnavailable` when the feed has never synced, lost the store, or has not heard
from it within ``max_staleness`` seconds, so decisions made meanwhile deny (fail closed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from tether.store.shared_state import Revocation, SharedStore, StoreUnavailable

__all__ = ["RevocationFeed"]

log = logging.getLogger("tether.store")


class RevocationFeed:
    def __init__(
        self,
        store: SharedStore,
        apply: Callable[[Revocation], None],
        *,
        max_staleness: float = 5.0,
        poll: float = 1.0,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll >= max_staleness:
            raise ValueError("poll must be shorter than max_staleness, or idle looks stale")
        self.store = store
        self._apply = apply
        self.max_staleness = max_staleness
        self.poll = poll
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self.seq = 0
        self.last_error: Exception | None = None
        self._synced = False
        self._last_contact: float | None = None

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless the revocation view is current."""
        if self.last_error is not None:
            raise StoreUnavailable(self.store.name, f"revocation feed: {self.last_error}")
        if not self._synced or self._last_contact is None:
            raise StoreUnavailable(self.store.name, "revocation feed has not synced yet")
        age = self._clock() - self._last_contact
        if age > self.max_staleness:
            raise StoreUnavailable(
                self.store.name,
                f"no word from the store for {age:.1f}s (limit {self.max_staleness}s)",
            )

    @property
    def healthy(self) -> bool:
        try:
            self.check()
        except StoreUnavailable:
            return False
        return True

    async def sync(self) -> None:
        """Load and apply the whole current set (raises :class:`StoreUnavailable`)."""
        snapshot = await self.store.revocations()
        for revocation in snapshot.revocations:
            self._apply(revocation)
        self.seq = snapshot.seq
        self._synced = True
        self._contact()

    async def poll_once(self) -> None:
        """Apply what arrived after the cursor (waiting up to ``poll`` seconds)."""
        entries = await self.store.revocations_after(self.seq, self.poll)
        if entries is None:
            log.warning(
                "revocation log of %s skipped past seq %d: reloading", self.store.name, self.seq
            )
            await self.sync()
            return
        for revocation in entries:
            self._apply(revocation)
            self.seq = revocation.seq
        self._contact()

    def _contact(self) -> None:
        self._last_contact = self._clock()
        self.last_error = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Sync, then follow the log forever, reconnecting with backoff.

        Reports started after the first sync attempt, whether or not it succeeded (a feed
        that cannot reach its store must not hang its owner: :meth:`check` denies instead).
        """
        started = False
        delay = self._backoff
        need_sync = True
        while True:
            try:
                if need_sync:
                    await self.sync()
                    need_sync = False
                else:
                    await self.poll_once()
                delay = self._backoff
            except Exception as exc:
                # Deliberately broad: a failing store *or* a failing apply must keep the loop
                # alive, mark the view untrusted, and redeliver after a full reload.
                self.last_error = exc
                need_sync = True
                log.warning("revocation feed of %s failed: %s", self.store.name, exc)
            if not started:
                started = True
                task_status.started()
            if need_sync:
                await anyio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
