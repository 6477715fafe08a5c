"""The example world for Guard-with-store tests, shared by in-process tests and workers."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import anyio

from tether import examples
from tether.engine import Engine
from tether.state import state_spec
from tether.store.shared_state import SharedStore
from tether.tasks import Guard, Monitors
from tether.tasks.shared import SharedBudgets

if TYPE_CHECKING:
    from tether.audit import AuditLog

ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'
RESEARCHER = 'Agent::"spiffe://example.org/agents/researcher"'
SEARCH = 'Tool::"search"'  # risk 1
SUMMARIZE = 'Tool::"summarize"'  # risk 2
SHELL = 'Tool::"shell"'  # risk 9: no policy permits it

Mode = Literal["none", "sliced", "strict"]


async def until(check: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll until `check()` holds; fail after `limit` seconds."""
    with anyio.fail_after(limit):
        while not check():
            await anyio.sleep(0.001)


def engine(risk_limit: int = 12, *, agent_labels: bool = False) -> Engine:
    """The example engine with the `risk` budget's limit replaced; `agent_labels`: the
    `restricted` taint sticks to the agent (`scope = "agent"`) instead of the task."""
    doc = tomllib.loads(examples.path("state.toml").read_text("utf-8"))
    doc["budgets"]["risk"]["limit"] = risk_limit
    if agent_labels:
        doc["labels"]["restricted"]["scope"] = "agent"
    return Engine(
        examples.path("agents.cedar").read_text("utf-8"),
        examples.path("agents.cedarschema").read_text("utf-8"),
        examples.path("entities.json").read_text("utf-8"),
        state=state_spec(doc),
    )


def guard(
    store: SharedStore,
    *,
    mode: Mode = "none",
    risk_limit: int = 12,
    slice_size: int = 4,
    overdraft: int = 0,
    max_staleness: float = 5.0,
    on_store_error: Literal["deny", "allow"] = "deny",
    max_deny_streak: int = 0,
    hold_ttl: float | None = 30.0,
    agent_labels: bool = False,
    audit: AuditLog | None = None,
    tree_monitors: bool = False,
) -> Guard:
    budgets = None
    if mode != "none":
        budgets = SharedBudgets(
            frozenset({"risk"}),
            mode=mode,
            slice_size=slice_size,
            overdraft=overdraft,
            hold_ttl=hold_ttl,
        )
    return Guard(
        engine(risk_limit, agent_labels=agent_labels),
        store=store,
        shared_budgets=budgets,
        max_staleness=max_staleness,
        on_store_error=on_store_error,
        allow_unauthenticated=True,
        monitors=Monitors(max_deny_streak=max_deny_streak, max_deny_ratio=0),
        audit=audit,
        tree_monitors=tree_monitors,
    )
