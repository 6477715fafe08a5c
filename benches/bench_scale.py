"""Scale: entity and policy loads, deep hierarchies, one upsert into a big store.

    PYTHONPATH=python python -m benches.bench_scale [--cases NAME,...] [--rounds N]

Each case runs in a fresh subprocess (so its peak RSS is its own) that reads a generated
input file, records RSS before loading, times the load, and reports the peak RSS and the RSS
left once the load's temporaries are freed. "live" is that RSS minus the RSS before the load
(the engine's own data); "peak/live" is how much more than that the load needed at its
worst. Figures are the median of `--rounds` subprocess runs, [min-max].

Cases: 100k and 1M entities (users in 1,000 groups, 3 attributes each), a parent chain of
6,000 entities, one-entity upsert into the 1M store (a new user; median of 20 upserts in the
same process), and 100,000 policies (per-agent permits with a condition, plus forbids).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

Case = Callable[[Path], dict[str, float]]


def users_json(n: int, groups: int = 1000) -> str:
    """n users, each in one of `groups` groups, with a string, a long and a bool attribute."""
    parts = [
        f'{{"uid":{{"type":"Group","id":"g{g}"}},"attrs":{{}},"parents":[]}}' for g in range(groups)
    ]
    parts.extend(
        f'{{"uid":{{"type":"User","id":"u{i}"}},"attrs":{{"dept":"d{i % 50}","level":{i % 7},'
        f'"active":{"true" if i % 3 else "false"}}},'
        f'"parents":[{{"type":"Group","id":"g{i % groups}"}}]}}'
        for i in range(n)
    )
    return "[" + ",".join(parts) + "]"


def chain_json(n: int) -> str:
    """n entities, each the parent of the one before: node0 in node1 in ... node(n-1)."""

    def parent(i: int) -> str:
        return f'{{"type":"Node","id":"n{i + 1}"}}' if i + 1 < n else ""

    parts = [
        f'{{"uid":{{"type":"Node","id":"n{i}"}},"attrs":{{}},"parents":[{parent(i)}]}}'
        for i in range(n)
    ]
    return "[" + ",".join(parts) + "]"


def policies_text(n: int) -> str:
    """n policies: per-agent permits on one of 200 actions with a condition, 1 in 10 a forbid."""
    out = []
    for i in range(n):
        if i % 10 == 0:
            out.append(
                f'forbid (principal == Agent::"a{i}", action, resource) '
                f"when {{ context.risk > {i % 5} }};"
            )
        else:
            out.append(
                f'permit (principal == Agent::"a{i}", action == Action::"t{i % 200}", '
                f'resource in Folder::"f{i % 300}") when {{ context.depth < {i % 4 + 1} }};'
            )
    return "\n".join(out)


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measured_load(load: Callable[[], object]) -> tuple[object, dict[str, float]]:
    before = rss_kb()
    start = time.perf_counter()
    out = load()
    seconds = time.perf_counter() - start
    live = rss_kb() - before
    peak = peak_kb() - before
    return out, {"seconds": seconds, "peak_mb": peak / 1024, "live_mb": live / 1024}


def run_case(name: str, data: Path) -> dict[str, float]:
    """In the child: load the case's input and measure."""
    from tether import Engine

    text = data.read_text()
    if name.startswith("entities"):
        _, m = measured_load(lambda: Engine("permit (principal, action, resource);", entities=text))
        return m
    if name == "chain-6000":
        engine, m = measured_load(
            lambda: Engine('permit (principal in Node::"n5999", action, resource);', entities=text)
        )
        assert isinstance(engine, Engine)
        assert engine.is_allowed('Node::"n0"', 'Action::"a"', 'Node::"n0"')
        return m
    if name == "upsert-1-into-1M":
        engine = Engine('permit (principal in Group::"g7", action, resource);', entities=text)
        times = []
        for i in range(20):
            new = [
                {
                    "uid": {"type": "User", "id": f"new{i}"},
                    "attrs": {"dept": "d1", "level": 1, "active": True},
                    "parents": [{"type": "Group", "id": "g7"}],
                }
            ]
            start = time.perf_counter()
            engine.upsert_entities(new)
            times.append(time.perf_counter() - start)
            assert engine.is_allowed(f'User::"new{i}"', 'Action::"a"', 'User::"u1"')
        return {"seconds": statistics.median(times), "peak_mb": 0.0, "live_mb": 0.0}
    if name == "policies-100k":
        _, m = measured_load(lambda: Engine(text))
        return m
    raise SystemExit(f"unknown case {name}")


CASES: dict[str, Callable[[], str]] = {
    "entities-100k": lambda: users_json(100_000),
    "entities-1M": lambda: users_json(1_000_000),
    "chain-6000": lambda: chain_json(6000),
    "upsert-1-into-1M": lambda: users_json(1_000_000),
    "policies-100k": lambda: policies_text(100_000),
}


def spread(xs: list[float], unit: str, fmt: str = "{:,.2f}") -> str:
    med = statistics.median(xs)
    return f"{fmt.format(med)} {unit} [{fmt.format(min(xs))}-{fmt.format(max(xs))}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("CASE", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child[0], Path(args.child[1]))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            data = Path(tmp) / f"{name}.txt"
            data.write_text(CASES[name]())
            size_mb = os.path.getsize(data) / 1e6
            runs = []
            for _ in range(args.rounds):
                out = subprocess.run(
                    [sys.executable, "-m", "benches.bench_scale", "--child", name, str(data)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                runs.append(json.loads(out.strip().splitlines()[-1]))
            rows.append((name, size_mb, runs))
            data.unlink()
    print("| case | input | time | peak RSS (load) | live | peak/live |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, size_mb, runs in rows:
        secs = [r["seconds"] for r in runs]
        t = (
            spread([s * 1000 for s in secs], "ms", "{:,.1f}")
            if max(secs) < 1
            else spread(secs, "s")
        )
        if name.startswith("upsert"):
            print(f"| {name} | {size_mb:,.0f} MB | {t} | - | - | - |")
            continue
        peak = statistics.median(r["peak_mb"] for r in runs)
        live = statistics.median(r["live_mb"] for r in runs)
        ratio = f"{peak / live:.1f}x" if live > 0 else "-"
        print(f"| {name} | {size_mb:,.0f} MB | {t} | {peak:,.0f} MB | {live:,.0f} MB | {ratio} |")


if __name__ == "__main__":
    main()
