"""The example world for Guard-with-store tests, shared by in-process tests and workers."""

from __future__ import annotations

import tomllib
from typing import Literal

from tether import examples
from tether.engine import Engine
from tether.state import state_spec
from tether.store.shared_state import SharedStore
from tether.tasks import Guard, Monitors
from tether.tasks.shared import SharedBudgets

ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'
RESEARCHER = 'Agent::"spiffe://example.org/agents/researcher"'
SEARCH = 'Tool::"search"'  # risk 1
SUMMARIZE = 'Tool::"summarize"'  # risk 2
SHELL = 'Tool::"shell"'  # risk 9: no policy permits it

Mode = Literal["none", "sliced", "strict"]


def engine(risk_limit: int = 12) -> Engine:
    """The example engine with the `risk` budget's limit replaced."""
    doc = tomllib.loads(examples.path("state.toml").read_text("utf-8"))
    doc["budgets"]["risk"]["limit"] = risk_limit
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
        engine(risk_limit),
        store=store,
        shared_budgets=budgets,
        max_staleness=max_staleness,
        on_store_error=on_store_error,
        allow_unauthenticated=True,
        monitors=Monitors(max_deny_streak=max_deny_streak, max_deny_ratio=0),
    )
