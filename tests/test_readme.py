"""Every ```python block of README.md is a complete script: each runs as written, in an empty
folder, in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks() -> list[tuple[int, str]]:
    text = README.read_text("utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 4


@pytest.mark.parametrize(
    ("line", "code"), [pytest.param(n, code, id=f"README.md:{n}") for n, code in python_blocks()]
)
def test_readme_block_runs(line: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, "utf-8")
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"README.md:{line} failed:\n{run.stdout}\n{run.stderr}"
