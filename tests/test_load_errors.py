"""What a user sees when a policy set, schema, state file or request is wrong: the
policy named as they wrote it (`@id`), and the file, line and column of the mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether import Engine, PolicyError, RequestError, SchemaError

SCHEMA = """
entity Agent = { clearance: Long };
entity Dataset = { sensitivity: Long };
action read appliesTo {
  principal: Agent, resource: Dataset,
  context: { intent: String, depth?: Long }
};
"""
ENTITIES = [
    {"uid": {"type": "Agent", "id": "a"}, "attrs": {"clearance": 2}, "parents": []},
    {"uid": {"type": "Dataset", "id": "payroll"}, "attrs": {"sensitivity": 3}, "parents": []},
    {"uid": {"type": "Dataset", "id": "wiki"}, "attrs": {"sensitivity": 1}, "parents": []},
]
GOOD = """@id("read-cleared")
permit (principal, action == Action::"read", resource)
when { principal.clearance >= resource.sensitivity };
"""
READ = 'Action::"read"'


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_reasons_name_policies_by_their_id_annotation() -> None:
    engine = Engine(
        GOOD + 'forbid (principal, action, resource) when { context.intent == "x" };',
        entities=ENTITIES,
    )
    d = engine.authorize('Agent::"a"', READ, 'Dataset::"wiki"', {"intent": "r"}, reasons=True)
    assert d.allowed and d.reasons == ["read-cleared"]
    # Without @id a policy keeps Cedar's own name.
    d = engine.authorize('Agent::"a"', READ, 'Dataset::"wiki"', {"intent": "x"}, reasons=True)
    assert not d.allowed and d.reasons == ["policy1"]
    assert engine.policy_ids() == ["read-cleared", "policy1"]


def test_errors_name_policies_by_their_id_annotation() -> None:
    engine = Engine(GOOD)
    d = engine.authorize('Agent::"ghost"', READ, 'Dataset::"wiki"', reasons=True)
    assert d.errors == ["read-cleared"]
    assert d.error_messages[0].startswith("read-cleared: ")


def test_duplicate_ids_are_a_load_error_naming_both_places() -> None:
    text = GOOD + '\n@id("read-cleared")\nforbid (principal, action, resource);\n'
    with pytest.raises(PolicyError) as e:
        Engine(text)
    msg = str(e.value)
    assert "two policies are named `read-cleared`" in msg
    assert "line 1, column 1" in msg and "line 5, column 1" in msg
    assert e.value.line == 5


def test_distinct_ids_load() -> None:
    text = GOOD + '\n@id("forbid-all")\nforbid (principal, action, resource);\n'
    assert Engine(text).policy_ids() == ["read-cleared", "forbid-all"]


def test_parse_error_in_second_file_names_that_file(tmp_path: Path) -> None:
    a = write(tmp_path, "a.cedar", GOOD)
    b = write(
        tmp_path,
        "b.cedar",
        "// second file\n\npermit (principal, action, resource) when { 1 + };\n",
    )
    with pytest.raises(PolicyError) as e:
        Engine.from_files([a, b])
    assert e.value.file == str(b)
    assert e.value.line == 3
    assert str(e.value).startswith(f"{b}:3:")


def test_parse_error_in_first_file_names_that_file(tmp_path: Path) -> None:
    a = write(tmp_path, "a.cedar", "permit (principal, action, resource) when { 1 + };\n")
    b = write(tmp_path, "b.cedar", GOOD)
    with pytest.raises(PolicyError) as e:
        Engine.from_files([a, b])
    assert e.value.file == str(a) and e.value.line == 1


def test_validation_error_in_second_file_has_file_line_column(tmp_path: Path) -> None:
    a = write(tmp_path, "a.cedar", GOOD)
    b = write(
        tmp_path,
        "b.cedar",
        '\n@id("typo")\nforbid (principal, action, resource)\nwhen { resource.sensitivty > 2 };\n',
    )
    s = write(tmp_path, "s.cedarschema", SCHEMA)
    with pytest.raises(PolicyError) as e:
        Engine.from_files([a, b], schema=s)
    msg = str(e.value)
    assert e.value.file == str(b) and e.value.policy_id == "typo"
    assert f"policy `typo` at {b}:4:" in msg
    assert "sensitivty" in msg


def test_same_policies_validate_without_the_typo(tmp_path: Path) -> None:
    a = write(tmp_path, "a.cedar", GOOD)
    b = write(
        tmp_path,
        "b.cedar",
        "forbid (principal, action, resource) when { resource.sensitivity > 2 };\n",
    )
    s = write(tmp_path, "s.cedarschema", SCHEMA)
    assert Engine.from_files([a, b], schema=s).policy_count == 2


def test_schema_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    s = write(tmp_path, "s.cedarschema", "entity Agent;\nentity Dataset = { sensitivity: Long ;\n")
    p = write(tmp_path, "p.cedar", GOOD)
    with pytest.raises(SchemaError) as e:
        Engine.from_files(p, schema=s)
    assert str(e.value).startswith(f"{s}: line 2, column ")


STATE_TYPO = """
[labels.restricted]
set_when = 'action == Action::"read" && resource.sensitivty >= 3'
"""
STATE_OK = STATE_TYPO.replace("sensitivty", "sensitivity")


def test_state_file_typo_is_caught_at_load(tmp_path: Path) -> None:
    p = write(tmp_path, "p.cedar", GOOD)
    s = write(tmp_path, "s.cedarschema", SCHEMA)
    st = write(tmp_path, "state.toml", STATE_TYPO)
    with pytest.raises(PolicyError) as e:
        Engine.from_files(p, schema=s, state=st)
    msg = str(e.value)
    assert "label `restricted`" in msg and "sensitivty" in msg
    assert "sensitivity" in msg  # Cedar suggests the attribute that exists


def test_state_file_without_the_typo_loads(tmp_path: Path) -> None:
    p = write(tmp_path, "p.cedar", GOOD)
    s = write(tmp_path, "s.cedarschema", SCHEMA)
    st = write(tmp_path, "state.toml", STATE_OK)
    assert Engine.from_files(p, schema=s, state=st).policy_count == 1


def test_budget_add_must_be_a_long(tmp_path: Path) -> None:
    p = write(tmp_path, "p.cedar", GOOD)
    s = write(tmp_path, "s.cedarschema", SCHEMA)
    bad = write(tmp_path, "bad.toml", '[budgets.risk]\nadd = "context.intent"\nlimit = 5\n')
    with pytest.raises(PolicyError, match="budget `risk` \\(add\\)"):
        Engine.from_files(p, schema=s, state=bad)
    ok = write(tmp_path, "ok.toml", '[budgets.risk]\nadd = "resource.sensitivity"\nlimit = 5\n')
    assert Engine.from_files(p, schema=s, state=ok).policy_count == 1


# Request validation: a request the schema rejects has no decision in Cedar.


@pytest.fixture
def typed() -> Engine:
    return Engine(GOOD, SCHEMA, ENTITIES)


@pytest.mark.parametrize(
    ("context", "why"),
    [
        ({"intent": 3}, "context.intent: expected a string, got a long"),
        ({}, "missing required attribute `intent`"),
        ({"intent": "r", "extra": True}, "unexpected attribute `extra`"),
        ({"intent": "r", "depth": "2"}, "context.depth: expected a long, got a string"),
    ],
)
def test_context_of_the_wrong_type_is_rejected(
    typed: Engine, context: dict[str, object], why: str
) -> None:
    req = ('Agent::"a"', READ, 'Dataset::"wiki"')
    with pytest.raises(RequestError, match='context is not valid for Action::"read"') as e:
        typed.authorize(*req, context)
    assert why in str(e.value)
    assert typed.is_allowed(*req, context) is False
    assert typed.authorize_batch([(*req, context)]) == [False]


def test_context_of_the_right_type_is_decided(typed: Engine) -> None:
    req = ('Agent::"a"', READ, 'Dataset::"wiki"')
    assert typed.authorize(*req, {"intent": "r"}).allowed
    assert typed.authorize(*req, {"intent": "r", "depth": 2}).allowed
    assert typed.is_allowed(*req, {"intent": "r"})


def test_principal_and_resource_types_are_checked(typed: Engine) -> None:
    with pytest.raises(RequestError, match="resource type `Agent` is not valid"):
        typed.authorize('Agent::"a"', READ, 'Agent::"a"', {"intent": "r"})
    with pytest.raises(RequestError, match="not declared in the schema"):
        typed.authorize('Agent::"a"', 'Action::"write"', 'Dataset::"wiki"', {"intent": "r"})


def test_request_validation_can_be_turned_off() -> None:
    loose = Engine(GOOD, SCHEMA, ENTITIES, validate_requests=False)
    assert loose.authorize('Agent::"a"', READ, 'Dataset::"wiki"', {"intent": 3}).allowed


def test_entity_count_counts_user_entities_apart_from_actions(typed: Engine) -> None:
    assert typed.entity_count == 3
    assert typed.action_count == 1
