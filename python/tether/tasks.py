"""Guard, Task, delegation and revocation: authenticate once, authorize every action.

The task state (labels, counters, budgets, revocation flag) lives in Rust behind a
`TaskHandle`; a decision reads and commits it in one call. This module adds what
needs I/O or async: opening and closing tasks, approvals, delegation (which verifies
the child's own token), lease revocation, and the deadline watcher.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
from anyio.abc import TaskGroup

from tether._core import Decision, TaskHandle
from tether.engine import Engine
from tether.identity import Agent, Authenticator, SpiffeId
from tether.leases import CredentialBroker, Lease, TaskRef

if TYPE_CHECKING:
    from tether.audit import AuditLog

log = logging.getLogger("tether.tasks")

EntityArg = Any


class Denied(Exception):
    """An action was refused; `decision` says why."""

    def __init__(self, message: str, decision: Decision | None = None) -> None:
        super().__init__(message)
        self.decision = decision

    def for_model(self) -> str:
        """A short refusal fit to return to the model: rule names only, no data."""
        from tether.explain import denial_for_model

        return denial_for_model(self.decision) if self.decision is not None else str(self)


class TaskRevoked(Denied):
    """The task (or an ancestor) is revoked."""


@dataclass(frozen=True)
class Monitors:
    """Thresholds that revoke a task automatically; 0 disables a monitor."""

    max_deny_streak: int = 5
    max_rate: int = 0
    rate_window: float = 1.0
    revoke_on_budget_exhausted: bool = True


@dataclass(frozen=True)
class ApprovalRequest:
    """What an approver is asked to approve."""

    task: Task
    obligation: str
    action: str
    resource: str
    context: Mapping[str, Any]


Approver = Callable[[ApprovalRequest], Awaitable[bool]]


# Short action names seen so far, mapped to their uid text (saves formatting per call).
_ACTION_UIDS: dict[str, str] = {}


def action_uid(action: EntityArg) -> EntityArg:
    """`"read"` is shorthand for `Action::"read"`; full uids and handles pass through."""
    if isinstance(action, str) and "::" not in action:
        return f'Action::"{action}"'
    return action


def _agent_uid(agent: Agent | str) -> str:
    return agent.entity if isinstance(agent, Agent) else agent


def _spiffe(agent: Agent | str) -> SpiffeId | None:
    if isinstance(agent, Agent):
        return agent.spiffe_id
    # `Agent::"spiffe://..."` strings still carry a trust domain.
    if '::"spiffe://' in agent:
        try:
            return SpiffeId.parse(agent.split('::"', 1)[1].rstrip('"'))
        except ValueError:
            return None
    return None


@dataclass(eq=False)
class Task:
    """One task of one agent. `authorize` is synchronous and fast; the rest is async."""

    guard: Guard
    agent: Agent | str
    intent: str
    scope: frozenset[str] | None
    deadline: float
    handle: TaskHandle
    parent: Task | None = None
    txn: str = field(default_factory=lambda: secrets.token_hex(16))
    children: list[Task] = field(default_factory=list)
    closed: bool = False
    _base_context: dict[str, Any] = field(default_factory=dict)
    _decide: Callable[..., Decision] = field(init=False, repr=False)
    _wall_clock: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._base_context = {"intent": self.intent}
        # Bound once: `authorize` is the hot path and attribute chains cost real time.
        self._decide = self.guard.engine.authorize_task
        self._wall_clock = self.guard.clock is time.time

    @property
    def agent_uid(self) -> str:
        return _agent_uid(self.agent)

    @property
    def depth(self) -> int:
        return self.handle.depth

    @property
    def actors(self) -> tuple[str, ...]:
        chain: list[str] = []
        t: Task | None = self
        while t is not None:
            chain.append(t.agent_uid)
            t = t.parent
        return tuple(reversed(chain))

    @property
    def revoked(self) -> str | None:
        return self.handle.revoked

    def authorize(
        self,
        action: EntityArg,
        resource: EntityArg,
        context: Mapping[str, Any] | None = None,
        *,
        reasons: bool = False,
        approved: Iterable[str] = (),
    ) -> Decision:
        """Decide one action now; a permit commits the task's state effects."""
        ctx = self._base_context if context is None else {**self._base_context, **context}
        if isinstance(action, str):
            uid = _ACTION_UIDS.get(action)
            if uid is None:
                uid = action_uid(action)
                if len(_ACTION_UIDS) < 4096:
                    _ACTION_UIDS[action] = uid
        else:
            uid = action
        if approved or reasons or not self._wall_clock:
            d = self._decide(
                self.handle,
                uid,
                resource,
                ctx,
                reasons=reasons,
                now=self.guard.clock(),
                approved=list(approved),
            )
        else:
            # Hot path: positional only; the core reads the same wall clock itself.
            d = self._decide(self.handle, uid, resource, ctx)
        if self.guard.audit is not None:  # receipts (tether.audit), queued off the hot path
            self.guard.audit.task_decision(self, action, resource, ctx, d)
        if d.allowed:
            if self.guard.on_decision is not None:
                self.guard.on_decision(self, action, resource, d)
            return d
        if d.revoked is not None:
            self.guard._revoked_by_decision(self, d.revoked)
        if self.guard.on_decision is not None:
            self.guard.on_decision(self, action, resource, d)
        return d

    async def require(
        self,
        action: EntityArg,
        resource: EntityArg,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Authorize or raise `Denied`; obligations (approvals) are awaited, fail closed."""
        # With reasons: a refusal names the policies behind it (require is not the hot path).
        d = self.authorize(action, resource, context, reasons=True)
        if d.allowed:
            return d
        if d.obligations and d.revoked is None:
            for obligation in d.obligations:
                await self.guard._approve(self, obligation, action, resource, context or {})
            d = self.authorize(action, resource, context, reasons=True, approved=d.obligations)
            if d.allowed:
                return d
        raise self._denial(d)

    def _denial(self, d: Decision) -> Denied:
        why = d.message or (
            f"denied by {', '.join(d.reasons)}" if d.reasons else "no policy permits it"
        )
        cls = TaskRevoked if why.startswith("task revoked") else Denied
        return cls(why, d)

    async def delegate(
        self,
        child: str | Agent,
        *,
        scope: Iterable[str] | None = None,
        intent: str | None = None,
        ttl: float | None = None,
    ) -> Task:
        """Open a sub-task for another agent: its own identity proof, `delegate`
        authorized for this task, a scope that can only narrow, the chain recorded."""
        agent = await self.guard.authenticate(child) if isinstance(child, str) else child
        d = self.authorize("delegate", _agent_uid(agent))
        if not d.allowed:
            raise self._denial(d)
        child_scope = None if scope is None else frozenset(scope)
        if self.scope is not None:
            if child_scope is None:
                child_scope = self.scope
            elif not child_scope <= self.scope:
                wider = ", ".join(sorted(child_scope - self.scope))
                raise Denied(f"delegation would widen scope with: {wider}")
        remaining = self.deadline - self.guard.clock()
        child_ttl = remaining if ttl is None else min(ttl, remaining)
        return self.guard._open(agent, intent or self.intent, child_scope, child_ttl, parent=self)

    async def lease(
        self,
        provider: str,
        *,
        scope: Iterable[str] | None = None,
        ttl: float | None = None,
    ) -> Lease:
        """A short-lived credential bound to this task (revoked when the task ends)."""
        broker = self.guard.broker
        if broker is None:
            raise RuntimeError("this Guard has no CredentialBroker")
        if self.revoked is not None:
            raise TaskRevoked(f"task revoked: {self.revoked}")
        return await broker.issue(
            self.ref(), provider, scope=None if scope is None else frozenset(scope), ttl=ttl
        )

    def ref(self) -> TaskRef:
        """The task as the broker sees it; the deadline is moved onto the broker's clock
        (the time left is what both clocks agree on)."""
        broker = self.guard.broker
        deadline = self.deadline
        if broker is not None:
            deadline = broker.clock() + (self.deadline - self.guard.clock())
        return TaskRef(
            txn=self.txn,
            agent=str(_spiffe(self.agent) or self.agent_uid),
            scope=self.scope if self.scope is not None else frozenset(),
            intent=self.intent,
            actors=self.actors,
            deadline=deadline,
            parent_txn=self.parent.txn if self.parent else None,
        )

    def subtree(self) -> list[Task]:
        """This task and every open descendant."""
        out: list[Task] = [self]
        for t in out:
            out.extend(t.children)
        return out

    def state(self) -> dict[str, Any]:
        """`context.task` as rules see it now (to replay a decision elsewhere)."""
        import json

        out: dict[str, Any] = json.loads(
            self.guard.engine.task_context(self.handle, now=self.guard.clock())
        )
        return out

    def revoke(self, reason: str) -> None:
        """Revoke this task and its descendants now; leases follow in the background."""
        self.handle.revoke(reason)
        self.guard._after_revoke(self)

    async def close(self, reason: str = "task ended") -> None:
        """End the task: revoke it, its children and its leases. Every lease is unusable
        before the first await; the provider is waited for at most the broker's
        `provider_timeout`, once for the whole subtree."""
        if self.closed:
            return
        family = [t for t in self.subtree() if not t.closed]
        for t in family:
            t.closed = True
            t.handle.revoke(reason if t is self else f"parent task ended: {reason}")
        await self.guard._forget(family)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        reason = "task ended"
        if exc is not None:
            reason = f"task ended by {type(exc).__name__}"
        with anyio.CancelScope(shield=True):
            await self.close(reason)


class _TaskOpener:
    """`async with guard.task(...) as task:` opens on enter and closes on exit."""

    def __init__(
        self,
        guard: Guard,
        agent: Agent | str,
        intent: str,
        scope: frozenset[str] | None,
        ttl: float,
    ) -> None:
        self._args = (guard, agent, intent, scope, ttl)
        self._task: Task | None = None

    async def __aenter__(self) -> Task:
        guard, agent, intent, scope, ttl = self._args
        self._task = guard._open(agent, intent, scope, ttl, parent=None)
        return self._task

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            await self._task.__aexit__(exc_type, exc, tb)


class Guard:
    """Holds the engine, the authenticator and the credential broker; runs the
    background work (deadline watcher, lease reaper) while entered."""

    def __init__(
        self,
        engine: Engine,
        authenticator: Authenticator | None = None,
        *,
        broker: CredentialBroker | None = None,
        approvers: Mapping[str, Approver] | None = None,
        approval_timeout: float = 30.0,
        monitors: Monitors | None = None,
        clock: Callable[[], float] = time.time,
        on_decision: Callable[[Task, Any, Any, Decision], None] | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.engine = engine
        self.authenticator = authenticator
        self.broker = broker
        self.approvers = dict(approvers or {})
        self.approval_timeout = approval_timeout
        self.monitors = monitors or Monitors()
        self.clock = clock
        self.on_decision = on_decision
        self.audit = audit
        self.tasks: dict[str, Task] = {}
        self.revoked_agents: dict[str, str] = {}
        self.revoked_domains: dict[str, str] = {}
        self._tg: TaskGroup | None = None
        self._wake = anyio.Event()
        # Lease revocations requested from other threads (sync `authorize` in a worker
        # thread); the watcher schedules them, as start_soon only works on the loop thread.
        self._loop_thread: int | None = None
        self._foreign_revokes: deque[str] = deque()
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            # Broker first so the task groups nest (anyio requires LIFO exit); a failed
            # start closes whatever was already entered.
            if self.broker is not None:
                await stack.enter_async_context(self.broker)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._tg.cancel_scope.cancel)
            self._loop_thread = threading.get_ident()
            self._tg.start_soon(self._watch_deadlines)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        assert stack is not None
        async with stack:
            with anyio.CancelScope(shield=True):
                for t in list(self.tasks.values()):
                    if t.parent is None:
                        await t.close("guard stopped")
        self._tg = None

    async def authenticate(self, token: str) -> Agent:
        if self.authenticator is None:
            raise RuntimeError("this Guard has no Authenticator")
        agent = await self.authenticator.authenticate(token)
        self._check_not_revoked(agent)
        return agent

    def task(
        self,
        agent: Agent | str,
        *,
        intent: str,
        scope: Iterable[str] | None = None,
        ttl: float = 300.0,
    ) -> _TaskOpener:
        return _TaskOpener(self, agent, intent, None if scope is None else frozenset(scope), ttl)

    def revoke(
        self,
        *,
        task: Task | str | None = None,
        agent: Agent | str | None = None,
        trust_domain: str | None = None,
        reason: str = "revoked by operator",
    ) -> int:
        """Revoke a task, every task of an agent, or a whole trust domain, effective
        before this returns (later decisions deny). New tasks for a revoked agent or
        domain are refused. Returns how many live tasks were revoked."""
        n = 0
        if agent is not None:
            self.revoked_agents[_agent_uid(agent)] = reason
        if trust_domain is not None:
            self.revoked_domains[trust_domain] = reason
        for t in list(self.tasks.values()):
            hit = (
                (task is not None and (t is task or t.txn == task))
                or (agent is not None and t.agent_uid == _agent_uid(agent))
                or (
                    trust_domain is not None
                    and (sid := _spiffe(t.agent)) is not None
                    and sid.trust_domain == trust_domain
                )
            )
            if hit and t.handle.revoke(reason):
                n += 1
                self._after_revoke(t)
        return n

    # -- internals -------------------------------------------------------

    def _check_not_revoked(self, agent: Agent | str) -> None:
        uid = _agent_uid(agent)
        if uid in self.revoked_agents:
            raise TaskRevoked(f"agent revoked: {self.revoked_agents[uid]}")
        sid = _spiffe(agent)
        if sid is not None and sid.trust_domain in self.revoked_domains:
            raise TaskRevoked(f"trust domain revoked: {self.revoked_domains[sid.trust_domain]}")

    def _open(
        self,
        agent: Agent | str,
        intent: str,
        scope: frozenset[str] | None,
        ttl: float,
        *,
        parent: Task | None,
    ) -> Task:
        self._check_not_revoked(agent)
        if not math.isfinite(ttl) or ttl <= 0:
            raise ValueError("ttl must be a positive number of seconds")
        deadline = self.clock() + ttl
        m = self.monitors
        handle = self.engine.open_task(
            _agent_uid(agent),
            scope=None if scope is None else [action_uid(a) for a in sorted(scope)],
            deadline=deadline,
            parent=parent.handle if parent else None,
            max_deny_streak=m.max_deny_streak,
            max_rate=m.max_rate,
            rate_window=m.rate_window,
            revoke_on_budget_exhausted=m.revoke_on_budget_exhausted,
        )
        task = Task(self, agent, intent, scope, deadline, handle, parent=parent)
        if parent is not None:
            parent.children.append(task)
        self.tasks[task.txn] = task
        self._wake.set()
        return task

    def _revoked_by_decision(self, task: Task, reason: str) -> None:
        log.warning("task %s revoked: %s", task.txn, reason)
        self._after_revoke(task)

    def _after_revoke(self, task: Task) -> None:
        """Leases of the task and its descendants are unusable before this returns, from
        any thread; the provider is told in the background (the Rust flag already denies
        every decision)."""
        if self.broker is None:
            return
        txns = [t.txn for t in task.subtree()]
        for txn in txns:
            self.broker.revoke_task_now(txn)
        if self._tg is not None:
            if threading.get_ident() == self._loop_thread:
                self._tg.start_soon(self.broker.revoke_tasks, txns)
            else:
                self._foreign_revokes.extend(txns)

    async def _forget(self, family: list[Task]) -> None:
        """Drop closed tasks (a task first, then its descendants) and revoke their leases."""
        for task in family:
            self.tasks.pop(task.txn, None)
        root = family[0]
        if root.parent is not None and root in root.parent.children:
            root.parent.children.remove(root)
        if self.broker is not None:
            await self.broker.revoke_tasks([t.txn for t in family])

    async def _approve(
        self, task: Task, obligation: str, action: Any, resource: Any, context: Mapping[str, Any]
    ) -> None:
        approver = self.approvers.get(obligation)
        if approver is None:
            raise Denied(f"obligation `{obligation}` has no approver configured")
        req = ApprovalRequest(task, obligation, str(action), str(resource), context)
        ok = False
        with anyio.move_on_after(self.approval_timeout):
            try:
                ok = bool(await approver(req))
            except Exception as e:  # an approver that fails must not approve
                log.warning("approver for %s failed: %s", obligation, e)
                ok = False
        if not ok:
            raise Denied(f"obligation `{obligation}` was not approved")

    async def _watch_deadlines(self) -> None:
        """Revoke and close tasks whose deadline passed, even if they make no decision."""
        while True:
            while self._foreign_revokes and self.broker is not None and self._tg is not None:
                self._tg.start_soon(self.broker.revoke_task, self._foreign_revokes.popleft())
            now = self.clock()
            nxt = math.inf
            for t in list(self.tasks.values()):
                if t.deadline <= now:
                    if t.handle.revoke("deadline passed"):
                        log.info("task %s reached its deadline", t.txn)
                    await t.close("deadline passed")
                else:
                    nxt = min(nxt, t.deadline)
            self._wake = anyio.Event()
            with anyio.move_on_after(min(max(nxt - self.clock(), 0.01), 1.0)):
                await self._wake.wait()
