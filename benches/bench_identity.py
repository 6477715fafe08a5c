"""Identity benchmarks: first (uncached) JWT-SVID verify vs cached re-verify.

Run: PYTHONPATH=python python -m pytest benches/bench_identity.py --benchmark-only
"""

from __future__ import annotations

from typing import Any

import pytest

from tether.identity import Authenticator, LocalIssuer, generate_proof_key, mint_wpt


@pytest.fixture(scope="module")
def setup() -> tuple[Authenticator, str, LocalIssuer]:
    issuer = LocalIssuer("bench.example")
    auth = Authenticator(issuer.bundle_set(), "svc")
    return auth, issuer.mint_svid("/agents/bench", "svc", ttl=3600), issuer


def test_first_verify(benchmark: Any, setup: tuple[Authenticator, str, LocalIssuer]) -> None:
    auth, token, _ = setup

    def run() -> None:
        auth.authenticate_sync(token)

    # Clear the cache before every round so each call does the full verification.
    benchmark.pedantic(run, setup=auth.clear_cache, rounds=500, iterations=1)
    assert len(auth.cache) == 1


def test_cached_verify(benchmark: Any, setup: tuple[Authenticator, str, LocalIssuer]) -> None:
    auth, token, _ = setup
    first = auth.authenticate_sync(token)
    assert benchmark(auth.authenticate_sync, token) is first


def test_wimse_verify(benchmark: Any, setup: tuple[Authenticator, str, LocalIssuer]) -> None:
    auth, _, issuer = setup
    private, jwk = generate_proof_key()
    wit = issuer.mint_wit("/agents/bench", jwk, ttl=3600)
    proofs = iter([mint_wpt(private, wit, "https://t/") for _ in range(3000)])

    def run() -> None:
        auth.authenticate_wimse_sync(wit, next(proofs), "https://t/")

    # WIT cached after the first call; each round verifies a fresh single-use proof.
    benchmark.pedantic(run, rounds=1000, iterations=1)
