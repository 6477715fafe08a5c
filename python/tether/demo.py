"""`tether demo`: a scripted agent session on the embedded defaults, printed with rich."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tether import Engine


def examples_dir() -> Path:
    """The example policies, schema and entities shipped inside the package."""
    return Path(str(resources.files("tether") / "examples"))


def run_demo() -> int:
    console = Console()
    ex = examples_dir()
    engine = Engine.from_files(ex / "agents.cedar", ex / "agents.cedarschema", ex / "entities.json")
    orch = 'Agent::"spiffe://example.org/agents/orchestrator"'
    steps: list[tuple[str, str, str, dict[str, Any]]] = [
        (orch, 'Action::"call_tool"', 'Tool::"search"', {"intent": "research"}),
        (orch, 'Action::"call_tool"', 'Tool::"shell"', {"intent": "research"}),
        (orch, 'Action::"read"', 'Dataset::"payroll"', {"intent": "research"}),
        (orch, 'Action::"egress"', 'Domain::"api.github.com"', {"intent": "research"}),
        (orch, 'Action::"egress"', 'Domain::"pastebin.com"', {"intent": "research"}),
    ]
    table = Table(title="tether demo: one agent, five actions")
    for col in ("action", "resource", "decision", "because"):
        table.add_column(col)
    for p, a, r, ctx in steps:
        d = engine.authorize(p, a, r, ctx, reasons=True)
        because = ", ".join(dict(engine.annotations(i)).get("id", i) for i in d.reasons)
        table.add_row(
            a, r, "[green]allow[/]" if d.allowed else "[red]deny[/]", because or "default deny"
        )
    console.print(table)
    return 0
