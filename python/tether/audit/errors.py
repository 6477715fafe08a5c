"""Errors of the audit package."""

from __future__ import annotations

from tether._core import TetherError


class AuditError(TetherError):
    """The receipt log cannot be written or read."""


class AuditOverflow(AuditError):
    """The receipt buffer is full and the overflow policy is "deny": the action is refused."""
