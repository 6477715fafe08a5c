"""A damaged store never stops recovery: bad rows are quarantined, damaged files salvaged,
what could not be recovered is named, and recover() never raises for damage.

Every test counts live credentials at the provider's own ledger. A store that is not a
tether store (empty, foreign) is refused, never adopted.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from tests.leases.ledger import LedgerProvider
from tether.errors import TetherError
from tether.leases import (
    CorruptLeaseStore,
    CredentialBroker,
    ForeignLeaseStore,
    LeaseError,
    LeaseStoreError,
    TaskRef,
)
from tether.store import LeaseRecord, MemoryLeaseStore, SqliteLeaseStore

pytestmark = pytest.mark.anyio

PAGE = 4096


def _task(txn: str) -> TaskRef:
    return TaskRef(txn, "spiffe://example.org/agents/a", frozenset({"db:read"}), "t", (), 1e12)


async def _leave_leases(path: Path, ledger: LedgerProvider, n: int) -> list[str]:
    """A broker issues ``n`` leases over several tasks and dies without revoking any."""
    store = SqliteLeaseStore(path, synchronous="NORMAL")
    broker = CredentialBroker(store, {"db": ledger})
    ids = [(await broker.issue(_task(f"task-{i % 7}"), "db", ttl=600)).lease_id for i in range(n)]
    await store.close()  # the process is gone: nothing was revoked
    assert len(ledger.live()) == n
    return ids


async def _recover(path: Path, ledger: LedgerProvider) -> tuple[CredentialBroker, object]:
    store = SqliteLeaseStore(path)
    broker = CredentialBroker(store, {"db": ledger})
    return broker, await broker.recover()


async def test_malformed_rows_are_quarantined_and_their_leases_revoked(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    ledger = LedgerProvider()
    ids = await _leave_leases(path, ledger, 40)
    broken, disagreeing, copied_from = ids[:3], ids[3], ids[4]
    with sqlite3.connect(path) as db:
        for lease_id in broken:
            db.execute(
                "UPDATE tether_leases SET record = ? WHERE lease_id = ?", (b'{"lease', lease_id)
            )
        # A row whose record is another lease's: valid JSON, wrong row.
        db.execute(
            "UPDATE tether_leases SET record ="
            " (SELECT record FROM tether_leases WHERE lease_id = ?) WHERE lease_id = ?",
            (copied_from, disagreeing),
        )
        db.execute(
            "INSERT INTO tether_leases VALUES ('not-a-lease-id', 'default', 'issued', 0, 'xx')"
        )

    broker, report = await _recover(path, ledger)
    assert ledger.live() == []  # every credential revoked, the broken ones by lease id
    assert sorted(report.revoked) == sorted(ids)  # type: ignore[attr-defined]
    assert report.damage == [] and report.zombies == []  # type: ignore[attr-defined]
    quarantined = {q.key: q for q in report.quarantined}  # type: ignore[attr-defined]
    assert set(quarantined) == {*broken, disagreeing, "'not-a-lease-id'"}
    assert all(quarantined[k].lease_id == k for k in (*broken, disagreeing))
    assert quarantined["'not-a-lease-id'"].lease_id is None
    assert "cannot be identified" in quarantined["'not-a-lease-id'"].reason
    await broker.close()
    await broker._store.close()

    # Reported once: the rows are set aside (raw bytes kept), the next recovery is clean.
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM tether_quarantine").fetchone()[0] == 5
        raw = db.execute(
            "SELECT raw FROM tether_quarantine WHERE lease_key = ?", (broken[0],)
        ).fetchone()[0]
        assert raw == b'{"lease'
    broker, report = await _recover(path, ledger)
    assert report.clean and report.revoked == []  # type: ignore[attr-defined]


def _present(data: bytes, ids: list[str]) -> set[str]:
    return {lease_id for lease_id in ids if lease_id.encode() in data}


async def _check_salvage(path: Path, ledger: LedgerProvider, ids: list[str]) -> None:
    readable = _present(path.read_bytes(), ids)
    assert readable, "the damage left nothing to salvage; the test proves nothing"
    broker, report = await _recover(path, ledger)  # must not raise
    live = set(ledger.live())
    assert not (live & readable), "a lease still named in the file stayed live"
    assert live <= set(ids) - readable  # only leases whose every byte is gone
    assert report.damage and str(path) in report.damage[0]  # type: ignore[attr-defined]
    assert "cannot be named" in report.damage[0]  # type: ignore[attr-defined]
    # The damaged store refuses new work, naming the file and what to do.
    with pytest.raises(CorruptLeaseStore, match="move the file") as caught:
        await broker.issue(_task("after"), "db")
    assert caught.value.path == str(path)
    assert ledger.issued() == len(ids)  # nothing new was issued


async def test_truncated_file_recovers_what_it_can(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    ledger = LedgerProvider()
    ids = await _leave_leases(path, ledger, 300)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 55 // 100])
    await _check_salvage(path, ledger, ids)


async def test_corrupted_page_recovers_what_it_can(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    ledger = LedgerProvider()
    ids = await _leave_leases(path, ledger, 300)
    data = bytearray(path.read_bytes())
    page = len(data) // PAGE // 2
    data[page * PAGE : (page + 1) * PAGE] = random.Random(7).randbytes(PAGE)
    path.write_bytes(bytes(data))
    await _check_salvage(path, ledger, ids)


async def test_unreadable_header_is_salvaged_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    ledger = LedgerProvider()
    ids = await _leave_leases(path, ledger, 50)
    data = bytearray(path.read_bytes())
    data[:100] = bytes(100)  # the SQLite header is gone, the records are not
    path.write_bytes(bytes(data))
    await _check_salvage(path, ledger, ids)


async def test_empty_and_foreign_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(ForeignLeaseStore, match="empty") as caught:
        SqliteLeaseStore(empty)
    assert caught.value.path == str(empty)
    assert empty.stat().st_size == 0  # not adopted, not written

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")
    with pytest.raises(ForeignLeaseStore, match="another application"):
        SqliteLeaseStore(foreign)

    older = tmp_path / "old.db"
    with sqlite3.connect(older) as db:
        db.execute("CREATE TABLE tether_leases (lease_id TEXT PRIMARY KEY, record BLOB)")
    with pytest.raises(ForeignLeaseStore, match="older tether"):
        SqliteLeaseStore(older)

    with pytest.raises(LeaseStoreError, match="cannot create"):
        SqliteLeaseStore(tmp_path / "no-such-dir" / "leases.db")

    junk = tmp_path / "notes.txt"
    junk.write_text("shopping list: milk, eggs\n" * 200)
    with pytest.raises(ForeignLeaseStore, match="not a SQLite database"):
        SqliteLeaseStore(junk)

    # Benign twin: a path that does not exist yet becomes a store, and is ours on reopen.
    fresh = tmp_path / "fresh.db"
    store = SqliteLeaseStore(fresh)
    assert await store.size() == 0
    await store.close()
    reopened = SqliteLeaseStore(fresh)
    assert reopened.damage is None and await reopened.size() == 0
    await reopened.close()


async def test_storage_failures_are_lease_errors_with_cause(tmp_path: Path) -> None:
    ledger = LedgerProvider()
    store = SqliteLeaseStore(tmp_path / "leases.db")
    broker = CredentialBroker(store, {"db": ledger})
    await broker.issue(_task("fine"), "db")
    store._conn.close()  # type: ignore[union-attr]  # the driver fails under the broker
    with pytest.raises(LeaseStoreError) as caught:
        await broker.issue(_task("t"), "db")
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    assert isinstance(caught.value, LeaseError) and isinstance(caught.value, TetherError)
    assert ledger.issued() == 1  # fail closed: nothing issued without a durable record

    class FlakyStore(MemoryLeaseStore):
        async def put(self, record: LeaseRecord) -> None:
            raise OSError("disk full")

    other = CredentialBroker(FlakyStore(), {"db": ledger})
    with pytest.raises(LeaseStoreError, match="disk full") as caught:
        await other.issue(_task("t"), "db")
    assert isinstance(caught.value.__cause__, OSError)
    assert ledger.issued() == 1
