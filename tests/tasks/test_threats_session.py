"""Threat catalogue: proof, kill switch, approvals, declared context, taint across
tasks, fail-closed guardrails and the task clock (issue 10, items 5-7, 10, 11, 13).
Each attack has a benign twin differing in one essential respect; the OWASP Agentic
category is in the test name."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tests.support import FakeClock
from tether import DenialKind, EntityError, PolicyError, RequestError, SchemaError, TetherError
from tether.identity import AuthenticationError, ExpiredToken, SpiffeId
from tether.state import StateFileError
from tether.tasks import (
    ApprovalRefused,
    ApprovalRequest,
    Denied,
    Guard,
    Monitors,
    TaskRevoked,
)

pytestmark = pytest.mark.anyio

SEARCH = 'Tool::"search"'
DEPLOY = 'Tool::"deploy"'
GITHUB = 'Domain::"api.github.com"'
PAYROLL = 'Dataset::"payroll"'
QUIET = Monitors(max_deny_streak=0, max_deny_ratio=0)


# -- 5. agents without proof -----------------------------------------------------


@pytest.mark.parametrize("expired_ago", [300.0, -300.0], ids=["attack", "benign"])
async def test_asi03_delegation_needs_a_live_credential(
    world: Any, authenticator: Any, mint: Any, expired_ago: float
) -> None:
    """`delegate(agent)` with an `Agent` whose credential expired 300 s ago is refused;
    the same agent with 300 s left is accepted."""
    wall = FakeClock(world.T0)
    guard = Guard(world.engine(), authenticator, wall_clock=wall)
    orch = dataclasses.replace(
        await guard.authenticate(mint(world.ORCH_ID)), expires_at=wall() + 900
    )
    res = await guard.authenticate(mint(world.RES_ID))
    res = dataclasses.replace(res, expires_at=wall() - expired_ago)
    async with guard.task(orch, intent="research") as parent:
        if expired_ago > 0:
            with pytest.raises(ExpiredToken):
                await parent.delegate(res)
            assert parent.children == []
        else:
            child = await parent.delegate(res)
            assert child.authorize("call_tool", SEARCH).allowed


@pytest.mark.parametrize("opt_in", [False, True], ids=["attack", "benign"])
async def test_asi03_bare_uid_needs_explicit_opt_in(world: Any, opt_in: bool) -> None:
    """A bare uid string carries no proof: opening a task for it needs
    `allow_unauthenticated=True`."""
    guard = Guard(world.engine(), allow_unauthenticated=opt_in)
    if not opt_in:
        with pytest.raises(AuthenticationError, match="no proof of identity"):
            async with guard.task(world.ORCH, intent="x"):
                pass
        assert guard.tasks == {}
    else:
        async with guard.task(world.ORCH, intent="x") as task:
            assert task.authorize("call_tool", SEARCH).allowed


@pytest.mark.parametrize("outlive", [False, True], ids=["attack", "benign"])
async def test_asi03_task_deadline_capped_by_credential(
    world: Any, authenticator: Any, mint: Any, outlive: bool
) -> None:
    """An hour-long task for an agent whose credential expires in a minute ends with the
    credential, unless the caller says otherwise."""
    mono, wall = FakeClock(1000.0), FakeClock(world.T0)
    guard = Guard(world.engine(), authenticator, clock=mono, wall_clock=wall, credential_leeway=0)
    agent = dataclasses.replace(
        await guard.authenticate(mint(world.ORCH_ID)), expires_at=wall() + 60
    )
    async with guard.task(agent, intent="x", ttl=3600, outlive_credential=outlive) as task:
        assert task.deadline - mono() == (3600 if outlive else 60)
        mono.advance(61)
        d = task.authorize("call_tool", SEARCH)
        assert d.allowed is outlive
        if not outlive:
            assert d.kind == DenialKind.DEADLINE


# -- 6. the kill switch ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "spiffe://example.org/agents/researcher",
        SpiffeId.parse("spiffe://example.org/agents/researcher"),
        'Agent::"spiffe://example.org/agents/researcher"',
    ],
    ids=["spiffe-string", "SpiffeId", "entity-uid"],
)
async def test_asi10_kill_switch_accepts_every_agent_name(world: Any, name: Any) -> None:
    """Every way of naming the agent revokes its task; its sibling agent keeps working."""
    guard = Guard(world.engine(), allow_unauthenticated=True)
    async with (
        guard.task(world.RESEARCHER, intent="x") as task,
        guard.task(world.ORCH, intent="y") as other,
    ):
        assert guard.revoke(agent=name) == 1
        assert task.authorize("call_tool", SEARCH).kind == DenialKind.REVOKED
        assert other.authorize("call_tool", SEARCH).allowed


@pytest.mark.parametrize("name", ["researcher", 42, "spiffe://"], ids=["word", "int", "bad-id"])
async def test_asi10_kill_switch_never_silently_matches_nothing(world: Any, name: Any) -> None:
    guard = Guard(world.engine(), allow_unauthenticated=True)
    async with guard.task(world.RESEARCHER, intent="x") as task:
        with pytest.raises(ValueError):
            guard.revoke(agent=name)
        assert task.revoked is None


async def test_asi10_kill_switch_accepts_agent_objects(
    world: Any, authenticator: Any, mint: Any
) -> None:
    guard = Guard(world.engine(), authenticator)
    agent = await guard.authenticate(mint(world.RES_ID))
    async with guard.task(agent, intent="x") as task:
        assert guard.revoke(agent=agent) == 1
        assert task.revoked == "revoked by operator"


# -- 7. approvals ----------------------------------------------------------------


@pytest.mark.parametrize("answer", ["no", True], ids=["attack", "benign"])
async def test_asi09_only_true_approves(world: Any, answer: Any) -> None:
    """An approver answering "no" (truthy) does not approve; `True` does."""

    async def approver(req: ApprovalRequest) -> Any:
        return answer

    guard = Guard(world.engine(), approvers={"approval": approver}, allow_unauthenticated=True)
    async with guard.task(world.ORCH, intent="ship") as task:
        if answer is True:
            assert (await task.require("call_tool", DEPLOY)).allowed
        else:
            with pytest.raises(ApprovalRefused, match="not approved"):
                await task.require("call_tool", DEPLOY)
            assert task.state()["budgets"]["risk"]["spent"] == 0


async def test_asi09_a_grant_is_used_once(world: Any) -> None:
    """Each held action asks again: an approval is consumed by the action it approved."""
    asked: list[str] = []

    async def approver(req: ApprovalRequest) -> bool:
        asked.append(req.resource)
        return True

    guard = Guard(
        world.engine(state=world.with_risk_limit(100)),
        approvers={"approval": approver},
        allow_unauthenticated=True,
    )
    async with guard.task(world.ORCH, intent="ship") as task:
        await task.require("call_tool", DEPLOY)
        assert not task.authorize("call_tool", DEPLOY).allowed  # no grant left over
        await task.require("call_tool", DEPLOY)
    assert asked == [DEPLOY, DEPLOY]


@pytest.mark.parametrize("answer", [False, True], ids=["attack", "benign"])
async def test_asi09_refused_approvals_count_as_denials(world: Any, answer: bool) -> None:
    """An agent fishing for approvals trips the deny-streak monitor."""

    async def approver(req: ApprovalRequest) -> bool:
        return answer

    guard = Guard(
        world.engine(state=world.with_risk_limit(100)),
        approvers={"approval": approver},
        monitors=Monitors(max_deny_streak=2, max_deny_ratio=0),
        allow_unauthenticated=True,
    )
    async with guard.task(world.ORCH, intent="ship") as task:
        for _ in range(2):
            try:
                await task.require("call_tool", DEPLOY)
            except ApprovalRefused:
                pass
        if answer:
            assert task.revoked is None
        else:
            assert task.revoked == "monitor: 2 denials in a row"
            with pytest.raises(TaskRevoked):
                await task.require("call_tool", SEARCH)


@pytest.mark.parametrize("requests", [4, 3], ids=["attack", "benign"])
async def test_asi09_approval_requests_are_capped(world: Any, requests: int) -> None:
    """A person is asked at most `max_approval_requests` times per task."""
    asked: list[ApprovalRequest] = []

    async def approver(req: ApprovalRequest) -> bool:
        asked.append(req)
        return False

    monitors = Monitors(max_deny_streak=0, max_deny_ratio=0, max_approval_requests=3)
    guard = Guard(
        world.engine(),
        approvers={"approval": approver},
        monitors=monitors,
        allow_unauthenticated=True,
    )
    async with guard.task(world.ORCH, intent="ship") as task:
        errors = []
        for _ in range(requests):
            with pytest.raises(ApprovalRefused) as e:
                await task.require("call_tool", DEPLOY)
            errors.append(str(e.value))
    assert len(asked) == 3
    assert ("too many approval requests" in errors[-1]) is (requests > 3)


# -- 10. what the task declared cannot be shadowed ---------------------------------

INTENT_RULE = """
@id("publish-only")
forbid (principal, action == Action::"egress", resource)
unless { context has task && context.task.intent == "publish" &&
         context.task.agent == principal };
