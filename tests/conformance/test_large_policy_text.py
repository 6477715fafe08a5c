"""Policy texts over 1 MiB, which tether cuts at policy ends and parses in parallel pieces
(`rust/compile/parse.rs`): decisions, reasons, errors and error locations must be exactly
those of one whole parse, checked against cedarpy and against the text's own lines."""

from __future__ import annotations

import pytest

from tests.conformance.cedar_gen import random_world
from tests.conformance.cedar_oracle import Tally, compare_world
from tests.conformance.differential_count import record
from tether import Engine, PolicyError

# The size above which the engine parses in pieces (`SPLIT_MIN_BYTES`).
PIECES_FROM = 1 << 20

SCHEMA = """
entity Agent = { clearance: Long };
entity Dataset = { sensitivity: Long };
action read appliesTo { principal: Agent, resource: Dataset, context: {} };
"""


def test_a_large_generated_world_decides_as_cedar() -> None:
    world = random_world(20_000, n_policies=11_000, n_requests=40)
    assert len(world.policy_text.encode()) > PIECES_FROM, "too small to be cut into pieces"
    tally = Tally()
    compare_world(world, tally)
    record("1 MiB world", tally.cases)
    assert tally.cases == 80  # 40 requests, then the same 40 sharing one context


def filler(n: int) -> str:
    """n valid policies with `;` inside strings and comments, so that a cut made anywhere
    but at a policy's end would break a string or a comment."""
    return "".join(
        f"// rule {i}; keep it\n"
        f'@id("r{i}")\npermit (principal == Agent::"a{i};", action == Action::"read", '
        f'resource) when {{ resource.sensitivity < {i % 5} && "x;{i}" like "x;*" }};\n'
        for i in range(n)
    )


def test_a_validation_error_deep_in_a_large_text_names_its_line() -> None:
    head = filler(9_000)
    text = (
        head
        + '@id("typo")\nforbid (principal, action, resource)\nwhen { resource.sensitivty > 2 };\n'
    )
    assert len(text.encode()) > PIECES_FROM
    line = head.count("\n") + 3
    with pytest.raises(PolicyError) as e:
        Engine(text, SCHEMA)
    assert e.value.policy_id == "typo"
    assert e.value.line == line, str(e.value)
    assert "sensitivty" in str(e.value)


def test_the_same_large_text_without_the_typo_loads_and_decides() -> None:
    text = (
        filler(9_000)
        + '@id("fine")\nforbid (principal, action, resource)\nwhen { resource.sensitivity > 2 };\n'
    )
    assert len(text.encode()) > PIECES_FROM
    entities = [
        {"uid": {"type": "Agent", "id": "a8999;"}, "attrs": {"clearance": 1}, "parents": []},
        {"uid": {"type": "Dataset", "id": "d"}, "attrs": {"sensitivity": 1}, "parents": []},
        {"uid": {"type": "Dataset", "id": "s"}, "attrs": {"sensitivity": 3}, "parents": []},
    ]
    eng = Engine(text, SCHEMA, entities)
    assert eng.policy_count == 9_001
    # r8999 allows sensitivity < 4 (8999 % 5); the last policy forbids above 2.
    ok = eng.authorize('Agent::"a8999;"', 'Action::"read"', 'Dataset::"d"', reasons=True)
    assert ok.allowed and list(ok.reasons) == ["r8999"]
    assert not eng.is_allowed('Agent::"a8999;"', 'Action::"read"', 'Dataset::"s"')


def test_a_syntax_error_in_a_later_piece_is_reported_at_its_line() -> None:
    head = filler(9_000)
    text = head + "permit (principal, action, resource) when { context.x == };\n" + filler(10)
    assert len(text.encode()) > PIECES_FROM
    with pytest.raises(PolicyError) as e:
        Engine(text)
    assert e.value.line == head.count("\n") + 1, str(e.value)
