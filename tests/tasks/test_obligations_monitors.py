"""Obligations (approvals, failing closed) and the monitors that revoke tasks."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tether.tasks import ApprovalRequest, Denied, Guard, Monitors, TaskRevoked

ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'
RESEARCHER = 'Agent::"spiffe://example.org/agents/researcher"'
DEPLOY = 'Tool::"deploy"'
SEARCH = 'Tool::"search"'
PAYROLL = 'Dataset::"payroll"'

pytestmark = pytest.mark.anyio


async def test_obligation_makes_authorize_deny_until_approved(engine: Any) -> None:
    guard = Guard(engine, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="ship") as task:
        d = task.authorize("call_tool", DEPLOY)
        assert not d.allowed
        assert d.obligations == ["approval"]
        assert d.message == "requires approval"
        assert task.state()["budgets"]["risk"]["spent"] == 0  # nothing committed
        with pytest.raises(TypeError):  # approvals come only from the approver path
            task.authorize("call_tool", DEPLOY, approved=["approval"])  # type: ignore[call-arg]


async def test_approver_approves(engine: Any) -> None:
    seen: list[ApprovalRequest] = []

    async def approve(req: ApprovalRequest) -> bool:
        seen.append(req)
        await anyio.sleep(0)
        return True

    guard = Guard(engine, approvers={"approval": approve}, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="ship") as task:
        # Only context attributes the schema declares for the action are accepted.
        d = await task.require("call_tool", DEPLOY, {"intent": "ship CHG-1"})
        assert d.allowed
        assert task.state()["budgets"]["risk"]["spent"] == 8
    assert len(seen) == 1
    req = seen[0]
    assert req.task is task
    assert req.obligation == "approval"
    assert req.action == "call_tool" and req.resource == DEPLOY
    assert req.context == {"intent": "ship CHG-1"}


async def test_plain_permit_never_calls_approver(engine: Any) -> None:
    calls: list[object] = []

    async def approve(req: ApprovalRequest) -> bool:
        calls.append(req)
        return True

    guard = Guard(engine, approvers={"approval": approve}, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="x") as task:
        assert (await task.require("call_tool", SEARCH)).allowed
        with pytest.raises(Denied):  # no permit at all: nothing to approve
            await task.require("call_tool", 'Tool::"shell"')
    assert calls == []


async def _slow(req: ApprovalRequest) -> bool:
    await anyio.sleep(30)
    return True


async def _raises(req: ApprovalRequest) -> bool:
    raise ConnectionError("approval service down")


async def _rejects(req: ApprovalRequest) -> bool:
    return False


@pytest.mark.parametrize(
    ("approvers", "match"),
    [
        ({"approval": _rejects}, "was not approved"),
        ({"approval": _slow}, "was not approved"),
        ({"approval": _raises}, "was not approved"),
        ({}, "no approver configured"),
        ({"other": lambda r: True}, "no approver configured"),
    ],
    ids=["reject", "timeout", "raises", "none", "wrong-name"],
)
async def test_approval_fails_closed(engine: Any, approvers: Any, match: str) -> None:
    guard = Guard(engine, approvers=approvers, approval_timeout=0.05, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="ship") as task:
        with pytest.raises(Denied, match=match) as ei:
            await task.require("call_tool", DEPLOY)
        assert not isinstance(ei.value, TaskRevoked)
        assert task.state()["budgets"]["risk"]["spent"] == 0
        assert task.revoked is None


async def test_obligation_on_revoked_task_does_not_ask(engine: Any) -> None:
    calls: list[object] = []

    async def approve(req: ApprovalRequest) -> bool:
        calls.append(req)
        return True

    guard = Guard(engine, approvers={"approval": approve}, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="ship") as task:
        task.revoke("halt")
        with pytest.raises(TaskRevoked, match="halt"):
            await task.require("call_tool", DEPLOY)
    assert calls == []


async def test_approval_then_revoked_during_wait_denies(engine: Any) -> None:
    async def approve(req: ApprovalRequest) -> bool:
        req.task.revoke("revoked while waiting")
        return True

    guard = Guard(engine, approvers={"approval": approve}, allow_unauthenticated=True)
    async with guard.task(ORCH, intent="ship") as task:
        with pytest.raises(TaskRevoked, match="revoked while waiting"):
            await task.require("call_tool", DEPLOY)
        assert task.state()["budgets"]["risk"]["spent"] == 0


# -- monitors ---------------------------------------------------------------------------


async def test_deny_streak_revokes(engine: Any) -> None:
    guard = Guard(engine, monitors=Monitors(max_deny_streak=3), allow_unauthenticated=True)
    async with guard.task(RESEARCHER, intent="x") as task:
        assert task.authorize("read", PAYROLL).revoked is None
        assert task.authorize("read", PAYROLL).revoked is None
        assert task.revoked is None
        d = task.authorize("read", PAYROLL)
        assert d.revoked == "monitor: 3 denials in a row"
        assert task.revoked == "monitor: 3 denials in a row"
        d = task.authorize("call_tool", SEARCH)
        assert not d.allowed
        assert d.message == "task revoked: monitor: 3 denials in a row"


async def test_deny_streak_resets_on_permit_and_ignores_obligations(engine: Any) -> None:
    guard = Guard(engine, monitors=Monitors(max_deny_streak=3), allow_unauthenticated=True)
    async with guard.task(ORCH, intent="x") as task:
        for _ in range(4):
            assert not task.authorize("call_tool", 'Tool::"shell"').allowed
            assert not task.authorize("call_tool", 'Tool::"shell"').allowed
            assert task.authorize("call_tool", 'Tool::"search"').allowed
            # obligation denials are not misbehaviour
            assert task.authorize("call_tool", DEPLOY).obligations == ["approval"]
            assert task.authorize("call_tool", DEPLOY).obligations == ["approval"]
        assert task.revoked is None


async def test_deny_streak_disabled(engine: Any) -> None:
    guard = Guard(
        engine, monitors=Monitors(max_deny_streak=0, max_deny_ratio=0), allow_unauthenticated=True
    )
    async with guard.task(RESEARCHER, intent="x") as task:
        for _ in range(50):
            assert task.authorize("read", PAYROLL).revoked is None
        assert task.revoked is None
        assert task.authorize("call_tool", SEARCH).allowed


async def test_rate_spike_revokes(engine: Any, clock: Any) -> None:
    guard = Guard(
        engine,
        clock=clock,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0, max_rate=5, rate_window=10),
        allow_unauthenticated=True,
    )
    async with guard.task(ORCH, intent="x", ttl=1000) as task:
        for _ in range(5):
            assert task.authorize("read", 'Dataset::"wiki"').allowed
        d = task.authorize("read", 'Dataset::"wiki"')
        assert not d.allowed
        assert d.revoked is not None and d.revoked.startswith("monitor: rate spike")
        assert task.revoked == d.revoked
        d = task.authorize("read", 'Dataset::"wiki"')
        assert d.message is not None and d.message.startswith("task revoked: monitor: rate spike")


async def test_rate_below_limit_in_sliding_window(engine: Any, clock: Any) -> None:
    guard = Guard(
        engine,
        clock=clock,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0, max_rate=5, rate_window=10),
        allow_unauthenticated=True,
    )
    async with guard.task(ORCH, intent="x", ttl=1000) as task:
        for _ in range(30):
            assert task.authorize("read", 'Dataset::"wiki"').allowed
            clock.advance(2.5)  # 4 decisions per 10 s window
        assert task.revoked is None


@pytest.mark.parametrize("revoke", [True, False])
async def test_budget_exhaustion_monitor(engine: Any, revoke: bool) -> None:
    guard = Guard(
        engine,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0, revoke_on_budget_exhausted=revoke),
        allow_unauthenticated=True,
    )
    async with guard.task(ORCH, intent="x") as task:
        for _ in range(6):
            assert task.authorize("call_tool", 'Tool::"summarize"').allowed
        d = task.authorize("call_tool", SEARCH)
        assert not d.allowed
        assert d.message is not None and d.message.startswith("budget `risk` exhausted")
        if revoke:
            assert d.revoked == d.message
            assert task.revoked == d.message
            assert not task.authorize("read", 'Dataset::"wiki"').allowed
        else:
            assert d.revoked is None and task.revoked is None
            assert task.authorize("read", 'Dataset::"wiki"').allowed


async def test_on_decision_sees_every_decision(engine: Any) -> None:
    log: list[tuple[str, str, bool]] = []
    guard = Guard(
        engine,
        on_decision=lambda t, a, r, d: log.append((a, r, d.allowed)),
        allow_unauthenticated=True,
    )
    async with guard.task(ORCH, intent="x") as task:
        task.authorize("call_tool", SEARCH)
        task.authorize("call_tool", 'Tool::"shell"')
    assert log == [("call_tool", SEARCH, True), ("call_tool", 'Tool::"shell"', False)]
