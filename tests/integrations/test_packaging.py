"""Adapters stay optional: tether imports no framework, and the README examples run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def _examples() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Framework adapters")
    section = readme[start : readme.index("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.parametrize("index", range(4))
def test_readme_adapter_example_runs(index: int, tmp_path: Path) -> None:
    for module in FRAMEWORKS:
        pytest.importorskip(module, reason=f"{module} not installed (adapter extras)")
    examples = _examples()
    assert len(examples) == 4
    script = tmp_path / "example.py"
    script.write_text(examples[index], encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=_env()
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused" in run.stdout or "done" in run.stdout
