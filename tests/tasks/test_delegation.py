"""Delegation: the child's own token is verified, scope only narrows, the chain is visible
to rules, and a child can never do what its parent could not (property-tested)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tether.engine import Engine
from tether.identity import Agent, AuthenticationError, LocalIssuer, SpiffeId
from tether.state import state_spec
from tether.tasks import Denied, Guard, Monitors, TaskRevoked

ORCH_ID = "spiffe://example.org/agents/orchestrator"
RES_ID = "spiffe://example.org/agents/researcher"
ORCH = f'Agent::"{ORCH_ID}"'
RESEARCHER = f'Agent::"{RES_ID}"'
PAYROLL = 'Dataset::"payroll"'
SEARCH = 'Tool::"search"'
GITHUB = 'Domain::"github.com"'


@pytest.mark.anyio
async def test_delegate_verifies_child_token(engine: Any, authenticator: Any, mint: Any) -> None:
    guard = Guard(engine, authenticator, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="research") as parent:
        child = await parent.delegate(mint(RES_ID))
        assert child.agent_uid == RESEARCHER
        assert isinstance(child.agent, Agent)
        assert child.parent is parent and child in parent.children
        assert child.authorize("call_tool", SEARCH).allowed
        # a token from an issuer the authenticator does not trust
        rogue = LocalIssuer("example.org").mint_svid(RES_ID, "tether-tests")
        with pytest.raises(AuthenticationError):
            await parent.delegate(rogue)
        with pytest.raises(AuthenticationError):
            await parent.delegate("not a token")
        assert len(parent.children) == 1


@pytest.mark.anyio
async def test_delegate_wrong_audience_refused(
    engine: Any, authenticator: Any, issuer: Any
) -> None:
    guard = Guard(engine, authenticator, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="x") as parent:
        with pytest.raises(AuthenticationError):
            await parent.delegate(issuer.mint_svid(RES_ID, "someone-else"))


@pytest.mark.anyio
async def test_delegate_requires_delegate_permission(
    engine: Any, authenticator: Any, mint: Any
) -> None:
    guard = Guard(engine, authenticator, allow_unauthenticated=True)
    async with guard.task(RESEARCHER, intent="x") as worker:  # role worker: may not delegate
        with pytest.raises(Denied, match="no policy permits it"):
            await worker.delegate(mint(ORCH_ID))
        assert worker.children == []


@pytest.mark.anyio
async def test_depth_and_actors_visible(engine: Any, authenticator: Any, mint: Any) -> None:
    guard = Guard(engine, authenticator, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="research") as parent:
        child = await parent.delegate(mint(RES_ID), intent="subtask")
        assert parent.state()["depth"] == 0 and child.depth == 1
        st_ = child.state()
        assert st_["depth"] == 1
        assert sorted(st_["actors"]) == sorted([ORCH_ID, RES_ID])
        assert child.actors == (ORCH, RESEARCHER)
        assert child.intent == "subtask"
        assert child.ref().parent_txn == parent.txn


@pytest.mark.anyio
async def test_scope_can_only_narrow(engine: Any, authenticator: Any, mint: Any) -> None:
    guard = Guard(
        engine,
        authenticator,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0),
        allow_unauthenticated=True,
    )
    scope = ["delegate", "call_tool", "read"]
    async with guard.task(ORCH, intent="x", scope=scope) as parent:
        with pytest.raises(Denied, match="widen scope with: egress"):
            await parent.delegate(mint(RES_ID), scope=["call_tool", "egress"])
        inherited = await parent.delegate(mint(RES_ID))
        assert inherited.scope == frozenset(scope)
        narrow = await parent.delegate(mint(RES_ID), scope=["call_tool"])
        assert narrow.scope == frozenset({"call_tool"})
        assert narrow.authorize("call_tool", SEARCH).allowed
        d = narrow.authorize("read", 'Dataset::"wiki"')
        assert not d.allowed and "scope violation" in (d.message or "")
        d = inherited.authorize("egress", GITHUB)
        assert not d.allowed and "scope violation" in (d.message or "")


@pytest.mark.anyio
async def test_ancestor_scope_enforced_in_core(engine: Any) -> None:
    """Even a child opened with no scope (bypassing the Python narrowing) is held to
    its ancestors' scope by the core."""
    guard = Guard(
        engine, monitors=Monitors(max_deny_streak=0, max_deny_ratio=0), allow_unauthenticated=True
    )
    async with guard.task(ORCH, intent="x", scope=["read", "call_tool"]) as parent:
        child = guard._open(RESEARCHER, "x", None, 60.0, parent=parent)
        assert child.authorize("call_tool", SEARCH).allowed
        d = child.authorize("egress", GITHUB)
        assert not d.allowed
        assert d.message is not None and "outside ancestor task" in d.message
        assert parent.revoked is None  # the violation revokes the child only


