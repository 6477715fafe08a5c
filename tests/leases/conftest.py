"""Shared fixtures for the lease tests: a fake clock, task refs and recording providers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.support import FakeClock
from tether.leases import (
    CallbackProvider,
    CredentialBroker,
    IssuedCredential,
    IssueRequest,
    Lease,
    Secret,
    TaskRef,
)
from tether.store import MemoryLeaseStore

T0 = 1_700_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def _make_task(
    txn: str = "txn-1",
    *,
    scope: frozenset[str] = frozenset({"db:read", "db:write"}),
    deadline: float = T0 + 3600,
    parent_txn: str | None = None,
    agent: str = "spiffe://example.org/agent/planner",
    actors: tuple[str, ...] = ("spiffe://example.org/user/alice",),
) -> TaskRef:
    return TaskRef(
        txn=txn,
        agent=agent,
        scope=scope,
        intent="summarize invoices",
        actors=actors,
        deadline=deadline,
        parent_txn=parent_txn,
    )


@dataclass
class FakeSource:
    """A secret source that records every call and can be told to fail revocations."""

    issued: list[str] = field(default_factory=list)
    renewed: list[tuple[str, float]] = field(default_factory=list)
    revoked: list[Lease] = field(default_factory=list)
    revoke_failures: int = 0  # fail this many revoke calls before succeeding (-1: forever)
    revoke_calls: int = 0
    counter: int = 0

    def secret_for(self, n: int) -> str:
        return f"s3cr3t-value-{n:06d}"

    async def issue(self, request: IssueRequest) -> IssuedCredential:
        self.counter += 1
        ref = f"ref-{self.counter}"
        self.issued.append(ref)
        return IssuedCredential(secret=Secret(self.secret_for(self.counter)), provider_ref=ref)

    async def renew(self, lease: Lease, ttl: float) -> None:
        self.renewed.append((lease.lease_id, ttl))

    async def revoke(self, lease: Lease) -> None:
        self.revoke_calls += 1
        if self.revoke_failures < 0 or self.revoke_calls <= self.revoke_failures:
            raise ConnectionError("provider unavailable")
        self.revoked.append(lease)

    def provider(self, *, renewable: bool = True) -> CallbackProvider:
        return CallbackProvider(
            issue=self.issue, revoke=self.revoke, renew=self.renew if renewable else None
        )

    @property
    def revoked_ids(self) -> list[str]:
        return [lease.lease_id for lease in self.revoked]


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


TaskFactory = Callable[..., TaskRef]
BrokerFactory = Callable[..., CredentialBroker]


@pytest.fixture
def make_task() -> TaskFactory:
    """TaskRef builder; tests import nothing from conftest (module names would collide)."""
    return _make_task


@pytest.fixture
def make_broker(clock: FakeClock, source: FakeSource) -> BrokerFactory:
    def factory(**kwargs: object) -> CredentialBroker:
        store = kwargs.pop("store", None)
        store = MemoryLeaseStore() if store is None else store
        providers = kwargs.pop("providers", None)
        providers = {"db": source.provider()} if providers is None else providers
        return CredentialBroker(store, providers, clock=clock, **kwargs)  # type: ignore[arg-type]

    return factory
