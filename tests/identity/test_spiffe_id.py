from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.identity import InvalidSpiffeId, SpiffeId

GOOD = [
    ("spiffe://example.org", "example.org", ""),
    ("spiffe://example.org/a", "example.org", "/a"),
    ("spiffe://a-b.c_d.9/x/Y.z-_/..a/a..", "a-b.c_d.9", "/x/Y.z-_/..a/a.."),
    ("spiffe://td/" + "a" * (2048 - len("spiffe://td/")), "td", "/" + "a" * 2036),
]

BAD = [
    ("", "empty"),
    ("http://example.org/a", "scheme must be 'spiffe://'"),
    ("example.org/a", "scheme must be 'spiffe://'"),
    ("SPIFFE://example.org", "scheme must be lowercase"),
    ("spiffe://", "trust domain is empty"),
    ("spiffe:///a", "trust domain is empty"),
    ("spiffe://Example.org/a", "trust domain must be lowercase"),
    ("spiffe://example.org:8080/a", "port is not allowed"),
    ("spiffe://user@example.org/a", "userinfo is not allowed"),
    ("spiffe://user:pw@example.org/a", "userinfo is not allowed"),
    ("spiffe://exa%41mple.org", "percent-encoding is not allowed"),
    ("spiffe://example.org/a%20b", "percent-encoding is not allowed"),
    ("spiffe://example.org/a?x=1", "query is not allowed"),
    ("spiffe://example.org/a#frag", "fragment is not allowed"),
    ("spiffe://example.org/", "must not end with '/'"),
    ("spiffe://example.org/a/", "must not end with '/'"),
    ("spiffe://example.org//a", "empty segment"),
    ("spiffe://example.org/a/./b", "'.' or '..' segment"),
    ("spiffe://example.org/../a", "'.' or '..' segment"),
    ("spiffe://example.org/a/..", "'.' or '..' segment"),
    ("spiffe://example.org/a b", "path segments may only contain"),
    ("spiffe://example.org/caf\u00e9", "path segments may only contain"),
    ("spiffe://exa mple.org", "trust domain may only contain"),
    ("spiffe://example.org/" + "a" * 2030, "longer than 2048 bytes"),
    ("spiffe://" + "a" * 256, "longer than 255 bytes"),
]


@pytest.mark.parametrize(("raw", "td", "path"), GOOD)
def test_good_ids_parse_and_round_trip(raw: str, td: str, path: str) -> None:
    sid = SpiffeId.parse(raw)
    assert (sid.trust_domain, sid.path) == (td, path)
    assert str(sid) == raw
    assert SpiffeId.parse(str(sid)) == sid


@pytest.mark.parametrize(("raw", "rule"), BAD)
def test_bad_ids_name_the_broken_rule(raw: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(raw)
    assert rule in str(info.value)
    assert rule in info.value.rule
    assert isinstance(info.value, ValueError)


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidSpiffeId, match="string"):
        SpiffeId.parse(b"spiffe://example.org")  # type: ignore[arg-type]


def test_frozen_hashable_and_equal() -> None:
    a = SpiffeId.parse("spiffe://example.org/a")
    b = SpiffeId("example.org", "/a")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, SpiffeId.parse("spiffe://example.org/b")}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.path = "/x"  # type: ignore[misc]


def test_direct_construction_validates() -> None:
    with pytest.raises(InvalidSpiffeId, match="lowercase"):
        SpiffeId("Example.org")
    with pytest.raises(InvalidSpiffeId, match="start with '/'"):
        SpiffeId("example.org", "a")


def test_from_path_and_membership() -> None:
    sid = SpiffeId.from_path("example.org", "agents/x")
    assert str(sid) == "spiffe://example.org/agents/x"
    assert sid.member_of("example.org")
    assert not sid.member_of("other.org")


def test_long_error_values_are_truncated() -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse("spiffe://example.org/" + "a" * 100 + "/")
    assert len(str(info.value)) < 160


_td = st.from_regex(r"[a-z0-9.\-_]{1,30}", fullmatch=True)
_seg = st.from_regex(r"[a-zA-Z0-9.\-_]{1,12}", fullmatch=True).filter(
    lambda s: s not in {".", ".."}
)


@given(_td, st.lists(_seg, max_size=5))
def test_property_valid_ids_round_trip(td: str, segments: list[str]) -> None:
    path = "".join("/" + s for s in segments)
    sid = SpiffeId(td, path)
    assert SpiffeId.parse(str(sid)) == sid
