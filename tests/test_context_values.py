"""Context values convert the same on the inline path (exact bool, int, str) and the general one.

The engine converts the common context values inline and leaves everything else (subclasses,
values out of range, strings that are not UTF-8) to its general conversion. Each pair below
differs in one respect that decides the type Cedar sees, and each decision is checked against
cedarpy on the same request.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import cedarpy
import pytest

from tether import Engine, RequestError

POLICIES = """
permit (principal, action == Action::"flag", resource) when { context.v == true };
permit (principal, action == Action::"one", resource) when { context.v == 1 };
permit (principal, action == Action::"big", resource) when { context.v > 9223372036854775806 };
permit (principal, action == Action::"neg", resource) when { context.v < -9223372036854775807 };
permit (principal, action == Action::"text", resource) when { context.v == "x" };
"""


class Level(enum.IntEnum):
    ONE = 1


class Name(str):
    pass


def cedar(action: str, v: Any) -> bool:
    req = {
        "principal": 'User::"u"',
        "action": f'Action::"{action}"',
        "resource": 'Doc::"d"',
        "context": json.loads(json.dumps({"v": v})),
    }
    ps = cedarpy.PolicySet.from_str(POLICIES)
    return bool(cedarpy.is_authorized(req, ps, cedarpy.Entities.from_json_str("[]")).allowed)


CASES = [
    ("flag", True, True),
    ("flag", 1, False),  # an int is not Cedar's `true`
    ("one", 1, True),
    ("one", True, False),  # nor is `True` Cedar's 1
    ("one", Level.ONE, True),  # an int subclass is a long
    ("big", 2**63 - 1, True),
    ("big", 2**63 - 2, False),
    ("neg", -(2**63), True),
    ("neg", -(2**63) + 1, False),
    ("text", "x", True),
    ("text", Name("x"), True),  # a str subclass is a string
    ("text", "y", False),
]


@pytest.mark.parametrize(("action", "v", "want"), CASES, ids=[f"{a}-{v!r}" for a, v, _ in CASES])
def test_values_convert_as_cedar_reads_them(action: str, v: Any, want: bool) -> None:
    assert cedar(action, v) is want
    eng = Engine(POLICIES)
    got = eng.is_allowed('User::"u"', f'Action::"{action}"', 'Doc::"d"', {"v": v})
    assert got is want
    batch = eng.authorize_batch([('User::"u"', f'Action::"{action}"', 'Doc::"d"', {"v": v})])
    assert batch == [want]


@pytest.mark.parametrize(
    ("v", "message"),
    [
        (2**63, "integer does not fit in 64 bits"),
        (-(2**63) - 1, "integer does not fit in 64 bits"),
        ("\ud800", "string is not valid UTF-8"),
        (Name("\udfff"), "string is not valid UTF-8"),
    ],
)
def test_values_out_of_reach_are_refused_with_their_path(v: Any, message: str) -> None:
    eng = Engine(POLICIES)
    with pytest.raises(RequestError, match=rf"^context\.v: {message}"):
        eng.authorize('User::"u"', 'Action::"one"', 'Doc::"d"', {"v": v})
    # The request after a refused one decides normally: nothing was left behind.
    assert eng.is_allowed('User::"u"', 'Action::"one"', 'Doc::"d"', {"v": 1})
