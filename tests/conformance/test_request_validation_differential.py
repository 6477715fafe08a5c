"""Request validation against a schema, checked against cedarpy: a request Cedar
refuses to build (NoDecision) is exactly one tether rejects with RequestError, and
every other request gets Cedar's decision. cedarpy 4.12 bundles Cedar 4.x request
validation, which has not changed in the versions since."""

from __future__ import annotations

from typing import Any

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether import Engine, RequestError

SCHEMA = """
entity Agent = { clearance: Long };
entity Dataset = { sensitivity: Long };
entity Tool;
action read appliesTo {
  principal: Agent, resource: Dataset,
  context: {
    intent: String,
    depth?: Long,
    urgent: Bool,
    tags?: Set<String>,
    via?: Agent,
    meta?: { source: String, hops?: Long },
  }
};
action call appliesTo { principal: Agent, resource: Tool, context: {} };
"""
POLICIES = """
permit (principal, action == Action::"read", resource)
when { principal.clearance >= resource.sensitivity };
forbid (principal, action, resource) when { context has depth && context.depth > 2 };
permit (principal, action == Action::"call", resource);
"""
ENTITIES: list[dict[str, Any]] = [
    {"uid": {"type": "Agent", "id": "a"}, "attrs": {"clearance": 2}, "parents": []},
    {"uid": {"type": "Dataset", "id": "d"}, "attrs": {"sensitivity": 1}, "parents": []},
    {"uid": {"type": "Tool", "id": "t"}, "attrs": {}, "parents": []},
]

scalars = st.one_of(
    st.text(alphabet="abc", max_size=3),
    st.integers(-3, 5),
    st.booleans(),
    st.sampled_from(
        [{"__entity": {"type": "Agent", "id": "a"}}, {"__entity": {"type": "Tool", "id": "t"}}]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["source", "hops", "x"]), inner, max_size=3),
    ),
    max_leaves=6,
)
contexts = st.dictionaries(
    st.sampled_from(["intent", "depth", "urgent", "tags", "via", "meta", "extra"]),
    values,
    max_size=6,
)
# Near-valid contexts (the declared attributes, each possibly of a wrong type, plus
# optional ones) so that both outcomes are common, not only rejections.
short = st.text(alphabet="abc", max_size=3)


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """The declared attributes with valid values, each optional one present or not,
    then at most one value corrupted or one attribute dropped or added: contexts on
    both sides of the line, most of them one step from it."""
    ctx: dict[str, Any] = {"intent": draw(short), "urgent": draw(st.booleans())}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "depth": st.integers(0, 4),
        "tags": st.lists(short, max_size=3),
        "via": st.just({"__entity": {"type": "Agent", "id": "a"}}),
        "meta": st.fixed_dictionaries({"source": short}, optional={"hops": st.integers(0, 3)}),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            ctx[key] = draw(strategy)
    change = draw(st.sampled_from(["none", "none", "corrupt", "drop", "add"]))
    keys = sorted(ctx)
    if change == "corrupt":
        ctx[draw(st.sampled_from(keys))] = draw(values)
    elif change == "drop":
        del ctx[draw(st.sampled_from(keys))]
    elif change == "add":
        ctx[draw(st.sampled_from(["extra", "x"]))] = draw(scalars)
    return ctx


read_ok = st.tuples(
    st.just('Agent::"a"'), st.just('Action::"read"'), st.just('Dataset::"d"'), near_valid()
)
requests = st.one_of(
    read_ok,
    read_ok,
    st.tuples(
        st.sampled_from(['Agent::"a"', 'Tool::"t"']),
        st.sampled_from(['Action::"read"', 'Action::"call"', 'Action::"write"']),
        st.sampled_from(['Dataset::"d"', 'Tool::"t"']),
        st.one_of(contexts, st.just({})),
    ),
)

ENGINE = Engine(POLICIES, SCHEMA, ENTITIES)


def cedar(p: str, a: str, r: str, ctx: dict[str, Any]) -> cedarpy.AuthzResult:
    req = {"principal": p, "action": a, "resource": r, "context": ctx}
    return cedarpy.is_authorized(req, POLICIES, ENTITIES, schema=SCHEMA)


@settings(max_examples=400, deadline=None)
@given(requests)
def test_tether_rejects_exactly_what_cedar_refuses(
    req: tuple[str, str, str, dict[str, Any]],
) -> None:
    p, a, r, ctx = req
    want = cedar(p, a, r, ctx)
    if want.decision == cedarpy.Decision.NoDecision:
        with pytest.raises(RequestError):
            ENGINE.authorize(p, a, r, ctx)
        assert ENGINE.is_allowed(p, a, r, ctx) is False
    else:
        assert ENGINE.authorize(p, a, r, ctx).allowed == want.allowed, want.diagnostics.errors
        assert ENGINE.is_allowed(p, a, r, ctx) == want.allowed


def test_generator_reaches_both_outcomes() -> None:
    """The property above is only worth something if both branches are exercised."""
    seen = {True: 0, False: 0}

    @settings(max_examples=300, deadline=None, database=None)
    @given(requests)
    def probe(req: tuple[str, str, str, dict[str, Any]]) -> None:
        seen[cedar(*req).decision == cedarpy.Decision.NoDecision] += 1

    probe()
    assert seen[True] > 30 and seen[False] > 30, seen
