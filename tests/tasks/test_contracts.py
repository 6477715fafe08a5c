"""The task layer's smaller promises, each checked through the public API: what a
decision is given (context, the guard's clock, reasons), what audit receipts and
`on_decision` see, the messages and kinds of refusals, what a lease and a task ref
carry, and the Guard's defaults. Written against mutmut's survivors (issue 15)."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
from typing import Any

import anyio
import pytest

from tests.support import FakeClock
from tether import DenialKind
from tether.engine import Engine
from tether.identity import Agent, AuthenticationError, ExpiredToken, SpiffeId
from tether.leases import CredentialBroker
from tether.store import MemoryLeaseStore
from tether.tasks import (
    ApprovalRefused,
    ApprovalRequest,
    Denied,
    Guard,
    Monitors,
    TaskRevoked,
)
from tether.tasks.approvals import context_digest

pytestmark = pytest.mark.anyio

WIKI = 'Dataset::"wiki"'
SEARCH = 'Tool::"search"'
DEPLOY = 'Tool::"deploy"'

# `intent` is a context attribute the example schema allows on every action.
FORBID_EXFIL_INTENT = """
@id("no-exfil-intent")
forbid (principal, action, resource)
when { context has intent && context.intent == "exfil" };
"""
TWO_FORBIDS = """
@id("payroll-closed-a")
forbid (principal, action == Action::"read", resource == Dataset::"payroll");
@id("payroll-closed-b")
forbid (principal, action == Action::"read", resource == Dataset::"payroll");
"""
QUIET = Monitors(max_deny_streak=0, max_deny_ratio=0)
DEPLOY_NEEDS_INTENT = """
@id("deploy-states-intent")
forbid (principal, action == Action::"call_tool", resource == Tool::"deploy")
unless { context has intent };
"""


class RecordingAudit:
    """Stands in for `tether.audit.AuditLog`: records what the task layer hands over."""

    # True: the task hands every decision to `task_decision` (the log's own fast path
    # queues receipts directly, which a stand-in cannot observe).
    task_state = True

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def task_decision(
        self, task: Any, action: Any, resource: Any, context: Any, d: Any, now: float
    ) -> None:
        self.calls.append((task, action, resource, context, d))


def agent_expiring_at(spiffe_id: str, expires_at: float) -> Agent:
    return Agent.from_claims(SpiffeId.parse(spiffe_id), {"sub": spiffe_id}, expires_at)


# -- what a decision is given ----------------------------------------------------------


@pytest.mark.parametrize("reasons", [False, True])
@pytest.mark.parametrize("intent", ["exfil", "summarize"], ids=["attack", "benign"])
async def test_context_reaches_the_policies(world: Any, reasons: bool, intent: str) -> None:
    """The caller's context is what the policies read, on both decision paths and
    through `authorize_egress` and `require`."""
    guard = Guard(
        world.engine(policies=world.POLICIES + FORBID_EXFIL_INTENT),
        allow_unauthenticated=True,
        monitors=QUIET,
    )
    ctx = {"intent": intent}
    async with guard.task(world.ORCH, intent="x") as task:
        d = task.authorize("read", WIKI, ctx, reasons=reasons)
        assert d.allowed is (intent != "exfil")
        e = task.authorize_egress("https://github.com/x", ctx, reasons=reasons)
        assert e.allowed is (intent != "exfil")
        if intent == "exfil":
            with pytest.raises(Denied, match="denied by no-exfil-intent"):
                await task.require("read", WIKI, ctx)
        else:
            assert (await task.require("read", WIKI, ctx)).allowed


@pytest.mark.parametrize("reasons", [False, True])
async def test_decisions_read_the_guards_clock(world: Any, clock: FakeClock, reasons: bool) -> None:
    """Deadlines are judged on the Guard's clock (here a fake one, far behind the real
    monotonic clock), not on the process's."""
    guard = Guard(world.engine(), clock=clock, allow_unauthenticated=True)
    async with guard.task(world.ORCH, intent="x", ttl=10) as task:
        assert task.authorize("read", WIKI, reasons=reasons).allowed
        clock.advance(11)
        d = task.authorize("read", WIKI, reasons=reasons)
        assert not d.allowed and d.kind == DenialKind.DEADLINE


