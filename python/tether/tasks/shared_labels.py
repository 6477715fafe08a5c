"""Agent-scoped labels shared through a Guard's store.

A label declared with ``scope = "agent"`` sticks to the agent, not the task, so taint
cannot be laundered by opening a new task. The engine remembers it for its own tasks;
:class:`SharedLabels` makes every process see it: a task opens with the labels the store
holds for its agent (``engine.open_task(..., labels=...)``), and a label a decision
acquires is written back for every agent of the task's actor chain (labels flow up a
delegation chain). Writes run in the background, retried until stored, and are awaited
(bounded) when a task tree ends. The store never forgets agent-scoped labels
(``SharedStore.forget`` leaves them), so there is nothing to clean up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from tether.store.shared_state import SharedStore, StoreUnavailable
from tether.tasks.retrying import RetryingSender

if TYPE_CHECKING:
    from tether.engine import Engine
    from tether.tasks.task import Task

__all__ = ["SharedLabels"]

log = logging.getLogger("tether.tasks")


class SharedLabels:
    """Loads an agent's labels at task open; writes back the ones its decisions acquire."""

    def __init__(
        self,
        store: SharedStore,
        engine: Engine,
        *,
        fail_closed: bool,
        in_background: Callable[[Callable[[], Any]], None],
    ) -> None:
        self.store = store
        self.fail_closed = fail_closed
        self._engine = engine
        self.declared = frozenset(name for name, _ in engine.state_labels)
        # Agent uid -> labels acquired here and not yet stored.
        self.pending: dict[str, set[str]] = {}
        self._lock = anyio.Lock()
        self._sender = RetryingSender(
            self.flush,
            lambda: bool(self.pending),
            in_background=in_background,
            what=f"agent labels in {store.name}",
        )

    async def load(self, agent: str) -> list[str]:
        """The labels the store holds for ``agent`` that this state file declares. While
        the store cannot answer: ``StoreUnavailable`` (fail closed), or with
        ``fail_closed=False`` only what this engine remembers."""
        try:
            held = await self.store.labels(agent)
        except StoreUnavailable as exc:
            if self.fail_closed:
                raise
            log.warning("labels of %s not loaded (engine memory only): %s", agent, exc)
            return []
        unknown = held - self.declared
        if unknown:
            # Rules cannot read a label the state file does not declare.
            log.warning(
                "labels of %s in %s not declared here: %s", agent, self.store.name, sorted(unknown)
            )
        return sorted(held & self.declared)

    def acquired(self, task: Task) -> None:
        """After a permit: queue the agent-scoped labels it gave the task's actor chain."""
        names = self._engine.take_task_labels(task.handle)
        if not names:
            return
        for uid in task.actors:
            self.pending.setdefault(uid, set()).update(names)
        self._sender.kick()

    async def flush(self) -> None:
        """Store every pending label now (raises ``StoreUnavailable``)."""
        async with self._lock:
            while self.pending:
                uid, names = next(iter(self.pending.items()))
                sent = frozenset(names)
                await self.store.add_labels(uid, sorted(sent))
                names -= sent  # labels added while the write was on its way stay pending
                if not names:
                    self.pending.pop(uid, None)
