"""Context strings decide the same when the engine has seen their objects before.

The engine remembers, per `str` object, what a context string resolved to: its symbol when
the text is one the engine knows (a policy literal, an entity attribute), or that the engine
did not know it. These tests reuse string objects across requests, more of them than the
memory holds, and grow the engine's known texts after a string was remembered as unknown;
every decision is checked against cedarpy on the same request.
"""

from __future__ import annotations

import json
import random
from typing import Any

import cedarpy

from tether import Engine

POLICIES = """
permit (principal, action == Action::"known", resource) when { context.s == "api.example.com" };
permit (principal, action == Action::"pair", resource) when { context.s == context.t };
permit (principal, action == Action::"glob", resource) when { context.s like "host*.net" };
permit (principal, action == Action::"attr", resource) when { context.s == resource.name };
"""

ACTIONS = ["known", "pair", "glob", "attr"]


def doc(name: str) -> dict[str, Any]:
    return {"uid": {"type": "Doc", "id": "d"}, "attrs": {"name": name}, "parents": []}


def cedar(
    entities: list[dict[str, Any]],
    action: str,
    ctx: dict[str, Any],
    policies: str = POLICIES,
    principal: str = 'User::"u"',
    resource: str = 'Doc::"d"',
) -> bool:
    req = {
        "principal": principal,
        "action": f'Action::"{action}"',
        "resource": resource,
        "context": ctx,
    }
    ps = cedarpy.PolicySet.from_str(policies)
    es = cedarpy.Entities.from_json_str(json.dumps(entities))
    return bool(cedarpy.is_authorized(req, ps, es).allowed)


def pool(n: int) -> list[str]:
    """`n` distinct string objects: known texts, unknown ones, and equal texts in
    separate objects (built at run time, so not interned together)."""
    base = ["api.example.com", "host7.unknown.net", "elsewhere.org"]
    out = [base[i % 3] + ("" if i % 2 else f"#{i}") for i in range(n)]
    out += ["".join(["api.", "example", ".com"]) for _ in range(4)]
    return out


def test_reused_string_objects_decide_as_cedar() -> None:
    # 400 objects: more than the memory's slots, so objects evict each other.
    strs = pool(400)
    rng = random.Random(5)
    entities = [doc("elsewhere.org")]
    eng = Engine(POLICIES, entities=entities)
    reqs = []
    for _ in range(3000):
        ctx = {"s": rng.choice(strs), "t": rng.choice(strs)}
        reqs.append(('User::"u"', f'Action::"{rng.choice(ACTIONS)}"', 'Doc::"d"', ctx))
    got = [eng.is_allowed(*r) for r in reqs]
    assert eng.authorize_batch(reqs) == got
    assert eng.is_allowed(*reqs[0]) == got[0]
    # cedarpy on every distinct (action, s, t) text triple (it is slow per call).
    seen: dict[tuple[str, str, str], bool] = {}
    for r, g in zip(reqs, got, strict=True):
        key = (r[1], r[3]["s"], r[3]["t"])
        if key not in seen:
            seen[key] = cedar(entities, r[1].split('"')[1], r[3])
        assert g == seen[key], key
    assert any(seen.values()) and not all(seen.values())


def test_a_string_remembered_as_unknown_is_found_once_an_entity_names_it() -> None:
    text = "".join(["fresh", ".example"])  # an object of its own, never interned by Python
    other = "".join(["stale", ".example"])
    eng = Engine(POLICIES, entities=[doc("nothing")])
    # First seen while the engine knows neither text: remembered as unknown.
    for s in (text, other):
        assert eng.is_allowed('User::"u"', 'Action::"attr"', 'Doc::"d"', {"s": s}) is False
    # Now an entity attribute names `text`: the same object must match it.
    eng.upsert_entities([doc("fresh.example")])
    entities = [doc("fresh.example")]
    for s, want in ((text, True), (other, False)):
        ctx = {"s": s}
        assert cedar(entities, "attr", ctx) is want
        assert eng.is_allowed('User::"u"', 'Action::"attr"', 'Doc::"d"', ctx) is want
        assert eng.authorize_batch([('User::"u"', 'Action::"attr"', 'Doc::"d"', ctx)]) == [want]


def test_unknown_strings_compare_by_text_within_a_request() -> None:
    a = "".join(["host", "9.unknown.net"])
    b = "".join(["host", "9.unknown.net"])
    c = "".join(["host", "8.unknown.net"])
    eng = Engine(POLICIES)
    for _ in range(2):  # the second pass finds each object remembered
        for s, t, want in ((a, b, True), (a, c, False), (b, b, True)):
            ctx = {"s": s, "t": t}
            assert cedar([], "pair", ctx) is want
            assert eng.is_allowed('User::"u"', 'Action::"pair"', 'Doc::"d"', ctx) is want
        # `like` reads an unknown string's text.
        assert eng.is_allowed('User::"u"', 'Action::"glob"', 'Doc::"d"', {"s": a}) is True
        assert eng.is_allowed('User::"u"', 'Action::"glob"', 'Doc::"d"', {"s": "x.net"}) is False


def test_a_shared_context_keeps_its_unknown_strings_apart_from_a_requests() -> None:
    # Every name here is unknown to the engine: the shared context's string and each
    # request's entity types and ids are all numbered per request, after the context's.
    policy = 'permit (principal, action, resource) when { context.s like "zz*" };'
    eng = Engine(policy)
    reqs = [('User::"qq"', 'Action::"a"', 'Doc::"qq2"'), ('Team::"t"', 'Action::"b"', 'Doc::"d"')]
    for text, want in (("zztop", True), ("qqtop", False)):
        ctx = {"s": "".join([text[:2], text[2:]])}
        for p, a, r in reqs:
            assert cedar([], a.split('"')[1], ctx, policy, p, r) is want
            assert eng.is_allowed(p, a, r, ctx) is want
        assert eng.authorize_batch(reqs, ctx) == [want, want]