async def test_reasons_only_when_asked(world: Any) -> None:
    guard = Guard(world.engine(), allow_unauthenticated=True)
    async with guard.task(world.ORCH, intent="x") as task:
        assert task.authorize("read", WIKI).reasons == []
        assert task.authorize("read", WIKI, reasons=True).reasons == ["read-cleared"]
        assert task.authorize_egress("https://github.com/").reasons == []
        assert task.authorize_egress("https://github.com/", reasons=True).reasons == [
            "egress-allowlist"
        ]
        d = await task.require("read", WIKI)
        assert d.reasons == ["read-cleared"]


async def test_refusal_messages_name_the_policies(world: Any) -> None:
    """`require` decides with reasons, so its refusal names every forbidding policy,
    or says that nothing permits it."""
    guard = Guard(
        world.engine(policies=world.POLICIES + TWO_FORBIDS),
        allow_unauthenticated=True,
        monitors=QUIET,
    )
    async with guard.task(world.RESEARCHER, intent="x") as task:
        with pytest.raises(Denied) as forbidden:
            await task.require("read", 'Dataset::"payroll"')
        assert str(forbidden.value) == "denied by payroll-closed-a, payroll-closed-b"
        assert forbidden.value.kind == DenialKind.POLICY
        with pytest.raises(Denied) as unpermitted:
            await task.require("call_tool", 'Tool::"shell"')
        assert str(unpermitted.value) == "no policy permits it"


async def test_never_seen_action_names_are_expanded() -> None:
    """A short action name is `Action::"name"` the first time it is seen too (the
    expansion is cached), and a full uid passes unchanged."""
    engine = Engine('permit (principal, action, resource) when { action != Action::"no" };')
    guard = Guard(engine, allow_unauthenticated=True)
    async with guard.task('User::"u"', intent="x") as task:
        name = f"act_{secrets.token_hex(8)}"
        assert task.authorize(name, 'Doc::"d"').allowed
        assert task.authorize(name, 'Doc::"d"').allowed  # now from the cache
        assert not task.authorize("no", 'Doc::"d"').allowed
        assert not task.authorize('Action::"no"', 'Doc::"d"').allowed
        assert task.authorize(f'Action::"{name}x"', 'Doc::"d"').allowed


# -- what audit and on_decision see ------------------------------------------------------


async def test_audit_and_on_decision_get_the_request(world: Any) -> None:
    audit = RecordingAudit()
    seen: list[tuple[Any, ...]] = []
    guard = Guard(
        world.engine(),
        allow_unauthenticated=True,
        approvers={"approval": _yes},
        audit=audit,  # type: ignore[arg-type]
        on_decision=lambda t, a, r, d: seen.append((t, a, r, d)),
    )
    ctx = {"intent": "ship"}
    async with guard.task(world.ORCH, intent="x") as task:
        d = task.authorize("read", WIKI, ctx)
        assert audit.calls[-1] == (task, "read", WIKI, ctx, d)
        assert seen[-1] == (task, "read", WIKI, d)
        await task.require("call_tool", DEPLOY, ctx)
        # The obligation's first refusal, then the decision with the grant.
        (t1, a1, r1, c1, d1), (t2, a2, r2, c2, d2) = audit.calls[-2:]
        assert (t1, a1, r1, c1) == (t2, a2, r2, c2) == (task, "call_tool", DEPLOY, ctx)
        assert d1.kind == DenialKind.OBLIGATION and d2.allowed
        assert seen[-1][:3] == (task, "call_tool", DEPLOY) and seen[-1][3].allowed


async def _yes(req: ApprovalRequest) -> bool:
    return True


# -- leases stay with a task denied for ordinary reasons ------------------------------


async def test_plain_denials_and_refused_approvals_leave_leases_alive(
    world: Any, broker: CredentialBroker
) -> None:
    """Only a decision that revokes the task revokes its leases: a policy denial or an
    unapproved obligation does not (the attack twin: a monitor revoking does)."""

    async def no(req: ApprovalRequest) -> bool:
        return False

    monitors = Monitors(max_deny_streak=3, max_deny_ratio=0)
    guard = Guard(
        world.engine(),
        broker=broker,
        allow_unauthenticated=True,
        approvers={"approval": no},
        monitors=monitors,
    )
    async with guard, guard.task(world.ORCH, intent="x") as task:
        lease = await task.lease("db")
        assert not task.authorize("read", 'Dataset::"nope"').allowed
        with pytest.raises(ApprovalRefused) as refused:
            await task.require("call_tool", DEPLOY)
        assert refused.value.kind == DenialKind.OBLIGATION
        assert str(refused.value) == "obligation `approval` was not approved"
        assert lease.secret.reveal().startswith("secret-")
        d = task.authorize("read", 'Dataset::"nope"')  # the third denial in a row
        assert d.kind == DenialKind.MONITOR
        with pytest.raises(Exception, match="revoked"):
            lease.secret  # noqa: B018 (the property raises)


