"""Engine latency and throughput against cedarpy on the same policies and requests.

Run: python -m pytest benches/test_bench_engine.py --benchmark-only
(`python -m benches.compare` prints the ratio table used in the README.)
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import cedarpy
import pytest

from benches.workload import Workload, build, cedarpy_request
from tether import Engine

SIZES = [10, 100, 1000, 10000]
_cache: dict[int, tuple[Workload, Engine, Any, Any]] = {}


def setup(n: int) -> tuple[Workload, Engine, Any, Any]:
    if n not in _cache:
        w = build(n)
        eng = Engine(w.policies, entities=w.entities)
        ps = cedarpy.PolicySet.from_str(w.policies)
        ents = cedarpy.Entities.from_json_str(json.dumps(w.entities))
        _cache[n] = (w, eng, ps, ents)
    return _cache[n]


@pytest.mark.parametrize("n", SIZES)
def test_tether_is_allowed(benchmark: Any, n: int) -> None:
    w, eng, _, _ = setup(n)
    reqs = itertools.cycle(w.requests)

    def one() -> bool:
        p, a, r, c = next(reqs)
        return eng.is_allowed(p, a, r, c)

    benchmark(one)


@pytest.mark.parametrize("n", SIZES)
def test_tether_authorize(benchmark: Any, n: int) -> None:
    w, eng, _, _ = setup(n)
    reqs = itertools.cycle(w.requests)

    def one() -> object:
        p, a, r, c = next(reqs)
        return eng.authorize(p, a, r, c)

    benchmark(one)


@pytest.mark.parametrize("n", SIZES)
def test_tether_batch_10k(benchmark: Any, n: int) -> None:
    w, eng, _, _ = setup(n)
    batch = w.requests * 10
    benchmark(eng.authorize_batch, batch)


@pytest.mark.parametrize("n", SIZES)
def test_cedarpy_is_authorized(benchmark: Any, n: int) -> None:
    w, _, ps, ents = setup(n)
    reqs = itertools.cycle([cedarpy_request(r) for r in w.requests])
    benchmark.pedantic(
        lambda: cedarpy.is_authorized(next(reqs), ps, ents), rounds=50 if n >= 10000 else 300
    )
