"""A context dict's keys are found whatever objects they are.

The engine reads only the context keys an action's policies use. It first looks for them by
comparing key pointers in one pass over a small dict (keys written in Python source are
interned, as are the engine's), and looks a key up the usual way when that pass cannot settle
it: keys built at run time, `str` subclasses, dicts with more keys than it scans, plans that
read more keys than it scans. Every form is checked against cedarpy on the same request, and
against the same context written with literal keys.
"""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest

from tether import Engine, RequestError

# Nine keys read by one action, so a plan can read more keys than one scan settles.
KEYS = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"]
POLICIES = """
permit (principal, action == Action::"few", resource) when { context.mfa && context.hour < 20 };
forbid (principal, action == Action::"few", resource) when { context has risk && context.risk > 2 };
permit (principal, action == Action::"many", resource) when {
  context.k0 + context.k1 + context.k2 + context.k3 + context.k4
  + context.k5 + context.k6 + context.k7 + context.k8 == 36
};
"""


class Key(str):
    """A `str` subclass: equal to and hashed as its text, never the interned object."""


def fresh(text: str) -> str:
    """An equal string that is not the interned literal."""
    s = "".join(list(text))
    assert s == text
    return s


def cedar(action: str, ctx: dict[str, Any]) -> bool:
    ps = cedarpy.PolicySet.from_str(POLICIES)
    req = {
        "principal": 'User::"u"',
        "action": f'Action::"{action}"',
        "resource": 'Doc::"d"',
        "context": json.loads(json.dumps(ctx)),
    }
    return bool(cedarpy.is_authorized(req, ps, cedarpy.Entities.from_json_str("[]")).allowed)


def forms(ctx: dict[str, Any]) -> dict[str, dict[Any, Any]]:
    return {
        "literal keys": dict(ctx),
        "keys built at run time": {fresh(k): v for k, v in ctx.items()},
        "str subclass keys": {Key(k): v for k, v in ctx.items()},
        "one key built at run time": {
            (fresh(k) if i == 0 else k): v for i, (k, v) in enumerate(ctx.items())
        },
        "with many unread keys": {**ctx, **{f"pad{i}": i for i in range(20)}},
        "with one unread key": {**ctx, "unread": "x"},
    }


FEW = [
    {"mfa": True, "hour": 9},  # allowed
    {"mfa": True, "hour": 21},  # the permit's condition is false
    {"mfa": True, "hour": 9, "risk": 3},  # the forbid applies
    {"mfa": True, "hour": 9, "risk": 1},  # the forbid's condition is false: allowed
    {"hour": 9},  # `context.mfa` is missing: the permit errors, denied
    {"mfa": True},  # `context.hour` is missing
]


@pytest.mark.parametrize("ctx", FEW, ids=[json.dumps(c) for c in FEW])
def test_every_key_form_decides_as_cedar(ctx: dict[str, Any]) -> None:
    eng = Engine(POLICIES)
    want = cedar("few", ctx)
    for name, c in forms(ctx).items():
        got = eng.is_allowed('User::"u"', 'Action::"few"', 'Doc::"d"', c)
        assert got == want, f"{name}: tether {got}, cedar {want} for {c}"
        batch = eng.authorize_batch([('User::"u"', 'Action::"few"', 'Doc::"d"', c)])
        assert batch == [want], name


def test_the_pair_differs_in_one_value() -> None:
    # The benign twin of the forbid case: the scan must read `risk`, not skip it.
    eng = Engine(POLICIES)
    ok = {"mfa": True, "hour": 9, "risk": 1}
    bad = {"mfa": True, "hour": 9, "risk": 3}
    for name in forms(ok):
        assert eng.is_allowed('User::"u"', 'Action::"few"', 'Doc::"d"', forms(ok)[name]), name
        assert not eng.is_allowed('User::"u"', 'Action::"few"', 'Doc::"d"', forms(bad)[name]), name


@pytest.mark.parametrize("missing", [None, *KEYS])
def test_a_plan_reading_more_keys_than_one_scan(missing: str | None) -> None:
    eng = Engine(POLICIES)
    ctx = {k: i for i, k in enumerate(KEYS) if k != missing}
    want = cedar("many", ctx)
    assert want is (missing is None)
    for name, c in forms(ctx).items():
        got = eng.is_allowed('User::"u"', 'Action::"many"', 'Doc::"d"', c)
        assert got == want, f"{name}, {missing} missing: tether {got}, cedar {want}"


def test_a_wrong_value_names_its_key_in_every_form() -> None:
    eng = Engine(POLICIES)
    for c in forms({"mfa": True, "hour": 2**70}).values():
        with pytest.raises(RequestError, match=r"^context\.hour: integer does not fit"):
            eng.authorize('User::"u"', 'Action::"few"', 'Doc::"d"', c)
