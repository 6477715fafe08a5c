"""Bad and extreme input: typed errors with useful messages, no crashes, no lost state.

Anything that could take the interpreter down (deep recursion in the parser, compiler or value
conversion) runs in a child process, so a segfault or stack overflow fails one test instead of
killing the run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from typing import Any

import cedarpy
import pytest

from tests.conformance.cedar_gen import random_world
from tests.conformance.cedar_oracle import Tally, compare_world, policy_names
from tether import Engine, EntityError, PolicyError, RequestError, TetherError

ALLOW_ALL = "permit(principal, action, resource);"
REQ = ('User::"alice"', 'Action::"view"', 'Doc::"d1"')
LOCATION = re.compile(r"line \d+|policy\d+")


def cedar_allowed(policies: str, entities: Any, context: dict[str, Any] | None = None) -> bool:
    req = {"principal": REQ[0], "action": REQ[1], "resource": REQ[2], "context": context or {}}
    res = cedarpy.is_authorized(req, policies, entities)
    assert res.decision in (cedarpy.Decision.Allow, cedarpy.Decision.Deny), res.diagnostics.errors
    return res.decision == cedarpy.Decision.Allow


# ---------------------------------------------------------------------------------------------
# Malformed policies


MALFORMED_POLICIES = {
    "missing_comma_line2": (
        "permit(principal, action, resource);\nforbid(principal, action resource);",
        2,
    ),
    "dangling_operator": ("permit(principal, action, resource) when { 1 + };", 1),
    "missing_semicolon": (
        'permit(principal, action, resource)\nforbid(principal == User::"a", action, resource);',
        2,
    ),
    "garbage": ("hello world", 1),
    "unterminated_string": ('permit(principal, action, resource) when { "abc };', 1),
    "literal_too_large": (
        "permit(principal, action, resource)\n  when { 9223372036854775808 > 0 };",
        2,
    ),
    "too_many_nots": ("permit(principal, action, resource) when { !!!!!true };", 1),
    "duplicate_record_key": ("permit(principal, action, resource) when { {a: 1, a: 2} == {} };", 1),
    "unknown_function": ("permit(principal, action, resource) when { frobnicate(1) };", 1),
    "unknown_method": ("permit(principal, action, resource) when { [1].frobnicate() };", 1),
    "bad_escape": ('permit(principal, action, resource) when { "\\q" == "" };', 1),
    "is_with_expression": ("permit(principal, action, resource) when { principal is 1 };", 1),
    "bad_scope_variable": ("permit(user, action, resource);", 1),
    "scope_wrong_order": ("permit(action, principal, resource);", 1),
    "bad_effect": ("allow(principal, action, resource);", 1),
    "duplicate_annotation": ('@id("a")\n@id("b")\npermit(principal, action, resource);', 2),
    "like_non_literal": ('permit(principal, action, resource) when { "a" like context.p };', 1),
    "has_expression": ('permit(principal, action, resource) when { principal has ("a") };', 1),
    "third_policy_broken": (
        f"{ALLOW_ALL}\n{ALLOW_ALL}\n\npermit(principal, action, resource) when {{ true ",
        4,
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_POLICIES))
def test_malformed_policy_raises_policy_error_with_location(name: str) -> None:
    text, line = MALFORMED_POLICIES[name]
    with pytest.raises(ValueError):  # the case is really malformed: Cedar rejects it too
        cedarpy.PolicySet.from_str(text)
    with pytest.raises(PolicyError) as info:
        Engine(text)
    msg = str(info.value)
    assert LOCATION.search(msg), f"no line/column or policy id in {msg!r}"
    m = re.search(r"line (\d+)", msg)
    if m:
        assert int(m.group(1)) == line, f"error located at the wrong line: {msg!r}"
    assert isinstance(info.value, TetherError)


def test_policy_error_location_attributes() -> None:
    with pytest.raises(PolicyError) as info:
        Engine("permit(principal, action, resource);\nforbid(principal, action resource);")
    err = info.value
    assert getattr(err, "line", None) == 2
    assert isinstance(getattr(err, "column", None), int)


def test_non_utf8_policy_bytes() -> None:
    bad = b'permit(principal, action, resource) when { "\xff\xfe" == "" };'
    with pytest.raises(TetherError):
        Engine(bad)
    with pytest.raises(TetherError):
        Engine(b"\x80" + ALLOW_ALL.encode())


def test_utf8_policy_bytes_work() -> None:
    text = 'permit(principal, action, resource) when { "zoë" like "zo*" };'
    assert Engine(text.encode()).is_allowed(*REQ) is True


def test_reload_with_bad_text_raises_policy_error() -> None:
    eng = Engine(ALLOW_ALL)
    with pytest.raises(PolicyError):
        eng.reload("permit(principal, action, resource) when {")
    with pytest.raises(TetherError):
        eng.reload(b"\xffpermit(principal, action, resource);")


# ---------------------------------------------------------------------------------------------
# Entities

SCHEMA = """
entity Group;
entity User in [Group] { age?: Long };
entity Doc;
action view appliesTo { principal: User, resource: Doc };
"""


def test_unknown_entity_type_with_schema() -> None:
    ents = [{"uid": {"type": "Robot", "id": "r2"}, "attrs": {}, "parents": []}]
    with pytest.raises(EntityError):
        Engine(ALLOW_ALL, SCHEMA, ents)
    with pytest.raises(EntityError):
        Engine(ALLOW_ALL, SCHEMA, json.dumps(ents))
    eng = Engine(ALLOW_ALL, SCHEMA, [])
    with pytest.raises(EntityError):
        eng.upsert_entities(ents)


def test_schema_violating_attribute() -> None:
    ents = [{"uid": {"type": "User", "id": "a"}, "attrs": {"age": "old"}, "parents": []}]
    with pytest.raises(EntityError):
        Engine(ALLOW_ALL, SCHEMA, ents)


def _ent(attrs: str = "{}", parents: str = "[]", uid: str = '{"type": "User", "id": "a"}') -> str:
    return f'[{{"uid": {uid}, "attrs": {attrs}, "parents": {parents}}}]'


MALFORMED_ENTITIES = {
    "truncated": '[{"uid": ',
    "empty": "",
    "not_json": "hello",
    "object_not_list": '{"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": []}',
    "uid_string": _ent(uid='"User::a"'),
    "uid_without_id": _ent(uid='{"type": "User"}'),
    "bad_type_name": _ent(uid='{"type": "Us er", "id": "a"}'),
    "attrs_list": _ent(attrs="[]"),
    "parents_object": _ent(parents="{}"),
    "parent_without_id": _ent(parents='[{"type": "Group"}]'),
    "float_attr": _ent(attrs='{"f": 1.5}'),
    "null_attr": _ent(attrs='{"f": null}'),
    "int_too_large": _ent(attrs='{"n": 9223372036854775808}'),
    "bad_decimal": _ent(attrs='{"d": {"__extn": {"fn": "decimal", "arg": "abc"}}}'),
    "unknown_extension": _ent(attrs='{"d": {"__extn": {"fn": "nope", "arg": "1"}}}'),
    "duplicate_json_key": _ent(attrs='{"x": 1, "x": 2}'),
    "duplicate_uid": (
        '[{"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": []},'
        ' {"uid": {"type": "User", "id": "a"}, "attrs": {"x": 1}, "parents": []}]'
    ),
    "parent_cycle": (
        '[{"uid": {"type": "G", "id": "a"}, "attrs": {}, "parents": [{"type": "G", "id": "b"}]},'
        ' {"uid": {"type": "G", "id": "b"}, "attrs": {}, "parents": [{"type": "G", "id": "a"}]}]'
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_ENTITIES))
def test_malformed_entities_raise_entity_error(name: str) -> None:
    text = MALFORMED_ENTITIES[name]
    with pytest.raises(ValueError):  # the case is really malformed: Cedar rejects it too
        cedarpy.Entities.from_json_str(text)
    with pytest.raises(EntityError):
        Engine(ALLOW_ALL, None, text)
    eng = Engine(ALLOW_ALL)
    with pytest.raises(EntityError):
        eng.upsert_entities(text)


@pytest.mark.parametrize("bad", [[{"uid": "User::a"}], [1, 2], [None], [{"uid": {}, "attrs": 5}]])
def test_malformed_entity_dicts_raise_entity_error(bad: list[Any]) -> None:
    with pytest.raises(EntityError):
        Engine(ALLOW_ALL, None, bad)


# ---------------------------------------------------------------------------------------------
# Requests


@pytest.mark.parametrize(
    "uid",
    [
        "User::alice",
        "alice",
        'User::"alice',
        '::"alice"',
        'User:"alice"',
        'User::"alice" trailing',
        'Us er::"alice"',
        'if::"alice"',
        ("User",),
        ("User", "alice", "extra"),
        ("Us er", "alice"),
        ("", "alice"),
        ("if", "alice"),
    ],
    ids=repr,
)
def test_malformed_request_entity_raises_request_error(uid: Any) -> None:
    # The case is really malformed: Cedar cannot build a request from it either.
    if isinstance(uid, str) or len(uid) == 2:
        cedar_uid = uid if isinstance(uid, str) else {"type": uid[0], "id": uid[1]}
        req = {"principal": cedar_uid, "action": REQ[1], "resource": REQ[2]}
        res = cedarpy.is_authorized(req, ALLOW_ALL, [])
        assert res.decision == cedarpy.Decision.NoDecision, uid
    eng = Engine(ALLOW_ALL)
    with pytest.raises(RequestError):
        eng.authorize(uid, REQ[1], REQ[2])
    with pytest.raises(RequestError):
        eng.is_allowed(REQ[0], uid, REQ[2])
    with pytest.raises(RequestError):
        eng.authorize(REQ[0], REQ[1], uid, reasons=True)


@pytest.mark.parametrize("uid", [42, None, 1.5, b'User::"alice"'])
def test_non_entity_request_values_raise(uid: Any) -> None:
    eng = Engine(ALLOW_ALL)
    kind = type(uid).__name__
    with pytest.raises(RequestError, match=f"^principal: expected .* got {kind}$"):
        eng.authorize(uid, REQ[1], REQ[2])
    with pytest.raises(RequestError, match=f"^action: expected .* got {kind}$"):
        eng.is_allowed(REQ[0], uid, REQ[2])
    with pytest.raises(RequestError, match=f"^request #0: principal: expected .* got {kind}$"):
        eng.authorize_batch([(uid, REQ[1], REQ[2])])


@pytest.mark.parametrize(
    "ctx",
    [
        [1, 2],
        "context",
        5,
        {"f": 1.5},
        {"f": None},
        {"n": 2**63},
        {"n": -(2**63) - 1},
        {"a": object()},
        {"d": {"__extn": {"fn": "decimal", "arg": "x"}}},
        {"d": {"__extn": {"fn": "nope", "arg": "1"}}},
    ],
)
def test_wrong_context_raises_request_error(ctx: Any) -> None:
    eng = Engine(ALLOW_ALL)
    with pytest.raises(RequestError):
        eng.authorize(*REQ, ctx)
    with pytest.raises(RequestError):
        eng.is_allowed(*REQ, ctx)


def test_authorize_batch_bad_request_raises_request_error() -> None:
    eng = Engine(ALLOW_ALL)
    with pytest.raises(RequestError):
        eng.authorize_batch([REQ, ("User::alice", REQ[1], REQ[2])])
    with pytest.raises(RequestError):
        eng.authorize_batch([(*REQ, [1, 2])])


# ---------------------------------------------------------------------------------------------
# Huge inputs


def test_5000_policy_set_builds_and_matches_cedar() -> None:
    world = random_world(seed=5000, n_policies=5000, n_requests=20)
    tally = Tally()
    compare_world(world, tally)
    assert tally.cases == 40  # 20 requests, then the same 20 sharing one context
    eng = Engine(world.policy_text)
    assert eng.policy_count == 5000
    assert eng.policy_ids()[-1] == policy_names(world)["policy4999"]


def test_one_megabyte_string_attribute() -> None:
    blob = "x" * (1 << 20) + "z"
    ents = [{"uid": {"type": "User", "id": "alice"}, "attrs": {"blob": blob}, "parents": []}]
    policies = "\n".join(
        [
            'permit(principal, action, resource) when { principal.blob like "*z" };',
            'permit(principal, action, resource) when { principal.blob like "x*x" };',
            "permit(principal, action, resource) when { principal.blob == context.blob };",
            'forbid(principal, action, resource) when { principal.blob like "*y*" };',
        ]
    )
    eng = Engine(policies, None, ents)
    ctx = {"blob": blob}
    d = eng.authorize(*REQ, ctx, reasons=True)
    res = cedarpy.is_authorized(
        {"principal": REQ[0], "action": REQ[1], "resource": REQ[2], "context": ctx},
        policies,
        ents,
    )
    assert d.allowed is True
    assert sorted(d.reasons) == sorted(res.diagnostics.reasons) == ["policy0", "policy2"]
    assert d.errors == []


def test_long_policy_text_line_numbers() -> None:
    """A parse error deep into a big file is still located on the right line."""
    text = "\n".join([ALLOW_ALL] * 3000) + "\npermit(principal, action, resource) when { 1 + };"
    with pytest.raises(PolicyError, match=r"line 3001"):
        Engine(text)


# ---------------------------------------------------------------------------------------------
# Deep nesting: never a crash (run in a child process)

PRELUDE = """
import sys
from tether import Engine, TetherError

