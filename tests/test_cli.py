"""The `tether` command: the demo runs end to end and `check` reports errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_runs_the_whole_story() -> None:
    p = run("demo")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "authenticated spiffe://example.org/agents/orchestrator" in out
    assert "no-exfiltration" in out  # restricted read, then external egress refused
    assert "approval-for-deploy, approved" in out
    assert "delegated to" in out and "depth 1" in out
    assert "monitor: 3 denials in a row" in out
    assert "ancestor task" in out  # the revocation cascaded to the sub-agent
    assert "live leases: 0" in out


def test_check_accepts_the_examples() -> None:
    ex = Path(__file__).resolve().parent.parent / "python" / "tether" / "examples"
    p = run(
        "check",
        str(ex / "agents.cedar"),
        "--schema",
        str(ex / "agents.cedarschema"),
        "--entities",
        str(ex / "entities.json"),
    )
    assert p.returncode == 0, p.stderr
    assert "6 policies" in p.stdout


def test_check_reports_a_bad_policy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cedar"
    bad.write_text("permit(principal, action, resource) when { 1 + };\n")
    p = run("check", str(bad))
    assert p.returncode == 1
    assert f"{bad}:1:" in p.stderr
