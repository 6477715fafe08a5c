"""`tether replay`: re-decide recorded requests under other policies.

Only receipts written with `AuditLog(record_requests=True)` carry the (redacted)
request needed to decide again; others are counted as not replayable. A task decision
is replayed with the `context.task` recorded beside it (`task_state=True`); without
it, policies reading `context.task` see no task.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from tether.audit.records import DECISION, DECODER
from tether.engine import Engine


@dataclass(frozen=True)
class Change:
    seq: int
    agent: str
    action: str
    resource: str
    before: str
    after: str
    reasons: list[str]


@dataclass
class ReplayResult:
    replayed: int = 0
    unchanged: int = 0
    not_replayable: int = 0
    errors: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


def replay(paths: Sequence[str | os.PathLike[str]], engine: Engine) -> ReplayResult:
    from tether import TetherError

    out = ReplayResult()
    for path in paths:
        for i, raw in enumerate(Path(path).read_bytes().splitlines(), start=1):
            try:
                r = DECODER.decode(raw)
            except msgspec.DecodeError as e:
                out.errors.append(f"{path}:{i}: not a receipt ({e})")
                continue
            if r.kind != DECISION:
                continue
            if r.request is None or not (r.agent and r.action and r.resource):
                out.not_replayable += 1
                continue
            context: dict[str, Any] = dict(r.request.get("context") or {})
            if "task" in r.request:
                context["task"] = r.request["task"]
            try:
                d = engine.authorize(r.agent, r.action, r.resource, context, reasons=True)
            except TetherError as e:
                out.errors.append(f"{path}:{i}: seq {r.seq}: {e}")
                continue
            out.replayed += 1
            after = "allow" if d.allowed else "deny"
            if after == r.decision:
                out.unchanged += 1
            else:
                out.changes.append(
                    Change(
                        r.seq,
                        r.agent,
                        r.action,
                        r.resource,
                        r.decision or "?",
                        after,
                        list(d.reasons),
                    )
                )
    return out
