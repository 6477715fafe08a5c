"""Print the README's benchmark table: tether vs cedarpy, measured in one run.

Usage: python -m benches.compare [--sizes 10,100,1000,10000]
Latency is the median of repeated timed loops over the workload's requests
(strings for entities, a two-key context dict), so it includes argument
conversion from Python, as a caller would pay it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import cedarpy

from benches.workload import build, cedarpy_request
from tether import Engine


def per_call(fn: Any, reqs: list[Any], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for r in reqs:
            fn(r)
        samples.append((time.perf_counter() - t0) / len(reqs))
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,1000,10000")
    args = ap.parse_args()
    rows = [measure(int(s)) for s in args.sizes.split(",")]
    print_table(rows)


def measure(n: int) -> tuple[int, float, float, float, float, float, int]:
    w = build(n)
    eng = Engine(w.policies, entities=w.entities)
    ps = cedarpy.PolicySet.from_str(w.policies)
    ents = cedarpy.Entities.from_json_str(json.dumps(w.entities))
    creqs = [cedarpy_request(r) for r in w.requests]
    k = 50 if n >= 10000 else 300
    disagree = sum(
        eng.is_allowed(*r) != cedarpy.is_authorized(c, ps, ents).allowed
        for r, c in zip(w.requests[:k], creqs[:k], strict=True)
    )
    t_is = per_call(lambda r: eng.is_allowed(r[0], r[1], r[2], r[3]), w.requests, 15)
    t_auth = per_call(lambda r: eng.authorize(r[0], r[1], r[2], r[3]), w.requests, 15)
    t_ced = per_call(lambda c: cedarpy.is_authorized(c, ps, ents), creqs[:k], 3)
    # Distinct context dicts per request, so nothing is converted once and reused.
    batch = [(p, a, r, dict(c)) for _ in range(20) for p, a, r, c in w.requests]
    thr = best_rate(lambda: eng.authorize_batch(batch), len(batch))
    # The fastest documented path: entity handles, one context shared by the batch.
    handles = [tuple(handle(eng, x) for x in r[:3]) for r in w.requests] * 20
    shared = w.requests[0][3]
    thr_h = best_rate(lambda: eng.authorize_batch(handles, shared), len(handles))
    return (n, t_is, t_auth, t_ced, thr, thr_h, disagree)


def handle(eng: Engine, uid: str) -> Any:
    ty, rest = uid.split("::", 1)
    return eng.entity(ty, rest.strip('"'))


def best_rate(fn: Any, n: int) -> float:
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def print_table(rows: list[tuple[int, float, float, float, float, float, int]]) -> None:
    print(
        "| policies | tether is_allowed | tether authorize | cedarpy is_authorized | "
        "ratio | batch/s (strings, dict each) | batch/s (handles, shared ctx) | disagreements |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, t_is, t_auth, t_ced, thr, thr_h, dis in rows:
        print(
            f"| {n:,} | {t_is * 1e9:,.0f} ns | {t_auth * 1e9:,.0f} ns | {t_ced * 1e6:,.1f} µs | "
            f"{t_ced / t_is:,.0f}x | {thr / 1e6:.2f} M | {thr_h / 1e6:.2f} M | {dis} |"
        )


if __name__ == "__main__":
    main()
