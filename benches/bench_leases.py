"""Lease broker throughput with 100,000 live leases in memory.

    PYTHONPATH=python python -m pytest benches/bench_leases.py -p no:cacheprovider
    PYTHONPATH=python python benches/bench_leases.py      # plain timings, no plugin

Measures the per-lease cost of issue and revoke while the broker already tracks 100k live
leases (so index/heap costs at scale are included), plus bulk issue and revoke_task of 100k.
The provider is an in-memory no-op so the numbers are the broker's own overhead, including
the deadline scope that bounds every provider call (one per batch for revoke_task).
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from tether.leases import (
    CallbackProvider,
    CredentialBroker,
    IssuedCredential,
    IssueRequest,
    Lease,
    Secret,
    TaskRef,
)
from tether.store import MemoryLeaseStore

LIVE = 100_000
BATCH = 1_000


async def _issue(request: IssueRequest) -> IssuedCredential:
    return IssuedCredential(secret=Secret("k"), provider_ref="r")


async def _revoke(lease: Lease) -> None:
    return None


def _task(txn: str) -> TaskRef:
    return TaskRef(
        txn=txn,
        agent="spiffe://example.org/agent/bench",
        scope=frozenset({"db:read"}),
        intent="bench",
        actors=(),
        deadline=time.time() + 86_400,
    )


def _broker() -> CredentialBroker:
    return CredentialBroker(MemoryLeaseStore(), {"p": CallbackProvider(_issue, _revoke)})


def _populated() -> CredentialBroker:
    broker = _broker()

    async def fill() -> None:
        background = _task("background")
        for _ in range(LIVE):
            await broker.issue(background, "p", ttl=3600)

    anyio.run(fill)
    return broker


async def _issue_batch(broker: CredentialBroker, txn: str) -> list[str]:
    task = _task(txn)
    return [(await broker.issue(task, "p", ttl=3600)).lease_id for _ in range(BATCH)]


async def _revoke_each(broker: CredentialBroker, ids: list[str]) -> None:
    for lease_id in ids:
        await broker.revoke(lease_id)


# ----------------------------------------------------------------- pytest-benchmark


def test_bench_issue_1k_with_100k_live(benchmark: Any) -> None:
    broker = _populated()
    rounds = iter(range(10_000))
    benchmark.extra_info["per"] = f"{BATCH} leases"
    ids = benchmark.pedantic(
        lambda: anyio.run(_issue_batch, broker, f"bench-{next(rounds)}"), rounds=5, iterations=1
    )
    assert len(ids) == BATCH
    assert len(broker.active()) >= LIVE + BATCH


def test_bench_revoke_1k_with_100k_live(benchmark: Any) -> None:
    broker = _populated()
    counter = iter(range(10_000))

    def setup() -> tuple[tuple[CredentialBroker, list[str]], dict[str, Any]]:
        ids = anyio.run(_issue_batch, broker, f"rev-{next(counter)}")
        return (broker, ids), {}

    benchmark.extra_info["per"] = f"{BATCH} leases"
    benchmark.pedantic(lambda b, ids: anyio.run(_revoke_each, b, ids), setup=setup, rounds=5)
    assert len(broker.active()) == LIVE


def test_bench_issue_and_revoke_task_100k(benchmark: Any) -> None:
    def run() -> int:
        broker = _broker()

        async def go() -> int:
            task = _task("bulk")
            for _ in range(LIVE):
                await broker.issue(task, "p", ttl=3600)
            return await broker.revoke_task("bulk")

        return anyio.run(go)

    assert benchmark.pedantic(run, rounds=2, iterations=1) == LIVE


# ----------------------------------------------------------------- plain script


def main() -> None:
    broker: CredentialBroker

    async def go() -> None:
        task = _task("background")
        t0 = time.perf_counter()
        for _ in range(LIVE):
            await broker.issue(task, "p", ttl=3600)
        t1 = time.perf_counter()
        print(f"issue {LIVE} leases:            {t1 - t0:7.3f}s ({(t1 - t0) / LIVE * 1e6:.1f} us)")
        t0 = time.perf_counter()
        ids = await _issue_batch(broker, "extra")
        t1 = time.perf_counter()
        print(f"issue with 100k live:          {(t1 - t0) / BATCH * 1e6:7.1f} us/lease")
        t0 = time.perf_counter()
        await _revoke_each(broker, ids)
        t1 = time.perf_counter()
        print(f"revoke with 100k live:         {(t1 - t0) / BATCH * 1e6:7.1f} us/lease")
        t0 = time.perf_counter()
        n = await broker.revoke_task("background")
        t1 = time.perf_counter()
        print(f"revoke_task of {n} leases:   {t1 - t0:7.3f}s ({(t1 - t0) / n * 1e6:.1f} us)")
        assert broker.active() == []

    for backend in ("asyncio", "trio"):
        print(f"-- {backend}")
        broker = _broker()
        anyio.run(go, backend=backend)


if __name__ == "__main__":
    main()
