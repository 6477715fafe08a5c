"""The `tether` command through its real entry point (`python -m tether`), including
bad files: every command, exit statuses 0/1/2, one-line errors with locations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tether

EX = Path(tether.__file__).resolve().parent / "examples"
ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'
WORLD = ["--schema", str(EX / "agents.cedarschema"), "--entities", str(EX / "entities.json")]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


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


def test_version_and_help() -> None:
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"tether {tether.__version__}"
    assert tether.__version__ != "0+unknown"
    p = run("--help")
    assert p.returncode == 0
    for cmd in (
        "demo",
        "check",
        "validate",
        "eval",
        "explain",
        "test",
        "bench",
        "audit",
        "replay",
        "serve",
    ):
        assert f"    {cmd}" in p.stdout
    assert "Exit status" in p.stdout
    assert run("check", "--help").returncode == 0


def test_every_command_and_argument_has_help() -> None:
    import argparse

    from tether.cli import build_parser

    def walk(parser: argparse.ArgumentParser, where: str) -> list[str]:
        bare = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        bare.append(f"{where} {choice.dest}")
                for name, sub in action.choices.items():
                    bare += walk(sub, f"{where} {name}")
            elif not action.help:
                bare.append(f"{where} {action.dest}")
        return bare

    assert walk(build_parser(), "tether") == []


@pytest.mark.parametrize("cmd", ["check", "validate"])
def test_check_accepts_the_examples(cmd: str) -> None:
    p = run(cmd, str(EX / "agents.cedar"), *WORLD, "--state", str(EX / "state.toml"))
    assert p.returncode == 0, p.stderr
    assert "6 policies" in p.stdout


def test_check_missing_file_is_one_line_exit_2(tmp_path: Path) -> None:
    line = one_line_error(run("check", str(tmp_path / "nope.cedar")))
    assert line == f"error: {tmp_path / 'nope.cedar'}: no such policy file"
    line = one_line_error(run("check", str(EX / "agents.cedar"), "--schema", "missing.schema"))
    assert "missing.schema: no such schema file" in line


def test_check_locates_an_error_in_the_second_file(tmp_path: Path) -> None:
    a = tmp_path / "a.cedar"
    a.write_text('@id("a")\npermit(principal, action, resource);\n')
    b = tmp_path / "b.cedar"
    b.write_text('@id("b")\npermit(principal, action, resource)\n  when { 1 + };\n')
    line = one_line_error(run("check", str(a), str(b)))
    assert line.startswith(f"error: {b}:3:14: ")
    assert line.count(str(b)) == 1
    # The twin: both files fine, so it loads.
    b.write_text('@id("b")\npermit(principal, action, resource)\n  when { 1 + 1 == 2 };\n')
    p = run("check", str(a), str(b))
    assert p.returncode == 0 and "2 policies" in p.stdout


def test_check_names_the_bad_schema_entities_and_state(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("not valid anything {")
    pol = str(EX / "agents.cedar")
    assert f"{bad}:" in one_line_error(run("check", pol, "--schema", str(bad)))
    assert f"{bad}:" in one_line_error(run("check", pol, "--entities", str(bad)))
    assert f"{bad}:" in one_line_error(run("check", pol, "--state", str(bad)))


def test_check_state_typo_names_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.toml"
    state.write_text((EX / "state.toml").read_text().replace("sensitivity >=", "sensitivty >="))
    schema = ["--schema", str(EX / "agents.cedarschema")]
    line = one_line_error(run("check", str(EX / "agents.cedar"), *schema, "--state", str(state)))
    assert line.startswith(f"error: {state}: ") and "did you mean `sensitivity`" in line
    p = run("check", str(EX / "agents.cedar"), *schema, "--state", str(EX / "state.toml"))
    assert p.returncode == 0, p.stderr


def test_eval_allows_and_denies() -> None:
    base = [
        "eval",
        str(EX / "agents.cedar"),
        *WORLD,
        "--principal",
        ORCH,
        "--action",
        "call_tool",
        "--context",
        '{"intent": "report"}',
    ]
    p = run(*base, "--resource", 'Tool::"search"', "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["decision"] == "allow"
    p = run(*base, "--resource", 'Tool::"shell"')  # risk 9 > 5
    assert p.returncode == 1 and p.stdout.startswith("DENY")


def test_eval_request_file_and_bad_requests(tmp_path: Path) -> None:
    req = tmp_path / "req.json"
    req.write_text(
        json.dumps(
            {
                "principal": ORCH,
                "action": "read",
                "resource": 'Dataset::"wiki"',
                "context": {"intent": "report"},
            }
        )
    )
    p = run("eval", str(EX / "agents.cedar"), *WORLD, "--request", str(req))
    assert p.returncode == 0, p.stderr
    req.write_text('{"principal": ')
    assert f"{req}:1:" in one_line_error(
        run("eval", str(EX / "agents.cedar"), "--request", str(req))
    )
    line = one_line_error(run("eval", str(EX / "agents.cedar"), "--principal", ORCH))
    assert "missing action, resource" in line


SUITE = """
policies = ["{ex}/agents.cedar"]
schema = "{ex}/agents.cedarschema"
entities = "{ex}/entities.json"

