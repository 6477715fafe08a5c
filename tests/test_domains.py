"""Hostname hierarchies make egress allow-lists plain Cedar `in`."""

from __future__ import annotations

import pytest

from tether import Engine
from tether.domains import domain_chain, domain_entities, normalize_host


def test_chain_and_normalisation() -> None:
    assert domain_chain("API.GitHub.com.") == ["api.github.com", "github.com", "com"]
    for bad in ["", "a..b", "-a.com", "a_b.com", "ünï.com", "a" * 64 + ".com"]:
        with pytest.raises(ValueError):
            normalize_host(bad)


def test_allow_list_by_parent_domain() -> None:
    engine = Engine(
        'permit (principal, action == Action::"egress", resource) '
        'when { resource in Domain::"github.com" };',
        entities=domain_entities(["api.github.com", "raw.githubusercontent.com", "github.com"]),
    )
    egress = 'Action::"egress"'
    assert engine.is_allowed('Agent::"a"', egress, 'Domain::"api.github.com"')
    assert engine.is_allowed('Agent::"a"', egress, 'Domain::"github.com"')
    assert not engine.is_allowed('Agent::"a"', egress, 'Domain::"raw.githubusercontent.com"')
    assert not engine.is_allowed('Agent::"a"', egress, 'Domain::"com"')
