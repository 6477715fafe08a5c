"""Reading lease records out of a damaged SQLite file, byte by byte.

When SQLite itself cannot read a page, the records on the other pages are still there as
JSON, and every lease id (``tasks/<txn>/<provider>/<hex>``) names the provider to revoke it
at. Salvage finds both, in the database file and its WAL, so recovery can revoke by lease id
whatever it can still identify and say plainly what it could not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import msgspec

from tether.store.records import (
    LEASE_ID_RE,
    TERMINAL_STATUSES,
    LeaseRecord,
    orphan_record,
)

__all__ = ["looks_like_lease_store", "salvage"]

_RECORD_START: Final = re.compile(rb'\{"lease_id":"')
_LEASE_ID_BYTES: Final = re.compile(LEASE_ID_RE.pattern.encode())
_MAX_RECORD: Final = 8192
_decoder = msgspec.json.Decoder(LeaseRecord)


def _read(path: Path) -> bytes:
    chunks = []
    for candidate in (path, path.with_name(path.name + "-wal")):
        try:
            chunks.append(candidate.read_bytes())
        except OSError:
            continue
    return b"\n".join(chunks)


def looks_like_lease_store(path: Path) -> bool:
    """Whether the raw bytes hold at least one lease id (a damaged store, not a foreign file)."""
    return _LEASE_ID_BYTES.search(_read(path)) is not None


def _records(data: bytes) -> Iterable[LeaseRecord]:
    for m in _RECORD_START.finditer(data):
        start = m.start()
        end = data.find(b"}", start)
        # A string inside the record may hold '}', so try each closing brace in reach.
        while 0 <= end < start + _MAX_RECORD:
            try:
                yield _decoder.decode(data[start : end + 1])
                break
            except (msgspec.DecodeError, msgspec.ValidationError):
                end = data.find(b"}", end + 1)


def salvage(
    path: Path, owner: str, now: float, readable: dict[str, LeaseRecord], why: str
) -> tuple[list[LeaseRecord], list[str]]:
    """Live records of ``owner`` found in the raw bytes of ``path`` (and its WAL).

    ``readable`` holds what SQL could still read (current versions, they win). For the rest,
    a lease counts as done only if some version of it is terminal (a terminal status is never
    left); a version of another owner leaves it alone; an id with no decodable version is
    revoked by id (fail closed: revoking twice is harmless, missing one is not).
    """
    data = _read(path)
    versions: dict[str, list[LeaseRecord]] = {}
    for record in _records(data):
        versions.setdefault(record.lease_id, []).append(record)
    for m in _LEASE_ID_BYTES.finditer(data):
        versions.setdefault(m.group(0).decode("utf-8", "replace"), [])

    found: list[LeaseRecord] = []
    txns: set[str] = set()
    for lease_id, seen in sorted(versions.items()):
        current = readable.get(lease_id)
        if current is not None:
            continue  # SQL read it: the caller already has it
        if any(v.status in TERMINAL_STATUSES for v in seen):
            continue
        if any(v.owner != owner for v in seen):
            continue
        if seen:
            best = max(seen, key=lambda v: v.updated_at)
            found.append(msgspec.structs.replace(best, last_error=why))
            txns.add(best.txn)
        else:
            stand_in = orphan_record(lease_id, owner, now, why)
            if stand_in is not None:
                found.append(stand_in)
                txns.add(stand_in.txn)
    notes = [
        f"{path}: {why}; {len(found)} live lease(s) identified from raw pages and revoked by"
        " lease id; a lease whose record sat only in an unreadable page cannot be named"
        + (f" (tasks seen in the file: {', '.join(sorted(txns)[:20])})" if txns else "")
    ]
    return found, notes