REQ = ('User::"alice"', 'Action::"view"', 'Doc::"d1"')

def report(fn):
    try:
        out = fn()
    except TetherError as e:
        print(type(e).__name__)
    except RecursionError:
        print("RecursionError")
    except BaseException as e:
        print("OTHER " + type(e).__name__ + ": " + str(e)[:200])
    else:
        print("OK:" + repr(out))
"""


def run_isolated(body: str) -> str:
    """Run `body` after PRELUDE in a fresh interpreter; return its last output line."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        rc = proc.returncode
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        pytest.fail(f"child process crashed ({how}); stderr tail:\n{proc.stderr[-2000:]}")
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{proc.stderr[-2000:]}"
    return lines[-1]


def deep_policy_cases() -> dict[str, tuple[str, bool]]:
    n = 2000
    return {
        "parentheses_2000": ("(" * n + "true" + ")" * n, True),
        "parenthesized_nots_2000": ("!(" * n + "true" + ")" * n, True),
        "bare_nots_2000": ("!" * n + "true", True),  # Cedar: at most 4 chained unary ops
        "negations_2000": ("-(" * n + "1" + ")" * n + " == 1", True),
        "plus_chain_5000": ("1" + " + 1" * 5000 + " > 0", True),
        "and_chain_5000": ("true" + " && true" * 5000, True),
        "or_chain_5000": ("false" + " || false" * 5000, False),
        "nested_if_2000": ("if true then " * n + "true" + " else false" * n, True),
        "nested_sets_2000": ("[" * n + "1" + "]" * n + " == " + "[" * n + "1" + "]" * n, True),
        "nested_records_2000": ("{a: " * n + "1" + "}" * n + " has a", True),
        "attribute_chain_2000": ("context" + ".a" * n + " == 1", False),
    }


