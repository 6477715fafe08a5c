"""Adapters stay optional: importing tether imports no framework (the README examples run in
tests/test_readme.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("mcp", "celpy", "fastmcp", "langchain", "langgraph", "agents", "pydantic_ai")


def test_importing_tether_imports_no_framework() -> None:
    code = (
        "import sys, tether, tether.integrations, tether.integrations.tool_gate\n"
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env()
    )
    assert out.stdout.strip() == "[]"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "python")}
