"""Stores: where tether keeps what must outlive a call.

Lease stores (re-exported here): one protocol, :class:`LeaseStore`, with a memory and a
SQLite implementation, and one on Redis in :mod:`tether.store.redis_leases` (needs the
``redis`` extra) that every broker of a deployment shares; the broker in
:mod:`tether.leases` depends on nothing else, so other backends plug in the same way.
Shared task state (revocations, budgets, counters) has its own protocol in
:mod:`tether.store.shared_state`, with memory and Redis implementations.
"""

from __future__ import annotations

from tether.store.memory import MemoryLeaseStore
from tether.store.records import (
    LIVE_STATUSES,
    LeaseRecord,
    LeaseStatus,
    LeaseStore,
    QuarantinedRow,
    StoreScan,
)
from tether.store.sqlite import SqliteLeaseStore

__all__ = [
    "LIVE_STATUSES",
    "LeaseRecord",
    "LeaseStatus",
    "LeaseStore",
    "MemoryLeaseStore",
    "QuarantinedRow",
    "SqliteLeaseStore",
    "StoreScan",
]
