"""Engine API behaviour beyond Cedar equivalence: handles, batches, reloads, fail-closed."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tether import Engine, EntityError, PolicyError, RequestError

POLICIES = """
@id("read-own")
permit (principal is User, action == Action::"read", resource is Doc)
when { resource.owner == principal && context.mfa };
@id("block-bad")
forbid (principal, action, resource) when { principal.banned };
"""
ENTITIES = [
    {"uid": {"type": "User", "id": "alice"}, "attrs": {"banned": False}, "parents": []},
    {"uid": {"type": "User", "id": "bob"}, "attrs": {"banned": True}, "parents": []},
    {
        "uid": {"type": "Doc", "id": "d1"},
        "attrs": {"owner": {"__entity": {"type": "User", "id": "alice"}}},
        "parents": [],
    },
]
READ = 'Action::"read"'


@pytest.fixture
def engine() -> Engine:
    return Engine(POLICIES, entities=ENTITIES)


def test_entity_forms_agree(engine: Engine) -> None:
    ctx = {"mfa": True}
    forms: list[Any] = ['User::"alice"', ("User", "alice"), engine.entity("User", "alice")]
    for p in forms:
        assert engine.is_allowed(p, READ, 'Doc::"d1"', ctx)
    assert not engine.is_allowed('User::"alice"', READ, 'Doc::"d1"', {"mfa": False})


def test_reasons_and_errors(engine: Engine) -> None:
    d = engine.authorize('User::"bob"', READ, 'Doc::"d1"', {"mfa": True}, reasons=True)
    assert not d.allowed and d.reasons == ["block-bad"] and d.errors == []
    d = engine.authorize('User::"carol"', READ, 'Doc::"d1"', {"mfa": True}, reasons=True)
    assert not d.allowed and d.errors == ["block-bad"]
    assert "does not exist" in d.error_messages[0]
    assert dict(engine.annotations("block-bad"))["id"] == "block-bad"


def test_on_error_deny_fails_closed() -> None:
    policies = (
        "permit (principal, action, resource);"
        "forbid (principal, action, resource) when { principal.banned };"
    )
    skip = Engine(policies)
    deny = Engine(policies, on_error="deny")
    args = ('User::"ghost"', READ, 'Doc::"d1"')
    # Cedar skips the erroring forbid, so the permit wins; fail-closed denies.
    assert skip.is_allowed(*args)
    assert not deny.is_allowed(*args)
    assert not deny.authorize(*args, reasons=True).allowed


def test_batch_matches_single_calls(engine: Engine) -> None:
    users = ['User::"alice"', 'User::"bob"', 'User::"carol"']
    reqs = [(u, READ, 'Doc::"d1"', {"mfa": m}) for u in users for m in (True, False)]
    assert engine.authorize_batch(reqs) == [engine.is_allowed(*r) for r in reqs]
    shared = {"mfa": True, "note": "a string no policy mentions"}
    three = [(u, READ, 'Doc::"d1"') for u in users]
    assert engine.authorize_batch(three, shared) == [engine.is_allowed(*r, shared) for r in three]
    with pytest.raises(RequestError, match="request #0"):
        engine.authorize_batch([(users[0], READ, 'Doc::"d1"', {})], shared)


def test_upsert_remove_and_reload_keep_state_on_error(engine: Engine) -> None:
    ctx = {"mfa": True}
    assert engine.is_allowed('User::"alice"', READ, 'Doc::"d1"', ctx)
    v = engine.version
    with pytest.raises(EntityError):
        engine.upsert_entities('[{"uid": {"type": "Doc", "id": "d2"}, "attrs": {"x": 1, "x": 2}}]')
    with pytest.raises(PolicyError) as ei:
        engine.reload("permit (principal, action, resource) when { 1 + };")
    assert ei.value.line == 1 and ei.value.column is not None
    assert engine.version == v
    assert engine.is_allowed('User::"alice"', READ, 'Doc::"d1"', ctx)
    engine.upsert_entities(
        [{"uid": {"type": "User", "id": "alice"}, "attrs": {"banned": True}, "parents": []}]
    )
    assert not engine.is_allowed('User::"alice"', READ, 'Doc::"d1"', ctx)
    assert engine.remove_entities(['User::"alice"', ("User", "nobody")]) == 1
    engine.reload("permit (principal, action, resource);")
    assert engine.is_allowed('User::"alice"', READ, 'Doc::"d1"')
    assert engine.version > v


def test_reload_is_atomic_for_concurrent_readers() -> None:
    """A batch sees one policy snapshot. Readers and the writer start together (a barrier) and
    every batch is long, so a reload that a non-atomic engine applied mid-batch would show up
    as a batch whose answers mix the two policy sets."""
    a = "permit (principal, action, resource) when { context.x == 1 };"
    b = "permit (principal, action, resource) when { context.x == 2 };"
    engine = Engine(a)
    batch = [('U::"u"', READ, 'D::"d"', {"x": 1 + i % 2}) for i in range(2_000)]
    only_a = [i % 2 == 0 for i in range(2_000)]
    only_b = [i % 2 == 1 for i in range(2_000)]
    readers, rounds = 2, 30
    start = threading.Barrier(readers + 1)
    seen: list[list[bool]] = []
    progress = threading.Condition()
    stop = threading.Event()

    def reader() -> None:
        start.wait()
        while not stop.is_set():
            result = engine.authorize_batch(batch)
            with progress:
                seen.append(result)
                progress.notify_all()

    threads = [threading.Thread(target=reader) for _ in range(readers)]
    for t in threads:
        t.start()
    start.wait()
    for i in range(rounds):
        engine.reload(b if i % 2 == 0 else a)
        # Let at least one batch run between reloads, so readers see both sets.
        with progress:
            before = len(seen)
            progress.wait_for(lambda: len(seen) > before)  # noqa: B023 (waited on here)
    stop.set()
    for t in threads:
        t.join()
    mixed = [r for r in seen if r not in (only_a, only_b)]
    assert not mixed, f"{len(mixed)} of {len(seen)} batches mixed two policy sets"
    assert only_a in seen and only_b in seen


def test_schema_validation_and_warnings() -> None:
    schema = "entity User; entity Doc; action read appliesTo { principal: User, resource: Doc };"
    ok = Engine('permit (principal, action == Action::"read", resource);', schema)
    assert ok.warnings() == []
    with pytest.raises(PolicyError, match="validate"):
        Engine(
            'permit (principal, action == Action::"read", resource) when { principal.x };', schema
        )
    # The action declares an empty context: `{}` passes, its twin with one attribute does not.
    assert ok.normalize_context(("Action", "read"), "{}") == "{}"
    with pytest.raises(RequestError, match="`x` should not exist"):
        ok.normalize_context(("Action", "read"), '{"x": 1}')


def test_handles_belong_to_their_engine() -> None:
    first = Engine("permit (principal, action, resource);")
    handle = first.entity("User", "alice")
    del first
    # A new engine may reuse the old one's memory; the stale handle must still be refused.
    for _ in range(20):
        other = Engine("permit (principal, action, resource);")
        with pytest.raises(RequestError, match="another engine"):
            other.is_allowed(handle, READ, 'Doc::"d1"')
