"""What a decision receipt adds to `task.authorize`, timed interleaved (A/B).

`python benches/bench_audit_ab.py`: the ~1,000-policy set of `test_bench_tasks.py`, two
tasks on one engine, one under a `Guard` without receipts and one under a `Guard` with an
`AuditLog` writing a JSONL file. Each round times `n` calls of each (the order alternates),
and the per-round difference is the receipt's cost per decision. Two settings:

- "enqueue only": the queue is emptied between chunks of 1,000 calls without writing
  anything: the deciding thread's own work and nothing else (a lower bound);
- "hot path": the writer drains between chunks of 1,000 calls, never during them, so the
  timing is what the deciding thread itself does (queueing the receipt) while the queue
  stays short, as it does when the writer keeps up;
- "writer running": the writer drains while the timed loop runs; its encoding, hashing
  and I/O compete for the GIL and the two cores, so this is the whole cost to the process.

Timed with the deciding thread's CPU time (`--wall`: wall time). Prints, per setting, the
median ns per call of each variant with [min-max] over rounds, and
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


# CPU time of the deciding thread: on a shared machine, time other processes take from
# it is not counted (wall time is, with `--wall`).
TIMER = time.perf_counter_ns if "--wall" in sys.argv else time.thread_time_ns


def per_call(task: Any, reqs: list[tuple[Any, Any]], n: int, drain: Any = None) -> float:
    """Mean time per call over `n` calls; with `drain`, timed in chunks of `CHUNK` calls
    with `drain()` run untimed between them."""
    authorize = task.authorize
    chunk = CHUNK if drain is not None else n
    total = 0
    for _ in range(n // chunk):
        start = TIMER()
        for _ in range(chunk // len(reqs)):
            for a, r in reqs:
                authorize(a, r)
        total += TIMER() - start
        if drain is not None:
            drain()
    return total / (n - n % len(reqs))


CHUNK = 1000


def run(mode: str, rounds: int, n: int, tmp: Path) -> None:
    writer_running = mode == "writer running"
    log = AuditLog(
        tmp / f"audit-{mode}.jsonl".replace(" ", "-"),
        capacity=rounds * n + 1,
        flush_interval=0.005 if writer_running else 3600.0,
    )
    plain, audited = task_under(None), task_under(log)
    reqs = _args(build(), handles=True)
    times: dict[str, list[float]] = {"plain": [], "receipts": []}
    with log:
        per_call(plain, reqs, n)  # warm up both
        per_call(audited, reqs, n)
        log.flush()
        drain = {"enqueue only": log._q.clear, "hot path": log.flush}.get(mode)
        for i in range(rounds):
            order = [("plain", plain), ("receipts", audited)]
            for name, task in order if i % 2 == 0 else reversed(order):
                times[name].append(per_call(task, reqs, n, drain if task is audited else None))
    assert log.dropped == 0
    assert mode == "enqueue only" or log.written == (rounds + 1) * n
    label = mode
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
        for mode in ("enqueue only", "hot path", "writer running"):
            run(mode, rounds, n, Path(d))


if __name__ == "__main__":
    main()
