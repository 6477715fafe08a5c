"""What request validation against the schema costs per decision.

`python benches/bench_request_validation.py`: the example policies and schema, one engine with
request validation on and one with it off, timed interleaved (each round times both), median
and spread over rounds. A 5-key context with a nested record exercises the check.
"""

from __future__ import annotations

import statistics
import time

from tether import Engine, examples

AGENT = 'Agent::"spiffe://example.org/agents/orchestrator"'
CONTEXT = {
    "intent": "quarterly report",
    "task": {
        "labels": ["restricted"],
        "counters": {"tool_calls_60s": 1, "egress_60s": 0},
        "budgets": {"risk": {"spent": 1, "limit": 12, "remaining": 11}},
        "depth": 0,
        "actors": [],
        "intent": "quarterly report",
        "id": 1,
        "agent": {"__entity": {"type": "Agent", "id": "spiffe://example.org/agents/orchestrator"}},
        "escalated": [],
        "escalated_until": 0,
    },
}
REQUESTS = [
    (AGENT, 'Action::"read"', 'Dataset::"payroll"', CONTEXT),
    (AGENT, 'Action::"call_tool"', 'Tool::"search"', CONTEXT),
    (AGENT, 'Action::"egress"', 'Domain::"api.github.com"', CONTEXT),
]


def engine(validate_requests: bool) -> Engine:
    return Engine.from_files(
        examples.path("agents.cedar"),
        examples.path("agents.cedarschema"),
        examples.path("entities.json"),
        validate_requests=validate_requests,
    )


def per_call(e: Engine, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n // len(REQUESTS)):
        for p, a, r, c in REQUESTS:
            e.is_allowed(p, a, r, c)
    return (time.perf_counter() - start) / n


def main(rounds: int = 15, n: int = 30_000) -> None:
    on, off = engine(True), engine(False)
    for p, a, r, c in REQUESTS:  # valid requests: the same decision either way
        on.authorize(p, a, r, c)  # raises RequestError if the schema rejects it
        assert on.is_allowed(p, a, r, c) == off.is_allowed(p, a, r, c)
    times: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(rounds):
        times["on"].append(per_call(on, n))
        times["off"].append(per_call(off, n))
    for name, ts in times.items():
        ns = [t * 1e9 for t in ts]
        print(
            f"validate_requests={name:>3}: {statistics.median(ns):7.0f} ns "
            f"[{min(ns):.0f}-{max(ns):.0f}]"
        )
    diffs = [(a - b) * 1e9 for a, b in zip(times["on"], times["off"], strict=True)]
    print(
        f"added by validation, per round (on - off): median {statistics.median(diffs):.0f} ns "
        f"[{min(diffs):.0f} to {max(diffs):.0f}]"
    )


if __name__ == "__main__":
    main()
