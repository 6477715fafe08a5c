"""Threat catalogue: escalation (issue 10, item 8). An agent that needs more than its
task's scope asks: a policy decision, then an approver, then a time-boxed widening
that policies see and children do not inherit. Attack/benign pairs, ASI-tagged."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import FakeClock
from tether import DenialKind
from tether.tasks import ApprovalRefused, ApprovalRequest, Denied, Guard, Monitors

pytestmark = pytest.mark.anyio

SEARCH = 'Tool::"search"'
WIKI = 'Dataset::"wiki"'

ESCALATION_POLICY = """
@id("orchestrators-escalate-to-tools")
permit (principal is Agent, action == Action::"escalate", resource)
when { principal.role == "orchestrator" && resource == principal &&
       context.actions.containsAll(["call_tool"]) && context.ttl <= 600 };
@id("escalated-tools-are-visible")
forbid (principal, action == Action::"call_tool", resource == Tool::"summarize")
when { context has task && context.task.escalated.contains("call_tool") };
"""


def _guard(world: Any, clock: FakeClock, answer: Any, monitors: Monitors | None = None) -> Guard:
    async def approver(req: ApprovalRequest) -> Any:
        assert req.obligation == "escalate" and req.context["actions"] == ["call_tool"]
        return answer

    return Guard(
        world.engine(policies=world.POLICIES + ESCALATION_POLICY),
        approvers={"escalate": approver},
        monitors=monitors or Monitors(max_deny_streak=0, max_deny_ratio=0),
        clock=clock,
        allow_unauthenticated=True,
    )


@pytest.mark.parametrize("answer", [False, True], ids=["attack", "benign"])
async def test_asi03_escalation_needs_an_approver(world: Any, clock: Any, answer: bool) -> None:
    """A read-only task asks for tools: without the approver's `True` its scope stays;
    with it the widening works, is visible to policies, and reverts after its ttl."""
    guard = _guard(world, clock, answer)
    async with guard.task(world.ORCH, intent="analysis", scope={"read", "escalate"}) as task:
        if not answer:
            with pytest.raises(ApprovalRefused):
                await task.escalate({"call_tool"}, reason="need search", ttl=60)
            assert task.state()["escalated"] == []
            return
        await task.escalate({"call_tool"}, reason="need search", ttl=60)
        assert task.authorize("call_tool", SEARCH).allowed
        assert task.state()["escalated"] == ["call_tool"]
        d = task.authorize("call_tool", 'Tool::"summarize"')
        assert d.kind == DenialKind.POLICY  # a policy reading context.task.escalated
        clock.advance(61)
        assert task.state()["escalated"] == []
        assert task.authorize("call_tool", SEARCH).kind == DenialKind.SCOPE  # reverted


@pytest.mark.parametrize("agent_is_orchestrator", [False, True], ids=["attack", "benign"])
async def test_asi03_escalation_is_an_authorization_event(
    world: Any, clock: Any, agent_is_orchestrator: bool
) -> None:
    """`Action::"escalate"` must be permitted for the agent (workers may not), before
    any approver is asked."""
    guard = _guard(world, clock, True)
    agent = world.ORCH if agent_is_orchestrator else world.RESEARCHER
    async with guard.task(agent, intent="analysis", scope={"read", "escalate"}) as task:
        if agent_is_orchestrator:
            await task.escalate({"call_tool"}, reason="r", ttl=60)
        else:
            with pytest.raises(Denied) as e:
                await task.escalate({"call_tool"}, reason="r", ttl=60)
            assert e.value.kind == DenialKind.POLICY
            assert task.authorize("read", WIKI).allowed  # still usable, still narrow


@pytest.mark.parametrize("delegated_explicitly", [False, True], ids=["attack", "benign"])
async def test_asi03_children_do_not_inherit_an_escalation(
    world: Any, clock: Any, authenticator: Any, mint: Any, delegated_explicitly: bool
) -> None:
    guard = _guard(world, clock, True)
    guard.authenticator = authenticator
    orch = await guard.authenticate(mint(world.ORCH_ID))
    res = await guard.authenticate(mint(world.RES_ID))
    scope = {"read", "escalate", "delegate"}
    async with guard.task(orch, intent="analysis", scope=scope) as task:
        await task.escalate({"call_tool"}, reason="r", ttl=60)
        if delegated_explicitly:
            with pytest.raises(Denied, match="widen scope"):
                await task.delegate(res, scope={"call_tool"})
        child = await task.delegate(res)
        assert child.authorize("call_tool", SEARCH).kind == DenialKind.SCOPE


@pytest.mark.parametrize("answer", [False, True], ids=["attack", "benign"])
async def test_asi10_refused_escalations_count_as_denials(
    world: Any, clock: Any, answer: bool
) -> None:
    """Each refused escalation is a denial: fishing for a wider scope trips the deny-ratio
    monitor (the permitted `escalate` decisions in between keep a streak from forming)."""
    monitors = Monitors(max_deny_streak=0, max_deny_ratio=0.4, min_denials=3)
    guard = _guard(world, clock, answer, monitors)
    async with guard.task(world.ORCH, intent="x", scope={"read", "escalate"}) as task:
        for _ in range(3):
            try:
                await task.escalate({"call_tool"}, reason="again", ttl=60)
            except ApprovalRefused:
                pass
        if answer:
            assert task.revoked is None
        else:
            assert task.revoked is not None and "deny ratio" in task.revoked
