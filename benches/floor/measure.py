"""The API floor under `Engine.is_allowed(principal, action, resource, context)`.

Usage: python -m benches.floor.measure [--rounds 9]

Builds `benches/floor` (a tiny PyO3 module, not part of tether) and times, in the same
interleaved rounds and the same Python loop as `benches.compare`, native functions with
`is_allowed`'s signature that do strictly less than any engine must (none evaluates a
policy; see `src/lib.rs`), beside tether and the hand-compiled Python baseline. If even
the floor costs more than a quarter of the baseline, "4x faster than plain Python" is out
of reach for any implementation behind this call on this machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benches import agents
from benches.compare import Timer, fmt, handle, interleaved, loop
from tether import Engine

HERE = Path(__file__).resolve().parent


def build_floor() -> Any:
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=HERE, check=True)
    lib = HERE / "target" / "release" / "libtether_floor.so"
    dest = Path(tempfile.mkdtemp()) / "tether_floor.abi3.so"
    shutil.copy(lib, dest)
    spec = importlib.util.spec_from_file_location("tether_floor", dest)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load {dest}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    floor_mod = build_floor()
    w = agents.build()
    reqs = w.requests
    keys = sorted(reqs[0][3])
    uids = sorted({u for r in reqs for u in r[:3]})
    floor = floor_mod.Floor(keys, uids)
    eng = Engine(w.policies, entities=w.entities)
    py = agents.python_baseline(w)
    # The same uids with the context left out: a floor for an engine that would need no
    # context value at all.
    no_ctx = [(p, a, r, None) for p, a, r, _ in reqs]

    hreqs = [(*(handle(eng, x) for x in r[:3]), r[3]) for r in reqs]

    def per_request(fn: Any) -> Timer:
        def run() -> float:
            t0 = time.perf_counter()
            fn(hreqs)
            return (time.perf_counter() - t0) / len(hreqs)

        return run

    def nothing(p: str, a: str, r: str, c: dict[str, Any]) -> bool:
        return False

    timers: dict[str, Timer] = {
        "plain Python (hand-compiled ifs)": loop(py, reqs),
        "tether is_allowed (strings)": loop(eng.is_allowed, reqs),
        "floor: the call only": loop(floor.call, reqs),
        "floor: + read 3 uid strings, 5 context values": loop(floor.read, reqs),
        "floor: + find the 3 uids in a hash map": loop(floor.lookup, reqs),
        "floor: find the 3 uids, no context read": loop(floor.lookup, no_ctx),
        "an empty Python function": loop(nothing, reqs),
        "tether authorize_batch (handles)": per_request(eng.authorize_batch),
        "floor: batch, read 4 items and 5 context values": per_request(floor.batch),
    }
    s = interleaved(timers, args.rounds)
    base = statistics.median(s["plain Python (hand-compiled ifs)"])
    print(f"{len(reqs):,} requests of the realistic workload; median of {args.rounds} rounds")
    print("| | per call [min-max] | plain Python / this |")
    print("|---|---:|---:|")
    for k, v in s.items():
        m = statistics.median(v)
        print(f"| {k} | {fmt(m)} [{fmt(min(v))}-{fmt(max(v))}] | {base / m:.2f}x |")
    print(f"4x plain Python would be {fmt(base / 4)} per call; 5 M/s is 200 ns per decision.")


if __name__ == "__main__":
    main()