async def test_revocation_by_decision_is_logged_with_its_reason(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    guard = Guard(world.engine(), allow_unauthenticated=True, monitors=Monitors(max_deny_streak=1))
    async with guard.task(world.ORCH, intent="x") as task:
        with caplog.at_level(logging.WARNING, logger="tether.tasks"):
            d = task.authorize("read", 'Dataset::"nope"')
        assert d.revoked is not None
        assert f"task {task.txn} revoked: {d.revoked}" in caplog.messages


async def test_tree_monitor_revoking_an_ancestor_revokes_its_leases(
    world: Any, broker: CredentialBroker, clock: FakeClock
) -> None:
    """A child's calls count for its parent; when they revoke the parent (a rate spike
    over the tree), the parent's leases go too (from the topmost task revoked), not
    only the child's."""
    guard = Guard(
        world.engine(),
        broker=broker,
        allow_unauthenticated=True,
        clock=clock,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0, max_rate=2, rate_window=10),
    )
    async with guard, guard.task(world.ORCH, intent="x") as parent:
        parent_lease = await parent.lease("db")
        child = await parent.delegate(agent_expiring_at(world.RES_ID, guard.wall_clock() + 600))
        assert child.authorize("call_tool", SEARCH).allowed  # the tree's second decision
        d = child.authorize("call_tool", SEARCH)  # its third: the parent's limit
        assert not d.allowed and d.revoked is not None
        assert parent.revoked is not None and "rate" in parent.revoked
        with pytest.raises(Exception, match="revoked"):
            parent_lease.secret  # noqa: B018 (the property raises)


async def test_a_grandchild_tripping_the_root_revokes_the_roots_leases(
    world: Any, broker: CredentialBroker, clock: FakeClock
) -> None:
    """The walk up from the deciding task goes past the middle task to the topmost one
    revoked, the root."""
    guard = Guard(
        world.engine(),
        broker=broker,
        allow_unauthenticated=True,
        clock=clock,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0, max_rate=2, rate_window=10),
    )
    async with guard, guard.task(world.ORCH, intent="x") as root:
        root_lease = await root.lease("db")
        middle = await root.delegate(agent_expiring_at(world.ORCH_ID, guard.wall_clock() + 600))
        leaf = await middle.delegate(agent_expiring_at(world.RES_ID, guard.wall_clock() + 600))
        d = leaf.authorize("call_tool", SEARCH)  # the root's third decision in the window
        assert not d.allowed and d.revoked is not None
        assert root.revoked is not None
        with pytest.raises(Exception, match="revoked"):
            root_lease.secret  # noqa: B018 (the property raises)


# -- escalation ------------------------------------------------------------------------


ESCALATE = """
@id("orchestrators-escalate")
permit (principal is Agent, action == Action::"escalate", resource)
when { principal.role == "orchestrator" && resource == principal };
"""


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
async def test_escalation_ttl_must_be_positive_and_finite(world: Any, ttl: float) -> None:
    guard = Guard(world.engine(policies=world.POLICIES + ESCALATE), allow_unauthenticated=True)
    async with guard.task(world.ORCH, intent="x") as task:
        with pytest.raises(ValueError, match=r"^ttl must be a positive number of seconds$"):
            await task.escalate({"call_tool"}, reason="r", ttl=ttl)


