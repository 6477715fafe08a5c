"""Why a task action did not happen (all `tether.errors.TetherError`)."""

from __future__ import annotations

from tether._core import Decision, DenialKind
from tether.errors import TetherError


class Denied(TetherError):
    """An action was refused; `decision` (when there was one) says why and `kind` how."""

    def __init__(
        self, message: str, decision: Decision | None = None, kind: DenialKind | None = None
    ) -> None:
        super().__init__(message)
        self.decision = decision
        self.kind = kind if kind is not None or decision is None else decision.kind


class TaskRevoked(Denied):
    """The task (or an ancestor) is revoked, or its deadline passed."""


class ApprovalRefused(Denied):
    """An obligation was not approved: refused, timed out, failed, no approver
    configured, or the task asked too often."""


# Kinds after which the task is no longer usable.
REVOKING_KINDS = frozenset(
    {DenialKind.REVOKED, DenialKind.DEADLINE, DenialKind.SCOPE, DenialKind.MONITOR}
)
