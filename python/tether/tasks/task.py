"""One task of one agent: `authorize` is synchronous and fast; the rest is async."""

from __future__ import annotations

import json
import math
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio

from tether._core import Decision, DenialKind, TaskHandle
from tether.domains import resolve_domain
from tether.identity import Agent
from tether.leases import Lease, LeaseError, TaskRef
from tether.tasks.agents import agent_uid, spiffe_of
from tether.tasks.approvals import context_digest
from tether.tasks.errors import REVOKING_KINDS, Denied, TaskRevoked
from tether.tasks.shared import SharedBudgetDenied

if TYPE_CHECKING:
    from tether.explain import Explanation
    from tether.tasks.guard import Guard
    from tether.tasks.shared import SharedTree

EntityArg = Any

# Denials the monitors count (as in Rust: not obligations, nor decisions on a dead task).
_COUNTED_DENIALS = frozenset(
    {DenialKind.POLICY, DenialKind.SCOPE, DenialKind.BUDGET, DenialKind.MONITOR, DenialKind.ERROR}
)

# Short action names seen so far, mapped to their uid text (saves formatting per call).
_ACTION_UIDS: dict[str, str] = {}


def action_uid(action: EntityArg) -> EntityArg:
    """`"read"` is shorthand for `Action::"read"`; full uids and handles pass through."""
    if isinstance(action, str) and "::" not in action:
        return f'Action::"{action}"'
    return action


def _action(action: EntityArg) -> EntityArg:
    if not isinstance(action, str):
        return action
    uid = _ACTION_UIDS.get(action)
    if uid is None:
        uid = action_uid(action)
        if len(_ACTION_UIDS) < 4096:
            _ACTION_UIDS[action] = uid
    return uid


def _usable(lease: Lease, now: float) -> bool:
    try:
        lease.check(now)
    except LeaseError:
        return False
    return True


