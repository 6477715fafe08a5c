"""The Guard: engine, authenticator and credential broker together; opens tasks,
revokes them, asks approvers, and runs the background work while entered."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio
from anyio.abc import TaskGroup

from tether._core import Decision, DenialKind
from tether.engine import Engine
from tether.identity import Agent, Authenticator, SpiffeId
from tether.leases import CredentialBroker
from tether.store.revocation_feed import RevocationFeed
from tether.store.shared_state import Revocation, RevocationKind, SharedStore
from tether.tasks.agents import agent_uid, check_proof, spiffe_of, target_uid
from tether.tasks.approvals import (
    ApprovalRequest,
    Approver,
    Grant,
    Grants,
    PolicyDigest,
    context_digest,
)
from tether.tasks.errors import ApprovalRefused, TaskRevoked
from tether.tasks.monitors import Monitors
from tether.tasks.shared import SharedBudgets, SharedTree
from tether.tasks.shared_labels import SharedLabels
from tether.tasks.shared_monitors import TreeMonitors
from tether.tasks.task import Task, action_uid

if TYPE_CHECKING:
    from tether.audit import AuditLog

log = logging.getLogger("tether.tasks")


class _TaskOpener:
    """`async with guard.task(...) as task:` opens on enter and closes on exit."""

    def __init__(
        self, guard: Guard, agent: Agent | str, open_: Callable[[Sequence[str]], Task]
    ) -> None:
        self._guard = guard
        self._agent = agent
        self._open = open_
        self._task: Task | None = None

    async def __aenter__(self) -> Task:
        task = self._open(await self._guard._load_labels(self._agent))
        try:
            await self._guard._share(task)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await task.close("could not join the shared store")
            raise
        self._task = task
        return task

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            await self._task.__aexit__(exc_type, exc, tb)


class _Broadcast:
    """Revocations on their way to the shared store; delivered once, by whoever comes
    first (the background sender or an `await guard.revoke(...)`)."""

    def __init__(self, store: SharedStore, records: Sequence[Revocation]) -> None:
        self.store = store
        self.pending = list(records)
        self._lock = anyio.Lock()

    async def deliver(self) -> None:
        async with self._lock:
            while self.pending:
                await self.store.revoke(self.pending[0])
                self.pending.pop(0)


class Revoked(int):
    """How many live tasks a `guard.revoke(...)` revoked here. Awaiting it returns once the
    revocation is durable in the shared store (raises `StoreUnavailable` if it cannot be
    stored); without a store there is nothing to wait for."""

    _broadcast: _Broadcast | None

    def __new__(cls, n: int, broadcast: _Broadcast | None) -> Revoked:
        obj = super().__new__(cls, n)
        obj._broadcast = broadcast
        return obj

    def __await__(self) -> Generator[Any, None, int]:
        return self._durable().__await__()

    async def _durable(self) -> int:
        if self._broadcast is not None:
            await self._broadcast.deliver()
        return int(self)


class Guard:
    """Holds the engine, the authenticator and the credential broker; runs the
    background work (deadline watcher, lease reaper) while entered.

    `clock` is monotonic seconds: deadlines, counter windows, rate monitors and grant
    expiry run on it, so a wall-clock step changes none of them. `wall_clock` is for
    credential expiry (token times are wall time). Task decisions fail closed on
    policy errors unless `on_error="skip"`.

    `store` (a `SharedStore`: `RedisStore.from_url(...)`, or `MemoryStore`) shares state
    with other processes: while entered, the Guard follows the store's revocations (the
    whole set first, again after every reconnect) and applies each to its tasks before
    acknowledging it; `await guard.revoke(...)` returns once the store holds it.
    `shared_budgets` names the state file's budgets a task tree spends through the store.
    `on_store_error="deny"` (default) fails every task decision closed with
    `StoreUnavailable` while the revocation view is older than `max_staleness` seconds;
    `"allow"` decides on the last view (budgets stay bounded either way). Agent-scoped
    labels of the state file go through the store too: a task opens with those its agent
    holds there, and those its decisions acquire are written back (`SharedLabels`).
    `tree_monitors=True` also counts the deny streak and ratio of a shared tree over all
    its processes (`TreeMonitors`): a trip revokes the tree everywhere."""

    def __init__(
        self,
        engine: Engine,
        authenticator: Authenticator | None = None,
        *,
        broker: CredentialBroker | None = None,
        approvers: Mapping[str, Approver] | None = None,
        approval_timeout: float = 30.0,
        grant_ttl: float = 60.0,
        monitors: Monitors | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        credential_leeway: float = 5.0,
        allow_unauthenticated: bool = False,
        on_error: Literal["deny", "skip"] = "deny",
        on_decision: Callable[[Task, Any, Any, Decision], None] | None = None,
        audit: AuditLog | None = None,
        store: SharedStore | None = None,
        shared_budgets: SharedBudgets | None = None,
        on_store_error: Literal["deny", "allow"] = "deny",
        max_staleness: float = 5.0,
        tree_monitors: bool = False,
    ) -> None:
        if on_error not in ("deny", "skip"):
            raise ValueError("on_error must be 'deny' or 'skip'")
        if on_store_error not in ("deny", "allow"):
            raise ValueError("on_store_error must be 'deny' or 'allow'")
        if shared_budgets is not None and store is None:
            raise ValueError("shared_budgets need a store (Guard(store=...))")
        if tree_monitors and store is None:
            raise ValueError("tree_monitors need a store (Guard(store=...))")
        self.tree_monitors = tree_monitors
        self.store = store
        self.shared_budgets = shared_budgets
        self.on_store_error = on_store_error
        self.feed: RevocationFeed | None = None
        if store is not None:
            self.feed = RevocationFeed(
                store,
                self._apply_revocation,
                max_staleness=max_staleness,
                poll=min(1.0, max_staleness / 2),
                clock=clock,
            )
        # Agent-scoped labels shared through the store (when the state file has any).
        self.labels: SharedLabels | None = None
        if store is not None and any(scope == "agent" for _, scope in engine.state_labels):
            self.labels = SharedLabels(
                store,
                engine,
                fail_closed=on_store_error == "deny",
                in_background=self._in_background,
            )
        self.revoked_txns: dict[str, str] = {}
        self._broadcasts: set[_Broadcast] = set()
        self.engine = engine
        self.authenticator = authenticator
        self.broker = broker
        self.approvers = dict(approvers or {})
        self.approval_timeout = approval_timeout
        self.grant_ttl = grant_ttl
        self.monitors = monitors or Monitors()
        self.clock = clock
        self.wall_clock = wall_clock
        self.credential_leeway = credential_leeway
        self.allow_unauthenticated = allow_unauthenticated
        self.on_error = on_error
        self.on_decision = on_decision
        self.audit = audit  # receipts: tether.audit.AuditLog
        self.tasks: dict[str, Task] = {}
        self.revoked_agents: dict[str, str] = {}
        self.revoked_domains: dict[str, str] = {}
        self._task_grants: dict[str, Grants] = {}
        self._policy_digest = PolicyDigest()
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._wake = anyio.Event()
        # Lease revocations requested from other threads (sync `authorize` in a worker
        # thread); the watcher schedules them, as start_soon only works on the loop thread.
        self._loop_thread: int | None = None
        self._foreign_revokes: deque[str] = deque()
        self._foreign_calls: deque[Callable[[], Any]] = deque()

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            # The broker first so the task groups nest (anyio requires LIFO exit).
            if self.broker is not None:
                await stack.enter_async_context(self.broker)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._close_tasks)
            self._loop_thread = threading.get_ident()
            self._tg.start_soon(self._watch_deadlines)
            if self.feed is not None:
                # Returns after the first full load (or its failure: decisions then deny).
                await self._tg.start(self.feed.run)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)
        self._tg = None

    async def _close_tasks(self) -> None:
        with anyio.CancelScope(shield=True):
            for t in list(self.tasks.values()):
                if t.parent is None:
                    await t.close("guard stopped")
            with anyio.move_on_after(5.0):  # a last try for revocations not yet stored
                for b in list(self._broadcasts):
                    try:
                        await b.deliver()
                        self._broadcasts.discard(b)
                    except Exception as exc:
                        log.error("revocation not stored in %s: %s", b.store.name, exc)
            for b in self._broadcasts:
                log.error("revocations not stored in %s: %s", b.store.name, b.pending)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

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
        outlive_credential: bool = False,
        txn: str | None = None,
    ) -> _TaskOpener:
        """Open a task for an authenticated `Agent` (a bare uid string only with
        `allow_unauthenticated=True`). Its deadline is capped by the credential's
        expiry unless `outlive_credential=True`. `txn` joins a task tree other
        processes share through the store (same txn: same revocations and shared
        budgets); by default a fresh random one."""
        frozen = None if scope is None else frozenset(scope)
        return _TaskOpener(
            self,
            agent,
            lambda labels: self._open(
                agent,
                intent,
                frozen,
                ttl,
                parent=None,
                outlive_credential=outlive_credential,
                txn=txn,
                labels=labels,
            ),
        )

    def revoke(
        self,
        *,
        task: Task | str | None = None,
        agent: Agent | SpiffeId | str | None = None,
        trust_domain: str | None = None,
        reason: str = "revoked by operator",
    ) -> Revoked:
        """Revoke a task, every task of an agent (an `Agent`, `SpiffeId`, SPIFFE ID or
        entity uid), or a whole trust domain, effective here before this returns (later
        decisions deny). New tasks for a revoked agent or domain are refused. Returns
        how many live tasks were revoked here; a target that names nothing is a
        ValueError. With a shared store the revocation is broadcast to every process:
        `await guard.revoke(...)` returns once the store holds it durably."""
        if task is not None and not isinstance(task, Task | str):
            raise ValueError(f"task must be a Task or a txn id, not {task!r}")
        uid = None if agent is None else target_uid(agent)
        txn = task.txn if isinstance(task, Task) else task
        n = self._revoke_here(txn, uid, trust_domain, reason)
        if self.store is None:
            return Revoked(n, None)
        now = self.wall_clock()
        targets: list[tuple[RevocationKind, str | None]] = [
            ("task", txn),
            ("agent", uid),
            ("trust_domain", trust_domain),
        ]
        records = [
            Revocation(kind=kind, subject=subject, reason=reason, revoked_at=now)
            for kind, subject in targets
            if subject is not None
        ]
        return Revoked(n, self._broadcast(records))

    def _revoke_here(
        self, txn: str | None, uid: str | None, trust_domain: str | None, reason: str
    ) -> int:
        """Apply a revocation to this process's tasks and refuse new ones it names."""
        if txn is not None:
            self.revoked_txns.setdefault(txn, reason)
        if uid is not None:
            self.revoked_agents[uid] = reason
        if trust_domain is not None:
            self.revoked_domains[trust_domain] = reason
        n = 0
        # A task alone is found by its txn (a feed's full reload replays every revocation).
        named = self.tasks.get(txn) if txn is not None else None
        candidates = [named] if named is not None else []
        if uid is not None or trust_domain is not None:
            candidates = list(self.tasks.values())
        for t in candidates:
            hit = (
                (txn is not None and t.txn == txn)
                or (uid is not None and t.agent_uid == uid)
                or (
                    trust_domain is not None
                    and (sid := spiffe_of(t.agent)) is not None
                    and sid.trust_domain == trust_domain
                )
            )
            if hit and t.handle.revoke(reason):
                n += 1
                self._after_revoke(t)
        return n

    # -- internals -------------------------------------------------------

    def _apply_revocation(self, r: Revocation) -> None:
        """A revocation from the store (maybe our own, back from the log): applied to the
        tasks here before the feed acknowledges it."""
        if r.kind == "task":
            self._revoke_here(r.subject, None, None, r.reason)
        elif r.kind == "agent":
            self._revoke_here(None, r.subject, None, r.reason)
        else:
            self._revoke_here(None, None, r.subject, r.reason)

    def _broadcast(self, records: Sequence[Revocation]) -> _Broadcast | None:
        """Send revocations to the store in the background, retrying until stored."""
        if self.store is None or not records:
            return None
        b = _Broadcast(self.store, records)
        self._broadcasts.add(b)
        self._in_background(lambda: self._deliver(b))
        return b

    def _broadcast_task_revocation(self, task: Task, reason: str) -> None:
        if self.store is None:
            return
        revocation = Revocation(
            kind="task", subject=task.txn, reason=reason, revoked_at=self.wall_clock()
        )
        self.revoked_txns.setdefault(task.txn, reason)
        self._broadcast([revocation])

    async def _deliver(self, b: _Broadcast) -> None:
        delay = 0.05
        while True:
            try:
                await b.deliver()
                self._broadcasts.discard(b)
                return
            except Exception as exc:
                log.warning("revocation not yet stored in %s: %s", b.store.name, exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _in_background(self, call: Callable[[], Any]) -> None:
        """Run an async call on the Guard's task group, from any thread; without a running
        Guard it waits for whoever awaits its result (or the next entry)."""
        if self._tg is not None and threading.get_ident() == self._loop_thread:
            self._tg.start_soon(call)
        else:
            self._foreign_calls.append(call)  # the deadline watcher starts it

    async def _share(self, task: Task) -> None:
        """Attach a new root task to the shared store: refused while the revocation view is
        not current (fail closed); its shared budgets reserve their first slices."""
        if self.store is None:
            return
        tree = SharedTree(
            txn=task.txn,
            store=self.store,
            feed=self.feed,
            fail_closed=self.on_store_error == "deny",
            budgets=self.shared_budgets,
            engine=self.engine,
            root=task.handle,
            clock=self.clock,
        )
        tree.check_fresh()
        if self.tree_monitors:
            tree.monitors = TreeMonitors(
                self.store,
                f"tree/{task.txn}/monitors",
                self.monitors,
                trip=lambda why: task.revoke(why) if task.revoked is None else None,
                in_background=self._in_background,
            )
        if self._tg is not None:
            await tree.start(self._tg)
        task.shared = tree

    async def _load_labels(self, agent: Agent | str) -> list[str]:
        """The agent-scoped labels the shared store holds for `agent` (none without one)."""
        if self.labels is None:
            return []
        return await self.labels.load(agent_uid(agent))

    def _check_not_revoked(self, agent: Agent | str) -> None:
        uid = agent_uid(agent)
        if uid in self.revoked_agents:
            raise TaskRevoked(f"agent revoked: {self.revoked_agents[uid]}", kind=DenialKind.REVOKED)
        sid = spiffe_of(agent)
        if sid is not None and sid.trust_domain in self.revoked_domains:
            raise TaskRevoked(
                f"trust domain revoked: {self.revoked_domains[sid.trust_domain]}",
                kind=DenialKind.REVOKED,
            )

    def _check_proof(self, agent: Agent | str, *, unauthenticated_ok: bool) -> None:
        check_proof(
            agent,
            wall_now=self.wall_clock(),
            leeway=self.credential_leeway,
            unauthenticated_ok=unauthenticated_ok,
        )

    def _open(
        self,
        agent: Agent | str,
        intent: str,
        scope: frozenset[str] | None,
        ttl: float,
        *,
        parent: Task | None,
        outlive_credential: bool = False,
        txn: str | None = None,
        labels: Sequence[str] = (),
    ) -> Task:
        self._check_not_revoked(agent)
        if txn is not None:
            if txn in self.revoked_txns:
                raise TaskRevoked(
                    f"task {txn} revoked: {self.revoked_txns[txn]}", kind=DenialKind.REVOKED
                )
            if txn in self.tasks:
                raise ValueError(f"a task with txn {txn!r} is already open in this Guard")
        self._check_proof(agent, unauthenticated_ok=self.allow_unauthenticated)
        if not math.isfinite(ttl) or ttl <= 0:
            raise ValueError("ttl must be a positive number of seconds")
        if isinstance(agent, Agent) and not outlive_credential:
            ttl = min(ttl, agent.expires_at + self.credential_leeway - self.wall_clock())
        now = self.clock()
        deadline = now + ttl
        m = self.monitors
        handle = self.engine.open_task(
            agent_uid(agent),
            scope=None if scope is None else [action_uid(a) for a in sorted(scope)],
            deadline=deadline,
            now=now,
            parent=parent.handle if parent else None,
            intent=intent,
            on_error=self.on_error,
            max_deny_streak=m.max_deny_streak,
            max_rate=m.max_rate,
            rate_window=m.rate_window,
            max_deny_ratio=m.max_deny_ratio,
            min_denials=m.min_denials,
            revoke_on_budget_exhausted=m.revoke_on_budget_exhausted,
            labels=list(labels) if labels else None,
        )
        task = Task(self, agent, intent, scope, deadline, handle, parent=parent)
        if txn is not None:
            task.txn = txn
        if parent is not None:
            parent.children.append(task)
            task.shared = parent.shared
        self.tasks[task.txn] = task
        self._wake.set()
        return task

    def _grants(self, task: Task) -> Grants:
        return self._task_grants.setdefault(task.txn, Grants())

    def _revoked_by_decision(self, task: Task, reason: str) -> None:
        # The decision may have revoked an ancestor (a tree monitor): leases go from
        # the topmost task now revoked, which covers its descendants.
        top = task
        t = task.parent
        while t is not None:
            if t.handle.revoked is not None:
                top = t
            t = t.parent
        log.warning("task %s revoked: %s", top.txn, reason)
        self._after_revoke(top)
        self._broadcast_task_revocation(top, reason)

    def _after_revoke(self, task: Task) -> None:
        """Leases of the task and its descendants are unusable before this returns, from
        any thread; the provider is told in the background (the Rust flag already denies
        every decision)."""
        if task.parent is None and task.shared is not None and task.shared.slices:
            self._in_background(task.shared.release)  # unused budget back to the others
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
            self._task_grants.pop(task.txn, None)
        root = family[0]
        if root.parent is None and root.shared is not None:
            await root.shared.release()
        if root.parent is None and self.labels is not None and self.labels.pending:
            try:
                with anyio.fail_after(5.0):  # then the background sender keeps trying
                    await self.labels.flush()
            except Exception as exc:
                log.error("agent labels not yet stored in %s: %s", self.labels.store.name, exc)
        if root.parent is not None and root in root.parent.children:
            root.parent.children.remove(root)
        if self.broker is not None:
            await self.broker.revoke_tasks([t.txn for t in family])

    async def _approve(
        self,
        task: Task,
        obligation: str,
        action: Any,
        resource: Any,
        context: Mapping[str, Any] | None,
        *,
        grant: bool = True,
    ) -> None:
        """Ask the approver; only `True` approves (and records a grant when `grant`).
        A refusal (of any kind) is a denial for the task's monitors and raises
        `ApprovalRefused`."""
        grants = self._grants(task)
        grants.requests += 1
        # Bound to what the approver is shown, as it is now (not after the wait).
        policies = self._policy_digest.of(self.engine)
        limit = self.monitors.max_approval_requests
        why: str | None = None
        approver = self.approvers.get(obligation)
        if limit and grants.requests > limit:
            why = f"obligation `{obligation}`: too many approval requests ({limit} allowed)"
        elif approver is None:
            why = f"obligation `{obligation}` has no approver configured"
        else:
            req = ApprovalRequest(task, obligation, str(action), str(resource), context or {})
            answer: object = False
            with anyio.move_on_after(self.approval_timeout):
                try:
                    answer = await approver(req)
                except Exception as e:  # an approver that fails must not approve
                    log.warning("approver for %s failed: %s", obligation, e)
            if answer is not True:
                why = f"obligation `{obligation}` was not approved"
        if why is not None:
            revoked = task.handle.record_denial()
            if revoked is not None:
                self._revoked_by_decision(task, revoked)
            raise ApprovalRefused(why, kind=DenialKind.OBLIGATION)
        if not grant:
            return
        grants.record(
            Grant(
                obligation,
                str(action),
                str(resource),
                context_digest(context),
                policies,
                self.clock() + self.grant_ttl,
            )
        )

    async def _watch_deadlines(self) -> None:
        """Revoke and close tasks whose deadline passed, even if they make no decision."""
        while True:
            while self._foreign_revokes and self.broker is not None and self._tg is not None:
                self._tg.start_soon(self.broker.revoke_task, self._foreign_revokes.popleft())
            while self._foreign_calls and self._tg is not None:
                self._tg.start_soon(self._foreign_calls.popleft())
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