"""


# A complete, schema-valid `context.task` a caller might forge (an incomplete one is a
# RequestError before any decision).
FORGED_TASK = {
    "labels": [],
    "counters": {"tool_calls_60s": 0, "egress_60s": 0},
    "budgets": {"risk": {"spent": 0, "limit": 12, "remaining": 12}},
    "depth": 0,
    "actors": [],
    "id": 1,
    "agent": {"__entity": {"type": "Agent", "id": "spiffe://example.org/agents/orchestrator"}},
    "escalated": [],
    "escalated_until": 0,
}


@pytest.mark.parametrize("declared", ["research", "publish"], ids=["attack", "benign"])
async def test_asi01_caller_context_cannot_replace_declared_intent(
    world: Any, declared: str
) -> None:
    """A per-call context claiming another intent (at the top level or under `task`)
    changes nothing: rules read the declared intent from `context.task`."""
    engine = world.engine(policies=world.POLICIES + INTENT_RULE)
    guard = Guard(engine, monitors=QUIET, allow_unauthenticated=True)
    forged = {"intent": "publish", "task": {**FORGED_TASK, "intent": "publish"}}
    async with guard.task(world.ORCH, intent=declared) as task:
        d = task.authorize("egress", GITHUB, forged)
        assert d.allowed is (declared == "publish")
        st = task.state()
        assert st["intent"] == declared and st["id"] == task.handle.id and st["depth"] == 0
        assert st["agent"] == {"__entity": {"type": "Agent", "id": world.ORCH_ID}}


# -- 11. taint laundering across tasks ---------------------------------------------


def _state(world: Any, scope: str, ttl: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(world.STATE_DOC))
    doc["labels"]["restricted"]["scope"] = scope
    if ttl is not None:
        doc["labels"]["restricted"]["ttl"] = ttl
    return doc


@pytest.mark.parametrize("scope", ["agent", "task"], ids=["attack", "benign"])
async def test_asi06_taint_cannot_be_laundered_by_a_new_task(world: Any, scope: str) -> None:
    """After task A reads restricted data, a new task for the same agent still cannot
    send data out when the label is agent-scoped (task-scoped labels end with the task)."""
    guard = Guard(
        world.engine(state=_state(world, scope)), monitors=QUIET, allow_unauthenticated=True
    )
    async with guard.task(world.ORCH, intent="a") as a:
        assert a.authorize("read", PAYROLL).allowed
        assert not a.authorize("egress", GITHUB).allowed
    async with guard.task(world.ORCH, intent="b") as b:
        assert b.authorize("egress", GITHUB).allowed is (scope == "task")
    async with guard.task(world.RESEARCHER, intent="c") as other_agent:
        assert other_agent.authorize("egress", GITHUB).allowed


@pytest.mark.parametrize("hours_later", [0.5, 2.0], ids=["within-ttl", "after-ttl"])
async def test_asi06_agent_label_expires_after_its_ttl(world: Any, hours_later: float) -> None:
    clock = FakeClock(world.T0)
    guard = Guard(
        world.engine(state=_state(world, "agent", "1h")),
        clock=clock,
        monitors=QUIET,
        allow_unauthenticated=True,
    )
    async with guard.task(world.ORCH, intent="a") as a:
        assert a.authorize("read", PAYROLL).allowed
    clock.advance(hours_later * 3600)
    async with guard.task(world.ORCH, intent="b") as b:
        assert b.authorize("egress", GITHUB).allowed is (hours_later > 1)


def test_state_file_label_scope_is_checked() -> None:
    from tether.state import state_spec

    with pytest.raises(StateFileError, match="scope"):
        state_spec({"labels": {"x": {"set_when": "true", "scope": "forever"}}})
    with pytest.raises(StateFileError, match="only labels with scope"):
        state_spec({"labels": {"x": {"set_when": "true", "ttl": "1h"}}})
    spec = json.loads(
        state_spec({"labels": {"x": {"set_when": "true", "scope": "agent", "ttl": "2m"}}})
    )
    assert spec["labels"]["x"] == {"set_when": "true", "scope": "agent", "ttl_ms": 120_000}


# -- 13. guardrails fail closed under a Guard -----------------------------------------

ERRING_GUARDRAIL = """
@id("overflowing-guardrail")
forbid (principal, action == Action::"egress", resource)
when { context has task && context.task.budgets.risk.limit * 9223372036854775807 > 0 };
"""


@pytest.mark.parametrize("on_error", ["deny", "skip"], ids=["attack", "benign-opt-out"])
async def test_asi08_erroring_guardrail_fails_closed(world: Any, on_error: Any) -> None:
    """A forbid that errors (overflow) denies task decisions by default; Cedar's skip
    semantics only when the user opts out."""
    engine = world.engine(policies=world.POLICIES + ERRING_GUARDRAIL)
    guard = Guard(engine, monitors=QUIET, on_error=on_error, allow_unauthenticated=True)
    async with guard.task(world.ORCH, intent="x") as task:
        d = task.authorize("egress", GITHUB)
        assert len(d.errors) == 1 and "overflow" in d.error_messages[0]
        assert d.allowed is (on_error == "skip")
        if on_error == "deny":
            assert d.kind == DenialKind.ERROR


# -- one clock for task state -----------------------------------------------------------


@pytest.mark.parametrize("mono_advance", [61.0, 30.0], ids=["window-passed", "within-window"])
async def test_wall_clock_step_does_not_freeze_a_counter(world: Any, mono_advance: float) -> None:
    """The wall clock steps back an hour (NTP, a VM resume): counters and deadlines run on
    the Guard's monotonic clock, so the 60 s window still slides and the task lives."""
    mono, wall = FakeClock(500.0), FakeClock(world.T0)
    guard = Guard(
        world.engine(), clock=mono, wall_clock=wall, monitors=QUIET, allow_unauthenticated=True
    )
    async with guard.task(world.ORCH, intent="x", ttl=120) as task:
        for _ in range(2):
            assert task.authorize("call_tool", SEARCH).allowed
        wall.advance(-3600)
        mono.advance(mono_advance)
        want = 0 if mono_advance > 60 else 2
        assert task.state()["counters"]["tool_calls_60s"] == want
        wall.advance(86_400)  # and a day forward: the deadline is not wall time
        assert task.authorize("call_tool", SEARCH).allowed


