"""The secret never shows up in repr/str/encodings/logs/the store."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tether.leases import IssuedCredential, Secret
from tether.store import LeaseRecord, SqliteLeaseStore

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-value-000001"


def test_secret_masks_itself() -> None:
    s = Secret("hunter2")
    assert repr(s) == "Secret('***')"
    assert str(s) == "Secret('***')"
    assert f"{s}" == "Secret('***')"
    assert "hunter2" not in f"{s!s} {s!r}"
    assert s.reveal() == "hunter2"
    assert s == Secret("hunter2") and s != Secret("hunter3")
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        hash(s)
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


def test_issued_credential_wraps_plain_strings() -> None:
    cred = IssuedCredential(secret="hunter2", provider_ref="r")
    assert isinstance(cred.secret, Secret)
    assert "hunter2" not in repr(cred)


async def test_lease_renders_without_secret(make_broker: Any, make_task: Any) -> None:
    broker = make_broker()
    lease = await broker.issue(make_task(), "db")
    assert lease.secret.reveal() == SECRET  # it is there...
    renderings = [
        repr(lease),
        str(lease),
        msgspec.json.encode(lease).decode(),
        msgspec.msgpack.encode(lease).decode("latin-1"),
        repr(msgspec.to_builtins(lease)),
        repr(broker),
    ]
    for text in renderings:  # ...but in none of these
        assert SECRET not in text
    decoded = msgspec.json.decode(msgspec.json.encode(lease))
    assert "secret" not in decoded
    assert decoded["lease_id"] == lease.lease_id
    # msgspec pickles fields only, so a pickled lease carries no secret at all.
    assert SECRET.encode() not in pickle.dumps(lease)


async def test_logs_never_contain_secret(
    make_broker: Any, make_task: Any, clock: Any, source: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tether.leases")
    source.revoke_failures = 10
    broker = make_broker(max_revoke_attempts=2, revoke_backoff=0.5)
    lease = await broker.issue(make_task(), "db", ttl=5)
    await broker.renew(lease.lease_id, 5)
    clock.advance(10)
    for _ in range(4):
        await broker.reap_once()
        clock.advance(1)
    await broker.revoke_task("txn-1")
    assert caplog.records, "expected the failing provider to be logged"
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    for record in caplog.records:
        assert SECRET not in record.getMessage()


async def test_sqlite_store_never_holds_secret(
    make_broker: Any, make_task: Any, tmp_path: Path
) -> None:
    path = tmp_path / "leases.db"
    store = SqliteLeaseStore(path)
    broker = make_broker(store=store)
    lease = await broker.issue(make_task(), "db")
    record = await store.get(lease.lease_id)
    assert isinstance(record, LeaseRecord)
    assert record.status == "issued" and record.provider_ref == "ref-1"
    await store.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert lease.lease_id.encode() in blob  # sanity: we are looking at the right files
    assert SECRET.encode() not in blob
