"""What decision receipts add to `task.authorize` (the hot path), on the ~1,000-policy
set of `test_bench_tasks.py`: the same loop with and without `Guard(audit=AuditLog(...))`
writing a JSONL file. The difference of the medians is the receipt cost per decision
(queueing on the deciding thread; the writer thread's encoding, hashing and I/O run
concurrently and compete for the GIL, so they show up here too).

Run: python -m pytest benches/test_bench_audit.py --benchmark-only
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from benches.test_bench_tasks import ORCH, _args, build
from tether.audit import AuditLog
from tether.tasks import Guard, Monitors


@pytest.mark.parametrize("audited", [False, True], ids=["no-receipts", "receipts"])
def test_task_authorize_receipts(benchmark: Any, audited: bool, tmp_path: Path) -> None:
    engine = build()
    log = AuditLog(tmp_path / "audit.jsonl", capacity=1 << 20) if audited else None
    guard = Guard(
        engine,
        monitors=Monitors(max_deny_streak=0, max_deny_ratio=0),
        allow_unauthenticated=True,
        audit=log,
    )
    task = guard._open(ORCH, "bench", None, 3600.0, parent=None)
    reqs = itertools.cycle(_args(engine, handles=True))

    def one() -> bool:
        a, r = next(reqs)
        return task.authorize(a, r).allowed

    if log is not None:
        log.start()
    benchmark(one)
    if log is not None:
        log.close()
        assert log.written > 0 and log.dropped == 0
