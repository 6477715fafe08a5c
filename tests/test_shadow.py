"""Shadow mode on the engine: a candidate policy set decides beside the live one, off the
hot path, never enforced; differences are counted and, with a receipt log, recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tether
from tether.audit import AuditLog
from tether.engine import Engine

EX = Path(tether.__file__).resolve().parent / "examples"
ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'
NO_PAYROLL = (
    EX / "agents.cedar"
).read_text() + '\n@id("no-payroll")\nforbid(principal, action, resource == Dataset::"payroll");\n'


def live() -> Engine:
    return Engine.from_files(EX / "agents.cedar", entities=EX / "entities.json")


def test_a_stricter_candidate_is_counted_never_enforced() -> None:
    e = live()
    assert e.shadow_stats() is None
    e.shadow(NO_PAYROLL)
    payroll = e.authorize(ORCH, 'Action::"read"', 'Dataset::"payroll"')
    assert payroll.allowed  # the live set decides
    assert e.is_allowed(ORCH, 'Action::"read"', 'Dataset::"payroll"')
    # The benign twin: a dataset both sets allow is no difference.
    assert e.authorize(ORCH, 'Action::"read"', 'Dataset::"wiki"').allowed
    read = 'Action::"read"'
    batch = [(ORCH, read, 'Dataset::"payroll"'), (ORCH, read, 'Dataset::"wiki"')]
    assert e.authorize_batch(batch) == [True, True]
    e.shadow_flush()
    st = e.shadow_stats()
    assert st is not None
    assert (st.checked, st.diffs, st.newly_denied, st.newly_allowed) == (5, 3, 3, 0)
    assert st.recent[0].resource == 'Dataset::"payroll"' and st.recent[0].shadow is False
    e.unshadow()
    assert e.shadow_stats() is None
    assert "authorize" not in e.__dict__  # the shadow-less engine is the plain class again


def test_a_looser_candidate_counts_newly_allowed() -> None:
    e = live()
    e.shadow('@id("all")\npermit(principal, action, resource);')
    assert not e.is_allowed(ORCH, 'Action::"call_tool"', 'Tool::"shell"')
    e.shadow_flush()
    st = e.shadow_stats()
    assert st is not None and (st.newly_allowed, st.newly_denied) == (1, 0)


def test_the_candidate_follows_entity_updates() -> None:
    e = live()
    e.shadow((EX / "agents.cedar").read_text())  # the same policies: no difference
    orch = next(
        x
        for x in json.loads((EX / "entities.json").read_text())
        if x["uid"]["id"].endswith("orchestrator")
    )
    e.upsert_entities([{**orch, "attrs": {**orch["attrs"], "clearance": 0}}])
    assert not e.is_allowed(ORCH, 'Action::"read"', 'Dataset::"payroll"')
    e.remove_entities([ORCH])
    assert not e.is_allowed(ORCH, 'Action::"read"', 'Dataset::"wiki"')
    e.shadow_flush()
    st = e.shadow_stats()
    assert st is not None and st.checked == 2 and st.diffs == 0


def test_a_shadow_with_a_receipt_log_records_the_difference() -> None:
    for shadow_first in (True, False):
        e = live()
        got: list[bytes] = []
        log = AuditLog(got.append)
        if shadow_first:
            e.shadow(NO_PAYROLL)
            log.attach(e)
        else:
            log.attach(e)
            e.shadow(NO_PAYROLL)
        with log:
            assert e.authorize(ORCH, 'Action::"read"', 'Dataset::"payroll"').allowed
            assert e.authorize(ORCH, 'Action::"read"', 'Dataset::"wiki"').allowed
            e.shadow_flush()
        recs = [json.loads(x) for x in got if b'"kind"' not in x]
        assert [r.get("shadow") for r in recs] == ["deny", None]
        st = e.shadow_stats()
        assert st is not None and st.checked == 2 and st.diffs == 1  # compared once each


def test_a_bad_candidate_is_refused_and_the_live_set_untouched() -> None:
    e = live()
    with pytest.raises(tether.PolicyError):
        e.shadow("permit(")
    assert e.shadow_stats() is None
    assert e.is_allowed(ORCH, 'Action::"read"', 'Dataset::"wiki"')


SCHEMA = """
entity User;
entity Doc;
action reading;
action view in [reading] appliesTo { principal: User, resource: Doc };
"""


@pytest.mark.parametrize(
    ("candidate", "diffs"),
    [
        # The same verdict through the schema's action group: no difference.
        ('permit(principal, action in Action::"reading", resource);', 0),
        # The twin that does differ: the group is forbidden.
        (
            "permit(principal, action, resource);\n"
            'forbid(principal, action in Action::"reading", resource);',
            1,
        ),
    ],
)
def test_the_candidate_keeps_the_schemas_action_groups(candidate: str, diffs: int) -> None:
    e = Engine('permit(principal, action == Action::"view", resource);', SCHEMA, "[]")
    e.shadow(candidate)
    assert e.is_allowed('User::"u"', 'Action::"view"', 'Doc::"d"')
    e.shadow_flush()
    st = e.shadow_stats()
    assert st is not None and st.checked == 1 and st.diffs == diffs