def test_engine_without_now_uses_a_monotonic_clock(world: Any) -> None:
    import time

    engine = world.engine()
    handle = engine.open_task(world.ORCH, deadline=time.monotonic() + 60)
    assert engine.authorize_task(handle, 'Action::"call_tool"', SEARCH).allowed
    with pytest.raises(RequestError, match="finite"):
        engine.authorize_task(handle, 'Action::"call_tool"', SEARCH, None, float("nan"))


# -- the exception tree and the denial kinds ---------------------------------------------


def test_every_task_and_engine_error_is_a_tether_error() -> None:
    errors: list[type[Exception]] = [PolicyError, SchemaError, EntityError, RequestError]
    errors += [StateFileError, Denied, TaskRevoked, ApprovalRefused]
    for cls in errors:
        assert issubclass(cls, TetherError), cls
    assert issubclass(StateFileError, ValueError)  # still catchable as before


async def test_denial_kinds_are_typed(world: Any) -> None:
    engine = world.engine(state=world.with_risk_limit(1))
    monitors = Monitors(max_deny_streak=0, max_deny_ratio=0, revoke_on_budget_exhausted=False)
    guard = Guard(engine, monitors=monitors, allow_unauthenticated=True)
    async with guard.task(world.RESEARCHER, intent="x", scope=["call_tool", "read"]) as task:
        assert task.authorize("call_tool", SEARCH).kind is None
        assert task.authorize("read", PAYROLL).kind == DenialKind.POLICY
        assert task.authorize("call_tool", SEARCH).kind == DenialKind.BUDGET
        assert task.authorize("egress", GITHUB).kind == DenialKind.SCOPE
        assert task.authorize("read", PAYROLL).kind == DenialKind.REVOKED
    assert engine.authorize(world.RESEARCHER, 'Action::"read"', PAYROLL).kind == DenialKind.POLICY


