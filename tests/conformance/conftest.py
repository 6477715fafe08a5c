"""Fixtures for the oracle suites."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.conformance import example_world


@pytest.fixture(scope="session")
def world() -> ModuleType:
    return example_world
