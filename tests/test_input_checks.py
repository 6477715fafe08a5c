"""Entity names and times are checked the same way on every path.

Each check is a pair: the bad input rejected with a typed error naming what was wrong, and the
benign twin (one essential difference) accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from tether import Engine, RequestError

POLICIES = "permit (principal, action, resource);"


@pytest.fixture
def engine() -> Engine:
    return Engine(POLICIES)


# Every entry point that takes an entity uid, as a function of the (type, id) pair.
ENTITY_PATHS: dict[str, Callable[[Engine, tuple[str, str]], Any]] = {
    "entity()": lambda e, u: e.entity(*u),
    "request tuple": lambda e, u: e.authorize(u, ("Action", "a"), ("User", "r")),
    "request string": lambda e, u: e.authorize(f'{u[0]}::"{u[1]}"', 'Action::"a"', 'User::"r"'),
    "batch tuple": lambda e, u: e.authorize_batch([(u, ("Action", "a"), ("User", "r"))]),
    "remove_entities": lambda e, u: e.remove_entities([u]),
    "normalize_context": lambda e, u: e.normalize_context(u, "{}"),
    "open_task agent": lambda e, u: e.open_task(u, now=0.0),
    "open_task scope": lambda e, u: e.open_task(("User", "a"), scope=[u], now=0.0),
}
BAD_TYPES = ["Us er", "", "User::", "::User", "if", "User:x", "1User"]


@pytest.mark.parametrize("path", sorted(ENTITY_PATHS))
@pytest.mark.parametrize("bad", BAD_TYPES)
def test_an_invalid_type_name_is_rejected_on_every_path(
    engine: Engine, path: str, bad: str
) -> None:
    with pytest.raises(
        RequestError, match=r"not a valid Cedar entity type name|invalid entity type"
    ):
        ENTITY_PATHS[path](engine, (bad, "x"))


@pytest.mark.parametrize("path", sorted(ENTITY_PATHS))
@pytest.mark.parametrize("good", ["User", "NS::User", "_u1", "iff"])
def test_a_valid_type_name_is_accepted_on_every_path(engine: Engine, path: str, good: str) -> None:
    ENTITY_PATHS[path](engine, (good, "x"))


def test_any_id_is_a_valid_id(engine: Engine) -> None:
    """Cedar ids are arbitrary strings, the empty one included."""
    for id in ["", "with space", 'q"uote', "\u00e9"]:
        assert engine.entity("User", id).id == id
        assert engine.is_allowed(("User", id), ("Action", "a"), ("User", "r"))


# Every entry point that takes a time (seconds), as a function of that time.
def _task(e: Engine) -> Any:
    return e.open_task(("User", "a"), now=0.0)


TIME_PATHS: dict[str, Callable[[Engine, float], Any]] = {
    "open_task now": lambda e, t: e.open_task(("User", "a"), now=t),
    "open_task deadline": lambda e, t: e.open_task(("User", "a"), now=0.0, deadline=t),
    "open_task rate_window": lambda e, t: e.open_task(("User", "a"), now=0.0, rate_window=t),
    "authorize_task now": lambda e, t: e.authorize_task(
        _task(e), ("Action", "a"), ("User", "r"), now=t
    ),
    "task_context now": lambda e, t: e.task_context(_task(e), now=t),
    "escalate_task until": lambda e, t: e.escalate_task(_task(e), [("Action", "b")], t),
}


@pytest.mark.parametrize("path", sorted(TIME_PATHS))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_time_is_a_value_error(engine: Engine, path: str, bad: float) -> None:
    with pytest.raises(ValueError, match="must be a finite number of seconds"):
        TIME_PATHS[path](engine, bad)


@pytest.mark.parametrize("path", sorted(TIME_PATHS))
def test_a_finite_time_is_accepted(engine: Engine, path: str) -> None:
    TIME_PATHS[path](engine, 5.0)


def test_the_error_names_the_argument(engine: Engine) -> None:
    with pytest.raises(ValueError, match=r"^deadline must"):
        engine.open_task(("User", "a"), now=0.0, deadline=math.nan)
    with pytest.raises(ValueError, match=r"^now must"):
        engine.open_task(("User", "a"), now=math.nan)


# Every way a request names an entity by text, as a function of the uid string.
UID_TEXT_PATHS: dict[str, Callable[[Engine, str], bool]] = {
    "is_allowed": lambda e, u: e.is_allowed(u, 'Action::"a"', 'User::"r"'),
    "authorize": lambda e, u: e.authorize('User::"p"', u, 'User::"r"').allowed,
    "batch": lambda e, u: e.authorize_batch([('User::"p"', 'Action::"a"', u)])[0],
}


@pytest.mark.parametrize("path", sorted(UID_TEXT_PATHS))
def test_a_uid_that_is_not_utf8_is_refused_and_leaves_no_error_behind(
    engine: Engine, path: str
) -> None:
    # A lone surrogate: a Python str with no UTF-8 form.
    with pytest.raises(RequestError, match="not valid UTF-8"):
        UID_TEXT_PATHS[path](engine, 'User::"\ud800"')
    # The benign twin, a valid non-ASCII id, decides; so does the next call on the same
    # thread (no exception is left set behind the refusal).
    assert UID_TEXT_PATHS[path](engine, 'User::"\u00e9"') is True
    assert engine.is_allowed('User::"p"', 'Action::"a"', 'User::"r"', {"k": "v"}) is True
