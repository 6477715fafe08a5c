"""Crash-and-restart: a new broker revokes whatever the dead one left alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import tether
from tether.leases import (
    CallbackProvider,
    CredentialBroker,
    IssuedCredential,
    Lease,
    MemoryLeaseStore,
    SqliteLeaseStore,
    TaskRef,
)

pytestmark = pytest.mark.anyio

N_LEASES = 5

CHILD = textwrap.dedent(
    """
    import sys, time
    import anyio
    from tether.leases import (
        CallbackProvider, CredentialBroker, IssuedCredential, SqliteLeaseStore, TaskRef,
    )

    N = int(sys.argv[2])

    async def main() -> None:
        store = SqliteLeaseStore(sys.argv[1])
        count = 0

        async def issue(task, scope, ttl):
            nonlocal count
            count += 1
            if count > N + 1:
                # The last issue never returns: the crash lands between the pending record
                # and the provider's answer.
                print("HANG", flush=True)
                await anyio.sleep_forever()
            return IssuedCredential(secret=f"secret-{count}", provider_ref=f"ref-{count}")

        async def revoke(lease):
            return None

        broker = CredentialBroker(store, {"db": CallbackProvider(issue, revoke)})
        task = TaskRef(
            txn="crashy", agent="spiffe://example.org/agent/a", scope=frozenset({"db:read"}),
            intent="test", actors=(), deadline=time.time() + 3600,
        )
        for _ in range(N):
            lease = await broker.issue(task, "db", ttl=600)
            print("LEASE", lease.lease_id, lease.provider_ref, flush=True)
        done = await broker.issue(task, "db", ttl=600)
        await broker.revoke(done.lease_id)
        print("REVOKED", done.lease_id, flush=True)
        await broker.issue(task, "db", ttl=600)

    anyio.run(main)
    """
)


def _run_and_kill(db: Path) -> tuple[dict[str, str], str]:
    env = dict(os.environ)
    python_dir = str(Path(tether.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (python_dir, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(N_LEASES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watchdog = threading.Timer(60, proc.kill)  # hang guard only
    watchdog.start()
    leases: dict[str, str] = {}
    revoked = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            kind, *rest = line.split()
            if kind == "LEASE":
                leases[rest[0]] = rest[1]
            elif kind == "REVOKED":
                revoked = rest[0]
            elif kind == "HANG":
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        watchdog.cancel()
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    return leases, revoked


async def test_recover_after_sigkill_revokes_every_unrevoked_lease(tmp_path: Path) -> None:
    db = tmp_path / "leases.db"
    leases, revoked_before_crash = _run_and_kill(db)
    assert len(leases) == N_LEASES and revoked_before_crash

    seen: dict[str, str | None] = {}

    async def issue(task: TaskRef, scope: frozenset[str], ttl: float) -> IssuedCredential:
        raise AssertionError("recovery must not issue")

    async def revoke(lease: Lease) -> None:
        seen[lease.lease_id] = lease.provider_ref

    store = SqliteLeaseStore(db)
    broker = CredentialBroker(store, {"db": CallbackProvider(issue, revoke)})
    confirmed = await broker.recover()

    orphan = set(seen) - set(leases)
    assert len(orphan) == 1  # the lease that was pending when the process died
    (orphan_id,) = orphan
    assert orphan_id.startswith("tasks/crashy/db/") and seen[orphan_id] is None
    assert {k: v for k, v in seen.items() if k in leases} == leases  # refs came from the store
    assert revoked_before_crash not in seen  # confirmed revocations are not repeated
    assert sorted(confirmed) == sorted(seen)
    assert await store.unrevoked() == []
    assert await broker.recover() == []  # idempotent
    await store.close()


async def test_recover_in_process_skips_own_and_terminal_leases(
    make_task: Any, clock: Any, source: Any
) -> None:
    store = MemoryLeaseStore()
    first = CredentialBroker(store, {"db": source.provider()}, clock=clock)
    alive = [await first.issue(make_task(), "db") for _ in range(3)]
    gone = await first.issue(make_task(), "db")
    await first.revoke(gone.lease_id)
    assert source.revoked_ids == [gone.lease_id]

    # The same broker does not revoke its own live leases when asked to recover...
    assert await first.recover() == []
    # ...but a successor (the process restarted) revokes all of them, by provider_ref.
    second = CredentialBroker(store, {"db": source.provider()}, clock=clock)
    confirmed = await second.recover()
    assert sorted(confirmed) == sorted(lease.lease_id for lease in alive)
    assert sorted((lease.provider_ref for lease in source.revoked[1:]), key=str) == sorted(
        (lease.provider_ref for lease in alive), key=str
    )
    assert all(lease.__dict__.get("_secret") is None for lease in source.revoked[1:])
    assert await store.unrevoked() == []