@pytest.mark.parametrize("name", sorted(deep_policy_cases()))
def test_deep_policy_expression_never_crashes(name: str) -> None:
    cond, expected = deep_policy_cases()[name]
    policy = f"permit(principal, action, resource) when {{ {cond} }};"
    out = run_isolated(f"report(lambda: Engine({policy!r}).is_allowed(*REQ))\nsys.stdout.flush()\n")
    assert out in ("PolicyError", f"OK:{expected!r}"), f"{name}: {out}"


def test_deep_context_raises_request_error() -> None:
    out = run_isolated(
        """
        ctx = cur = {}
        for _ in range(10_000):
            cur["a"] = {}
            cur = cur["a"]
        eng = Engine("permit(principal, action, resource);")
        report(lambda: eng.authorize(*REQ, ctx))
        """
    )
    assert out == "RequestError"


def test_deep_context_list_raises_request_error() -> None:
    out = run_isolated(
        """
        ctx = {"a": []}
        cur = ctx["a"]
        for _ in range(10_000):
            cur.append([])
            cur = cur[0]
        eng = Engine("permit(principal, action, resource);")
        report(lambda: eng.is_allowed(*REQ, ctx))
        """
    )
    assert out == "RequestError"


def test_self_referencing_context_raises_request_error() -> None:
    out = run_isolated(
        """
        ctx = {}
        ctx["me"] = ctx
        eng = Engine("permit(principal, action, resource);")
        report(lambda: eng.authorize(*REQ, ctx))
        """
    )
    assert out == "RequestError"


