"""Thresholds that revoke a task automatically. They count over the whole
delegation tree: a child's decisions also count for each of its ancestors."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Monitors:
    """0 disables a monitor.

    - `max_deny_streak`: denials in a row.
    - `max_rate` decisions within `rate_window` seconds.
    - `max_deny_ratio`: share of denied decisions over the task's life, once at least
      `min_denials` were denied (interleaving probes with benign calls resets a
      streak, not the ratio).
    - `max_approval_requests`: approvals a task may ask for; beyond it, refused
      without asking (a person is not asked 25 times).
    """

    max_deny_streak: int = 5
    max_rate: int = 0
    rate_window: float = 1.0
    max_deny_ratio: float = 0.5
    min_denials: int = 20
    max_approval_requests: int = 10
    revoke_on_budget_exhausted: bool = True
