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


def measure(n: int) -> tuple[int, float, float, float, float, int]:
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
    batch = w.requests * 20
    t0 = time.perf_counter()
    eng.authorize_batch(batch)
    thr = len(batch) / (time.perf_counter() - t0)
    return (n, t_is, t_auth, t_ced, thr, disagree)


def print_table(rows: list[tuple[int, float, float, float, float, int]]) -> None:
    print(
        "| policies | tether is_allowed | tether authorize | cedarpy is_authorized | "
        "ratio | batch decisions/s | disagreements |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, t_is, t_auth, t_ced, thr, dis in rows:
        print(
            f"| {n:,} | {t_is * 1e9:,.0f} ns | {t_auth * 1e9:,.0f} ns | {t_ced * 1e6:,.1f} µs | "
            f"{t_ced / t_is:,.0f}x | {thr / 1e6:.2f} M | {dis} |"
        )


if __name__ == "__main__":
    main()
