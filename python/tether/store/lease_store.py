"""Durable records of credential leases.

The broker writes a record *before* it asks a provider for a secret and updates it once the
provider answers, so a broker that crashed can be replaced by one that finds every lease that
might still be alive and revokes it. Records therefore hold what a provider needs to revoke
(``provider_ref``) and never the secret itself: the store is not a vault, and anything written
here should be safe to read in a backup or a debugging session.

Two implementations share one small async protocol:

* :class:`MemoryLeaseStore` keeps records in a dict. It survives nothing, which is fine for
  tests and for processes whose leases all die with them (short TTLs, no restarts).
* :class:`SqliteLeaseStore` uses stdlib ``sqlite3`` in WAL mode. sqlite3 blocks, so every call
  runs in a worker thread via :func:`anyio.to_thread.run_sync`, serialized by a capacity
  limiter of one so the single connection is never used from two threads at once.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from os import PathLike
from typing import Final, Literal, Protocol, runtime_checkable

import anyio
import anyio.to_thread
import msgspec

__all__ = [
    "LIVE_STATUSES",
    "LeaseRecord",
    "LeaseStatus",
    "LeaseStore",
    "MemoryLeaseStore",
    "SqliteLeaseStore",
]

LeaseStatus = Literal["pending", "issued", "revoke_failed", "revoked", "failed"]
"""Lifecycle of a record.

``pending``: written before the provider was asked; the credential may or may not exist.
``issued``: the provider returned a credential; it is alive until revoked.
``revoke_failed``: revocation was attempted and the provider did not confirm it.
``revoked``: the provider confirmed revocation. Terminal.
``failed``: the provider refused to issue (raised), so nothing was created. Terminal.
"""

# Every status in which a credential may still exist at the provider. recover() revokes these.
LIVE_STATUSES: Final[frozenset[str]] = frozenset({"pending", "issued", "revoke_failed"})


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the store knows about one lease. Contains no secret by construction."""

    lease_id: str
    provider: str
    txn: str
    agent: str
    scope: tuple[str, ...]
    issued_at: float
    ttl: float
    max_ttl: float
    expires_at: float
    renewable: bool
    status: LeaseStatus
    parent_txn: str | None = None
    # Set once the provider answered; None while pending (a crash in that window leaves the
    # provider to find the credential by lease_id, which is all the broker knows).
    provider_ref: str | None = None
    revoke_attempts: int = 0
    last_error: str | None = None


@runtime_checkable
class LeaseStore(Protocol):
    """Persistence used by :class:`tether.leases.CredentialBroker`."""

    async def put(self, record: LeaseRecord) -> None:
        """Insert or replace the record with this ``lease_id``; durable when this returns."""
        ...

    async def get(self, lease_id: str) -> LeaseRecord | None: ...

    async def unrevoked(self) -> list[LeaseRecord]:
        """Every record whose status is in :data:`LIVE_STATUSES`."""
        ...

    async def purge(self, before: float) -> int:
        """Delete terminal records (revoked/failed) that expired before ``before``."""
        ...

    async def close(self) -> None: ...


class MemoryLeaseStore:
    """Process-local store. Nothing survives a restart; recover() then has nothing to do."""

    def __init__(self) -> None:
        self._records: dict[str, LeaseRecord] = {}

    async def put(self, record: LeaseRecord) -> None:
        self._records[record.lease_id] = record

    async def get(self, lease_id: str) -> LeaseRecord | None:
        return self._records.get(lease_id)

    async def unrevoked(self) -> list[LeaseRecord]:
        return [r for r in self._records.values() if r.status in LIVE_STATUSES]

    async def purge(self, before: float) -> int:
        doomed = [
            k
            for k, r in self._records.items()
            if r.status not in LIVE_STATUSES and r.expires_at < before
        ]
        for k in doomed:
            del self._records[k]
        return len(doomed)

    async def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tether_leases (
    lease_id   TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    expires_at REAL NOT NULL,
    record     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tether_leases_status ON tether_leases (status);
"""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LeaseRecord)


class SqliteLeaseStore:
    """SQLite-backed store (WAL journal), safe to share between brokers run one at a time.

    ``synchronous`` defaults to ``FULL`` so a record survives power loss, not only a killed
    process; ``NORMAL`` is enough if only process crashes matter and writes must be cheaper.
    """

    def __init__(
        self, path: str | PathLike[str], *, synchronous: Literal["FULL", "NORMAL"] = "FULL"
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be 'FULL' or 'NORMAL'")
        # check_same_thread=False because anyio worker threads vary; the limiter and the lock
        # below guarantee one user at a time.
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        conn = self._conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteLeaseStore is closed")
        return self._conn

    def _put_sync(self, record: LeaseRecord) -> None:
        with self._lock:
            conn = self._connection()
            conn.execute(
                "INSERT INTO tether_leases (lease_id, status, expires_at, record)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (lease_id) DO UPDATE SET status = excluded.status,"
                " expires_at = excluded.expires_at, record = excluded.record",
                (record.lease_id, record.status, record.expires_at, _encoder.encode(record)),
            )

    def _get_sync(self, lease_id: str) -> LeaseRecord | None:
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT record FROM tether_leases WHERE lease_id = ?", (lease_id,))
                .fetchone()
            )
        return None if row is None else _decoder.decode(row[0])

    def _select_sync(self, statuses: Iterable[str]) -> list[LeaseRecord]:
        wanted = sorted(statuses)
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = (
                self._connection()
                .execute(
                    f"SELECT record FROM tether_leases WHERE status IN ({marks}) ORDER BY lease_id",
                    wanted,
                )
                .fetchall()
            )
        return [_decoder.decode(r[0]) for r in rows]

    def _purge_sync(self, before: float) -> int:
        live = sorted(LIVE_STATUSES)
        marks = ",".join("?" * len(live))
        with self._lock:
            cur = self._connection().execute(
                f"DELETE FROM tether_leases WHERE status NOT IN ({marks}) AND expires_at < ?",
                (*live, before),
            )
            return cur.rowcount

    def _close_sync(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def put(self, record: LeaseRecord) -> None:
        await anyio.to_thread.run_sync(self._put_sync, record, limiter=self._limiter)

    async def get(self, lease_id: str) -> LeaseRecord | None:
        return await anyio.to_thread.run_sync(self._get_sync, lease_id, limiter=self._limiter)

    async def unrevoked(self) -> list[LeaseRecord]:
        return await anyio.to_thread.run_sync(
            self._select_sync, LIVE_STATUSES, limiter=self._limiter
        )

    async def purge(self, before: float) -> int:
        return await anyio.to_thread.run_sync(self._purge_sync, before, limiter=self._limiter)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close_sync, limiter=self._limiter)
