"""Decision receipts: a hash-chained, optionally signed log of every decision.

`AuditLog` writes them off the hot path; `verify` checks a log. See the README section
"Audit: decision receipts".
"""

from __future__ import annotations

from tether.audit.errors import AuditError, AuditOverflow
from tether.audit.log import AuditLog, context_digest, redact
from tether.audit.records import Receipt
from tether.audit.sinks import CallableSink, JsonlFileSink, Sink
from tether.audit.verify import Problem, Report, verify

__all__ = [
    "AuditError",
    "AuditLog",
    "AuditOverflow",
    "CallableSink",
    "JsonlFileSink",
    "Problem",
    "Receipt",
    "Report",
    "Sink",
    "context_digest",
    "redact",
    "verify",
]
