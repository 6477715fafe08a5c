"""Helpers shared by the test packages."""

from __future__ import annotations


class FakeClock:
    """Manually advanced epoch seconds, so expiry, deadlines and backoff are tested
    without sleeping."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
