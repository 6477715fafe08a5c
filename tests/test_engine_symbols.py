"""Entity handles made while a request or batch is in flight never change its decision.

A batch converts its requests against one snapshot; names that snapshot has not seen get
request-local numbers. Handles created meanwhile (inside the batch's own generator, or on other
threads) intern new names in newer snapshots. Each decision is checked against `is_allowed`
and against cedarpy on the same policies.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import cedarpy
import pytest

from tether import Engine, Entity, RequestError

POLICIES = """
forbid (principal, action, resource) when { context.requester == principal };
permit (principal, action, resource);
"""
CTX = {"requester": {"__entity": {"type": "User", "id": "mallory"}}}
# Mallory is forbidden; every other principal (whatever its type) is permitted. The names are
# chosen so that freshly interned symbols land on the numbers the context's locals took.
NAMES = [
    ("Agent", "q"),
    ("User", "mallory"),
    ("User", "alice"),
    ("Bot", "mallory"),
    ("User", "mallory"),
    ("User", "zed"),
]


def cedar_allowed(ty: str, id: str) -> bool:
    req = {
        "principal": {"type": ty, "id": id},
        "action": 'Action::"a"',
        "resource": 'Doc::"d"',
        "context": CTX,
    }
    res = cedarpy.is_authorized(req, cedarpy.PolicySet.from_str(POLICIES), [])
    return bool(res.allowed)


def test_handles_made_inside_a_batch_generator() -> None:
    eng = Engine(POLICIES)

    def gen() -> Iterator[tuple[Any, str, str]]:
        for ty, id in NAMES:
            yield (eng.entity(ty, id), 'Action::"a"', 'Doc::"d"')

    got = eng.authorize_batch(gen(), CTX)
    expected = [cedar_allowed(ty, id) for ty, id in NAMES]
    assert expected == [True, False, True, True, False, True]
    assert got == expected
    singles = [eng.is_allowed(eng.entity(t, i), 'Action::"a"', 'Doc::"d"', CTX) for t, i in NAMES]
    assert singles == expected


def test_handles_made_inside_a_batch_with_per_request_contexts() -> None:
    eng = Engine(POLICIES)

    def gen() -> Iterator[tuple[Any, str, str, dict[str, Any]]]:
        for ty, id in NAMES:
            ctx = {"requester": {"__entity": {"type": "User", "id": "mallory"}}}
            yield (eng.entity(ty, id), 'Action::"a"', 'Doc::"d"', ctx)

    assert eng.authorize_batch(gen()) == [cedar_allowed(t, i) for t, i in NAMES]


def test_handles_made_on_other_threads_during_batches() -> None:
    eng = Engine(POLICIES)
    stop = threading.Event()

    def intern_forever() -> None:
        n = 0
        while not stop.is_set():
            eng.entity("Thing", f"x{n}")
            eng.entity(f"T{n % 50}", "mallory")
            n += 1

    threads = [threading.Thread(target=intern_forever) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        expected = [cedar_allowed(ty, id) for ty, id in NAMES]
        for round_ in range(200):
            reqs: list[tuple[Entity | str, str, str]] = [
                (eng.entity(ty, id), 'Action::"a"', 'Doc::"d"') for ty, id in NAMES
            ]
            # Strings too: names the snapshot may not know yet.
            reqs += [(f'{ty}::"{id}"', 'Action::"a"', 'Doc::"d"') for ty, id in NAMES]
            assert eng.authorize_batch(reqs, CTX) == expected * 2, round_
            assert [eng.is_allowed(*r, CTX) for r in reqs] == expected * 2, round_
    finally:
        stop.set()
        for t in threads:
            t.join()


# -- input checks, the same on every path -----------------------------------------------------


@pytest.mark.parametrize("ty", ["Us er", "", "if", "A::", "1A"])
def test_entity_handles_validate_type_names_like_tuples(ty: str) -> None:
    eng = Engine(POLICIES)
    with pytest.raises(RequestError, match="not a valid Cedar entity type name"):
        eng.entity(ty, "x")
    with pytest.raises(RequestError):
        eng.is_allowed((ty, "x"), 'Action::"a"', 'Doc::"d"')
    with pytest.raises(RequestError):
        eng.open_task((ty, "x"))


def test_entity_handles_accept_what_cedar_accepts() -> None:
    eng = Engine(POLICIES)
    # An empty id is a valid Cedar uid (`User::""`); namespaced types are too.
    for ty, id in [("User", ""), ("A::B", "x y"), ("User", 'quo"te')]:
        h = eng.entity(ty, id)
        assert (h.type, h.id) == (ty, id)
        assert eng.is_allowed(h, 'Action::"a"', 'Doc::"d"', CTX)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_times_are_rejected(bad: float) -> None:
    eng = Engine(POLICIES)
    with pytest.raises(ValueError, match="finite"):
        eng.open_task('User::"a"', deadline=bad)
    with pytest.raises(ValueError, match="finite"):
        eng.open_task('User::"a"', rate_window=bad)
    task = eng.open_task('User::"a"', deadline=1000.0)
    with pytest.raises(ValueError, match="finite"):
        eng.authorize_task(task, 'Action::"a"', 'Doc::"d"', now=bad)
    with pytest.raises(ValueError, match="finite"):
        eng.task_context(task, now=bad)
    # The finite twin is decided normally (before the deadline: allowed).
    assert eng.authorize_task(task, 'Action::"a"', 'Doc::"d"', now=999.0).allowed
