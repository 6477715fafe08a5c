"""Property: whatever the ttl/max_ttl/deadline/renewals, a lease never outlives its caps."""

from __future__ import annotations

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.leases import (
    CallbackProvider,
    CredentialBroker,
    IssuedCredential,
    IssueRequest,
    Lease,
    LeaseExpired,
    TaskRef,
)
from tether.store import MemoryLeaseStore

T0 = 1_000_000.0
durations = st.floats(min_value=0.5, max_value=10_000, allow_nan=False, allow_infinity=False)


async def _issue(request: IssueRequest) -> IssuedCredential:
    return IssuedCredential(secret="k", provider_ref="r")


async def _renew(lease: Lease, ttl: float) -> None:
    return None


async def _revoke(lease: Lease) -> None:
    return None


@settings(max_examples=60, deadline=None)
@given(
    ttl=durations,
    max_ttl=durations,
    task_life=durations,
    parent_life=durations,
    steps=st.lists(st.tuples(durations, durations), max_size=6),
)
def test_expiry_never_exceeds_caps(
    ttl: float,
    max_ttl: float,
    task_life: float,
    parent_life: float,
    steps: list[tuple[float, float]],
) -> None:
    now = [T0]
    broker = CredentialBroker(
        MemoryLeaseStore(),
        {"p": CallbackProvider(_issue, _revoke, _renew)},
        clock=lambda: now[0],
    )
    parent = TaskRef("parent", "a", frozenset({"x"}), "i", (), T0 + parent_life)
    child = TaskRef("child", "a", frozenset({"x"}), "i", (), T0 + task_life, "parent")

    async def run() -> None:
        await broker.issue(parent, "p", ttl=1)
        lease = await broker.issue(child, "p", ttl=ttl, max_ttl=max_ttl)
        cap = min(lease.issued_at + max_ttl, child.deadline, parent.deadline)
        assert lease.expires_at <= cap
        for wait, increment in steps:
            now[0] += wait
            usable = now[0] < lease.expires_at
            try:
                await broker.renew(lease.lease_id, increment)
            except LeaseExpired:
                assert not usable
                return
            assert usable
            assert now[0] < lease.expires_at <= cap
            assert lease.expires_at <= now[0] + increment

    anyio.run(run)