# -- 12. egress by spelling ------------------------------------------------------------

BLOCKLIST = """
@id("egress-anywhere")
permit (principal, action == Action::"egress", resource);
@id("no-pastebin")
forbid (principal, action == Action::"egress", resource)
when { resource in Domain::"pastebin.com" };
"""


@pytest.mark.parametrize(
    ("url", "blocked"),
    [
        ("PASTEBIN.COM", True),
        ("pastebin.com.", True),
        ("www.pastebin.com", True),
        ("https://user@Www.PasteBin.com:8443/raw?x=1", True),
        ("notpastebin.com", False),
        ("pastebin.com.evil.example", False),
        ("https://api.github.com/repos", False),
    ],
)
async def test_asi02_egress_blocklist_cannot_be_passed_by_spelling(
    world: Any, url: str, blocked: bool
) -> None:
    """A blocklist on `Domain::"pastebin.com"` holds for every spelling of it and for
    unregistered subdomains; look-alike hosts that are not under it are not blocked."""
    engine = world.engine(policies=BLOCKLIST)
    guard = Guard(engine, monitors=QUIET, allow_unauthenticated=True)
    async with guard.task(world.ORCH, intent="x") as task:
        assert task.authorize_egress(url).allowed is not blocked


def test_asi02_egress_host_normalisation() -> None:
    from tether.domains import egress_host

    assert egress_host("https://BÜCHER.example./x") == "xn--bcher-kva.example"
    for bad in ["", "https://", "http://exa mple.com", "https://a..b"]:
        with pytest.raises(ValueError):
            egress_host(bad)


