"""Shared fixtures for the task-session tests: the example world, a fake clock,
identities from a LocalIssuer and a lease broker whose provider records revocations."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.support import FakeClock
from tether.engine import Engine
from tether.identity import Authenticator, LocalIssuer
from tether.leases import (
    CallbackProvider,
    CredentialBroker,
    IssuedCredential,
    IssueRequest,
    Lease,
    Secret,
)
from tether.state import state_spec
from tether.store import MemoryLeaseStore

EXAMPLES = Path(tether.__file__).parent / "examples"
POLICIES = (EXAMPLES / "agents.cedar").read_text(encoding="utf-8")
SCHEMA = (EXAMPLES / "agents.cedarschema").read_text(encoding="utf-8")
ENTITIES: list[dict[str, Any]] = json.loads((EXAMPLES / "entities.json").read_text("utf-8"))
STATE_DOC: dict[str, Any] = tomllib.loads((EXAMPLES / "state.toml").read_text("utf-8"))

ORCH_ID = "spiffe://example.org/agents/orchestrator"
RES_ID = "spiffe://example.org/agents/researcher"
ORCH = f'Agent::"{ORCH_ID}"'
RESEARCHER = f'Agent::"{RES_ID}"'
AUDIENCE = "tether-tests"
T0 = 1_700_000_000.0


def example_engine(
    *,
    policies: str = POLICIES,
    entities: list[dict[str, Any]] | None = None,
    state: dict[str, Any] | None = None,
) -> Engine:
    """The example world; `entities`/`state` replace the example ones when given."""
    return Engine(
        policies,
        SCHEMA,
        json.dumps(ENTITIES if entities is None else entities),
        state=state_spec(STATE_DOC if state is None else state),
    )


def with_risk_limit(limit: int) -> dict[str, Any]:
    """The example state document with another `risk` budget limit."""
    doc = json.loads(json.dumps(STATE_DOC))
    doc["budgets"]["risk"]["limit"] = limit
    return doc


def entities_with(**clearance: int) -> list[dict[str, Any]]:
    """The example entities with some agents' clearance replaced (`orchestrator=1`)."""
    out = json.loads(json.dumps(ENTITIES))
    for e in out:
        name = e["uid"]["id"].rsplit("/", 1)[-1]
        if e["uid"]["type"] == "Agent" and name in clearance:
            e["attrs"]["clearance"] = clearance[name]
    return out


class World:
    """Helpers for test modules (they import nothing from conftest: with rootdir-style
    imports every test directory's conftest is a module named `conftest`)."""

    POLICIES = POLICIES
    SCHEMA = SCHEMA
    ENTITIES = ENTITIES
    STATE_DOC = STATE_DOC
    ORCH = ORCH
    RESEARCHER = RESEARCHER
    ORCH_ID = ORCH_ID
    RES_ID = RES_ID
    AUDIENCE = AUDIENCE
    T0 = T0
    engine = staticmethod(example_engine)
    with_risk_limit = staticmethod(with_risk_limit)
    entities_with = staticmethod(entities_with)


@pytest.fixture(scope="session")
def world() -> type[World]:
    return World


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(scope="session")
def engine() -> Engine:
    """Shared example engine (tasks hold their own state, so sharing is safe)."""
    return example_engine()


@pytest.fixture(scope="session")
def issuer() -> LocalIssuer:
    return LocalIssuer("example.org")


@pytest.fixture(scope="session")
def authenticator(issuer: LocalIssuer) -> Authenticator:
    return Authenticator(issuer.bundle_set(), audience=AUDIENCE)


@pytest.fixture
def mint(issuer: LocalIssuer) -> Callable[[str], str]:
    """JWT-SVID for a SPIFFE ID of example.org, audience AUDIENCE."""

    def _mint(spiffe_id: str) -> str:
        return issuer.mint_svid(spiffe_id, AUDIENCE)

    return _mint


@dataclass
class RecordingSource:
    """A secret source whose revocations are recorded by lease id."""

    issued: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)

    async def issue(self, request: IssueRequest) -> IssuedCredential:
        ref = f"ref-{len(self.issued)}"
        self.issued.append(ref)
        return IssuedCredential(secret=Secret(f"secret-{ref}"), provider_ref=ref)

    async def revoke(self, lease: Lease) -> None:
        self.revoked.append(lease.lease_id)

    def provider(self) -> CallbackProvider:
        return CallbackProvider(issue=self.issue, revoke=self.revoke)


@pytest.fixture
def source() -> RecordingSource:
    return RecordingSource()


@pytest.fixture
def broker(source: RecordingSource) -> Iterator[CredentialBroker]:
    yield CredentialBroker(MemoryLeaseStore(), {"db": source.provider()})
