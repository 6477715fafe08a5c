"""Shared state on Redis: revocation propagation, budget decisions, slice refills.

    PYTHONPATH=python:. python benches/bench_store.py

Starts its own redis-server on a free loopback port (needs the binary). Measures:

* revocation propagation: one process revokes, three follower processes (each running a
  :class:`RevocationFeed`) apply it; time from just before ``revoke()`` to each apply, on the
  same machine's wall clock, p50/p99 over all (revocation, follower) pairs;
* the budget step of a decision: strict mode (one Lua round trip per spend) against sliced
  mode (a local subtraction, no I/O);
* one slice refill (settle + reserve, one round trip).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from tests.store.redis_server import RedisServer, read_line, start_worker, stop_workers

from tether.store.budgets import BudgetSlice, StrictBudget
from tether.store.redis_state import RedisStore
from tether.store.shared_state import Charge, Revocation

REVOCATIONS = 300
FOLLOWERS = 3
SPENDS = 5_000


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fmt(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.2f} ms"


async def propagation(server: RedisServer) -> list[float]:
    followers = [start_worker("follow", server.url, "bench:") for _ in range(FOLLOWERS)]
    store = RedisStore.from_url(server.url, prefix="bench:")
    delays: list[float] = []
    try:
        for p in followers:
            assert read_line(p) == "ready"
        for i in range(REVOCATIONS):
            sent = time.time()
            await store.revoke(
                Revocation(kind="task", subject=f"t{i}", reason="bench", revoked_at=sent)
            )
            for p in followers:
                got = json.loads(read_line(p))
                delays.append(got["received"] - got["sent"])
    finally:
        await store.aclose()
        stop_workers(followers)
    return delays


async def budgets(server: RedisServer) -> dict[str, list[float]]:
    store = RedisStore.from_url(server.url, prefix="bench:")
    out: dict[str, list[float]] = {"strict": [], "sliced": [], "refill": []}
    try:
        strict = StrictBudget(store, [Charge("strict", 10**12)])
        for _ in range(SPENDS):
            t = time.perf_counter()
            await strict.spend(1)
            out["strict"].append(time.perf_counter() - t)
        sliced = BudgetSlice(store, [Charge("sliced", 10**12)], slice_size=SPENDS * 10)
        await sliced.refill()
        for _ in range(SPENDS):
            t = time.perf_counter()
            sliced.try_spend(1)
            out["sliced"].append(time.perf_counter() - t)
        refiller = BudgetSlice(store, [Charge("refill", 10**12)], slice_size=100)
        for _ in range(1_000):
            refiller.available = 0  # as if the slice had been spent
            t = time.perf_counter()
            await refiller.refill()
            out["refill"].append(time.perf_counter() - t)
    finally:
        await store.aclose()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            delays = anyio.run(propagation, server)
            spend = anyio.run(budgets, server)
        finally:
            server.kill()
    print(f"redis-server, loopback TCP; Python {sys.version.split()[0]}")
    print(
        f"revocation propagation ({REVOCATIONS} revocations x {FOLLOWERS} processes): "
        f"p50 {fmt(pct(delays, 0.5))}, p99 {fmt(pct(delays, 0.99))}, max {fmt(max(delays))}"
    )
    for name, label in (
        ("strict", "budget step, strict (1 round trip)"),
        ("sliced", "budget step, sliced (no I/O)"),
        ("refill", "slice refill (1 round trip)"),
    ):
        s = spend[name]
        print(
            f"{label}: p50 {fmt(pct(s, 0.5))}, p99 {fmt(pct(s, 0.99))}, "
            f"mean {fmt(statistics.fmean(s))}"
        )


if __name__ == "__main__":
    main()
