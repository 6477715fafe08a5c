"""What the README promises about the engine's API, one test per promise: typed errors with
their fields, unsupported features named, Python sets and entity handles in contexts,
`normalize_context` refusing bad contexts, and batches releasing the GIL. Where Cedar has an
answer, cedarpy is the oracle."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import cedarpy
import pytest

from tether import Engine, PolicyError, RequestError, SchemaError, TetherError

ALLOW = "permit (principal, action, resource);"
SCHEMA = """
entity User = { tags: Set<String> };
entity Doc = { owner: User };
action read appliesTo { principal: User, resource: Doc, context: { n: Long, who?: User } };
"""
READ = ("Action", "read")


# -- PolicyError fields ---------------------------------------------------------------------


def test_policy_error_names_the_unsupported_feature_and_policy() -> None:
    policies = (
        f'{ALLOW}\npermit (principal, action, resource) when {{ ip("1.2.3.4", 2).isIpv4() }};'
    )
    with pytest.raises(PolicyError) as e:
        Engine(policies)
    err = e.value
    assert isinstance(err, TetherError)
    assert err.policy_id == "policy1"
    assert (err.line, err.column) == (2, 1)
    assert err.feature is not None and "`ip` expects 1 argument(s), got 2" in err.feature
    assert err.feature in str(err) and "policy1" in str(err)
    # The benign twin: the same call with one argument loads and decides as Cedar does.
    ok = f'{ALLOW}\nforbid (principal, action, resource) when {{ ip("1.2.3.4").isIpv4() }};'
    assert Engine(ok).is_allowed('U::"u"', 'Action::"a"', 'R::"r"') is False
    res = cedarpy.is_authorized(
        {"principal": 'U::"u"', "action": 'Action::"a"', "resource": 'R::"r"', "context": {}},
        ok,
        [],
    )
    assert res.decision == cedarpy.Decision.Deny


def test_validation_error_names_policy_and_location() -> None:
    policies = (
        'permit (principal, action == Action::"read", resource);\n'
        'permit (principal, action == Action::"read", resource) when { principal.x };'
    )
    with pytest.raises(PolicyError) as e:
        Engine(policies, SCHEMA)
    assert e.value.policy_id == "policy1"
    assert e.value.line == 2 and e.value.column is not None
    assert e.value.feature is None
    assert "attribute `x`" in str(e.value)
    # Without validation the same text loads (the attribute is simply missing at run time).
    assert Engine(policies, SCHEMA, validate=False).policy_count == 2


def test_parse_error_has_line_and_column() -> None:
    with pytest.raises(PolicyError) as e:
        Engine(f"{ALLOW}\npermit (principal, action, resource) when {{ 1 + }};")
    assert (e.value.line, e.value.column) == (2, 49)
    assert e.value.feature is None


# -- SchemaError ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("entity User; entity User;", "declared twice"),
        ("entity User = {", "unexpected end of input"),
        ("entity User; action read appliesTo { principal: User };", "resource"),
    ],
)
def test_bad_schema_raises_schema_error(schema: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as e:
        Engine(ALLOW, schema)
    assert isinstance(e.value, TetherError) and not isinstance(e.value, PolicyError)
    # Cedar refuses the same schema, with the same message.
    cedar = cedarpy.validate_policies(ALLOW, schema)
    assert not cedar.validation_passed
    assert [message in err.error for err in cedar.errors] == [True]


def test_bad_schema_on_reload_keeps_the_engine() -> None:
    engine = Engine(ALLOW, SCHEMA)
    version = engine.version
    with pytest.raises(SchemaError):
        engine.reload(ALLOW, "entity User; entity User;")
    assert engine.version == version
    assert engine.is_allowed('User::"a"', 'Action::"read"', 'Doc::"d"', {"n": 1})


# -- Python sets and entity handles in contexts ----------------------------------------------

CONTEXT_POLICIES = """
permit (principal, action, resource) when { context.tags.contains("x") };
permit (principal, action, resource) when { context.who == principal };
permit (principal, action, resource) when { context.docs.contains(resource) };
"""


def cedar_reasons(context: dict[str, Any]) -> list[str]:
    res = cedarpy.is_authorized(
        {
            "principal": 'User::"alice"',
            "action": 'Action::"read"',
            "resource": 'Doc::"d1"',
            "context": context,
        },
        CONTEXT_POLICIES,
        [],
    )
    assert not res.diagnostics.errors, res.diagnostics.errors
    return sorted(res.diagnostics.reasons)


@pytest.mark.parametrize(
    ("python", "cedar"),
    [
        (
            {"tags": {"x", "y"}, "who": ("User", "bob"), "docs": frozenset()},
            {"tags": ["x", "y"], "who": {"__entity": {"type": "User", "id": "bob"}}, "docs": []},
        ),
        (
            {"tags": set(), "who": "handle:alice", "docs": {"handle:d1"}},
            {
                "tags": [],
                "who": {"__entity": {"type": "User", "id": "alice"}},
                "docs": [{"__entity": {"type": "Doc", "id": "d1"}}],
            },
        ),
        (
            {"tags": frozenset({"y"}), "who": "handle:bob", "docs": {"handle:d2", "handle:d1"}},
            {
                "tags": ["y"],
                "who": {"__entity": {"type": "User", "id": "bob"}},
                "docs": [
                    {"__entity": {"type": "Doc", "id": "d2"}},
                    {"__entity": {"type": "Doc", "id": "d1"}},
                ],
            },
        ),
    ],
)
def test_sets_and_handles_in_context_decide_as_cedar(
    python: dict[str, Any], cedar: dict[str, Any]
) -> None:
    engine = Engine(CONTEXT_POLICIES)
    handles = {
        "handle:alice": engine.entity("User", "alice"),
        "handle:bob": engine.entity("User", "bob"),
        "handle:d1": engine.entity("Doc", "d1"),
        "handle:d2": engine.entity("Doc", "d2"),
    }

    def resolve(v: Any) -> Any:
        if isinstance(v, str) and v in handles:
            return handles[v]
        if isinstance(v, set | frozenset):
            return type(v)(resolve(x) for x in v)
        return v

    context = {k: resolve(v) for k, v in python.items()}
    d = engine.authorize('User::"alice"', 'Action::"read"', 'Doc::"d1"', context, reasons=True)
    assert sorted(d.reasons) == cedar_reasons(cedar)
    assert d.errors == []


# -- normalize_context ----------------------------------------------------------------------


def test_normalize_context_converts_a_valid_context() -> None:
    engine = Engine(ALLOW, SCHEMA)
    out = engine.normalize_context(READ, '{"n": 1, "who": {"type": "User", "id": "a"}}')
    assert out == '{"n":1,"who":{"__entity":{"type":"User","id":"a"}}}'
    assert engine.normalize_context('Action::"read"', '{"n": 2}') == '{"n":2}'


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ("{}", "attribute `n`"),
        ('{"n": 1, "extra": 2}', "`extra` should not exist"),
        ("not json", "context JSON"),
        ("[1, 2]", "context"),
    ],
)
def test_normalize_context_rejects_a_bad_context(context: str, message: str) -> None:
    engine = Engine(ALLOW, SCHEMA)
    with pytest.raises(RequestError, match=message):
        engine.normalize_context(READ, context)
    # Cedar refuses to build the same request.
    if context.startswith("{"):
        res = cedarpy.is_authorized(
            {
                "principal": 'User::"a"',
                "action": 'Action::"read"',
                "resource": 'Doc::"d"',
                "context": json.loads(context),
            },
            ALLOW,
            [],
            schema=SCHEMA,
        )
        assert res.decision == cedarpy.Decision.NoDecision


def test_normalize_context_rejects_an_undeclared_action() -> None:
    with pytest.raises(RequestError, match="not defined in the supplied schema"):
        Engine(ALLOW, SCHEMA).normalize_context('Action::"write"', '{"n": 1}')


@pytest.mark.xfail(
    strict=True,
    reason="a context attribute of the wrong type passes (issue 8: request validation)",
)
def test_normalize_context_rejects_a_wrong_type() -> None:
    with pytest.raises(RequestError):
        Engine(ALLOW, SCHEMA).normalize_context(READ, '{"n": "one"}')


# -- the GIL --------------------------------------------------------------------------------


def other_thread_ran_during(work: Any) -> bool:
    """Run `work` in a thread and report whether this thread got the GIL back while `work` was
    still running. The switch interval is raised so far that the interpreter never forces a
    switch: this thread can only run if `work` gives the GIL up by itself."""
    entered = threading.Event()
    finished = threading.Event()

    def run() -> None:
        entered.set()
        work()
        finished.set()

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        thread = threading.Thread(target=run)
        thread.start()  # returns once `run` has started and dropped the GIL, not before
        ran_during = entered.is_set() and not finished.is_set()
        thread.join()
    finally:
        sys.setswitchinterval(previous)
    return ran_during


def test_batches_release_the_gil() -> None:
    engine = Engine(
        "permit (principal, action, resource) when { context.n > 5 };\n"
        "forbid (principal, action, resource) when { context.n > 90 };"
    )
    requests = [('User::"u"', 'Action::"a"', 'Doc::"d"', {"n": i % 100}) for i in range(50_000)]
    results: list[list[bool]] = []
    assert other_thread_ran_during(lambda: results.append(engine.authorize_batch(requests)))
    assert results[0] == [5 < i % 100 <= 90 for i in range(50_000)]


def test_gil_probe_sees_code_that_keeps_the_gil() -> None:
    """The probe's twin: pure Python work never gives the GIL up, and the probe says so."""
    assert not other_thread_ran_during(lambda: sum(i * i for i in range(2_000_000)))