@pytest.mark.parametrize("as_text", [False, True], ids=["dicts", "json_text"])
def test_deep_entity_attribute_raises_entity_error(as_text: bool) -> None:
    out = run_isolated(
        f"""
        n = 10_000
        if {as_text}:  # built as text: json.dumps itself cannot go this deep
            deep = '{{"a": ' * n + "{{}}" + "}}" * n
            ents = '[{{"uid": {{"type": "User", "id": "alice"}}, "parents": [], "attrs": '
            ents += '{{"deep": ' + deep + '}}}}]'
        else:
            attr = cur = {{}}
            for _ in range(n):
                cur["a"] = {{}}
                cur = cur["a"]
            ents = [{{"uid": {{"type": "User", "id": "alice"}}, "attrs": {{"deep": attr}},
                      "parents": []}}]
        report(lambda: Engine("permit(principal, action, resource);", None, ents))
        """
    )
    assert out == "EntityError"


def test_moderate_nesting_works_and_matches_cedar() -> None:
    """Reasonable depth (50) is not an error anywhere: context, entities and policy."""
    ctx: dict[str, Any] = {"leaf": 1}
    for _ in range(50):
        ctx = {"a": ctx}
    path, opened, closed = ".a" * 50, "(" * 50, ")" * 50
    policy = (
        "permit(principal, action, resource) when { "
        f"context{path}.leaf == 1 && {opened}principal.n{closed} == 7 }};"
    )
    ents = [{"uid": {"type": "User", "id": "alice"}, "attrs": {"n": 7, "deep": ctx}, "parents": []}]
    eng = Engine(policy, None, ents)
    assert eng.is_allowed(*REQ, ctx) is True
    assert cedar_allowed(policy, ents, ctx) is True


