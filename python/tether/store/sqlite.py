"""SQLite lease store (stdlib ``sqlite3``, WAL journal), built to be recovered from.

* A new store is created under a temporary name and linked into place, so a crash never
  leaves a half-made store; an existing file must carry tether's ``application_id``. An
  empty file, another application's database or a non-database is refused
  (:class:`ForeignLeaseStore`), never silently adopted.
* Opening runs ``PRAGMA quick_check``. A damaged file still opens, read-only in effect:
  :meth:`scan` reads what SQL can and salvages lease ids from the raw pages
  (:mod:`tether.store.salvage`); every write raises :class:`CorruptLeaseStore`, which names
  the file and what to do.
* A row that does not decode is copied to ``tether_quarantine`` and replaced by a ``pending``
  stand-in, so recovery revokes its credential by lease id and the row never blocks again.
* Owner names are claimed with ``flock`` on ``<file>.<owner>.owner``: the kernel drops the
  lock when the process dies, however it dies, so a restarted broker can always reclaim.

sqlite3 blocks, so every call runs in a worker thread via :func:`anyio.to_thread.run_sync`,
serialized by a capacity limiter of one (and a lock) so the one connection is never used from
two threads at once. Driver errors surface as :class:`LeaseStoreError` with the cause attached.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Final, Literal, TypeVar
from urllib.parse import quote

import anyio
import anyio.to_thread
import msgspec

from tether.leases.errors import (
    CorruptLeaseStore,
    ForeignLeaseStore,
    LeaseStoreBusy,
    LeaseStoreError,
)
from tether.store.records import (
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    LeaseRecord,
    QuarantinedRow,
    StoreScan,
    lease_id_parts,
    orphan_record,
    valid_owner,
)
from tether.store.salvage import looks_like_lease_store, salvage

__all__ = ["SqliteLeaseStore"]

_APP_ID: Final = 0x54455448  # "TETH" in the SQLite header: marks the file as ours
_VERSION: Final = 2
_SCHEMA: Final = """
CREATE TABLE tether_leases (
    lease_id   TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    status     TEXT NOT NULL,
    updated_at REAL NOT NULL,
    record     BLOB NOT NULL
);
CREATE INDEX tether_leases_live ON tether_leases (owner, status);
CREATE INDEX tether_leases_age ON tether_leases (status, updated_at);
CREATE TABLE tether_quarantine (
    lease_key TEXT,
    reason    TEXT NOT NULL,
    raw       BLOB,
    at        REAL NOT NULL
);
"""
_TERMINAL: Final = tuple(sorted(TERMINAL_STATUSES))
_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LeaseRecord)
T = TypeVar("T")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _create(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute(f"PRAGMA application_id={_APP_ID}")
        conn.execute(f"PRAGMA user_version={_VERSION}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
    finally:
        conn.close()
    try:
        os.link(tmp, path)  # fails if another process created the store meanwhile: use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class SqliteLeaseStore:
    """SQLite-backed store; see the module docstring for what it refuses and survives.

    ``synchronous`` defaults to ``FULL`` so a record survives power loss, not only a killed
    process; ``NORMAL`` is enough if only process crashes matter and writes must be cheaper.
    """

    def __init__(
        self, path: str | PathLike[str], *, synchronous: Literal["FULL", "NORMAL"] = "FULL"
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be 'FULL' or 'NORMAL'")
        self.path = Path(path)
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        self._owner_fds: dict[str, int] = {}
        self._conn: sqlite3.Connection | None = None
        # Set once the file is known to be damaged; every write is then refused.
        self.damage: str | None = None
        if not self.path.exists():
            try:
                _create(self.path)
            except (sqlite3.Error, OSError) as exc:
                raise LeaseStoreError(
                    f"cannot create lease store {self.path}: {_describe(exc)}", self.path
                ) from exc
        elif self.path.stat().st_size == 0:
            raise ForeignLeaseStore(
                f"{self.path} is empty (0 bytes), not a tether lease store. If it was one, it"
                " was truncated and its leases cannot be read from it: revoke them at each"
                " provider, then delete the file to start a new store.",
                self.path,
            )
        uri = f"file:{quote(str(self.path.resolve()))}?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise LeaseStoreError(f"cannot open lease store {self.path}: {exc}", path) from exc
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            conn.close()
            if looks_like_lease_store(self.path):
                # Header gone but records left: salvage-only, so recover() can still act.
                self.damage = f"unreadable as SQLite ({exc})"
                return
            raise ForeignLeaseStore(
                f"{self.path} is not a SQLite database ({exc}) and holds no lease records:"
                " refusing to adopt it. Point the store at another path.",
                self.path,
            ) from exc
        if app_id != _APP_ID:
            older = app_id == 0 and self._has_lease_table(conn)
            conn.close()
            if older:
                raise ForeignLeaseStore(
                    f"{self.path} was made by an older tether (no application_id): run"
                    " recover() with that version, then start this one on a new file.",
                    self.path,
                )
            raise ForeignLeaseStore(
                f"{self.path} is a SQLite database of another application (application_id"
                f" {app_id:#x}, want {_APP_ID:#x}): refusing to adopt it. Point the store at"
                " another path.",
                self.path,
            )
        conn.execute(f"PRAGMA synchronous={synchronous}")
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                self.damage = "quick_check: " + "; ".join(str(r[0]) for r in rows[:3])
        except sqlite3.DatabaseError as exc:
            self.damage = f"quick_check failed ({exc})"
        self._conn = conn

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def _has_lease_table(conn: sqlite3.Connection) -> bool:
        try:
            row = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tether_leases'"
            ).fetchone()
        except sqlite3.Error:
            return False
        return row is not None

    def _corrupt(self) -> CorruptLeaseStore:
        return CorruptLeaseStore(
            f"lease store {self.path} is damaged ({self.damage}). recover() revokes every"
            " lease it can still identify in it and names the rest; then move the file (and"
            " its -wal/-shm files) aside for forensics and start the broker on a new store.",
            self.path,
        )

    def _wrap(self, exc: sqlite3.Error) -> LeaseStoreError:
        if getattr(exc, "sqlite_errorcode", None) in _CORRUPT_CODES:
            self.damage = self.damage or _describe(exc)
            return self._corrupt()
        return LeaseStoreError(f"lease store {self.path}: {_describe(exc)}", self.path)

    def _writable(self) -> sqlite3.Connection:
        if self.damage is not None:
            raise self._corrupt()
        return self._readable()

    def _readable(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.damage is not None:
                raise self._corrupt()
            raise LeaseStoreError(f"lease store {self.path} is closed", self.path)
        return self._conn

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise self._wrap(exc) from exc
        except OSError as exc:
            raise LeaseStoreError(f"lease store {self.path}: {_describe(exc)}", self.path) from exc

    # ----------------------------------------------------------------- sync bodies

    def _put_sync(self, record: LeaseRecord) -> None:
        with self._lock:
            self._writable().execute(
                "INSERT INTO tether_leases (lease_id, owner, status, updated_at, record)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (lease_id) DO UPDATE SET"
                " owner = excluded.owner, status = excluded.status,"
                " updated_at = excluded.updated_at, record = excluded.record",
                (
                    record.lease_id,
                    record.owner,
                    record.status,
                    record.updated_at,
                    _encoder.encode(record),
                ),
            )

    def _get_sync(self, lease_id: str) -> LeaseRecord | None:
        with self._lock:
            row = (
                self._readable()
                .execute("SELECT record FROM tether_leases WHERE lease_id = ?", (lease_id,))
                .fetchone()
            )
        if row is None:
            return None
        try:
            return _decoder.decode(row[0])
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
            raise LeaseStoreError(
                f"lease store {self.path}: record {lease_id} does not decode ({exc});"
                " recover() quarantines it",
                self.path,
            ) from exc

    def _scan_sync(self, owner: str, now: float) -> StoreScan:
        with self._lock:
            if self._conn is None:
                if self.damage is None:
                    raise LeaseStoreError(f"lease store {self.path} is closed", self.path)
                found, notes = salvage(self.path, owner, now, {}, self.damage)
                return StoreScan(found, [], notes)
            try:
                rows = self._conn.execute(
                    "SELECT lease_id, owner, status, record FROM tether_leases"
                    f" WHERE status NOT IN ({','.join('?' * len(_TERMINAL))})",
                    _TERMINAL,
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                self.damage = self.damage or _describe(exc)
                found, notes = salvage(self.path, owner, now, {}, self.damage)
                return StoreScan(found, [], notes)
            readable: dict[str, LeaseRecord] = {}
            records: list[LeaseRecord] = []
            bad: list[tuple[object, object, str]] = []
            for key, row_owner, status, blob in rows:
                try:
                    record = _decoder.decode(blob)
                except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
                    bad.append((key, blob, f"record does not decode: {exc}"))
                    continue
                if (record.lease_id, record.owner, record.status) != (key, row_owner, status):
                    bad.append((key, blob, "record disagrees with its row's key columns"))
                    continue
                readable[record.lease_id] = record
                if record.owner == owner and record.status in LIVE_STATUSES:
                    records.append(record)
            quarantined = self._quarantine(bad, owner, now, records)
            if self.damage is None:
                return StoreScan(records, quarantined, [])
            # SQL read these rows, but a damaged b-tree can skip rows without an error.
            found, notes = salvage(self.path, owner, now, readable, self.damage)
            return StoreScan(records + found, quarantined, notes)

    def _quarantine(
        self,
        bad: list[tuple[object, object, str]],
        owner: str,
        now: float,
        records: list[LeaseRecord],
    ) -> list[QuarantinedRow]:
        out: list[QuarantinedRow] = []
        if not bad:
            return out
        conn = self._conn
        assert conn is not None
        writable = self.damage is None
        if writable:
            conn.execute("BEGIN IMMEDIATE")
        try:
            for key, blob, reason in bad:
                lease_id = key if isinstance(key, str) and lease_id_parts(key) else None
                stand_in = None if lease_id is None else orphan_record(lease_id, owner, now, reason)
                if writable:
                    raw = blob if isinstance(blob, bytes | str) else repr(blob)
                    conn.execute(
                        "INSERT INTO tether_quarantine (lease_key, reason, raw, at)"
                        " VALUES (?, ?, ?, ?)",
                        (None if key is None else str(key), reason, raw, now),
                    )
                    conn.execute("DELETE FROM tether_leases WHERE lease_id IS ?", (key,))
                if stand_in is not None:
                    if writable:
                        conn.execute(
                            "INSERT INTO tether_leases"
                            " (lease_id, owner, status, updated_at, record) VALUES (?, ?, ?, ?, ?)",
                            (lease_id, owner, "pending", now, _encoder.encode(stand_in)),
                        )
                    records.append(stand_in)
                out.append(
                    QuarantinedRow(
                        key=repr(key) if lease_id is None else lease_id,
                        reason=reason
                        if lease_id is not None
                        else f"{reason}; its key names no lease, so its credential cannot be"
                        " identified",
                        lease_id=lease_id,
                    )
                )
            if writable:
                conn.execute("COMMIT")
        except BaseException:
            if writable:
                conn.execute("ROLLBACK")
            raise
        return out

    def _purge_sync(self, before: float) -> int:
        with self._lock:
            cur = self._writable().execute(
                "DELETE FROM tether_leases WHERE status IN"
                f" ({','.join('?' * len(_TERMINAL))}) AND updated_at < ?",
                (*_TERMINAL, before),
            )
            return cur.rowcount

    def _size_sync(self) -> int:
        with self._lock:
            row = self._readable().execute("SELECT count(*) FROM tether_leases").fetchone()
        return int(row[0])

    def _claim_sync(self, owner: str) -> None:
        with self._lock:
            if owner in self._owner_fds:
                raise LeaseStoreBusy(
                    f"owner {owner!r} is already claimed on {self.path}", self.path
                )
            lock_path = self.path.with_name(f"{self.path.name}.{owner}.owner")
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise LeaseStoreBusy(
                    f"owner {owner!r} of lease store {self.path} is held by a live broker"
                    f" (pid {holder}); give this broker another owner name, or stop that one",
                    self.path,
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            self._owner_fds[owner] = fd

    def _release_sync(self, owner: str) -> None:
        with self._lock:
            fd = self._owner_fds.pop(owner, None)
            if fd is not None:
                os.close(fd)  # closing drops the flock

    def _close_sync(self) -> None:
        with self._lock:
            for fd in self._owner_fds.values():
                os.close(fd)
            self._owner_fds.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ----------------------------------------------------------------- LeaseStore

    async def put(self, record: LeaseRecord) -> None:
        await self._call(self._put_sync, record)

    async def get(self, lease_id: str) -> LeaseRecord | None:
        return await self._call(self._get_sync, lease_id)

    async def scan(self, owner: str, now: float) -> StoreScan:
        return await self._call(self._scan_sync, owner, now)

    async def purge(self, before: float) -> int:
        return await self._call(self._purge_sync, before)

    async def size(self) -> int:
        return await self._call(self._size_sync)

    async def claim(self, owner: str) -> None:
        await self._call(self._claim_sync, valid_owner(owner))

    async def release(self, owner: str) -> None:
        await self._call(self._release_sync, owner)

    async def close(self) -> None:
        await self._call(self._close_sync)

    def __repr__(self) -> str:
        state = "damaged" if self.damage is not None else "ok"
        return f"SqliteLeaseStore({str(self.path)!r}, {state})"
