"""Shadow mode: a candidate policy set decides beside the live one, never enforced.

The live decision is made and returned as usual; the request and its verdict are queued
(one deque append on the deciding thread) and a background thread decides them again
with the candidate, counting differences. With an `AuditLog` attached, the log's writer
thread does the comparison instead and writes the candidate's differing verdict into the
receipt (`"shadow": "allow"|"deny"`). An engine without a shadow pays nothing: the
wrapping happens on the instance only when `engine.shadow(...)` is called.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from tether.engine import Engine

_METHODS = ("authorize", "is_allowed", "authorize_batch")


class ShadowDiff(msgspec.Struct, frozen=True):
    """One request the candidate decides differently (uids as given, no context)."""

    principal: str
    action: str
    resource: str
    live: bool
    shadow: bool


class ShadowStats(msgspec.Struct, frozen=True):
    checked: int  # decisions compared
    diffs: int  # of which the candidate decided differently
    newly_denied: int  # live allowed, candidate denied
    newly_allowed: int  # live denied, candidate allowed
    errors: int  # the candidate refused the request (counted as a deny)
    skipped: int  # decisions that could not be compared (task state not captured)
    dropped: int  # decisions not compared because the queue was full
    recent: list[ShadowDiff]  # the last differences, oldest first


def _uid(x: Any) -> str:
    from tether.audit.log import uid_text

    return uid_text(x)


class Shadow:
    """A candidate engine and the running comparison against the live decisions."""

    def __init__(self, candidate: Engine, *, capacity: int = 65536, keep: int = 64) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.candidate = candidate
        self.capacity = capacity
        self._checked = self._newly_denied = self._newly_allowed = 0
        self._errors = self._skipped = self._dropped = 0
        self._recent: deque[ShadowDiff] = deque(maxlen=keep)
        self._q: deque[tuple[Any, Any, Any, Any, bool]] = deque()
        self._idle = threading.Condition()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._busy = False
        self._watched: list[tuple[Engine, dict[str, Any], set[str]]] = []

    # -- comparison (runs off the hot path) --------------------------------

    def compare(
        self,
        principal: Any,
        action: Any,
        resource: Any,
        context: Mapping[str, Any] | None,
        live: bool,
    ) -> bool | None:
        """Decide once with the candidate and count; the candidate's verdict when it
        differs from `live`, else None."""
        try:
            shadow = self.candidate.is_allowed(principal, action, resource, context)
        except Exception:  # any failure of the candidate is its deny, and counted
            self._errors += 1
            shadow = False  # the candidate fails closed, as it would if enforced
        self._checked += 1
        if shadow == live:
            return None
        if live:
            self._newly_denied += 1
        else:
            self._newly_allowed += 1
        self._recent.append(ShadowDiff(_uid(principal), _uid(action), _uid(resource), live, shadow))
        return shadow

    def skip(self) -> None:
        self._skipped += 1

    def stats(self) -> ShadowStats:
        return ShadowStats(
            checked=self._checked,
            diffs=self._newly_denied + self._newly_allowed,
            newly_denied=self._newly_denied,
            newly_allowed=self._newly_allowed,
            errors=self._errors,
            skipped=self._skipped,
            dropped=self._dropped,
            recent=list(self._recent),
        )

    # -- the engine's own queue (when no AuditLog does the comparison) ------

    def watch(self, engine: Engine) -> None:
        """Queue every decision of `engine` (wrapped on the instance) for comparison."""
        original = {m: getattr(engine, m) for m in _METHODS}
        wrapped_before = {m for m in _METHODS if m in engine.__dict__}
        q, capacity = self._q, self.capacity

        def put(item: tuple[Any, Any, Any, Any, bool]) -> None:
            if len(q) >= capacity:
                self._dropped += 1
            else:
                q.append(item)

        authorize: Callable[..., Any] = original["authorize"]
        is_allowed: Callable[..., bool] = original["is_allowed"]
        batch: Callable[..., list[bool]] = original["authorize_batch"]

        def shadowed_authorize(
            principal: Any,
            action: Any,
            resource: Any,
            context: Mapping[str, Any] | None = None,
            **kw: Any,
        ) -> Any:
            d = authorize(principal, action, resource, context, **kw)
            put((principal, action, resource, context, d.allowed))
            return d

        def shadowed_is_allowed(
            principal: Any, action: Any, resource: Any, context: Mapping[str, Any] | None = None
        ) -> bool:
            ok = is_allowed(principal, action, resource, context)
            put((principal, action, resource, context, ok))
            return ok

        def shadowed_batch(requests: Any, context: Mapping[str, Any] | None = None) -> list[bool]:
            requests = list(requests)
            out = batch(requests, context)
            for r, ok in zip(requests, out, strict=True):
                put((r[0], r[1], r[2], r[3] if len(r) == 4 else context, ok))
            return out

        engine.authorize = shadowed_authorize  # type: ignore[method-assign]
        engine.is_allowed = shadowed_is_allowed  # type: ignore[method-assign]
        engine.authorize_batch = shadowed_batch  # type: ignore[method-assign]
        self._watched.append((engine, original, wrapped_before))
        self._start()

    def unwatch(self, engine: Engine) -> None:
        """Stop queueing `engine`'s decisions (an `AuditLog` takes over the comparison)."""
        for i, (e, original, wrapped_before) in enumerate(self._watched):
            if e is engine:
                for m in _METHODS:
                    if m in wrapped_before:
                        setattr(engine, m, original[m])
                    else:
                        engine.__dict__.pop(m, None)
                del self._watched[i]
                return

    def flush(self) -> None:
        """Wait until every queued decision has been compared."""
        with self._idle:
            while (self._q or self._busy) and self._thread is not None:
                self._wake.set()
                self._idle.wait(0.5)

    def close(self) -> None:
        for e, _, _ in list(self._watched):
            self.unwatch(e)
        if self._thread is not None:
            self.flush()
            self._stop = True
            self._wake.set()
            self._thread.join()
            self._thread = None

    def _start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="tether-shadow", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        q = self._q
        while not self._stop:
            self._wake.wait(0.05)
            self._wake.clear()
            self._busy = True  # what was taken off the queue is compared before `flush` ends
            try:
                while q:
                    p, a, r, ctx, live = q.popleft()
                    self.compare(p, a, r, ctx, live)
            finally:
                with self._idle:
                    self._busy = False
                    self._idle.notify_all()
