"""Fixtures for the oracle suites, and the report of how many requests they compared."""

from __future__ import annotations

from importlib.metadata import version
from types import ModuleType

import pytest

from tests.conformance import example_world
from tests.conformance.differential_count import COMPARED


@pytest.fixture(scope="session")
def world() -> ModuleType:
    return example_world


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not COMPARED:
        return
    parts = ", ".join(f"{suite} {n:,}" for suite, n in COMPARED.items())
    terminalreporter.write_line(
        f"differential: {sum(COMPARED.values()):,} requests compared with cedarpy "
        f"{version('cedarpy')} ({parts})"
    )