async def test_escalation_request_as_the_approver_sees_it(world: Any, clock: FakeClock) -> None:
    """Full uids and short names are shown as names, sorted; the approver is asked about
    `escalate` on the agent itself; a sub-second ttl is valid and rounds up."""
    asked: list[ApprovalRequest] = []

    async def approver(req: ApprovalRequest) -> bool:
        asked.append(req)
        return True

    guard = Guard(
        world.engine(policies=world.POLICIES + ESCALATE),
        approvers={"escalate": approver},
        clock=clock,
        allow_unauthenticated=True,
    )
    async with guard.task(world.ORCH, intent="x", scope={"read", "escalate"}) as task:
        wanted = {'Action::"egress"', "call_tool", 'Action::"BOX"'}
        got = await task.escalate(wanted, reason="need tools", ttl=0.5)
        assert got == wanted
        (req,) = asked
        assert (req.obligation, req.action, req.resource) == ("escalate", "escalate", world.ORCH)
        assert dict(req.context) == {
            "actions": ["BOX", "call_tool", "egress"],
            "reason": "need tools",
            "ttl": 1,
        }
        assert task.authorize("call_tool", SEARCH).allowed
        assert task.authorize_egress("https://github.com/").allowed  # the full uid widened
        clock.advance(0.5)
        assert task.authorize("call_tool", SEARCH).kind == DenialKind.SCOPE


# -- leases and refs ---------------------------------------------------------------------


async def test_lease_needs_a_broker_and_a_live_task(world: Any, broker: CredentialBroker) -> None:
    async with Guard(world.engine(), allow_unauthenticated=True).task(
        world.ORCH, intent="x"
    ) as task:
        with pytest.raises(RuntimeError, match=r"^this Guard has no CredentialBroker$"):
            await task.lease("db")
    guard = Guard(world.engine(), broker=broker, allow_unauthenticated=True)
    async with guard, guard.task(world.ORCH, intent="x") as task:
        task.revoke("operator said so")
        with pytest.raises(TaskRevoked) as e:
            await task.lease("db")
        assert str(e.value) == "task revoked: operator said so"
        assert e.value.kind == DenialKind.REVOKED


async def test_lease_scope_and_ttl_are_passed_on(world: Any, broker: CredentialBroker) -> None:
    guard = Guard(world.engine(), broker=broker, allow_unauthenticated=True)
    async with guard, guard.task(world.ORCH, intent="x", scope={"read", "call_tool"}) as task:
        whole = await task.lease("db")
        assert whole.scope == {"read", "call_tool"}
        narrow = await task.lease("db", scope=["read"], ttl=7)
        assert narrow.scope == {"read"}
        assert narrow.expires_at - narrow.issued_at == 7


async def test_ref_describes_the_task(world: Any, clock: FakeClock) -> None:
    broker_clock = FakeClock(50.0)
    broker = CredentialBroker(MemoryLeaseStore(), {}, clock=broker_clock)
    guard = Guard(world.engine(), broker=broker, clock=clock, allow_unauthenticated=True)
    async with guard.task(world.ORCH, intent="summarize", ttl=30) as task:
        ref = task.ref()
        assert ref.txn == task.txn and ref.parent_txn is None
        assert ref.agent == world.ORCH_ID  # the SPIFFE ID, read from the uid
        assert ref.intent == "summarize"
        assert ref.actors == (world.ORCH,)
        assert ref.scope == frozenset()
        assert ref.deadline == 80.0  # 30 s left, on the broker's clock
    plain = Guard(world.engine(), clock=clock, allow_unauthenticated=True)
    async with plain.task('User::"bob"', intent="y", scope={"read"}, ttl=30) as task:
        ref = task.ref()
        assert ref.agent == 'User::"bob"' and ref.scope == {"read"}
        assert ref.deadline == task.deadline == clock() + 30


async def test_close_default_reason_and_child_detached(world: Any) -> None:
    guard = Guard(world.engine(), allow_unauthenticated=True)
    async with guard.task(world.ORCH, intent="x") as parent:
        child = await parent.delegate(agent_expiring_at(world.RES_ID, guard.wall_clock() + 600))
        assert parent.subtree() == [parent, child]
        await child.close()
        assert child.revoked == "task ended"
        assert parent.children == [] and parent.subtree() == [parent]
        assert child.txn not in guard.tasks and parent.txn in guard.tasks
        assert parent.authorize("read", WIKI).allowed


# -- delegation ------------------------------------------------------------------------


