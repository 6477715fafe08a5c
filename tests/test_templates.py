"""Cedar templates and template-linked policies: `link`, `unlink`, reload, errors.

Decisions on linked policies are checked against Cedar in `tests/conformance/
test_templates_differential.py` (cedarpy) and in `rust/templates.rs` (Cedar's Authorizer).
"""

from __future__ import annotations

from typing import Any

import cedarpy
import pytest

from tether import Engine, PolicyError, RequestError
from tether.explain import explain, render_tree

GRANT = """
@id("doc-reader")
permit (principal == ?principal, action == Action::"read", resource in ?resource);
@id("list-all")
permit (principal, action == Action::"list", resource);
"""
SCHEMA = """
entity User;
entity Folder;
entity Doc in [Folder] { level: Long };
action read, list appliesTo { principal: [User], resource: [Doc, Folder] };
"""
ENTITIES: list[dict[str, Any]] = [
    {"uid": {"type": "Folder", "id": "hr"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Folder", "id": "eng"}, "attrs": {}, "parents": []},
    {
        "uid": {"type": "Doc", "id": "salaries"},
        "attrs": {"level": 3},
        "parents": [{"type": "Folder", "id": "hr"}],
    },
]
ALICE, BOB = 'User::"alice"', 'User::"bob"'
READ, SALARIES = 'Action::"read"', 'Doc::"salaries"'


def engine(text: str = GRANT, schema: str | None = SCHEMA) -> Engine:
    return Engine(text, schema, ENTITIES)


def test_template_authorizes_nothing_until_linked() -> None:
    eng = engine()
    assert eng.templates() == ["doc-reader"]
    assert eng.policy_ids() == ["list-all"]
    assert eng.links() == []
    assert not eng.is_allowed(ALICE, READ, SALARIES)
    # Cedar agrees: an unlinked template decides nothing.
    res = cedarpy.is_authorized(
        {"principal": ALICE, "action": READ, "resource": SALARIES, "context": {}},
        GRANT,
        ENTITIES,
    )
    assert res.decision == cedarpy.Decision.Deny


def test_per_user_grant_allows_its_user_only_and_unlink_revokes() -> None:
    eng = engine()
    eng.link("doc-reader", "alice-hr", principal=ALICE, resource='Folder::"hr"')
    d = eng.authorize(ALICE, READ, SALARIES, reasons=True)
    assert d.allowed and list(d.reasons) == ["alice-hr"]
    # The attack twin: another user is not granted by alice's link.
    assert not eng.is_allowed(BOB, READ, SALARIES)
    # Nor is alice granted outside the linked folder.
    eng.upsert_entities(
        [
            {
                "uid": {"type": "Doc", "id": "design"},
                "attrs": {"level": 1},
                "parents": [{"type": "Folder", "id": "eng"}],
            }
        ]
    )
    assert not eng.is_allowed(ALICE, READ, 'Doc::"design"')
    assert eng.policy_ids() == ["list-all", "alice-hr"]
    assert eng.links() == [("doc-reader", "alice-hr", ALICE, 'Folder::"hr"')]
    # A linked policy carries its template's annotations.
    assert ("id", "doc-reader") in eng.annotations("alice-hr")
    eng.unlink("alice-hr")
    assert not eng.is_allowed(ALICE, READ, SALARIES)
    assert eng.links() == [] and eng.policy_ids() == ["list-all"]


def test_slot_values_as_tuples_and_handles() -> None:
    eng = engine()
    eng.link("doc-reader", "a", principal=("User", "alice"), resource=eng.entity("Folder", "hr"))
    eng.link("doc-reader", "b", principal=eng.entity("User", "bob"), resource=("Folder", "hr"))
    assert eng.authorize_batch([(ALICE, READ, SALARIES), (BOB, READ, SALARIES)]) == [True, True]
    assert eng.policy_count == 3


def _refused(eng: Engine, call: Any, match: str) -> PolicyError:
    """`call` raises PolicyError matching `match`, and the engine is as it was."""
    version, links, ids = eng.version, eng.links(), eng.policy_ids()
    with pytest.raises(PolicyError, match=match) as e:
        call()
    assert (eng.version, eng.links(), eng.policy_ids()) == (version, links, ids)
    assert eng.is_allowed(ALICE, READ, SALARIES)
    return e.value


def test_link_and_unlink_errors_are_typed_and_lose_nothing() -> None:
    eng = engine()
    eng.link("doc-reader", "alice-hr", principal=ALICE, resource='Folder::"hr"')
    hr = 'Folder::"hr"'
    e = _refused(
        eng,
        lambda: eng.link("nope", "x", principal=BOB, resource=hr),
        "no template named `nope`",
    )
    assert e.policy_id == "x"
    _refused(
        eng,
        lambda: eng.link("list-all", "x", principal=BOB, resource=hr),
        "`list-all` is a static policy, not a template",
    )
    for taken in ("alice-hr", "list-all", "doc-reader"):
        _refused(
            eng,
            lambda t=taken: eng.link("doc-reader", t, principal=BOB, resource=hr),
            f"a policy named `{taken}` already exists",
        )
    _refused(
        eng,
        lambda: eng.link("doc-reader", "policy3", principal=BOB, resource=hr),
        "reserved",
    )
    _refused(eng, lambda: eng.link("doc-reader", "x", principal=BOB), "give resource=")
    _refused(eng, lambda: eng.link("doc-reader", "x", resource=hr), "give principal=")
    # Schema validation of the link: an entity type the schema does not know.
    e = _refused(
        eng,
        lambda: eng.link("doc-reader", "x", principal='Robot::"r2"', resource=hr),
        "cannot link `x`.*unrecognized entity type `Robot`",
    )
    _refused(eng, lambda: eng.unlink("list-all"), "is a static policy")
    _refused(eng, lambda: eng.unlink("doc-reader"), "is a template")
    e = _refused(eng, lambda: eng.unlink("ghost"), "no linked policy named `ghost`")
    assert e.policy_id == "ghost"
    # A malformed entity argument is a request error, as everywhere else.
    with pytest.raises(RequestError):
        eng.link("doc-reader", "x", principal="alice", resource=hr)
    assert eng.links() == [("doc-reader", "alice-hr", ALICE, hr)]


def test_template_with_extra_slot_value_is_refused() -> None:
    eng = engine('@id("self") permit (principal == ?principal, action, resource);', None)
    with pytest.raises(PolicyError, match="has no \\?resource slot"):
        eng.link("self", "x", principal=ALICE, resource='Doc::"d"')
    eng.link("self", "x", principal=ALICE)
    assert eng.is_allowed(ALICE, READ, SALARIES)


def test_template_is_validated_against_the_schema_at_load() -> None:
    bad = GRANT.replace("resource in ?resource);", "resource in ?resource) when { principal.x };")
    with pytest.raises(PolicyError, match="attribute `x`") as e:
        engine(bad)
    assert e.value.policy_id == "doc-reader"


def test_template_tether_cannot_compile_fails_at_load_naming_it() -> None:
    odd = '@id("odd") permit (principal == ?principal, action, resource) when { ip("a", "b") };'
    with pytest.raises(PolicyError) as e:
        Engine(odd)
    assert e.value.policy_id == "odd" and e.value.feature is not None


def test_reload_keeps_links_whose_template_remains() -> None:
    eng = engine()
    eng.link("doc-reader", "alice-hr", principal=ALICE, resource='Folder::"hr"')
    # The template edited: the link follows the new text.
    narrowed = GRANT.replace(
        "resource in ?resource);",
        "resource in ?resource) when { resource is Doc && resource.level < 3 };",
    )
    eng.reload(narrowed)
    assert eng.links() == [("doc-reader", "alice-hr", ALICE, 'Folder::"hr"')]
    assert not eng.is_allowed(ALICE, READ, SALARIES)
    eng.reload(GRANT)
    assert eng.is_allowed(ALICE, READ, SALARIES)
    # The template's slots changed: the reload fails, nothing is lost.
    with pytest.raises(PolicyError, match="no longer fits template `doc-reader`"):
        eng.reload(GRANT.replace("resource in ?resource", "resource"))
    assert eng.is_allowed(ALICE, READ, SALARIES)
    # A new static policy taking the link's name: the reload fails.
    clash = GRANT + '@id("alice-hr") forbid (principal, action, resource);'
    with pytest.raises(PolicyError, match="two policies are named `alice-hr`"):
        eng.reload(clash)
    assert eng.is_allowed(ALICE, READ, SALARIES)
    # The template removed: its links go with it (deny, never a stale grant).
    eng.reload('@id("list-all") permit (principal, action == Action::"list", resource);')
    assert eng.links() == [] and eng.templates() == []
    assert not eng.is_allowed(ALICE, READ, SALARIES)


def test_link_all_is_one_atomic_batch_and_round_trips_links() -> None:
    eng = engine()
    hr = 'Folder::"hr"'
    with pytest.raises(PolicyError, match="a policy named `a` already exists"):
        eng.link_all([("doc-reader", "a", ALICE, hr), ("doc-reader", "a", BOB, hr)])
    assert eng.links() == [] and not eng.is_allowed(ALICE, READ, SALARIES)
    version = eng.version
    eng.link_all([("doc-reader", "a", ALICE, hr), ("doc-reader", "b", ("User", "bob"), hr)])
    assert eng.version == version + 1
    assert eng.authorize_batch([(ALICE, READ, SALARIES), (BOB, READ, SALARIES)]) == [True, True]
    # What `links()` returns restores the grants in a fresh engine (e.g. after a restart).
    fresh = engine()
    fresh.link_all(eng.links())
    assert fresh.links() == eng.links()
    assert fresh.is_allowed(BOB, READ, SALARIES)
    with pytest.raises(RequestError, match="link #0"):
        fresh.link_all([("doc-reader", "c")])  # type: ignore[list-item]


def test_explain_sees_links_and_agrees_with_the_engine() -> None:
    eng = engine()
    eng.link("doc-reader", "alice-hr", principal=ALICE, resource='Folder::"hr"')
    ex = explain(eng, ALICE, READ, SALARIES, entities=ENTITIES, schema=SCHEMA)
    assert ex.allowed and ex.engine_allowed and list(ex.reasons) == ["alice-hr"]
    assert "permit alice-hr: applies" in render_tree(ex)
    # Bob: the link's scope does not match; engine and explanation deny alike.
    ex = explain(eng, BOB, READ, SALARIES, entities=ENTITIES, schema=SCHEMA)
    assert not ex.allowed and ex.engine_allowed is False
    assert "permit alice-hr: scope does not match" in render_tree(ex)
    # Against the engine's own snapshot (no entities given): the links are there too.
    ex = explain(eng, ALICE, READ, SALARIES)
    assert ex.allowed and ex.engine_allowed and list(ex.reasons) == ["alice-hr"]
