"""A queue drained to the store in the background, retried with backoff until it is."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

log = logging.getLogger("tether.tasks")


class RetryingSender:
    """Runs ``flush`` on the Guard's task group until it succeeds, one run at a time.

    Call :meth:`kick` after queuing: a run is started unless one is on its way (it drains
    what was queued meanwhile). ``has_pending`` says whether anything is left to send."""

    def __init__(
        self,
        flush: Callable[[], Awaitable[None]],
        has_pending: Callable[[], bool],
        *,
        in_background: Callable[[Callable[[], Any]], None],
        what: str,
    ) -> None:
        self._flush = flush
        self._has_pending = has_pending
        self._in_background = in_background
        self._what = what
        self._sending = False

    def kick(self) -> None:
        if not self._sending:
            self._sending = True
            self._in_background(self._run)

    async def _run(self) -> None:
        delay = 0.05
        try:
            while True:
                try:
                    await self._flush()
                except Exception as exc:
                    log.warning("%s not yet stored: %s", self._what, exc)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                self._sending = False
                if not self._has_pending():  # nothing queued since the flush ended
                    return
                self._sending = True
        except BaseException:
            self._sending = False
            raise