@pytest.mark.anyio
async def test_child_limited_by_parent_clearance(world: Any, authenticator: Any, mint: Any) -> None:
    engine = world.engine(entities=world.entities_with(orchestrator=1, researcher=3))
    guard = Guard(
        engine,
        authenticator,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0),
        allow_unauthenticated=True,
    )
    async with guard.task(RESEARCHER, intent="alone") as alone:
        assert alone.authorize("read", PAYROLL).allowed  # the researcher itself may
    async with guard.task(ORCH, intent="x") as parent:
        assert not parent.authorize("read", PAYROLL).allowed
        child = await parent.delegate(mint(RES_ID))
        d = child.authorize("read", PAYROLL)
        assert not d.allowed
        assert d.message is not None and d.message.startswith("delegation: ancestor")
        assert ORCH_ID in d.message
        assert child.state()["labels"] == []  # a denied read taints nothing


@pytest.mark.anyio
async def test_child_inherits_parent_taint(engine: Any, authenticator: Any, mint: Any) -> None:
    guard = Guard(
        engine,
        authenticator,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0),
        allow_unauthenticated=True,
    )
    async with guard.task(ORCH, intent="x") as parent:
        assert parent.authorize("read", PAYROLL).allowed
        child = await parent.delegate(mint(RES_ID))
        assert child.state()["labels"] == ["restricted"]
        assert not child.authorize("egress", GITHUB).allowed


@pytest.mark.anyio
async def test_child_ttl_and_revoked_parent(engine: Any, authenticator: Any, mint: Any) -> None:
    guard = Guard(engine, authenticator, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="x", ttl=100) as parent:
        child = await parent.delegate(mint(RES_ID), ttl=5)
        assert child.deadline <= parent.deadline
        assert child.deadline - guard.clock() <= 5
        parent.revoke("done")
        with pytest.raises(TaskRevoked):
            await parent.delegate(mint(RES_ID))


# -- property: a child is never allowed more than its parent ---------------------------

ACTIONS = ["act0", "act1", "act2"]
AGENTS = ["a0", "a1", "a2"]
RESOURCES = ["r0", "r1", "r2"]


def _entities(levels: list[int], groups: list[int], rlevels: list[int]) -> list[dict[str, Any]]:
    ents: list[dict[str, Any]] = [
        {"uid": {"type": "Group", "id": f"g{k}"}, "attrs": {}, "parents": []} for k in range(2)
    ]
    for i, a in enumerate(AGENTS):
        ents.append(
            {
                "uid": {"type": "Agent", "id": f"spiffe://example.org/{a}"},
                "attrs": {"level": levels[i]},
                "parents": [{"type": "Group", "id": f"g{groups[i]}"}] if groups[i] < 2 else [],
            }
        )
    for j, r in enumerate(RESOURCES):
        ents.append(
            {"uid": {"type": "Res", "id": r}, "attrs": {"level": rlevels[j]}, "parents": []}
        )
    return ents


def _agent(i: int) -> str:
    return f'Agent::"spiffe://example.org/{AGENTS[i]}"'


_idx = st.integers(0, 2)
_policy = st.one_of(
    st.builds(
        lambda p, a, r: (
            f'permit(principal == {_agent(p)}, action == Action::"{ACTIONS[a]}", '
            f'resource == Res::"{RESOURCES[r]}");'
        ),
        _idx,
        _idx,
        _idx,
    ),
    st.builds(
        lambda a: (
            f'permit(principal, action == Action::"{ACTIONS[a]}", resource) '
            "when { principal.level >= resource.level };"
        ),
        _idx,
    ),
    st.builds(
        lambda g, a: (
            f'permit(principal in Group::"g{g}", action == Action::"{ACTIONS[a]}", resource);'
        ),
        st.integers(0, 1),
        _idx,
    ),
    st.builds(
        lambda p, a: (
            f'forbid(principal == {_agent(p)}, action == Action::"{ACTIONS[a]}", resource);'
        ),
        _idx,
        _idx,
    ),
    st.builds(
        lambda r: (
            f'forbid(principal, action, resource == Res::"{RESOURCES[r]}") '
            "unless { principal.level > 1 };"
        ),
        _idx,
    ),
    st.just("permit(principal, action, resource) when { resource.level == 0 };"),
)
_scope = st.one_of(st.none(), st.sets(st.sampled_from(ACTIONS)).map(sorted))


def _allowed_set(task_for: Any) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for a in ACTIONS:
        for r in RESOURCES:
            t = task_for()
            if t.authorize(a, f'Res::"{r}"').allowed:
                out.add((a, r))
            t.revoke("check done")
    return out


