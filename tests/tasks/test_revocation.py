"""Revocation: cascades down delegation chains, by agent and by trust domain, refusal of
new tasks, revoked-task decisions, and 10,000 live tasks revoked at once."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tether.tasks import Denied, Guard, Monitors, TaskRevoked

pytestmark = pytest.mark.anyio

ORCH_ID = "spiffe://example.org/agents/orchestrator"
RES_ID = "spiffe://example.org/agents/researcher"
ORCH = f'Agent::"{ORCH_ID}"'
RESEARCHER = f'Agent::"{RES_ID}"'
WIKI = 'Dataset::"wiki"'
SEARCH = 'Tool::"search"'
ALLOWED_FOR_ALL = [("call_tool", SEARCH), ("read", WIKI), ("egress", 'Domain::"github.com"')]


def orchestrator_entities(world: Any) -> list[dict[str, Any]]:
    """Example entities plus a researcher that may delegate (a 3-level chain)."""
    ents = world.entities_with()
    for e in ents:
        if e["uid"]["id"] == RES_ID:
            e["attrs"]["role"] = "orchestrator"
    return ents


async def chain(guard: Guard, mint: Any) -> tuple[Any, Any, Any, Any]:
    """root (orchestrator) -> child (researcher) -> grandchild (researcher)."""
    cm = guard.task(ORCH, intent="chain")
    root = await cm.__aenter__()
    child = await root.delegate(mint(RES_ID))
    grandchild = await child.delegate(mint(RES_ID))
    return cm, root, child, grandchild


def assert_denies_revoked(task: Any, reason: str) -> None:
    for action, resource in ALLOWED_FOR_ALL:
        d = task.authorize(action, resource)
        assert not d.allowed, (action, resource)
        assert d.message is not None
        assert d.message.startswith("task revoked"), d.message
        assert reason in d.message, d.message


@pytest.fixture
def chain_guard(world: Any, authenticator: Any) -> Guard:
    eng = world.engine(entities=orchestrator_entities(world))
    return Guard(
        eng,
        authenticator,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0),
        allow_unauthenticated=True,
    )


@pytest.mark.parametrize("how", ["task.revoke", "guard.revoke(task)", "guard.revoke(txn)"])
async def test_parent_revoke_cascades_to_descendants(
    chain_guard: Guard, mint: Any, how: str
) -> None:
    cm, root, child, grandchild = await chain(chain_guard, mint)
    assert grandchild.depth == 2
    for t in (root, child, grandchild):
        assert t.authorize("call_tool", SEARCH).allowed
    if how == "task.revoke":
        root.revoke("incident 7")
    elif how == "guard.revoke(task)":
        assert chain_guard.revoke(task=root, reason="incident 7") == 1
    else:
        assert chain_guard.revoke(task=root.txn, reason="incident 7") == 1
    for t in (root, child, grandchild):
        assert_denies_revoked(t, "incident 7")
    assert "ancestor task" in (grandchild.authorize("read", WIKI).message or "")
    # revoking again is a no-op
    assert chain_guard.revoke(task=root, reason="again") == 0
    assert root.revoked == "incident 7"
    await cm.__aexit__(None, None, None)


async def test_middle_revoke_spares_parent(chain_guard: Guard, mint: Any) -> None:
    cm, root, child, grandchild = await chain(chain_guard, mint)
    child.revoke("child misbehaved")
    assert_denies_revoked(child, "child misbehaved")
    assert_denies_revoked(grandchild, "child misbehaved")
    assert root.revoked is None
    assert root.authorize("call_tool", SEARCH).allowed
    # a revoked task cannot delegate further
    with pytest.raises(TaskRevoked):
        await child.delegate(mint(RES_ID))
    await cm.__aexit__(None, None, None)


async def test_parent_close_closes_children(chain_guard: Guard, mint: Any) -> None:
    cm, root, child, grandchild = await chain(chain_guard, mint)
    await cm.__aexit__(None, None, None)
    assert grandchild.closed and child.closed and root.closed
    assert not chain_guard.tasks
    assert grandchild.revoked is not None and "parent task ended" in grandchild.revoked
    assert_denies_revoked(grandchild, "task ended")


async def test_revoke_agent_revokes_all_its_tasks_and_refuses_new(
    engine: Any, authenticator: Any, mint: Any
) -> None:
    guard = Guard(
        engine,
        authenticator,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0),
        allow_unauthenticated=True,
    )
    cms = [guard.task(ORCH, intent=f"t{i}") for i in range(5)]
    tasks = [await cm.__aenter__() for cm in cms]
    children = [await t.delegate(mint(RES_ID)) for t in tasks[:2]]
    other = await guard.task(RESEARCHER, intent="other").__aenter__()
    n = guard.revoke(agent=ORCH, reason="key leaked")
    assert n == 5
    for t in tasks:
        assert_denies_revoked(t, "key leaked")
    for c in children:  # tasks of other agents acting for it go too (cascade)
        assert_denies_revoked(c, "key leaked")
    assert other.authorize("call_tool", SEARCH).allowed
    with pytest.raises(TaskRevoked, match="key leaked"):
        async with guard.task(ORCH, intent="new"):
            pass
    for cm in cms:
        await cm.__aexit__(None, None, None)


async def test_revoke_agent_object_refuses_token_and_delegation(
    engine: Any, authenticator: Any, mint: Any
) -> None:
    guard = Guard(engine, authenticator, allow_unauthenticated=True)
    researcher = await guard.authenticate(mint(RES_ID))
    async with guard.task(researcher, intent="x") as task:
        assert task.authorize("call_tool", SEARCH).allowed
        assert guard.revoke(agent=researcher, reason="compromised") == 1
        assert_denies_revoked(task, "compromised")
    with pytest.raises(TaskRevoked):
        await guard.authenticate(mint(RES_ID))
    with pytest.raises(TaskRevoked):
        async with guard.task(RESEARCHER, intent="string uid is the same agent"):
            pass
    async with guard.task(ORCH, intent="delegating") as parent:
        with pytest.raises(TaskRevoked):
            await parent.delegate(mint(RES_ID))
        with pytest.raises(TaskRevoked):
            await parent.delegate(researcher)


async def test_revoke_trust_domain(engine: Any, authenticator: Any, mint: Any) -> None:
    guard = Guard(
        engine,
        authenticator,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0),
        allow_unauthenticated=True,
    )
    a = await guard.task(ORCH, intent="string uid").__aenter__()
    b = await guard.task(await guard.authenticate(mint(RES_ID)), intent="agent").__aenter__()
    c = await guard.task('Agent::"spiffe://other.org/agents/x"', intent="elsewhere").__aenter__()
    n = guard.revoke(trust_domain="example.org", reason="domain compromised")
    assert n == 2
    assert_denies_revoked(a, "domain compromised")
    assert_denies_revoked(b, "domain compromised")
    assert c.revoked is None
    with pytest.raises(TaskRevoked, match="trust domain revoked"):
        async with guard.task(RESEARCHER, intent="new"):
            pass
    with pytest.raises(TaskRevoked):
        await guard.authenticate(mint(ORCH_ID))


@pytest.mark.parametrize(
    "cause",
    ["closed", "exception", "operator", "deny-streak", "deadline", "scope", "budget"],
)
async def test_every_later_decision_denies_with_reason(world: Any, clock: Any, cause: str) -> None:
    engine = world.engine()
    monitors = Monitors(max_deny_streak=2 if cause == "deny-streak" else 0)
    guard = Guard(engine, clock=clock, monitors=monitors, allow_unauthenticated=True)
    expected = {
        "closed": "task ended",
        "exception": "task ended by ValueError",
        "operator": "stop now",
        "deny-streak": "monitor: 2 denials in a row",
        "deadline": "deadline passed",
        "scope": "scope violation",
        "budget": "budget `risk` exhausted",
    }[cause]
    scope = ["read", "call_tool", "egress"] if cause == "scope" else None
    task: Any = None
    try:
        async with guard.task(ORCH, intent="x", scope=scope, ttl=60) as task:
            if cause == "exception":
                raise ValueError
            if cause == "operator":
                task.revoke("stop now")
            elif cause == "deny-streak":
                task.authorize("read", 'Dataset::"nonexistent"')
                task.authorize("call_tool", 'Tool::"shell"')
            elif cause == "deadline":
                clock.advance(61)
                task.authorize("read", WIKI)
            elif cause == "scope":
                task.authorize("delegate", RESEARCHER)
            elif cause == "budget":
                for _ in range(12):
                    assert task.authorize("call_tool", SEARCH).allowed
                task.authorize("call_tool", SEARCH)
            if cause not in ("closed",):
                assert task.revoked is not None and expected in task.revoked
                assert_denies_revoked(task, expected)
    except ValueError:
        pass
    assert task.revoked is not None
    assert_denies_revoked(task, expected if cause != "operator" else "stop now")
    with pytest.raises(TaskRevoked):
        await task.require("read", WIKI)


async def test_require_raises_denied_not_revoked_for_plain_deny(engine: Any) -> None:
    guard = Guard(engine, allow_unauthenticated=True)
    async with guard.task(RESEARCHER, intent="x") as task:
        with pytest.raises(Denied) as ei:
            await task.require("read", 'Dataset::"payroll"')
        assert not isinstance(ei.value, TaskRevoked)
        assert ei.value.decision is not None and not ei.value.decision.allowed


# -- 10,000 live tasks ------------------------------------------------------------------

N_TASKS = 10_000


async def test_revoke_trust_domain_with_10k_live_tasks(engine: Any) -> None:
    guard = Guard(
        engine, monitors=Monitors(max_deny_streak=0, max_deny_ratio=0), allow_unauthenticated=True
    )
    agents = [ORCH, RESEARCHER]
    revoked = anyio.Event()
    half_open = anyio.Event()
    opened = 0
    denied_after = 0
    refused = 0
    allowed_after: list[str] = []

    async def worker(i: int) -> None:
        nonlocal opened, denied_after, refused
        if i % 2:
            await anyio.sleep(0)  # interleave opening with the revocation
        try:
            async with guard.task(agents[i % 2], intent=f"w{i}") as task:
                assert task.authorize("call_tool", SEARCH).allowed
                opened += 1
                if opened == N_TASKS // 2:
                    half_open.set()
                await revoked.wait()
                d = task.authorize("call_tool", SEARCH)
                if d.allowed or not (d.message or "").startswith("task revoked"):
                    allowed_after.append(task.txn)
                else:
                    denied_after += 1
        except TaskRevoked:
            refused += 1

    async with anyio.create_task_group() as tg:
        for i in range(N_TASKS):
            tg.start_soon(worker, i)
        await half_open.wait()
        live = len(guard.tasks)
        n = guard.revoke(trust_domain="example.org", reason="mass revoke")
        assert n == live
        revoked.set()

    assert allowed_after == []
    assert denied_after == opened
    assert opened + refused == N_TASKS
    assert opened >= N_TASKS // 2
    assert not guard.tasks
