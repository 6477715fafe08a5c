"""Lease stores: one protocol, a memory and a SQLite implementation.

The broker is in :mod:`tether.leases`; it depends on a store only through
:class:`LeaseStore`, so other backends (Redis next) plug in the same way.
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