def _as_agent(i: int) -> Agent:
    sid = SpiffeId.parse(f"spiffe://example.org/{AGENTS[i]}")
    return Agent.from_claims(sid, {"sub": str(sid)}, 4e9)


# Derandomized: the coverage check below counts this test's examples, and a random
# mix of 60 can fall under its floor by chance; a fixed mix fails only when the
# generator or the code changes.
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    policies=st.lists(_policy, min_size=1, max_size=6),
    levels=st.lists(st.integers(0, 3), min_size=3, max_size=3),
    groups=st.lists(st.integers(0, 2), min_size=3, max_size=3),
    rlevels=st.lists(st.integers(0, 3), min_size=3, max_size=3),
    parent_i=_idx,
    child_i=_idx,
    parent_scope=_scope,
    child_narrow=st.sets(st.sampled_from(ACTIONS)),
    graded=st.booleans(),
)
def test_child_allowed_subset_of_parent(
    policies: list[str],
    levels: list[int],
    groups: list[int],
    rlevels: list[int],
    parent_i: int,
    child_i: int,
    parent_scope: list[str] | None,
    child_narrow: set[str],
    graded: bool,
) -> None:
    if graded:
        # Half the examples: a cleared parent delegating to a less cleared agent, with resources
        # on both sides of the child's level, so the child is usually allowed a strict part.
        child_i = (parent_i + 1) % len(AGENTS)
        levels, rlevels = list(levels), list(rlevels)
        levels[parent_i], levels[child_i] = 3, 1
        rlevels[0], rlevels[-1] = 0, 3
    # A permit graded by level keeps most parents allowed something and most children a part of
    # it; the drawn policies carve into that.
    text = "\n".join(
        [
            "permit(principal, action, resource) when { resource.level <= principal.level };",
            *policies,
            'permit(principal, action == Action::"delegate", resource);',
        ]
    )
    spec = state_spec({"counters": {"n": {"window": "60s", "count_when": "true"}}})
    engine = Engine(text, None, json.dumps(_entities(levels, groups, rlevels)), state=spec)
    guard = Guard(
        engine, monitors=Monitors(max_deny_streak=0, max_deny_ratio=0), allow_unauthenticated=True
    )
    parent_agent, child_agent = _as_agent(parent_i), _as_agent(child_i)
    pscope = None if parent_scope is None else [*parent_scope, "delegate"]
    cscope = None if pscope is None else sorted(child_narrow & set(pscope))

    def parent_task() -> Any:
        return guard._open(
            parent_agent, "p", None if pscope is None else frozenset(pscope), 60.0, parent=None
        )

    def child_task() -> Any:
        async def go() -> Any:
            return await parent_task().delegate(child_agent, scope=cscope)

        return anyio.run(go)

    parent_allowed = _allowed_set(parent_task)
    child_allowed = _allowed_set(child_task)
    assert child_allowed <= parent_allowed
    # and the child alone (no delegation) is an upper bound as well
    alone = _allowed_set(lambda: guard._open(child_agent, "c", None, 60.0, parent=None))
    assert child_allowed <= alone
    kind = (
        "child allowed nothing"
        if not child_allowed
        else "child strictly narrower"
        if child_allowed < parent_allowed
        else "child as broad as parent"
    )
    event(kind)
    DELEGATION_COVERAGE[kind] += 1


DELEGATION_COVERAGE: Counter[str] = Counter()


def test_delegation_examples_were_not_trivial() -> None:
    """Runs after the property test (file order): `child <= parent` holds trivially for an
    empty child, so a fair share of examples must have a non-empty, strictly narrower child."""
    total = sum(DELEGATION_COVERAGE.values())
    if total == 0:
        pytest.skip("the property test did not run in this session")
    assert DELEGATION_COVERAGE["child strictly narrower"] >= total // 6, dict(DELEGATION_COVERAGE)


CONTEXT_POLICIES = """
permit(principal == Agent::"spiffe://example.org/a0", action == Action::"delegate", resource);
permit(principal, action == Action::"act0", resource) when { context.task.depth > 0 };
"""


def test_child_not_allowed_more_than_parent_with_context_policies() -> None:
    spec = state_spec({})
    ents = _entities([0, 0, 0], [2, 2, 2], [0, 0, 0])
    engine = Engine(CONTEXT_POLICIES, None, json.dumps(ents), state=spec)
    parent = engine.open_task(_agent(0))
    assert not engine.authorize_task(parent, 'Action::"act0"', 'Res::"r0"').allowed
    child = engine.open_task(_agent(1), parent=parent)
    assert not engine.authorize_task(child, 'Action::"act0"', 'Res::"r0"').allowed
