"""`engine.open_task(..., labels=[...])`: a task can start tainted (e.g. agent-scoped labels
another process recorded), checked against the state file."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.tasks.conftest import ORCH, STATE_DOC, example_engine
from tether import RequestError
from tether._core import Engine as CoreEngine

GITHUB = 'Domain::"github.com"'


def labels_of(engine: CoreEngine, handle: Any) -> list[str]:
    held: list[str] = json.loads(engine.task_context(handle, now=0.0))["labels"]
    return held


def test_a_seeded_label_taints_the_task_from_its_first_decision() -> None:
    engine = example_engine()
    tainted = engine.open_task(ORCH, now=0.0, labels=["restricted"])
    clean = engine.open_task(ORCH, now=0.0, labels=[])  # the twin: nothing seeded
    assert labels_of(engine, tainted) == ["restricted"]
    assert not engine.authorize_task(tainted, 'Action::"egress"', GITHUB, now=0.0).allowed
    assert engine.authorize_task(clean, 'Action::"egress"', GITHUB, now=0.0).allowed


def test_an_undeclared_label_is_a_request_error_naming_the_declared_ones() -> None:
    engine = example_engine()
    with pytest.raises(RequestError, match=r"unknown label `secret`.*declares restricted"):
        engine.open_task(ORCH, now=0.0, labels=["restricted", "secret"])
    with pytest.raises(TypeError):
        engine.open_task(ORCH, now=0.0, labels="restricted")  # a string is not a list


def test_labels_need_a_state_file_that_declares_them() -> None:
    engine = CoreEngine("permit (principal, action, resource);")
    with pytest.raises(RequestError, match="declares no labels"):
        engine.open_task(ORCH, now=0.0, labels=["restricted"])
    assert engine.state_labels == []


def test_seeded_labels_add_to_what_the_agent_already_holds() -> None:
    doc: dict[str, Any] = json.loads(json.dumps(STATE_DOC))
    doc["labels"]["restricted"]["scope"] = "agent"
    doc["labels"]["flagged"] = {"set_when": "false"}
    engine = example_engine(state=doc)
    assert engine.state_labels == [("flagged", "task"), ("restricted", "agent")]
    first = engine.open_task(ORCH, now=0.0)
    assert engine.authorize_task(first, 'Action::"read"', 'Dataset::"payroll"', now=0.0).allowed
    assert engine.take_task_labels(first) == ["restricted"]  # acquired: to be shared
    assert engine.take_task_labels(first) == []  # taken once
    second = engine.open_task(ORCH, now=0.0, labels=["flagged"])
    assert labels_of(engine, second) == ["flagged", "restricted"]  # seeded | remembered
    assert engine.take_task_labels(second) == []  # nothing new acquired by a decision
