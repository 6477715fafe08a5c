"""Guard, Task, delegation and revocation: authenticate once, authorize every action.

The task state (labels, counters, budgets, monitors, revocation flag) lives in Rust
behind a `TaskHandle`; a decision reads and commits it, for the task and every
ancestor, in one call. This package adds what needs I/O or async: opening and
closing tasks (`guard`), approvals (`approvals`), delegation (which verifies the
child's own proof), lease revocation and the deadline watcher.
"""

from __future__ import annotations

from tether.tasks.approvals import ApprovalRequest, Approver, Grant
from tether.tasks.errors import ApprovalRefused, Denied, TaskRevoked
from tether.tasks.guard import Guard
from tether.tasks.monitors import Monitors
from tether.tasks.task import EntityArg, Task, action_uid

__all__ = [
    "ApprovalRefused",
    "ApprovalRequest",
    "Approver",
    "Denied",
    "EntityArg",
    "Grant",
    "Guard",
    "Monitors",
    "Task",
    "TaskRevoked",
    "action_uid",
]
