"""2 threads against 1 for `authorize_batch`, round by round.

Usage: python -m benches.threads [--rounds 5] [--repeats 32] [--switch 0.005]

Prints each round's 1-thread / 2-thread time ratio, sorted, for batches with a context per
request and with one shared context (`compare.threaded`, engines interleaved per round). Run
it against two builds in turn to compare their scaling: the medians move by ~0.1x between
runs of one build on a 2-vCPU VM, so compare several runs of each, alternating.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from benches import agents, compare
from tether import Engine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=32)
    ap.add_argument("--switch", type=float, default=0.005)
    args = ap.parse_args()
    sys.setswitchinterval(args.switch)
    w = agents.build()
    eng = Engine(w.policies, entities=w.entities)
    hreqs = [(*(compare.handle(eng, x) for x in r[:3]), r[3]) for r in w.requests]
    shared = w.requests[0][3]
    sreqs = [r[:3] for r in hreqs]

    def batch(rs: list[Any]) -> None:
        eng.authorize_batch(rs)

    def batch_shared(rs: list[Any]) -> None:
        eng.authorize_batch(rs, shared)

    n = args.repeats
    timers: dict[str, compare.Timer] = {
        "b1": compare.threaded(batch, hreqs, 1, repeats=n),
        "b2": compare.threaded(batch, hreqs, 2, repeats=n),
        "s1": compare.threaded(batch_shared, sreqs, 1, repeats=n),
        "s2": compare.threaded(batch_shared, sreqs, 2, repeats=n),
    }
    s = compare.interleaved(timers, args.rounds)
    for label, one, two in (("a context per request", "b1", "b2"), ("shared context", "s1", "s2")):
        ratios = sorted(round(x / y, 2) for x, y in zip(s[one], s[two], strict=True))
        print(f"{label}: 2 threads vs 1 per round {ratios}, median {statistics.median(ratios)}")


if __name__ == "__main__":
    main()
