"""The receipt writer: decisions are queued on the hot path and encoded, chained,
checkpointed and written by one background thread.

The hot path only appends a tuple to a deque (thread-safe under the GIL); hashing,
encoding and I/O happen on the writer thread. Memory is bounded by `capacity` queued
decisions; when the sink cannot keep up the `overflow` policy applies:

- "block": the deciding thread waits until the writer has made room;
- "drop": the decision is not recorded; drops are counted and the count is written in
  the next checkpoint, so a verifier sees that receipts are missing;
- "deny": the decision call raises `AuditOverflow` (the action is refused; task state
  effects already committed stay counted, which can only make later decisions stricter).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

from tether.audit.errors import AuditError, AuditOverflow
from tether.audit.records import (
    DECODER,
    ENCODER,
    GENESIS,
    Receipt,
    digest,
    key_id,
    line_hash,
    sign_checkpoint,
)
from tether.audit.sinks import CallableSink, JsonlFileSink, Sink

if TYPE_CHECKING:
    from tether._core import Decision
    from tether.engine import Engine
    from tether.shadow import Shadow
    from tether.tasks import Task

Overflow = Literal["block", "drop", "deny"]

# Queue entries: a task decision is `(task, action, resource, context, decision, now)`,
# or with what was captured at decision time `(..., now, state, lease_ids)`; a plain
# engine decision is `(None, time, version, principal, action, resource, context, decision)`.
_ENGINE = None

# Context keys whose values are never written, even with `record_requests=True`.
_SECRET_KEY = re.compile(r"(?i)(secret|token|password|passwd|credential|authorization|api_?key)")
_JWT = re.compile(r"^eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
REDACTED = "[redacted]"


def uid_text(x: Any) -> str:
    """The Cedar uid text of an entity argument as callers pass it."""
    if isinstance(x, str):
        return x
    if isinstance(x, tuple) and len(x) == 2:
        return f'{x[0]}::"{x[1]}"'
    t = getattr(x, "type", None)
    i = getattr(x, "id", None)
    if isinstance(t, str) and isinstance(i, str):
        return f'{t}::"{i}"'
    if isinstance(x, Mapping):
        uid = x.get("uid", x)
        if isinstance(uid, Mapping) and "type" in uid and "id" in uid:
            return f'{uid["type"]}::"{uid["id"]}"'
    return repr(x)


def redact(value: Any) -> Any:
    """A JSON-able copy of a context with secrets replaced by "[redacted]"."""
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return REDACTED if _JWT.match(value) else value
    if value is None or isinstance(value, bool | int | float):
        return value
    if type(value).__name__ == "Secret":
        return REDACTED
    t = getattr(value, "type", None)
    i = getattr(value, "id", None)
    if isinstance(t, str) and isinstance(i, str):
        return {"__entity": {"type": t, "id": i}}
    return REDACTED


_DIGEST_ENC = msgspec.json.Encoder(order="sorted", enc_hook=lambda o: redact(o))


def context_digest(context: Mapping[str, Any] | None) -> str:
    """SHA-256 of the redacted context, keys sorted (stable across processes)."""
    return digest(_DIGEST_ENC.encode(redact(context or {})))


def denial_kind(d: Decision) -> str | None:
    if d.allowed:
        return None
    if d.revoked is not None:
        return "revoked"
    if d.obligations:
        return "approval"
    if d.errors:
        return "error"
    if d.reasons:
        return "forbid"
    return "no-permit"


class AuditLog:
    """A hash-chained receipt log written by a background thread.

    `target` is a path (rotating JSONL file), a `Sink`, or a callable receiving each
    encoded line. Use as a context manager, or call `start()` and `close()`. Feed it
    with `Guard(..., audit=log)` for task decisions and `log.attach(engine)` for plain
    engine decisions.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | Sink | Callable[[bytes], object],
        *,
        capacity: int = 65536,
        overflow: Overflow = "block",
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        checkpoint_every: int = 10000,
        record_requests: bool = False,
        task_state: bool = False,
        flush_interval: float = 0.05,
        clock: Callable[[], float] = time.time,
        shadow: Engine | Shadow | None = None,
    ) -> None:
        if overflow not in ("block", "drop", "deny"):
            raise ValueError(f"overflow must be block, drop or deny, not {overflow!r}")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if signing_key is not None and not isinstance(signing_key.curve, ec.SECP256R1):
            raise ValueError("signing_key must be a P-256 key (ES256)")
        if isinstance(target, str | os.PathLike):
            self.sink: Sink = JsonlFileSink(target)
        elif callable(target) and not hasattr(target, "write"):
            self.sink = CallableSink(target)
        else:
            self.sink = target  # type: ignore[assignment]
        self.capacity = capacity
        self.overflow = overflow
        self.signing_key = signing_key
        self.kid = key_id(signing_key.public_key()) if signing_key is not None else None
        self.checkpoint_every = checkpoint_every
        self.record_requests = record_requests
        self.task_state = task_state
        self.flush_interval = flush_interval
        self.clock = clock
        # Shadow mode: a candidate engine decides each receipted request on the writer
        # thread (never enforced); a different verdict goes in the receipt's `shadow`.
        self.shadow: Shadow | None = None
        if shadow is not None:
            from tether.shadow import Shadow

            self.shadow = shadow if isinstance(shadow, Shadow) else Shadow(shadow)
        self.written = 0  # decision receipts written
        self.dropped = 0  # decisions dropped by the "drop" policy
        self.refused = 0  # decisions refused by the "deny" policy
        self.blocked = 0  # times a deciding thread waited for room
        self._q: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._stop = False
        self._draining = False
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._prev = GENESIS
        self._since_mark = 0
        self._dropped_written = 0
        self._failure: BaseException | None = None
        # Writer-thread caches: a task's base context is the same dict on every call,
        # and entity handles repeat; both would otherwise be re-encoded per receipt.
        self._last_context: tuple[Any, str] | None = None
        self._uids: dict[Any, str] = {}
        self._offsets: dict[int, float] = {}  # guard id -> log clock minus task clock
        self._headers: dict[Any, tuple[str, str, str | None]] = {}
        self._actions: dict[Any, str] = {}

    @property
    def shadow_checked(self) -> int:
        return 0 if self.shadow is None else self.shadow.stats().checked

    @property
    def shadow_diffs(self) -> int:
        return 0 if self.shadow is None else self.shadow.stats().diffs

    @property
    def shadow_skipped(self) -> int:
        """Task decisions not compared: logs without `task_state` lack the exact state."""
        return 0 if self.shadow is None else self.shadow.stats().skipped

    # -- lifecycle -------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            return self
        tail = self.sink.tail()
        if tail is not None:
            try:
                last = DECODER.decode(tail)
            except msgspec.DecodeError as e:
                msg = f"cannot continue the log: its last line is not a receipt: {e}"
                raise AuditError(msg) from e
            self._seq = last.seq + 1
            self._prev = line_hash(tail)
            # Counts run over the whole log, so a verifier can compare them.
            self.written = last.count or 0
            self.dropped = self._dropped_written = last.dropped or 0
        self.sink.write([self._checkpoint("open")])
        self._thread = threading.Thread(target=self._run, name="tether-audit", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Write what is queued, a closing checkpoint, and close the sink."""
        if self._thread is None:
            return
        self._stop = True
        self._wake.set()
        self._thread.join()
        self._thread = None
        try:
            if self._failure is None:
                self._drain()
                self.sink.write([self._checkpoint("close")])
        except Exception as e:
            self._failure = e
        finally:
            self.sink.close()
        if self._failure is not None:
            raise AuditError(f"receipt sink failed: {self._failure}") from self._failure

    def flush(self) -> None:
        """Wait until everything queued so far is written (for tests and shutdown)."""
        with self._room:
            self._wake.set()
            while (
                (self._q or self._draining) and self._thread is not None and self._failure is None
            ):
                self._room.wait(0.5)
                self._wake.set()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- hot path --------------------------------------------------------

    def task_decision(
        self,
        task: Task,
        action: Any,
        resource: Any,
        context: Mapping[str, Any] | None,
        decision: Decision,
        now: float | None = None,
    ) -> None:
        """Queue the receipt of one task decision (called by `Task.authorize` with `now`,
        the task clock's reading the decision was made at). The hot path is one length
        check and one append of objects the caller already holds: the writer maps `now`
        to the log's clock and does all encoding and hashing. What changes after the
        decision is captured here, at decision time: the lease ids of a task holding
        leases, and the task state with `task_state=True`. The writer wakes on its own
        every `flush_interval`, or at once when the buffer is full (no signalling here)."""
        q = self._q
        if len(q) >= self.capacity and not self._make_room():
            return
        if self.task_state or task._leases:
            q.append(self._task_item(task, action, resource, context, decision, now))
            return
        q.append((task, action, resource, context, decision, now))

    def _task_item(
        self,
        task: Task,
        action: Any,
        resource: Any,
        context: Mapping[str, Any] | None,
        decision: Decision,
        now: float | None,
    ) -> tuple[Any, ...]:
        """The queue entry with what the writer could not read later: the task state
        after the decision (`task_state=True`) and the leases usable at decision time."""
        state = (
            task.guard.engine.task_context(
                task.handle, now=now if now is not None else task.guard.clock()
            )
            if self.task_state
            else None
        )
        leases = task.active_lease_ids() if task._leases else None
        return (task, action, resource, context, decision, now, state, leases)

    def engine_decision(
        self,
        version: int,
        principal: Any,
        action: Any,
        resource: Any,
        context: Mapping[str, Any] | None,
        decision: Decision | bool,
    ) -> None:
        """Queue the receipt of one plain engine decision."""
        if len(self._q) >= self.capacity and not self._make_room():
            return
        self._q.append(
            (_ENGINE, self.clock(), version, principal, action, resource, context, decision)
        )

    def attach(self, engine: Any) -> Any:
        """Record every `authorize` and `is_allowed` call of `engine` (a Python `Engine`
        instance: the methods are wrapped on the instance, the class is untouched). An
        engine's shadow (`engine.shadow(...)`) is then compared by this log's writer and
        its differences written into the receipts."""
        shadow = engine.__dict__.get("_shadow")
        if shadow is not None:
            shadow.unwatch(engine)  # the writer thread compares from now on
            self.shadow = shadow
        engine.__dict__["_audit"] = self
        authorize = engine.authorize
        is_allowed = engine.is_allowed
        batch = engine.authorize_batch

        # The version is read before deciding: the call then loads the snapshot it
        # decides with (a reload landing between the two reads is not told apart).
        def audited_authorize(
            principal: Any,
            action: Any,
            resource: Any,
            context: Mapping[str, Any] | None = None,
            **kw: Any,
        ) -> Decision:
            version = engine.version
            d: Decision = authorize(principal, action, resource, context, **kw)
            self.engine_decision(version, principal, action, resource, context, d)
            return d

        def audited_is_allowed(
            principal: Any, action: Any, resource: Any, context: Mapping[str, Any] | None = None
        ) -> bool:
            version = engine.version
            ok: bool = is_allowed(principal, action, resource, context)
            self.engine_decision(version, principal, action, resource, context, ok)
            return ok

        def audited_batch(requests: Any, context: Mapping[str, Any] | None = None) -> list[bool]:
            requests = requests if isinstance(requests, list) else list(requests)
            version = engine.version
            out: list[bool] = batch(requests, context)
            for r, ok in zip(requests, out, strict=True):
                ctx = r[3] if len(r) == 4 else context
                self.engine_decision(version, r[0], r[1], r[2], ctx, ok)
            return out

        engine.authorize = audited_authorize
        engine.is_allowed = audited_is_allowed
        engine.authorize_batch = audited_batch
        return engine

    def _make_room(self) -> bool:
        """The buffer is full: apply the overflow policy. True if the caller may queue."""
        if self._failure is not None or self._thread is None:
            raise AuditError(
                "receipt log is not running"
                + (f" (sink failed: {self._failure})" if self._failure else "")
            )
        if self.overflow == "drop":
            self.dropped += 1
            return False
        if self.overflow == "deny":
            self.refused += 1
            raise AuditOverflow(
                f"receipt buffer full ({self.capacity} decisions queued): action refused"
            )
        self.blocked += 1
        with self._room:
            while len(self._q) >= self.capacity:
                self._wake.set()
                self._room.wait(0.5)
                if self._failure is not None:
                    raise AuditError(f"receipt sink failed: {self._failure}")
        return True

    # -- writer thread ---------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            # `flush` waits while this is set: entries taken off the queue are not yet
            # written until the drain ends.
            self._draining = True
            try:
                self._drain()
            except BaseException as e:  # a failing sink must surface, not vanish
                self._failure = e
                return
            finally:
                with self._room:
                    self._draining = False
                    self._room.notify_all()

    def _drain(self) -> None:
        q = self._q
        self._offsets.clear()
        while q or self.dropped != self._dropped_written:
            lines: list[bytes] = []
            for _ in range(min(len(q), 4096)):
                lines.append(self._encode(self._build(q.popleft())))
                self.written += 1
                self._since_mark += 1
                if self._since_mark >= self.checkpoint_every:
                    lines.append(self._checkpoint("mark"))
            if self.dropped != self._dropped_written:
                lines.append(self._checkpoint("mark"))
            self.sink.write(lines)
            with self._room:
                self._room.notify_all()
            if self.sink.wants_rotation():
                self.sink.write([self._checkpoint("close")])
                self.sink.rotate()
                self.sink.write([self._checkpoint("open")])

    def _encode(self, r: Receipt) -> bytes:
        r.seq = self._seq
        r.prev = self._prev
        line = ENCODER.encode(r)
        self._seq += 1
        self._prev = line_hash(line)
        return line

    def _checkpoint(self, kind: str) -> bytes:
        self._since_mark = 0
        self._dropped_written = self.dropped
        r = Receipt(
            seq=self._seq,
            time=self.clock(),
            kind=kind,
            head=self._prev,
            count=self.written,
            dropped=self.dropped,
            kid=self.kid,
        )
        if self.signing_key is not None:
            r.sig = sign_checkpoint(self.signing_key, r)
        return self._encode(r)

    def _task_time(self, task: Task, now: float | None) -> float:
        """The log-clock time of a task decision made at task-clock time `now`: the two
        clocks' offset is sampled once per drained batch and guard."""
        if now is None:
            return self.clock()
        guard = task.guard
        offset = self._offsets.get(id(guard))
        if offset is None:
            offset = self._offsets[id(guard)] = self.clock() - guard.clock()
        return now + offset

    def _build(self, item: tuple[Any, ...]) -> Receipt:
        if item[0] is not _ENGINE:
            task, action, resource, context, d, now = item[:6]
            state, leases = item[6:] if len(item) == 8 else (None, None)
            txn, agent, jti = self._task_header(task)
            r = Receipt(
                seq=0,
                time=self._task_time(task, now),
                txn=txn,
                agent=agent,
                action=self._action(action),
                resource=self._uid(resource),
                policies=task.guard.engine.version,
                state=digest(state.encode()) if state is not None else None,
                context=self._context_digest(context),
                leases=list(leases) if leases else [],
                jti=jti,
            )
            if self.record_requests:
                r.request = {"context": redact(context or {})}
                if state is not None:
                    r.request["task"] = msgspec.json.decode(state)
            live: Decision | bool = d
        else:
            _, t, version, principal, action, resource, context, live = item
            r = Receipt(
                seq=0,
                time=t,
                agent=self._uid(principal),
                action=self._uid(action),
                resource=self._uid(resource),
                policies=version,
                context=self._context_digest(context),
            )
            if self.record_requests:
                r.request = {"context": redact(context or {})}
        self._decide_shadow(r, item)
        if isinstance(live, bool):
            r.decision = "allow" if live else "deny"
            r.denial = None if live else "deny"
        else:
            r.decision = "allow" if live.allowed else "deny"
            r.reasons = live.reasons  # a fresh list from each read
            r.errors = live.errors
            r.denial = denial_kind(live)
        return r

    def _task_header(self, task: Task) -> tuple[str, str, str | None]:
        """(txn, agent uid, token jti) of a task: fixed for its life, so cached (the cache
        holds the task, so its identity cannot be reused while cached)."""
        try:
            return self._headers[task]
        except KeyError:
            if len(self._headers) >= 4096:
                self._headers.clear()
            h = self._headers[task] = (
                task.txn,
                task.agent_uid,
                getattr(task.agent, "token_id", None),
            )
            return h

    def _action(self, action: Any) -> str:
        """The uid text of a task's action (`"read"` is `Action::"read"`)."""
        try:
            return self._actions[action]
        except (KeyError, TypeError):
            from tether.tasks import action_uid

            text = self._uid(action_uid(action))
            if len(self._actions) < 4096:
                try:
                    self._actions[action] = text
                except TypeError:
                    pass
            return text

    def _context_digest(self, context: Mapping[str, Any] | None) -> str:
        last = self._last_context
        if last is not None and last[0] is context:
            return last[1]
        d = context_digest(context)
        self._last_context = (context, d)
        return d

    def _uid(self, x: Any) -> str:
        if isinstance(x, str):
            return x
        try:
            return self._uids[x]
        except (KeyError, TypeError):
            text = uid_text(x)
            if len(self._uids) < 4096:
                try:
                    self._uids[x] = text
                except TypeError:  # unhashable (a dict): not cached
                    pass
            return text

    def _decide_shadow(self, r: Receipt, item: tuple[Any, ...]) -> None:
        if self.shadow is None:
            return
        if item[0] is not _ENGINE:
            ctx, d = item[3], item[4]
            state = item[6] if len(item) == 8 else None
            if state is None:
                self.shadow.skip()
                return
            live = bool(d.allowed)
            context = {**(ctx or {}), "task": msgspec.json.decode(state)}
            principal: Any = r.agent
            action: Any = r.action
            resource: Any = r.resource
        else:
            _, _t, _v, principal, action, resource, ctx, d = item
            live = d if isinstance(d, bool) else bool(d.allowed)
            context = dict(ctx or {})
        shadow = self.shadow.compare(principal, action, resource, context, live)
        if shadow is not None:
            r.shadow = "allow" if shadow else "deny"
