"""Crash and restart: after recover() no credential of a dead task is live at the provider.

The crash loop kills a child process that issues, renews, expires and revokes leases with
SIGKILL, at random moments and at the two moments that used to leak (after the provider
issued but before the store recorded it; after the provider revoked but before the store
recorded that). The provider's own ledger (a file that outlives the child) is the oracle.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import tether
from tests.leases.ledger import LedgerProvider
from tether.leases import CredentialBroker, LeaseStoreBusy, TaskRef
from tether.store import MemoryLeaseStore, SqliteLeaseStore

ROOT = Path(__file__).resolve().parents[2]
CRASHES = 24

CHILD = textwrap.dedent(
    """
    import os, random, signal, sys
    import anyio
    from tests.leases.ledger import LedgerProvider
    from tether.leases import CredentialBroker, TaskRef
    from tether.store import SqliteLeaseStore

    db, ledger, seed, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    rng = random.Random(seed)

    def hook(where):
        # Die at the moment under test: the provider acted, the store does not know yet.
        if where == mode and rng.random() < 0.15:
            os.kill(os.getpid(), signal.SIGKILL)

    provider = LedgerProvider(ledger, hook=hook)
    store = SqliteLeaseStore(db, synchronous="NORMAL")
    broker = CredentialBroker(
        store, {"db": provider, "vault": provider.as_callbacks()}, owner="worker",
        reaper_interval=0.005, revoke_backoff=0.01,
    )

    async def worker(i):
        n = 0
        while True:
            n += 1
            task = TaskRef(
                txn=f"s{seed}-w{i}-{n}", agent="spiffe://example.org/agents/a",
                scope=frozenset({"db:read"}), intent="crash test", actors=(),
                deadline=broker.clock() + 60,
            )
            leases = [
                await broker.issue(task, rng.choice(["db", "vault"]), ttl=rng.choice([0.01, 60]))
                for _ in range(rng.randint(1, 4))
            ]
            if i == 0 and n == 1:
                print("READY", flush=True)  # the kill timer starts once leases flow
            if rng.random() < 0.3:
                try:
                    await broker.renew(leases[-1].lease_id, 30)
                except Exception:
                    pass  # already expired: fine
            if rng.random() < 0.6:
                await broker.revoke_task(task.txn)
            await anyio.sleep(0)

    async def main():
        await broker.recover()
        async with broker:
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(worker, i)

    anyio.run(main)
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    python_dir = str(Path(tether.__file__).resolve().parent.parent)
    paths = (python_dir, str(ROOT), env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _run_and_kill(db: Path, ledger: Path, seed: int, mode: str, rng: random.Random) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(ledger), str(seed), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    watchdog = threading.Timer(30, proc.kill)  # hang guard only
    watchdog.start()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "" when the child killed itself first
        assert line.strip() in ("READY", ""), line
        if mode == "timer":
            time.sleep(rng.uniform(0.005, 0.15))
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""


async def _recover(db: Path, ledger: LedgerProvider) -> Any:
    store = SqliteLeaseStore(db)
    broker = CredentialBroker(store, {"db": ledger, "vault": ledger.as_callbacks()}, owner="worker")
    try:
        return await broker.recover()
    finally:
        await broker.close()
        await store.close()


def test_crash_loop_leaves_no_live_credential(tmp_path: Path) -> None:
    db, ledger_path = tmp_path / "leases.db", tmp_path / "ledger.db"
    rng = random.Random(20261129)
    modes = ["timer", "issued", "revoked"]
    issued_before = 0
    for i in range(CRASHES):
        mode = modes[i % len(modes)]
        _run_and_kill(db, ledger_path, seed=i, mode=mode, rng=rng)
        ledger = LedgerProvider(ledger_path)
        try:
            issued = ledger.issued()
            assert issued > issued_before, f"crash {i} ({mode}): the child issued nothing"
            issued_before = issued
            report = anyio.run(_recover, db, ledger)
            assert report.damage == [] and report.quarantined == [] and report.zombies == []
            assert ledger.live() == [], f"crash {i} ({mode}): live after recover()"
        finally:
            ledger.close()
    ledger = LedgerProvider(ledger_path)
    # The crashes did land between the provider's issue and the store's update: those
    # credentials were found by lease id alone.
    assert ledger.revoked_by_lease_id() > 0
    ledger.close()


def _task(txn: str, deadline: float) -> TaskRef:
    return TaskRef(txn, "spiffe://example.org/agents/a", frozenset({"db:read"}), "t", (), deadline)


@pytest.mark.anyio
async def test_owner_marker_keeps_brokers_off_each_others_leases(tmp_path: Path) -> None:
    db = tmp_path / "leases.db"
    ledger = LedgerProvider()
    first_store = SqliteLeaseStore(db)
    first = CredentialBroker(first_store, {"db": ledger}, owner="worker-1")
    leases = [await first.issue(_task("a", first.clock() + 60), "db") for _ in range(3)]

    # Attack: a second broker started with the same owner while the first is alive.
    twin = CredentialBroker(SqliteLeaseStore(db), {"db": ledger}, owner="worker-1")
    with pytest.raises(LeaseStoreBusy, match="worker-1"):
        await twin.recover()
    # Another owner's recovery leaves the live broker's leases alone.
    other = CredentialBroker(SqliteLeaseStore(db), {"db": ledger}, owner="worker-2")
    assert (await other.recover()).revoked == []
    assert len(ledger.live()) == 3
    assert all(first.get(lease.lease_id) is lease for lease in leases)

    # Benign twin: once the first broker is gone, its successor (same owner) recovers all.
    await first_store.close()
    report = await twin.recover()
    assert sorted(report.revoked) == sorted(lease.lease_id for lease in leases)
    assert ledger.live() == []


@pytest.mark.anyio
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
    assert (await first.recover()).revoked == []
    await first.close()
    # ...but a successor (the process restarted) revokes all of them, by provider_ref.
    second = CredentialBroker(store, {"db": source.provider()}, clock=clock)
    report = await second.recover()
    assert report.clean
    assert sorted(report.revoked) == sorted(lease.lease_id for lease in alive)
    assert sorted((lease.provider_ref for lease in source.revoked[1:]), key=str) == sorted(
        (lease.provider_ref for lease in alive), key=str
    )
    assert all(lease.__dict__.get("_secret") is None for lease in source.revoked[1:])
    assert (await store.scan("default", 0.0)).records == []
    assert (await second.recover()).revoked == []  # idempotent
