"""How many requests the differential suites compared in this run, reported at the end of the
run by `tests/conftest.py`."""

from __future__ import annotations

from collections import Counter

COMPARED: Counter[str] = Counter()


def record(suite: str, requests: int) -> None:
    COMPARED[suite] += requests
