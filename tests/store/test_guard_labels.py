"""Agent-scoped labels through the store: taint recorded in one Guard (process) is held
by the agent's next task in another, so it cannot be laundered by moving processes."""

from __future__ import annotations

import anyio
import pytest
from tests.store.guard_world import ORCH, RESEARCHER, engine, guard

from tether.identity import Authenticator, LocalIssuer
from tether.store.memory_state import MemoryStore
from tether.store.shared_state import SharedStore, StoreUnavailable
from tether.tasks import Guard

pytestmark = pytest.mark.anyio

GITHUB = 'Domain::"github.com"'


@pytest.mark.parametrize(("dataset", "egress_allowed"), [("payroll", False), ("wiki", True)])
async def test_taint_follows_the_agent_into_another_guard(
    pair: tuple[SharedStore, SharedStore], dataset: str, egress_allowed: bool
) -> None:
    # Attack: read restricted data in one process, exfiltrate from a fresh task in another.
    # Twin: the same two steps after reading unrestricted data.
    async with guard(pair[0], agent_labels=True) as a, guard(pair[1], agent_labels=True) as b:
        async with a.task(ORCH, intent="x") as reader:
            assert reader.authorize("read", f'Dataset::"{dataset}"').allowed
        async with b.task(ORCH, intent="x") as sender:
            assert sender.authorize("egress", GITHUB).allowed is egress_allowed
        async with b.task(RESEARCHER, intent="x") as other:  # another agent: untainted
            assert other.authorize("egress", GITHUB).allowed
    held = await pair[0].labels(ORCH)
    assert held == (frozenset() if egress_allowed else frozenset({"restricted"}))


async def test_taint_is_written_while_the_task_runs(pair: tuple[SharedStore, SharedStore]) -> None:
    async with guard(pair[0], agent_labels=True) as a, guard(pair[1], agent_labels=True) as b:
        async with a.task(ORCH, intent="x") as reader:
            assert reader.authorize("read", 'Dataset::"payroll"').allowed
            with anyio.fail_after(10):  # written in the background, before the task ends
                while await pair[1].labels(ORCH) != {"restricted"}:
                    await anyio.sleep(0.001)
            async with b.task(ORCH, intent="x") as sender:  # while the first is open
                assert not sender.authorize("egress", GITHUB).allowed


async def test_task_scoped_labels_stay_in_their_task() -> None:
    store = MemoryStore()
    async with guard(store) as a, guard(store) as b:  # `restricted` is task-scoped here
        assert a.labels is None
        async with a.task(ORCH, intent="x") as reader:
            assert reader.authorize("read", 'Dataset::"payroll"').allowed
        async with b.task(ORCH, intent="x") as sender:
            assert sender.authorize("egress", GITHUB).allowed
    assert await store.labels(ORCH) == frozenset()


class LabelsDown(MemoryStore):
    """A store that answers everything but agent labels."""

    async def labels(self, agent: str) -> frozenset[str]:
        raise StoreUnavailable("memory", "connection reset")


async def test_a_task_cannot_open_without_its_agents_labels() -> None:
    async with guard(LabelsDown(), agent_labels=True) as g:
        with pytest.raises(StoreUnavailable, match="connection reset"):
            async with g.task(ORCH, intent="x"):
                pass
    # on_store_error="allow": opens with what this engine remembers (nothing here).
    async with guard(LabelsDown(), agent_labels=True, on_store_error="allow") as g:
        async with g.task(ORCH, intent="x") as task:
            assert task.authorize("egress", GITHUB).allowed


@pytest.mark.parametrize(("stored", "egress_allowed"), [({"restricted"}, False), (set(), True)])
async def test_a_delegated_child_opens_with_its_own_agents_labels(
    store: SharedStore, stored: set[str], egress_allowed: bool
) -> None:
    # Attack: the researcher was tainted in another process; delegating to it in a fresh
    # tree must not clear that. Twin: the same delegation to an untainted researcher.
    issuer = LocalIssuer("example.org")
    if stored:
        await store.add_labels(RESEARCHER, sorted(stored))
    g = Guard(
        engine(agent_labels=True),
        Authenticator(issuer.bundle_set(), audience="tests"),
        store=store,
        allow_unauthenticated=True,
    )
    async with g, g.task(ORCH, intent="x") as parent:
        researcher_id = RESEARCHER.split('"')[1]
        child = await parent.delegate(issuer.mint_svid(researcher_id, "tests"))
        assert child.authorize("egress", GITHUB).allowed is egress_allowed
        assert parent.authorize("egress", GITHUB).allowed is egress_allowed  # taint flows up