# ---------------------------------------------------------------------------------------------
# State survives errors

STATE_POLICIES = """
permit(principal in Group::"eng", action == Action::"view", resource);
forbid(principal, action, resource) when { principal has blocked && principal.blocked };
permit(principal, action, resource) when { context.n > 3 };
permit(principal, action, resource) when { principal.age + 1 > 0 };
"""
STATE_ENTITIES: list[dict[str, Any]] = [
    {
        "uid": {"type": "User", "id": "alice"},
        "attrs": {},
        "parents": [{"type": "Group", "id": "eng"}],
    },
    {"uid": {"type": "User", "id": "bob"}, "attrs": {"blocked": True}, "parents": []},
    {"uid": {"type": "Group", "id": "eng"}, "attrs": {}, "parents": []},
]
STATE_REQUESTS: list[tuple[str, str, str, dict[str, Any]]] = [
    ('User::"alice"', 'Action::"view"', 'Doc::"d1"', {}),
    ('User::"alice"', 'Action::"edit"', 'Doc::"d1"', {"n": 5}),
    ('User::"bob"', 'Action::"view"', 'Doc::"d1"', {"n": 5}),
    ('User::"carol"', 'Action::"edit"', 'Doc::"d1"', {"n": 1}),
]


def snapshot(eng: Engine) -> Any:
    decisions = []
    for p, a, r, ctx in STATE_REQUESTS:
        d = eng.authorize(p, a, r, ctx, reasons=True)
        decisions.append((d.allowed, sorted(d.reasons), sorted(d.errors)))
    return decisions, eng.policy_ids(), eng.entity_count, eng.version


def test_state_survives_errors() -> None:
    eng = Engine(STATE_POLICIES, None, STATE_ENTITIES)
    before = snapshot(eng)
    # Sanity: the snapshot is what Cedar says.
    for (p, a, r, ctx), (allowed, reasons, _) in zip(STATE_REQUESTS, before[0], strict=True):
        res = cedarpy.is_authorized(
            {"principal": p, "action": a, "resource": r, "context": ctx},
            STATE_POLICIES,
            STATE_ENTITIES,
        )
        assert allowed == (res.decision == cedarpy.Decision.Allow)
        assert reasons == sorted(res.diagnostics.reasons)

    # A valid change to bob followed by a broken entity: the whole upsert must be rejected.
    half_good = [
        {"uid": {"type": "User", "id": "bob"}, "attrs": {"blocked": False}, "parents": []},
        {"uid": {"type": "User", "id": "eve"}, "attrs": {"f": 1.5}, "parents": []},
    ]
    failing: list[tuple[str, Any, type[BaseException]]] = [
        ("upsert truncated JSON", lambda: eng.upsert_entities('[{"uid": '), EntityError),
        ("upsert half-good batch", lambda: eng.upsert_entities(half_good), EntityError),
        (
            "upsert cycle",
            lambda: eng.upsert_entities(MALFORMED_ENTITIES["parent_cycle"]),
            EntityError,
        ),
        ("reload bad policies", lambda: eng.reload("permit(principal, action"), PolicyError),
        ("reload non-UTF-8", lambda: eng.reload(b"\xff"), TetherError),
        ("bad principal", lambda: eng.authorize("User::alice", REQ[1], REQ[2]), RequestError),
        ("bad context", lambda: eng.is_allowed(*REQ, [1, 2]), RequestError),  # type: ignore[arg-type]
        ("bad batch", lambda: eng.authorize_batch([("x", "y", "z")]), RequestError),
        ("remove bad uid", lambda: eng.remove_entities(["User::alice"]), TetherError),
    ]
    for label, call, exc in failing:
        with pytest.raises(exc):
            call()
        assert snapshot(eng) == before, f"state changed after failing call: {label}"
