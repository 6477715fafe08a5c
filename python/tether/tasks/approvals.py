"""Approvals: an obligation is discharged only by a grant the approver path
recorded, bound to one task, action, resource, context and policy set,
used once, and expiring."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether.tasks.task import Task


@dataclass(frozen=True)
class ApprovalRequest:
    """What an approver is asked to approve."""

    task: Task
    obligation: str
    action: str
    resource: str
    context: Mapping[str, Any]


# Only `True` approves: "no", 1 or a non-empty object do not.
Approver = Callable[[ApprovalRequest], Awaitable[bool]]


def context_digest(context: Mapping[str, Any] | None) -> str:
    """A stable digest of a request context (what a grant is bound to)."""
    text = json.dumps(context or {}, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    """An approval, recorded by the approver path for exactly one request."""

    obligation: str
    action: str
    resource: str
    context_digest: str
    # A digest of the policy text: the engine's version also moves when it merely
    # interns a new name (a task opened elsewhere), which must not void a grant.
    policy_digest: str
    expires_at: float


class Grants:
    """A task's unused grants and how many approvals it asked for."""

    def __init__(self) -> None:
        self._grants: list[Grant] = []
        self.requests = 0

    def record(self, grant: Grant) -> None:
        self._grants.append(grant)

    def take(
        self,
        obligations: list[str],
        action: str,
        resource: str,
        digest: str,
        policies: str,
        now: float,
    ) -> list[str]:
        """Consume one matching, unexpired grant per obligation; returns the
        obligations so discharged (all or none)."""
        self._grants = [g for g in self._grants if g.expires_at > now]
        picked: list[Grant] = []
        for o in obligations:
            g = next(
                (
                    g
                    for g in self._grants
                    if g.obligation == o
                    and g.action == action
                    and g.resource == resource
                    and g.context_digest == digest
                    and g.policy_digest == policies
                    and g not in picked
                ),
                None,
            )
            if g is None:
                return []
            picked.append(g)
        for g in picked:
            self._grants.remove(g)
        return list(obligations)


class PolicyDigest:
    """The digest of an engine's policy text, recomputed only when its version moves."""

    def __init__(self) -> None:
        self._version = -1
        self._digest = ""

    def of(self, engine: Any) -> str:
        version = engine.version
        if version != self._version:
            self._digest = hashlib.sha256(engine.policy_text().encode()).hexdigest()
            self._version = version
        return self._digest