@dataclass(eq=False)
class Task:
    """One task of one agent. Rules read what it declared (intent, id, depth, agent)
    under `context.task`, which a caller's context cannot shadow."""

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
    # Leases issued through `lease()`, oldest first (receipts name the usable ones).
    _leases: tuple[Lease, ...] = field(default=(), init=False, repr=False)
    _decide: Callable[..., Decision] = field(init=False, repr=False)
    _clock: Callable[[], float] = field(init=False, repr=False)
    # The receipt queue while this task's receipts need nothing captured at decision
    # time (no `task_state`, no leases), and its capacity; None: `audit.task_decision`.
    _receipts: deque[tuple[Any, ...]] | None = field(default=None, init=False, repr=False)
    _receipt_room: int = field(default=0, init=False, repr=False)
    # Set when the Guard has a shared store: every decision then goes through the tree.
    shared: SharedTree | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Bound once: `authorize` is the hot path and attribute chains cost real time.
        self._decide = self.guard.engine.authorize_task
        self._clock = self.guard.clock
        audit = self.guard.audit
        if audit is not None and not audit.task_state:
            self._receipts, self._receipt_room = audit._q, audit.capacity

    @property
    def agent_uid(self) -> str:
        return agent_uid(self.agent)

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
    ) -> Decision:
        """Decide one action now; a permit commits the state effects on this task
        and every ancestor. Obligations are discharged only through `require`.

        With a shared store (`Guard(store=...)`) this raises `StoreUnavailable` while the
        revocation view is not current (fail closed), and `Denied` (kind `BUDGET`) when a
        permit's spending cannot be covered by the shared budget (in strict mode: any
        spending, which needs the round trip of `await task.require(...)`)."""
        if self.shared is not None:
            d, spent, at = self._decide_shared(action, resource, context, reasons, None)
            if self.shared.owes(spent):
                why = "strict mode needs a round trip: use `await task.require`"
                refused = self.shared.refuse(self.handle, spent, why)
                raise self._refused_by_store(refused, action, resource, context, at)
            return self._after(action, resource, context, d, at)
        now = self._clock()
        if reasons:
            d = self._decide(self.handle, _action(action), resource, context, now, reasons=True)
        else:
            d = self._decide(self.handle, _action(action), resource, context, now)
        return self._after(action, resource, context, d, now)

    def authorize_egress(
        self,
        url: str,
        context: Mapping[str, Any] | None = None,
        *,
        action: EntityArg = "egress",
        reasons: bool = False,
    ) -> Decision:
        """Decide sending to `url`: the host is normalised (case, trailing dot, IDNA,
        port) and an unregistered subdomain is decided as its closest registered
        parent, so a blocklist cannot be passed by spelling. A malformed URL is a
        `ValueError` (nothing is sent)."""
        resource = resolve_domain(self.guard.engine, url)
        return self.authorize(action, resource, context, reasons=reasons)

    def _decide_shared(
        self,
        action: EntityArg,
        resource: EntityArg,
        context: Mapping[str, Any] | None,
        reasons: bool,
        approved: list[str] | None,
    ) -> tuple[Decision, dict[str, int], float]:
        """A decision of a task whose tree shares state, not yet reported (receipt,
        monitors' revocations, `on_decision`): a permit of a strict budget still needs its
        reservation. Returns the decision, what a permit spent per budget, and the task
        clock's reading it was made at."""
        shared = self.shared
        assert shared is not None
        uid = _action(action)
        at: list[float] = []  # the clock is read inside, once the tree's lock is held

        def decide() -> Decision:
            at.append(self._clock())
            if approved is None:
                return self._decide(self.handle, uid, resource, context, at[-1], reasons=reasons)
            return self._decide(
                self.handle, uid, resource, context, at[-1], reasons=True, approved=approved
            )

        try:
            d, spent = shared.decide(self.handle, decide)
        except SharedBudgetDenied as exc:
            raise self._refused_by_store(exc, action, resource, context, at[-1]) from None
        if d.allowed and self.guard.labels is not None:
            self.guard.labels.acquired(self)
        return d, spent, at[-1]

    async def _decide_reserved(
        self,
        action: EntityArg,
        resource: EntityArg,
        context: Mapping[str, Any] | None,
        approved: list[str] | None,
    ) -> Decision:
        """Decide with reasons; in strict mode, reserve a permit's spending on the store."""
        assert self.shared is not None
        d, spent, at = self._decide_shared(action, resource, context, True, approved)
        if self.shared.owes(spent):
            try:
                await self.shared.reserve(
                    self.handle, spent, lambda u: self._after(action, resource, context, u, at)
                )
            except SharedBudgetDenied as exc:
                raise self._refused_by_store(exc, action, resource, context, at) from None
        return self._after(action, resource, context, d, at)

    def _refused_by_store(
        self,
        exc: SharedBudgetDenied,
        action: EntityArg,
        resource: EntityArg,
        context: Any,
        now: float,
    ) -> Denied:
        """A permit the shared budget could not cover was undone in Rust (a denial for the
        monitors unless only a refill was late); the denial it became is reported like any
        decision: receipt, revocation if a monitor tripped, `on_decision`."""
        if exc.decision is not None:
            self._after(action, resource, context, exc.decision, now, exc.counts)
        return exc

    def _after(
        self,
        action: EntityArg,
        resource: EntityArg,
        context: Any,
        d: Decision,
        now: float,
        counted: bool = True,
    ) -> Decision:
        guard = self.guard
        shared = self.shared
        if shared is not None and shared.monitors is not None and counted:
            if d.allowed or d.kind in _COUNTED_DENIALS:
                shared.monitors.record(d.allowed)
        # The receipt (tether.audit): the common case is queued here, inline, as a tuple
        # of objects already held, touching nothing but this task and the queue (memory
        # the decision evicted from the cache costs more than the work); other cases and
        # all encoding and hashing are the log's.
        q = self._receipts
        if q is not None and len(q) < self._receipt_room:
            q.append((self, action, resource, context, d, now))
        elif guard.audit is not None:
            guard.audit.task_decision(self, action, resource, context, d, now)
        if not d.allowed and d.revoked is not None:
            guard._revoked_by_decision(self, d.revoked)
        if guard.on_decision is not None:
            guard.on_decision(self, action, resource, d)
        return d

    async def require(
        self,
        action: EntityArg,
        resource: EntityArg,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Authorize or raise `Denied`; obligations (approvals) are awaited, fail closed:
        each approval becomes a single-use grant bound to this exact request."""
        # With reasons: a refusal names the policies behind it (require is not the hot path).
        if self.shared is not None:
            d = await self._decide_reserved(action, resource, context, None)
        else:
            d = self.authorize(action, resource, context, reasons=True)
        if d.allowed:
            return d
        if d.kind == DenialKind.OBLIGATION:
            for obligation in d.obligations:
                await self.guard._approve(self, obligation, action, resource, context)
            d = await self._with_grants(action, resource, context, d.obligations)
            if d.allowed:
                return d
        raise self._denial(d)

    async def _with_grants(
        self,
        action: EntityArg,
        resource: EntityArg,
        context: Mapping[str, Any] | None,
        obligations: list[str],
    ) -> Decision:
        guard = self.guard
        now = self._clock()
        approved = guard._grants(self).take(
            obligations,
            str(action),
            str(resource),
            context_digest(context),
            guard._policy_digest.of(guard.engine),
            now,
        )
        if self.shared is not None:
            return await self._decide_reserved(action, resource, context, approved)
        d = self._decide(
            self.handle, _action(action), resource, context, now, reasons=True, approved=approved
        )
        return self._after(action, resource, context, d, now)

    def _denial(self, d: Decision) -> Denied:
        why = d.message or (
            f"denied by {', '.join(d.reasons)}" if d.reasons else "no policy permits it"
        )
        cls = TaskRevoked if d.kind in REVOKING_KINDS else Denied
        return cls(why, d)

    async def delegate(
        self,
        child: str | Agent,
        *,
        scope: Iterable[str] | None = None,
        intent: str | None = None,
        ttl: float | None = None,
        outlive_credential: bool = False,
    ) -> Task:
        """Open a sub-task for another agent: its own identity proof (a token, or an
        `Agent` whose credential is still valid), `delegate` authorized for this task,
        a scope that can only narrow, the chain recorded. What the child spends and
        counts is reserved against this task too."""
        guard = self.guard
        agent = await guard.authenticate(child) if isinstance(child, str) else child
        guard._check_proof(agent, unauthenticated_ok=False)
        d = self.authorize("delegate", agent_uid(agent))
        if not d.allowed:
            raise self._denial(d)
        child_scope = None if scope is None else frozenset(scope)
        if self.scope is not None:
            if child_scope is None:
                child_scope = self.scope
            elif not child_scope <= self.scope:
                wider = ", ".join(sorted(child_scope - self.scope))
                raise Denied(f"delegation would widen scope with: {wider}", kind=DenialKind.SCOPE)
        labels = await guard._load_labels(agent)
        remaining = self.deadline - self._clock()
        child_ttl = remaining if ttl is None else min(ttl, remaining)
        return guard._open(
            agent,
            intent or self.intent,
            child_scope,
            child_ttl,
            parent=self,
            outlive_credential=outlive_credential,
            labels=labels,
        )

    async def escalate(self, actions: Iterable[str], *, reason: str, ttl: float) -> frozenset[str]:
        """Ask to widen this task's scope by `actions` for `ttl` seconds: `escalate` must
        be permitted for the agent (the requested actions, reason and ttl are in the
        context), then the `escalate` approver must grant it (fail closed). The widening
        reverts by itself; policies see it in `context.task.escalated`; children never
        inherit it. A refusal is a denial for the monitors."""
        if not math.isfinite(ttl) or ttl <= 0:
            raise ValueError("ttl must be a positive number of seconds")
        wanted = frozenset(actions)
        names = sorted(a.split('::"', 1)[1].rstrip('"') if "::" in a else a for a in wanted)
        ctx = {"actions": names, "reason": reason, "ttl": math.ceil(ttl)}
        d = self.authorize("escalate", self.agent_uid, ctx)
        if not d.allowed:
            raise self._denial(d)
        await self.guard._approve(self, "escalate", "escalate", self.agent_uid, ctx, grant=False)
        self.guard.engine.escalate_task(
            self.handle, [action_uid(a) for a in sorted(wanted)], self._clock() + ttl
        )
        return wanted

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
            raise TaskRevoked(f"task revoked: {self.revoked}", kind=DenialKind.REVOKED)
        lease = await broker.issue(
            self.ref(), provider, scope=None if scope is None else frozenset(scope), ttl=ttl
        )
        now = broker.clock()
        self._leases = (*(x for x in self._leases if _usable(x, now)), lease)
        self._receipts = None  # receipts now name the usable leases: the log's path
        return lease

    def active_lease_ids(self) -> tuple[str, ...]:
        """Ids of the leases issued through `lease()` that are usable now."""
        broker = self.guard.broker
        if broker is None or not self._leases:
            return ()
        now = broker.clock()
        return tuple(x.lease_id for x in self._leases if _usable(x, now))

    def ref(self) -> TaskRef:
        """The task as the broker sees it; the deadline is moved onto the broker's clock
        (the time left is what both clocks agree on)."""
        guard = self.guard
        broker = guard.broker
        deadline = self.deadline
        if broker is not None:
            deadline = broker.clock() + (self.deadline - guard.clock())
        return TaskRef(
            txn=self.txn,
            agent=str(spiffe_of(self.agent) or self.agent_uid),
            scope=self.scope if self.scope is not None else frozenset(),
            intent=self.intent,
            actors=self.actors,
            deadline=deadline,
            parent_txn=self.parent.txn if self.parent else None,
        )

    def subtree(self) -> list[Task]:
        """This task and every open descendant, parents before children."""
        out: list[Task] = [self]
        for t in out:
            out.extend(t.children)
        return out

    def state(self) -> dict[str, Any]:
        """`context.task` as rules see it now (to replay a decision elsewhere)."""
        out: dict[str, Any] = json.loads(
            self.guard.engine.task_context(self.handle, now=self._clock())
        )
        return out

    def explain(
        self, action: EntityArg, resource: EntityArg, context: Mapping[str, Any] | None = None
    ) -> Explanation:
        """Why `authorize(action, resource, context)` would be allowed or denied now, by
        policy and condition, with the `context.task` values each condition reads (the
        task's state now, as the decision would see it). Scope, deadline and revocation,
        which the task checks before any policy, are not part of the explanation."""
        return self.guard.engine.explain(
            self.agent_uid, _action(action), resource, {**(context or {}), "task": self.state()}
        )

    def revoke(self, reason: str) -> None:
        """Revoke this task and its descendants now; leases follow in the background, and
        so does the revocation's broadcast through a shared store (`Guard(store=...)`)."""
        self.handle.revoke(reason)
        self.guard._after_revoke(self)
        self.guard._broadcast_task_revocation(self, reason)

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