async def test_delegation_may_keep_the_same_scope_but_not_widen(world: Any) -> None:
    guard = Guard(world.engine(), allow_unauthenticated=True)
    researcher = agent_expiring_at(world.RES_ID, guard.wall_clock() + 600)
    async with guard.task(world.ORCH, intent="x", scope={"read", "delegate"}) as task:
        same = await task.delegate(researcher, scope={"read", "delegate"})
        assert same.scope == frozenset({"read", "delegate"})
        with pytest.raises(Denied) as e:
            await task.delegate(researcher, scope={"read", "egress", "call_tool"})
        assert str(e.value) == "delegation would widen scope with: call_tool, egress"
        assert e.value.kind == DenialKind.SCOPE


@pytest.mark.parametrize("outlive", [False, True])
async def test_delegation_passes_outlive_credential(world: Any, outlive: bool) -> None:
    mono, wall = FakeClock(0.0), FakeClock(world.T0)
    guard = Guard(
        world.engine(),
        clock=mono,
        wall_clock=wall,
        credential_leeway=0,
        allow_unauthenticated=True,
    )
    short_lived = agent_expiring_at(world.RES_ID, wall() + 60)
    async with guard.task(world.ORCH, intent="x", ttl=600) as task:
        child = (
            await task.delegate(short_lived, outlive_credential=True)
            if outlive
            else await task.delegate(short_lived)
        )
        assert child.deadline == (600 if outlive else 60)


# -- the Guard's defaults and refusals ---------------------------------------------------


async def test_guard_defaults(world: Any, clock: FakeClock) -> None:
    """A bare uid is refused unless opted in; a task lives 300 s; a credential is
    honoured 5 s past its expiry and no further, and caps the task's deadline."""
    wall = FakeClock(world.T0)
    guard = Guard(world.engine(), clock=clock, wall_clock=wall)
    bare = (
        f"^{world.ORCH!r} is a bare uid with no proof of identity: authenticate a token "
        r"\(guard.authenticate\) or open the Guard with allow_unauthenticated=True$"
    )
    with pytest.raises(AuthenticationError, match=bare):
        async with guard.task(world.ORCH, intent="x"):
            pass
    fresh = agent_expiring_at(world.ORCH_ID, wall() + 3600)
    async with guard.task(fresh, intent="x") as task:
        assert task.deadline == clock() + 300
    near = agent_expiring_at(world.ORCH_ID, wall() + 100)
    async with guard.task(near, intent="x", ttl=1000) as task:
        assert task.deadline == clock() + 105
    just_valid = agent_expiring_at(world.ORCH_ID, wall() - 4.5)
    async with guard.task(just_valid, intent="x") as task:
        assert task.deadline == clock() + 0.5
    expired = agent_expiring_at(world.ORCH_ID, wall() - 5)
    with pytest.raises(ExpiredToken, match=r"expired 5s ago"):
        async with guard.task(expired, intent="x"):
            pass


SECOND_OBLIGATION = """
@id("deploy-needs-security")
@obligation("security")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"deploy")
when { principal.role == "orchestrator" };
"""


async def test_grant_expires_while_a_second_approval_waits(world: Any, clock: FakeClock) -> None:
    """A grant lives 60 s by default (from the approver's answer): when a second
    obligation's approver answers exactly 60 s after the first, the first grant is
    void and nothing is allowed; a moment earlier, both hold (benign twin)."""
    for wait, allowed in ((59.999, True), (60.0, False)):

        async def quick_yes(req: ApprovalRequest) -> bool:
            return True

        async def slow_yes(req: ApprovalRequest, wait: float = wait) -> bool:
            clock.advance(wait)
            return True

        guard = Guard(
            world.engine(policies=world.POLICIES + SECOND_OBLIGATION),
            clock=clock,
            allow_unauthenticated=True,
            approvers={"approval": quick_yes, "security": slow_yes},
            monitors=QUIET,
        )
        async with guard.task(world.ORCH, intent="x", ttl=1000) as task:
            first = task.authorize("call_tool", DEPLOY)
            assert sorted(first.obligations) == ["approval", "security"]
            if allowed:
                assert (await task.require("call_tool", DEPLOY)).allowed
            else:
                with pytest.raises(Denied) as e:
                    await task.require("call_tool", DEPLOY)
                assert e.value.kind == DenialKind.OBLIGATION


