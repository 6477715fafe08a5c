"""What a decision receipt adds to `task.authorize`, timed interleaved (A/B).

`python benches/bench_audit_ab.py`: the ~1,000-policy set of `test_bench_tasks.py`, two
tasks on one engine, one under a `Guard` without receipts and one under a `Guard` with an
`AuditLog` writing a JSONL file. Each round times `n` calls of each (the order alternates),
and the per-round difference is the receipt's cost per decision. Two settings:

- "hot path": the writer thread drains between rounds, not during them, so the timing is
  what the deciding thread itself does (queueing the receipt);
- "writer running": the writer drains while the timed loop runs; its encoding, hashing
  and I/O compete for the GIL and the two cores, so this is the whole cost to the process.

Prints, per setting, the median ns per call of each variant with [min-max] over rounds, and
the median added cost with its spread.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benches.test_bench_tasks import ORCH, _args, build
from tether.audit import AuditLog
from tether.tasks import Guard, Monitors


def task_under(log: AuditLog | None) -> Any:
    guard = Guard(
        build(),
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0),
        allow_unauthenticated=True,
        audit=log,
    )
    return guard._open(ORCH, "bench", None, 3600.0, parent=None)


def per_call(task: Any, reqs: list[tuple[Any, Any]], n: int) -> float:
    authorize = task.authorize
    start = time.perf_counter_ns()
    for _ in range(n // len(reqs)):
        for a, r in reqs:
            authorize(a, r)
    return (time.perf_counter_ns() - start) / n


def run(writer_running: bool, rounds: int, n: int, tmp: Path) -> None:
    log = AuditLog(
        tmp / f"audit-{writer_running}.jsonl",
        capacity=rounds * n + 1,
        flush_interval=0.001 if writer_running else 3600.0,
    )
    plain, audited = task_under(None), task_under(log)
    reqs = _args(build(), handles=True)
    times: dict[str, list[float]] = {"plain": [], "receipts": []}
    with log:
        per_call(plain, reqs, n)  # warm up both
        per_call(audited, reqs, n)
        log.flush()
        for i in range(rounds):
            order = [("plain", plain), ("receipts", audited)]
            for name, task in order if i % 2 == 0 else reversed(order):
                times[name].append(per_call(task, reqs, n))
            if not writer_running:
                log.flush()  # untimed
    assert log.dropped == 0 and log.written == (rounds + 1) * n - (n % len(reqs)) * (rounds + 1)
    label = "writer running" if writer_running else "hot path"
    for name, ts in times.items():
        print(
            f"{label:>14} {name:>8}: {statistics.median(ts):6.0f} ns [{min(ts):.0f}-{max(ts):.0f}]"
        )
    diffs = [a - b for a, b in zip(times["receipts"], times["plain"], strict=True)]
    q = statistics.quantiles(diffs, n=4)
    print(
        f"{label:>14}    added: median {statistics.median(diffs):.0f} ns, "
        f"IQR [{q[0]:.0f}, {q[2]:.0f}], range [{min(diffs):.0f}, {max(diffs):.0f}]"
    )


def main(rounds: int = 21, n: int = 20_000) -> None:
    with tempfile.TemporaryDirectory() as d:
        run(False, rounds, n, Path(d))
        run(True, rounds, n, Path(d))


if __name__ == "__main__":
    main()
