"""Process-local lease store: survives nothing, which suits tests and processes whose
leases all die with them (short TTLs, no restarts)."""

from __future__ import annotations

from tether.leases.errors import LeaseStoreBusy
from tether.store.records import LIVE_STATUSES, LeaseRecord, StoreScan, valid_owner

__all__ = ["MemoryLeaseStore"]


class MemoryLeaseStore:
    """Records in a dict; ``claim`` guards an owner name within this one store object."""

    def __init__(self) -> None:
        self._records: dict[str, LeaseRecord] = {}
        self._owners: set[str] = set()

    async def put(self, record: LeaseRecord) -> None:
        self._records[record.lease_id] = record

    async def get(self, lease_id: str) -> LeaseRecord | None:
        return self._records.get(lease_id)

    async def scan(self, owner: str, now: float) -> StoreScan:
        return StoreScan(
            [r for r in self._records.values() if r.owner == owner and r.status in LIVE_STATUSES]
        )

    async def purge(self, before: float) -> int:
        doomed = [
            k
            for k, r in self._records.items()
            if r.status not in LIVE_STATUSES and r.updated_at < before
        ]
        for k in doomed:
            del self._records[k]
        return len(doomed)

    async def size(self) -> int:
        return len(self._records)

    async def claim(self, owner: str) -> None:
        if valid_owner(owner) in self._owners:
            raise LeaseStoreBusy(f"owner {owner!r} is already claimed on this store")
        self._owners.add(owner)

    async def release(self, owner: str) -> None:
        self._owners.discard(owner)

    async def close(self) -> None:
        return None