[[case]]
name = "orchestrator may search"
principal = '{orch}'
action = "call_tool"
resource = 'Tool::"search"'
context = {{ intent = "report" }}
expect = "allow"

[[case]]
name = "shell is too risky"
principal = '{orch}'
action = "call_tool"
resource = 'Tool::"shell"'
context = {{ intent = "report" }}
expect = "{shell}"
"""


def test_test_command_passes_and_reports_coverage(tmp_path: Path) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.format(ex=EX, orch=ORCH, shell="deny"))
    p = run("test", str(suite))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed, 0 failed" in p.stdout
    assert "coverage" in p.stdout and "1/6 policies" in p.stdout
    assert p.stdout.count("never exercised:") == 5


def test_test_command_fails_a_wrong_expectation(tmp_path: Path) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.format(ex=EX, orch=ORCH, shell="allow"))
    p = run("test", str(suite))
    assert p.returncode == 1
    assert "FAIL" in p.stdout and "shell is too risky: expected allow, got deny" in p.stdout
    assert "1 passed, 1 failed" in p.stdout


def test_test_command_reads_yaml(tmp_path: Path) -> None:
    import importlib

    yaml: Any = importlib.import_module("yaml")
    doc = {
        "policies": [str(EX / "agents.cedar")],
        "entities": str(EX / "entities.json"),
        "cases": [
            {
                "name": "wiki",
                "principal": ORCH,
                "action": "read",
                "resource": 'Dataset::"wiki"',
                "expect": "allow",
            }
        ],
    }
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(doc))
    p = run("test", str(suite))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 passed" in p.stdout


def test_test_command_bad_suites(tmp_path: Path) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.format(ex=EX, orch=ORCH, shell="maybe"))
    assert 'case 2 (shell is too risky): `expect` must be "allow" or "deny"' in one_line_error(
        run("test", str(suite))
    )
    suite.write_text("policies = [")
    assert f"{suite}:" in one_line_error(run("test", str(suite)))
    assert "no such test suite file" in one_line_error(run("test", str(tmp_path / "x.toml")))


def test_bench_reports_percentiles(tmp_path: Path) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.format(ex=EX, orch=ORCH, shell="deny"))
    p = run(
        "bench",
        str(EX / "agents.cedar"),
        *WORLD,
        "--requests",
        str(suite),
        "-n",
        "500",
        "--no-progress",
    )
    assert p.returncode == 0, p.stderr
    assert "500 decisions over 2 distinct requests" in p.stdout
    assert "p50" in p.stdout and "p99" in p.stdout and "decisions/s" in p.stdout


def _receipts(tmp_path: Path) -> Path:
    from tether.audit import AuditLog
    from tether.engine import Engine

    path = tmp_path / "audit.jsonl"
    engine = Engine.from_files(EX / "agents.cedar", EX / "agents.cedarschema", EX / "entities.json")
    with AuditLog(path, record_requests=True) as log:
        log.attach(engine)
        ctx = {"intent": "report"}
        engine.authorize(ORCH, 'Action::"call_tool"', 'Tool::"search"', ctx)
        engine.authorize(ORCH, 'Action::"read"', 'Dataset::"payroll"', ctx)
    return path


def test_audit_verify_ok_and_damaged(tmp_path: Path) -> None:
    log = _receipts(tmp_path)
    p = run("audit", "verify", str(log))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok: 2 decisions")
    lines = log.read_bytes().splitlines()
    log.write_bytes(b"\n".join([lines[0], lines[2], lines[3]]) + b"\n")
    p = run("audit", "verify", str(log))
    assert p.returncode == 1
    assert f"{log}:2: seq 2 after seq 0: 1 record(s) missing" in p.stderr
    assert "no such receipt log" in one_line_error(run("audit", "verify", str(tmp_path / "x")))


def test_replay_shows_what_would_change(tmp_path: Path) -> None:
    log = _receipts(tmp_path)
    stricter = tmp_path / "new.cedar"
    stricter.write_text(
        (EX / "agents.cedar").read_text()
        + '\n@id("no-payroll")\nforbid(principal, action, resource == Dataset::"payroll");\n'
    )
    p = run("replay", str(log), "--policies", str(stricter), *WORLD, "--strict")
    assert p.returncode == 1, p.stderr
    assert "allow -> deny" in p.stdout and 'Dataset::"payroll"' in p.stdout
    assert "2 replayed: 1 would change, 1 unchanged" in p.stdout
    # The twin: the same policies change nothing.
    p = run("replay", str(log), "--policies", str(EX / "agents.cedar"), *WORLD, "--strict")
    assert p.returncode == 0 and "0 would change" in p.stdout


def test_serve_without_credentials_refuses_to_start() -> None:
    line = one_line_error(run("serve", str(EX / "agents.cedar")))
    assert "--bundle" in line and "--insecure-no-auth" in line


def test_bad_arguments_exit_2() -> None:
    p = run("frobnicate")
    assert p.returncode == 2 and "invalid choice" in p.stderr


def test_serve_answers_authzen_requests() -> None:
    import httpx

    todo = Path(__file__).parent / "authzen" / "todo"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether",
            "serve",
            str(todo / "todo.cedar"),
            "--entities",
            str(todo / "entities.json"),
            "--port",
            "0",
            "--insecure-no-auth",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket listens
        assert proc.stderr is not None
        assert line.startswith("AuthZEN PDP on http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[-1]
        body = {
            "subject": {"type": "user", "id": "nobody"},
            "action": {"name": "can_read_todos"},
            "resource": {"type": "todo", "id": "1"},
        }
        r = httpx.post(f"{url}/access/v1/evaluation", json=body, timeout=30)
        assert r.status_code == 200 and r.json() == {"decision": True}
        # Search through the same server: every user may read the todos.
        search = {**body, "subject": {"type": "user"}}
        r = httpx.post(f"{url}/access/v1/search/subject", json=search, timeout=30)
        users = json.loads((todo / "entities.json").read_text())
        assert r.status_code == 200
        assert {x["id"] for x in r.json()["results"]} == {u["uid"]["id"] for u in users}
    finally:
        proc.terminate()
        proc.wait(30)


def test_bad_files_for_bench_replay_and_explain(tmp_path: Path) -> None:
    pol = str(EX / "agents.cedar")
    reqs = tmp_path / "reqs.json"
    reqs.write_text('[{"principal": "x"}]')
    line = one_line_error(run("bench", pol, "--requests", str(reqs), "--no-progress"))
    assert f"{reqs}: request 1 needs principal, action and resource" in line
    line = one_line_error(run("replay", str(tmp_path / "none.jsonl"), "--policies", pol))
    assert "none.jsonl: no such receipt log file" in line
    line = one_line_error(
        run(
            "explain",
            pol,
            "--entities",
            str(tmp_path / "e.json"),
            "--principal",
            ORCH,
            "--action",
            "read",
            "--resource",
            'Dataset::"wiki"',
        )
    )
    assert "e.json: no such entities file" in line