def test_asi02_resolve_domain_uses_registered_parents(world: Any) -> None:
    from tether.domains import resolve_domain

    engine = world.engine()
    assert resolve_domain(engine, "Deep.API.github.com") == 'Domain::"api.github.com"'
    assert resolve_domain(engine, "github.com.") == 'Domain::"github.com"'
    assert resolve_domain(engine, "unknown.example") == 'Domain::"unknown.example"'


@pytest.mark.parametrize("during_approval", ["reload", "intern"], ids=["attack", "benign"])
async def test_asi09_grant_is_bound_to_the_policy_set(world: Any, during_approval: str) -> None:
    """An approval given under one policy set does not carry over to another (the
    policies changed while the human decided); an engine merely learning a new name
    (its version moves, its policies do not) keeps the grant valid."""
    engine = world.engine()

    async def approver(req: ApprovalRequest) -> bool:
        if during_approval == "reload":
            engine.reload(world.POLICIES + "\n// amended\n", world.SCHEMA)
        else:
            engine.entity("Agent", "spiffe://example.org/agents/newcomer")
        return True

    guard = Guard(engine, approvers={"approval": approver}, allow_unauthenticated=True)
    async with guard.task(world.ORCH, intent="ship") as task:
        version = engine.version
        if during_approval == "reload":
            with pytest.raises(Denied) as e:
                await task.require("call_tool", DEPLOY)
            assert e.value.kind == DenialKind.OBLIGATION
        else:
            assert (await task.require("call_tool", DEPLOY)).allowed
        assert engine.version > version
