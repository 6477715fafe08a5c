"""Shared state on Redis: revocation propagation, budget decisions, slice refills.

    PYTHONPATH=python:. python benches/bench_store.py

Starts its own redis-server on a free loopback port (needs the binary). Measures:

* revocation propagation: one process revokes, three follower processes (each running a
  :class:`RevocationFeed`) apply it; time from just before ``revoke()`` to each apply, on the
  same machine's wall clock, p50/p99 over all (revocation, follower) pairs;
* the budget step of a decision: strict mode (one Lua round trip per spend) against sliced
  mode (a local subtraction, no I/O);
* one slice refill (settle + reserve, one round trip), plain and held (``hold_ttl``);
* with ``Guard(store=...)``: revocation propagation from one Guard to Guards in three other
  processes (revoke call to the first denied decision there; the watchers decide every
  0.5 ms, which bounds the resolution), and the latency of one budgeted task decision with
  no store, with the Redis store and no shared budget, sliced, and strict.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from tests.store.guard_world import ORCH, SEARCH, engine, guard
from tests.store.redis_server import (
    RedisServer,
    answer,
    ask,
    read_line,
    start_worker,
    stop_workers,
)

from tether.store.budgets import BudgetSlice, StrictBudget
from tether.store.redis_state import RedisStore
from tether.store.shared_state import Charge, Revocation
from tether.tasks import Guard, Monitors

REVOCATIONS = 300
FOLLOWERS = 3
SPENDS = 5_000
GUARD_ROUNDS = 50
QUIET = Monitors(max_deny_streak=0, max_deny_ratio=0)
DECISIONS = 5_000


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
        held = BudgetSlice(store, [Charge("held", 10**12)], slice_size=100, hold_ttl=30)
        out["held refill"] = []
        for _ in range(1_000):
            for name, b in (("refill", refiller), ("held refill", held)):
                b.try_spend(b.available)  # as if the slice had been spent
                t = time.perf_counter()
                await b.refill()
                out[name].append(time.perf_counter() - t)
    finally:
        await store.aclose()
    return out


async def guard_propagation(server: RedisServer) -> list[float]:
    args = (server.url, "gbench:", "none", "12", "4", "0", "5", "30")
    watchers = [start_worker(*args, module="tests.store.guard_worker") for _ in range(FOLLOWERS)]
    store = RedisStore.from_url(server.url, prefix="gbench:")
    delays: list[float] = []
    try:
        for p in watchers:
            assert read_line(p) == "ready"
        async with guard(store) as g:
            for i in range(GUARD_ROUNDS):
                for p in watchers:
                    assert ask(p, {"op": "open", "txn": f"t{i}"})["ok"]
                for p in watchers:
                    assert p.stdin is not None
                    p.stdin.write(json.dumps({"op": "watch", "txn": f"t{i}"}) + "\n")
                    p.stdin.flush()
                    assert read_line(p) == "watching"
                sent = time.time()
                await g.revoke(task=f"t{i}")
                delays += [answer(p)["denied_at"] - sent for p in watchers]
    finally:
        await store.aclose()
        stop_workers(watchers)
    return delays


async def guard_decisions(server: RedisServer) -> dict[str, list[float]]:
    """One budgeted decision (`call_tool` on a risk-1 tool), per budget mode."""
    out: dict[str, list[float]] = {}
    store = RedisStore.from_url(server.url, prefix="dbench:")
    try:
        for mode in ("no store", "none", "sliced", "strict"):
            samples: list[float] = []
            if mode == "no store":
                g = Guard(engine(10**9), allow_unauthenticated=True, monitors=QUIET)
            else:
                g = guard(store, mode=mode, risk_limit=10**9, slice_size=1_000)  # type: ignore[arg-type]
            async with g, g.task(ORCH, intent="bench", txn=f"d-{mode}") as task:
                for _ in range(DECISIONS):
                    t = time.perf_counter()
                    if mode == "strict":
                        await task.require("call_tool", SEARCH)
                    else:
                        task.authorize("call_tool", SEARCH)
                    samples.append(time.perf_counter() - t)
                    await anyio.sleep(0)  # the background refill and feed run here
            out[mode] = samples
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
            guard_delays = anyio.run(guard_propagation, server)
            decisions = anyio.run(guard_decisions, server)
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
        ("held refill", "held slice refill (hold_ttl, 1 round trip)"),
    ):
        s = spend[name]
        print(
            f"{label}: p50 {fmt(pct(s, 0.5))}, p99 {fmt(pct(s, 0.99))}, "
            f"mean {fmt(statistics.fmean(s))}"
        )
    d = guard_delays
    print(
        f"Guard revocation propagation ({GUARD_ROUNDS} x {FOLLOWERS} processes): "
        f"p50 {fmt(pct(d, 0.5))}, p99 {fmt(pct(d, 0.99))}, max {fmt(max(d))}"
    )
    for mode, label in (
        ("no store", "task decision, no store"),
        ("none", "task decision, Redis store, no shared budget"),
        ("sliced", "task decision, Redis store, sliced budget"),
        ("strict", "task decision (require), Redis store, strict budget"),
    ):
        s = decisions[mode]
        print(
            f"{label}: p50 {fmt(pct(s, 0.5))}, p99 {fmt(pct(s, 0.99))}, "
            f"mean {fmt(statistics.fmean(s))}"
        )


if __name__ == "__main__":
    main()
