"""`explain`: Cedar's own verdict per policy and condition, rendered for people and
models; checked against Cedar's conformance cases and against the engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tether
from tether.engine import Engine
from tether.explain import denial_for_model, explain, render_for_model, render_tree
from tether.tasks import Denied

EX = Path(tether.__file__).resolve().parent / "examples"
ENTITIES = (EX / "entities.json").read_text()
ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'
TAINTED = {"task": {"labels": ["restricted"]}}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.from_files(EX / "agents.cedar", entities=EX / "entities.json")


def test_failed_condition_of_a_near_permit(engine: Engine) -> None:
    ex = explain(engine, ORCH, "call_tool", 'Tool::"shell"', entities=ENTITIES)
    assert not ex.allowed and ex.engine_allowed is False
    granted = next(p for p in ex.policies if p.id == "tools-granted")
    assert granted.scope_matched and not granted.satisfied
    assert granted.conditions[0].value == "false"
    tree = render_tree(ex)
    assert "permit tools-granted: does not apply" in tree
    assert "resource.risk <= 5" in tree and "read-cleared: scope does not match" in tree
    msg = render_for_model(ex)
    assert msg.startswith("Refused: no rule permits it. `tools-granted` would permit it if")
    # Nothing of the data: not the tool's risk (9), not the agent's tool list.
    assert "9" not in msg and "summarize" not in msg


def test_forbid_shows_task_reads_and_the_way_out(engine: Engine) -> None:
    ex = explain(engine, ORCH, "egress", 'Domain::"pastebin.com"', TAINTED, entities=ENTITIES)
    assert not ex.allowed and ex.reasons == ["no-exfiltration"]
    f = next(p for p in ex.policies if p.id == "no-exfiltration")
    assert f.satisfied
    assert f.conditions[0].task_reads == [("context.task.labels", '["restricted"]')]
    assert 'reads context.task.labels = ["restricted"]' in render_tree(ex)
    msg = render_for_model(ex)
    assert msg.startswith("Refused by rule `no-exfiltration`")
    assert 'would not apply if `resource in Domain::"corp.internal"`' in msg
    # The benign twin: an untainted task egressing to an allowed domain.
    ok = explain(
        engine,
        ORCH,
        "egress",
        'Domain::"api.github.com"',
        {"task": {"labels": []}},
        entities=ENTITIES,
    )
    assert ok.allowed and ok.engine_allowed and render_for_model(ok) == "Allowed."


def test_no_candidate_at_all(engine: Engine) -> None:
    ex = explain(engine, ORCH, "launch", 'Tool::"x"', entities=ENTITIES)
    assert render_for_model(ex) == (
        'Refused: no rule permits Action::"launch" for this agent on this resource.'
    )


def test_bad_requests_raise_request_error(engine: Engine) -> None:
    with pytest.raises(tether.RequestError, match="not an entity uid"):
        explain(engine, "not a uid", "read", 'Dataset::"wiki"', entities=ENTITIES)


def test_denied_for_model_names_rules_only(engine: Engine) -> None:
    d = engine.authorize(ORCH, 'Action::"egress"', 'Domain::"pastebin.com"', TAINTED, reasons=True)
    assert not d.allowed
    text = Denied("x", d).for_model()
    assert text.startswith("Refused by rule `") and "pastebin" not in text
    nothing = engine.authorize(ORCH, 'Action::"call_tool"', 'Tool::"shell"', reasons=True)
    assert denial_for_model(nothing) == "Refused: no rule permits this action."
    assert Denied("obligation `approval` was not approved").for_model() == (
        "obligation `approval` was not approved"
    )


def test_cli_explain_tree_and_model_text() -> None:
    base = [
        sys.executable,
        "-m",
        "tether",
        "explain",
        str(EX / "agents.cedar"),
        "--entities",
        str(EX / "entities.json"),
        "--principal",
        ORCH,
        "--action",
        "egress",
        "--resource",
        'Domain::"pastebin.com"',
        "--context",
        json.dumps(TAINTED),
    ]
    p = subprocess.run(base, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 1, p.stderr
    assert p.stdout.startswith('DENY Action::"egress"  (decided by: no-exfiltration)')
    p = subprocess.run(
        [*base, "--for-model"], capture_output=True, text=True, timeout=120, check=False
    )
    assert p.stdout.startswith("Refused by rule `no-exfiltration`")


REQUESTS = [
    (ORCH, "call_tool", 'Tool::"shell"', {}),
    (ORCH, "call_tool", 'Tool::"search"', {}),
    (ORCH, "egress", 'Domain::"pastebin.com"', TAINTED),
    (ORCH, "egress", 'Domain::"api.github.com"', {"task": {"labels": []}}),
    (ORCH, "read", 'Dataset::"payroll"', {}),
]


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: f"{r[1]}-{r[2]}")
def test_engine_explain_reads_its_own_entities(engine: Engine, req: Any) -> None:
    p, a, r, ctx = req
    own = engine.explain(p, a, r, ctx)
    given = explain(engine, p, a, r, ctx, entities=ENTITIES)
    assert own == given
    assert own.engine_allowed == own.allowed


def test_engine_explain_with_a_schema_takes_actions_from_it() -> None:
    e = Engine.from_files(
        EX / "agents.cedar", schema=EX / "agents.cedarschema", entities=EX / "entities.json"
    )
    ex = e.explain(ORCH, "read", 'Dataset::"wiki"')
    assert ex.allowed and ex.reasons == ["read-cleared"]
    assert not any(u["uid"]["type"] == "Action" for u in json.loads(e.entities_json()))


def test_engine_explain_follows_entity_updates() -> None:
    # The explanation reads the live store: a clearance lowered after loading denies,
    # the untouched twin engine still allows.
    e = Engine.from_files(EX / "agents.cedar", entities=EX / "entities.json")
    twin = Engine.from_files(EX / "agents.cedar", entities=EX / "entities.json")
    orch = next(x for x in json.loads(ENTITIES) if x["uid"]["id"].endswith("orchestrator"))
    e.upsert_entities([{**orch, "attrs": {**orch["attrs"], "clearance": 0}}])
    lowered = e.explain(ORCH, "read", 'Dataset::"payroll"')
    kept = twin.explain(ORCH, "read", 'Dataset::"payroll"')
    assert kept.allowed and not lowered.allowed
    cleared = next(p for p in lowered.policies if p.id == "read-cleared")
    assert cleared.scope_matched and cleared.conditions[0].value == "false"
    assert lowered.engine_allowed is False


def test_entities_export_round_trips_every_value_kind() -> None:
    ents = [
        {
            "uid": {"type": "Host", "id": "h"},
            "attrs": {
                "ip": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}},
                "cost": {"__extn": {"fn": "decimal", "arg": "1.25"}},
                "tags": ["a", "b"],
                "owner": {"__entity": {"type": "User", "id": "u"}},
                "nested": {"n": 3, "ok": True},
            },
            "parents": [{"type": "Net", "id": "corp"}],
        },
        {"uid": {"type": "Net", "id": "corp"}, "attrs": {}, "parents": []},
    ]
    policy = (
        '@id("cheap-corp")\npermit(principal, action, resource in Net::"corp") when '
        '{ resource.ip.isInRange(ip("10.0.0.0/8")) && resource.cost.lessThan(decimal("2.0"))'
        " && resource.nested.n == 3 && resource.owner == principal };"
    )
    e = Engine(policy, None, json.dumps(ents))
    again = Engine(policy, None, e.entities_json())
    assert json.loads(again.entities_json()) == json.loads(e.entities_json())
    ok = e.explain('User::"u"', "go", 'Host::"h"')
    assert ok.allowed and ok.reasons == ["cheap-corp"]
    other = e.explain('User::"v"', "go", 'Host::"h"')  # the twin: not the owner
    assert not other.allowed and other.engine_allowed is False


@pytest.mark.anyio
async def test_task_explain_shows_the_task_values_read() -> None:
    from tests.support import FakeClock
    from tether.tasks import Guard

    e = Engine.from_files(
        EX / "agents.cedar", entities=EX / "entities.json", state=EX / "state.toml"
    )
    async with Guard(e, clock=FakeClock(0.0), allow_unauthenticated=True) as guard:
        async with (
            guard.task(ORCH, intent="report") as tainted,
            guard.task(ORCH, intent="report") as clean,
        ):
            assert tainted.authorize("read", 'Dataset::"payroll"').allowed
            ex = tainted.explain("egress", 'Domain::"api.github.com"')
            assert not ex.allowed and ex.reasons == ["no-exfiltration"]
            f = next(p for p in ex.policies if p.id == "no-exfiltration")
            assert f.conditions[0].task_reads == [("context.task.labels", '["restricted"]')]
            assert not tainted.authorize("egress", 'Domain::"api.github.com"').allowed
            # The twin task never read restricted data: allowed, and it says why.
            ok = clean.explain("egress", 'Domain::"api.github.com"')
            assert ok.allowed and ok.reasons == ["egress-allowlist"]
            g = next(p for p in ok.policies if p.id == "no-exfiltration")
            assert g.conditions[0].task_reads == [("context.task.labels", "[]")]
            assert clean.authorize("egress", 'Domain::"api.github.com"').allowed
