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
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "authenticated spiffe://example.org/agents/orchestrator" in out
    # The restricted read taints the task, and the later refusal says which step did it.
    assert ' 4 allow orchestrator read      Dataset::"payroll"' in out
    assert "the task now carries label 'restricted'" in out
    deny = lines.index(' 5 deny  orchestrator egress    Domain::"api.github.com"')
    assert lines[deny + 1].strip() == "forbidden by no-exfiltration"
    assert lines[deny + 2].strip() == "label 'restricted' was set at step 4"
    assert "approval asked for call_tool" in out and "permitted by approval-for-deploy" in out
    assert "delegated to" in out and "depth 1" in out
    # Events print in the order they happen: the revocation right under the decision that
    # tripped the monitor, and the sub-agent denied after it.
    revoked = next(i for i, line in enumerate(lines) if "task revoked now" in line)
    assert "monitor: 3 denials in a row" in lines[revoked]
    assert "deny  orchestrator egress" in lines[revoked - 1]
    assert any("ancestor task" in line for line in lines[revoked:])
    assert lines[-1].endswith("live leases: 0")


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