async def test_approval_limit_counts_per_task(world: Any) -> None:
    guard = Guard(
        world.engine(),
        allow_unauthenticated=True,
        approvers={"approval": _yes},
        monitors=Monitors(max_approval_requests=1),
    )
    async with guard.task(world.ORCH, intent="x") as a, guard.task(world.ORCH, intent="y") as b:
        assert (await a.require("call_tool", DEPLOY)).allowed
        assert (await b.require("call_tool", DEPLOY)).allowed
        with pytest.raises(ApprovalRefused, match="too many approval requests"):
            await a.require("call_tool", DEPLOY)


async def test_failing_approver_is_logged_and_refuses(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(req: ApprovalRequest) -> bool:
        raise RuntimeError("approver down")

    guard = Guard(world.engine(), allow_unauthenticated=True, approvers={"approval": broken})
    async with guard.task(world.ORCH, intent="x") as task:
        with caplog.at_level(logging.WARNING, logger="tether.tasks"):
            with pytest.raises(ApprovalRefused):
                await task.require("call_tool", DEPLOY)
    assert "approver for approval failed: approver down" in caplog.messages


async def test_guard_refusals_say_what_is_wrong(world: Any) -> None:
    with pytest.raises(ValueError, match=r"^on_error must be 'deny' or 'skip'$"):
        Guard(world.engine(), on_error="ignore")  # type: ignore[arg-type]
    guard = Guard(world.engine(), allow_unauthenticated=True)
    with pytest.raises(RuntimeError, match=r"^this Guard has no Authenticator$"):
        await guard.authenticate("token")
    with pytest.raises(ValueError, match=r"^task must be a Task or a txn id, not 42$"):
        guard.revoke(task=42)  # type: ignore[arg-type]
    for ttl in (0, float("inf")):
        with pytest.raises(ValueError, match=r"^ttl must be a positive number of seconds$"):
            async with guard.task(world.ORCH, intent="x", ttl=ttl):
                pass
    async with guard.task(world.ORCH, intent="x", ttl=0.5) as task:
        assert task.authorize("read", WIKI).allowed


@pytest.mark.parametrize("target", ["agent", "domain"])
async def test_revoked_agents_and_domains_are_refused_with_the_reason(
    world: Any, target: str
) -> None:
    guard = Guard(world.engine(), allow_unauthenticated=True)
    if target == "agent":
        guard.revoke(agent=world.ORCH_ID, reason="compromised")
        expected = "agent revoked: compromised"
    else:
        guard.revoke(trust_domain="example.org", reason="bundle leaked")
        expected = "trust domain revoked: bundle leaked"
    with pytest.raises(TaskRevoked) as e:
        async with guard.task(world.ORCH, intent="x"):
            pass
    assert str(e.value) == expected and e.value.kind == DenialKind.REVOKED
    async with guard.task(world.RESEARCHER if target == "agent" else 'User::"u"', intent="x"):
        pass  # the benign twin: another agent / a uid with no trust domain


async def test_rate_window_is_the_monitors(world: Any, clock: FakeClock) -> None:
    """`max_rate` counts within `rate_window`: three calls 2 s apart pass a 3-per-1 s
    limit... and a 3-per-10 s limit revokes on the third."""
    for window, revoked in ((1.0, False), (10.0, True)):
        guard = Guard(
            world.engine(),
            clock=clock,
            allow_unauthenticated=True,
            monitors=Monitors(max_rate=2, rate_window=window),
        )
        async with guard.task(world.ORCH, intent="x", ttl=100) as task:
            kinds = []
            for _ in range(3):
                kinds.append(task.authorize("read", WIKI).kind)
                clock.advance(2)
            assert (kinds[-1] == DenialKind.MONITOR) is revoked
            assert kinds[:2] == [None, None]


# -- the deadline watcher ------------------------------------------------------------------


async def test_watcher_wakes_by_itself_and_logs(
    world: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody wakes the watcher: it re-reads the clock on its own (it sleeps at most until
    the nearest deadline, and never forever) and logs the task it revoked."""
    async with Guard(world.engine(), clock=clock, allow_unauthenticated=True) as guard:
        async with guard.task(world.ORCH, intent="x", ttl=0.001) as task:
            # Let the watcher see the new task and go back to sleep (it replaces its wake
            # event at the end of each pass) before the deadline passes.
            seen = guard._wake
            with anyio.fail_after(10):
                while guard._wake is seen:
                    await anyio.sleep(0)
            with caplog.at_level(logging.INFO, logger="tether.tasks"):
                clock.advance(1)
                with anyio.fail_after(10):
                    while task.revoked is None:
                        await anyio.sleep(0.005)
            assert task.revoked == "deadline passed"
            assert f"task {task.txn} reached its deadline" in caplog.messages


async def test_revocation_from_a_worker_thread_reaches_the_provider(
    world: Any, broker: CredentialBroker, source: Any
) -> None:
    """`task.revoke` called off the event loop: the lease is unusable at once, and the
    provider is told once the watcher runs (here woken by opening another task; the
    broker's own reaper is set to an hour, so it is not what tells the provider)."""
    slow_reaper = CredentialBroker(
        MemoryLeaseStore(), {"db": source.provider()}, reaper_interval=3600
    )
    guard = Guard(world.engine(), broker=slow_reaper, allow_unauthenticated=True)
    async with guard, guard.task(world.ORCH, intent="x") as task:
        lease = await task.lease("db")
        done = threading.Event()

        def revoke() -> None:
            task.revoke("from a thread")
            done.set()

        await anyio.to_thread.run_sync(revoke)
        assert done.is_set()
        with pytest.raises(Exception, match="revoked"):
            lease.secret  # noqa: B018 (the property raises)
        async with guard.task(world.ORCH, intent="wake"):
            with anyio.fail_after(10):
                while lease.lease_id not in source.revoked:
                    await anyio.sleep(0.005)


# -- more of the same: the approved decision, names, revocation timing -------------------


@pytest.mark.parametrize("ctx", [{"intent": "ship"}, None], ids=["benign", "attack"])
async def test_the_approved_decision_sees_the_same_context(
    world: Any, ctx: dict[str, str] | None
) -> None:
    """After approval the request is decided again with the same context (and the
    guard's clock, here far behind the real one), with reasons."""
    guard = Guard(
        world.engine(policies=world.POLICIES + DEPLOY_NEEDS_INTENT),
        clock=FakeClock(0.0),
        allow_unauthenticated=True,
        approvers={"approval": _yes},
        monitors=QUIET,
    )
    async with guard.task(world.ORCH, intent="x", ttl=100) as task:
        if ctx is None:
            with pytest.raises(Denied, match="denied by deploy-states-intent"):
                await task.require("call_tool", DEPLOY, ctx)
            return
        d = await task.require("call_tool", DEPLOY, ctx)
        assert d.allowed and d.reasons == ["approval-for-deploy"]


def test_denied_keeps_an_explicit_kind_over_the_decisions() -> None:
    engine = Engine("forbid (principal, action, resource);")
    d = engine.authorize('User::"u"', 'Action::"a"', 'Doc::"d"', reasons=True)
    assert Denied("m", d).kind == d.kind
    assert Denied("m", d, kind=DenialKind.SCOPE).kind == DenialKind.SCOPE
    assert Denied("m", kind=DenialKind.BUDGET).kind == DenialKind.BUDGET


def test_context_digest_is_canonical_json() -> None:
    assert context_digest({"b": 2, "a": 1}) == context_digest({"a": 1, "b": 2})
    assert context_digest({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()
    assert context_digest(None) == context_digest({}) == hashlib.sha256(b"{}").hexdigest()
    assert context_digest({"a": 1}) != context_digest({"a": 2})
    assert context_digest({"b": [1, 2], "a": 1}) == (
        hashlib.sha256(b'{"a":1,"b":[1,2]}').hexdigest()
    )
    # Values JSON cannot write are digested by their repr, not refused.
    assert (
        context_digest({"s": frozenset({1})})
        == hashlib.sha256(b'{"s":"frozenset({1})"}').hexdigest()
    )


@pytest.mark.parametrize(
    "name",
    ['Agent::"xy', '::"x"', 'Agent::""', "agent", 'Agent::"x', ""],
)
def test_revoking_a_malformed_agent_name_is_refused(world: Any, name: str) -> None:
    guard = Guard(world.engine(), allow_unauthenticated=True)
    message = (
        f"^cannot name an agent by {re.escape(repr(name))}: pass an Agent, a SpiffeId, "
        'a SPIFFE ID or an entity uid like Agent::"spiffe://example.org/agent"$'
    )
    with pytest.raises(ValueError, match=message):
        guard.revoke(agent=name)
    assert guard.revoked_agents == {}


@pytest.mark.parametrize("name", ['Agent::"x"', 'Agent::"a::"b"', 'NS::Agent::"x"'])
def test_revoking_a_well_formed_uid(world: Any, name: str) -> None:
    guard = Guard(world.engine(), allow_unauthenticated=True)
    assert guard.revoke(agent=name, reason="r") == 0
    assert guard.revoked_agents == {name: "r"}


async def test_trust_domain_of_a_bare_spiffe_uid(world: Any) -> None:
    """A task opened for a bare `Agent::"spiffe://..."` uid still belongs to its trust
    domain (its path may end in any character)."""
    guard = Guard(world.engine(), allow_unauthenticated=True)
    async with guard.task('Agent::"spiffe://corp/X"', intent="x") as task:
        async with guard.task('Agent::"spiffe://other/X"', intent="y") as other:
            assert guard.revoke(trust_domain="corp") == 1
            assert task.revoked is not None and other.revoked is None


async def test_on_loop_revocation_tells_the_provider_before_the_task_ends(
    world: Any, broker: CredentialBroker, source: Any
) -> None:
    guard = Guard(world.engine(), broker=broker, allow_unauthenticated=True)
    async with guard, guard.task(world.ORCH, intent="x") as task:
        lease = await task.lease("db")
        task.revoke("operator")
        with anyio.fail_after(10):
            while lease.lease_id not in source.revoked:
                await anyio.sleep(0.005)
        assert not task.closed


async def test_revoking_after_the_guard_stopped_is_harmless(
    world: Any, broker: CredentialBroker
) -> None:
    guard = Guard(world.engine(), broker=broker, allow_unauthenticated=True)
    async with guard, guard.task(world.ORCH, intent="x") as task:
        pass
    task.revoke("late")
    assert task.revoked == "task ended"


async def test_guard_exit_under_cancellation_still_revokes_leases(
    world: Any, broker: CredentialBroker, source: Any
) -> None:
    """A Guard left because its scope was cancelled still closes its open tasks and
    tells the provider (the close is shielded)."""
    guard = Guard(world.engine(), broker=broker, allow_unauthenticated=True)
    with anyio.CancelScope() as scope:
        async with guard:
            opener = guard.task(world.ORCH, intent="x")
            task = await opener.__aenter__()  # left open: the Guard must close it
            lease = await task.lease("db")
            scope.cancel()
            await anyio.sleep_forever()
    assert task.closed and task.revoked == "guard stopped"
    assert lease.lease_id in source.revoked


async def test_refused_approval_that_trips_a_monitor_is_logged(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    guard = Guard(world.engine(), allow_unauthenticated=True, monitors=Monitors(max_deny_streak=1))
    async with guard.task(world.ORCH, intent="x") as task:
        with caplog.at_level(logging.WARNING, logger="tether.tasks"):
            with pytest.raises(ApprovalRefused, match="has no approver configured"):
                await task.require("call_tool", DEPLOY)
        assert task.revoked == "monitor: 1 denials in a row"
        assert f"task {task.txn} revoked: monitor: 1 denials in a row" in caplog.messages


async def test_watcher_closes_children_with_their_parents_reason(
    world: Any, clock: FakeClock
) -> None:
    async with Guard(world.engine(), clock=clock, allow_unauthenticated=True) as guard:
        async with guard.task(world.ORCH, intent="x", ttl=30) as parent:
            child = await parent.delegate(agent_expiring_at(world.RES_ID, guard.wall_clock() + 600))
            clock.advance(31)
            guard._wake.set()
            with anyio.fail_after(10):
                while not child.closed:
                    await anyio.sleep(0.005)
            assert parent.revoked == "deadline passed"
            assert child.revoked == "parent task ended: deadline passed"


async def test_a_refusal_for_the_model_names_rules_only(world: Any) -> None:
    guard = Guard(
        world.engine(policies=world.POLICIES + TWO_FORBIDS),
        allow_unauthenticated=True,
        monitors=QUIET,
    )
    async with guard.task(world.RESEARCHER, intent="x") as task:
        with pytest.raises(Denied) as e:
            await task.require("read", 'Dataset::"payroll"')
    assert e.value.for_model() == "Refused by rule `payroll-closed-a`, `payroll-closed-b`."
    assert Denied("no decision behind it").for_model() == "no decision behind it"
