"""Lease stores, re-exported so ``tether.leases`` users need one import path.

The implementations live in :mod:`tether.store.lease_store` next to the other stores.
"""

from __future__ import annotations

from tether.store.lease_store import (
    LIVE_STATUSES,
    LeaseRecord,
    LeaseStatus,
    LeaseStore,
    MemoryLeaseStore,
    SqliteLeaseStore,
)

__all__ = [
    "LIVE_STATUSES",
    "LeaseRecord",
    "LeaseStatus",
    "LeaseStore",
    "MemoryLeaseStore",
    "SqliteLeaseStore",
]
