"""The framework-free tool-call check: argument conversion and schema-validated engines."""

from __future__ import annotations

from pathlib import Path

import pytest

import tether
from tether.engine import Engine
from tether.integrations.tool_gate import (
    ToolPolicy,
    authorize_tool_call,
    cedar_arguments,
    visible_tools,
)
from tether.tasks import Guard

pytestmark = pytest.mark.anyio
EXAMPLES = Path(tether.__file__).parent / "examples"
ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'


def test_arguments_become_cedar_values() -> None:
    args = {
        "n": 3,
        "ok": True,
        "s": "x",
        "none": None,
        "f": 1.5,
        "whole": 2.0,
        "tiny": 1e-9,
        "nested": {"k": [1, None, "a"]},
        "obj": object,
    }
    out = cedar_arguments(args)
    assert out["n"] == 3 and out["ok"] is True and out["s"] == "x" and "none" not in out
    assert out["f"] == {"__extn": {"fn": "decimal", "arg": "1.5000"}}
    assert out["whole"] == 2 and out["tiny"] == "1e-09"
    assert out["nested"] == {"k": [1, "a"]} and isinstance(out["obj"], str)
    deep: dict[str, object] = {}
    cur = deep
    for _ in range(40):
        cur["d"] = {}
        cur = cur["d"]  # type: ignore[assignment]
    with pytest.raises(ValueError):
        cedar_arguments(deep)


async def test_schema_that_does_not_declare_arguments() -> None:
    engine = Engine.from_files(
        EXAMPLES / "agents.cedar",
        EXAMPLES / "agents.cedarschema",
        EXAMPLES / "entities.json",
        state=EXAMPLES / "state.toml",
    )
    async with (
        Guard(engine, allow_unauthenticated=True) as guard,
        guard.task(ORCH, intent="t") as task,
    ):
        # The schema rejects an undeclared `context.arguments`: refused, never allowed.
        refused = await authorize_tool_call(task, "search", {"q": "x"})
        assert not refused.allowed and "could not be completed" in refused.reason
        plain = ToolPolicy(arguments=False)
        assert (await authorize_tool_call(task, "search", {"q": "x"}, policy=plain)).allowed
        assert visible_tools(task, ["search", "shell", "deploy"], policy=plain) == {
            "search",
            "deploy",
        }


async def test_per_tool_actions() -> None:
    policies = """
    permit (principal, action == Action::"call_search", resource == Tool::"search");
    """
    entities = '[{"uid": {"type": "Tool", "id": "search"}, "attrs": {}, "parents": []}]'
    per_tool = ToolPolicy(action=lambda tool: f"call_{tool}")
    async with (
        Guard(Engine(policies, None, entities), allow_unauthenticated=True) as guard,
        guard.task('Agent::"a"', intent="t") as task,
    ):
        assert (await authorize_tool_call(task, "search", {}, policy=per_tool)).allowed
        assert not (await authorize_tool_call(task, "shell", {}, policy=per_tool)).allowed
        assert not (await authorize_tool_call(task, "search", {})).allowed  # call_tool: none
        assert visible_tools(task, ["search", "shell"], policy=per_tool) == {"search"}
