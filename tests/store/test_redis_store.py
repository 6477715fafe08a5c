"""What only the Redis store has: URLs, prefixes, outages, restarts, many processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest
import redis.asyncio
from tests.store.redis_server import (
    RedisServer,
    free_port,
    read_line,
    require_redis_server,
    start_worker,
    stop_workers,
)

from tether import TetherError
from tether.store.budgets import BudgetSlice
from tether.store.redis_state import RedisStore
from tether.store.revocation_feed import RevocationFeed
from tether.store.shared_state import Charge, Revocation, StoreError, StoreUnavailable

pytestmark = pytest.mark.anyio


def rev(subject: str) -> Revocation:
    return Revocation(kind="task", subject=subject, reason="test", revoked_at=time.time())


async def test_unix_socket_url(redis_server: RedisServer, prefix: str) -> None:
    store = RedisStore.from_url(redis_server.unix_url, prefix=prefix)
    try:
        assert (await store.revoke(rev("over-unix"))).seq == 1
        assert store.name == f"redis {redis_server.unix_url}"
    finally:
        await store.aclose()


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(StoreError, match=r"unsupported Redis URL scheme 'http'.*redis://"):
        RedisStore.from_url("http://127.0.0.1:6379")


async def test_password_is_redacted_from_the_name_and_errors() -> None:
    require_redis_server()
    port = free_port()  # nothing listens there
    store = RedisStore.from_url(f"redis://app:s3cret@127.0.0.1:{port}/0", timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.spent("b")
        assert "s3cret" not in str(caught.value) and "s3cret" not in store.name
        assert f"redis redis://app:***@127.0.0.1:{port}/0" in str(caught.value)
    finally:
        await store.aclose()


async def test_unreachable_store_fails_closed_with_a_typed_error() -> None:
    require_redis_server()
    port = free_port()
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.reserve([Charge("b", 10)], 1)
        assert isinstance(caught.value, TetherError)
        assert caught.value.store == f"redis redis://127.0.0.1:{port}/0"
        assert "ConnectionError" in caught.value.cause
    finally:
        await store.aclose()


async def test_prefixes_keep_deployments_apart(redis_server: RedisServer, prefix: str) -> None:
    one = RedisStore.from_url(redis_server.url, prefix=prefix + "one:")
    two = RedisStore.from_url(redis_server.url, prefix=prefix + "two:")
    try:
        await one.revoke(rev("only-in-one"))
        await one.reserve([Charge("b", 10)], 10)
        assert (await two.revocations()).revocations == ()
        assert (await two.reserve([Charge("b", 10)], 10)).granted == 10
        assert (await one.revocations()).revocations[0].subject == "only-in-one"
    finally:
        await one.aclose()
        await two.aclose()


async def test_state_ttl_expires_idle_tree_state_only(
    redis_server: RedisServer, prefix: str
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, state_ttl=60)
    raw = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await store.reserve([Charge("b", 10)], 1)
        await store.reserve([Charge("refused", 1)], 5)  # refused: creates no key to expire
        await store.record_decision("tree", True)
        await store.revoke(rev("t"))
        await store.add_labels("agent", ["restricted"])
        assert 0 < await raw.pttl(f"{prefix}budget:b") <= 60_000
        assert 0 < await raw.pttl(f"{prefix}mon:tree") <= 60_000
        assert await raw.exists(f"{prefix}budget:refused") == 0
        assert await raw.pttl(f"{prefix}rev:set") == -1  # revocations never expire
        assert await raw.pttl(f"{prefix}labels:agent") == -1  # nor do agent labels
    finally:
        await store.aclose()
        await raw.aclose()


async def test_revoke_waiting_for_missing_replicas_is_not_acknowledged(
    redis_server: RedisServer, prefix: str
) -> None:
    # WAIT gets half the timeout; the other half is margin for a loaded machine to reply.
    store = RedisStore.from_url(redis_server.url, prefix=prefix, wait_replicas=1, timeout=2.0)
    try:
        with pytest.raises(StoreUnavailable, match="reached 0 of 1 replicas"):
            await store.revoke(rev("needs-a-replica"))
    finally:
        await store.aclose()


async def test_a_trimmed_log_makes_the_feed_reload(redis_server: RedisServer, prefix: str) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, revocation_log=1)
    applied: list[str] = []
    feed = RevocationFeed(store, lambda r: applied.append(r.subject), poll=0.01)
    try:
        await feed.sync()
        for i in range(200):  # MAXLEN ~ trims whole nodes, so write enough to trim one
            await store.revoke(rev(f"t{i}"))
        assert await store.revocations_after(0, 0.01) is None
        await feed.poll_once()  # reloads the whole set instead of missing the trimmed ones
        assert set(applied) == {f"t{i}" for i in range(200)} and feed.seq == 200
    finally:
        await store.aclose()


async def wait_until(condition: object, what: str, limit: float = 20.0) -> None:
    """Poll a condition (a deadline that only fails a hung test, not a speed check)."""
    with anyio.fail_after(limit):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.01)


async def test_redis_killed_and_restarted(tmp_path: Path, prefix: str) -> None:
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    store = RedisStore.from_url(server.url, prefix=prefix, timeout=0.5)
    applied: list[str] = []
    feed = RevocationFeed(store, lambda r: applied.append(r.subject), poll=0.1, max_backoff=0.2)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(feed.run)
            await store.revoke(rev("before-crash"))
            await store.reserve([Charge("b", 10)], 4)
            await wait_until(lambda: "before-crash" in applied, "feed sees the first revocation")

            server.kill()
            with pytest.raises(StoreUnavailable, match=f"redis {server.url}"):
                await store.revoke(rev("during-outage"))
            with pytest.raises(StoreUnavailable):
                await store.reserve([Charge("b", 10)], 1)
            await wait_until(lambda: not feed.healthy, "feed notices the outage")
            with pytest.raises(StoreUnavailable, match="revocation feed"):
                feed.check()

            server.start()  # same port and data directory: the AOF brings the data back
            after = await store.revoke(rev("after-restart"))  # reconnects by itself
            assert after.seq == 2  # the acknowledged revocation survived, numbering goes on
            await wait_until(lambda: "after-restart" in applied and feed.healthy, "recovery")
            snapshot = await store.revocations()
            assert [r.subject for r in snapshot.revocations] == ["before-crash", "after-restart"]
            assert await store.spent("b") == 4  # the reservation survived as well
            tg.cancel_scope.cancel()
    finally:
        await store.aclose()
        server.kill()


async def test_slice_keeps_spending_its_reservation_during_an_outage(
    tmp_path: Path, prefix: str
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    store = RedisStore.from_url(server.url, prefix=prefix, timeout=0.5)
    budget = BudgetSlice(store, [Charge("b", 100)], slice_size=5, overdraft=2)
    try:
        await budget.refill()
        server.kill()
        with pytest.raises(StoreUnavailable):
            await budget.refill()
        # What was reserved is safe to spend; the overdraft is the only debt, then deny.
        assert sum(1 for _ in range(10) if budget.try_spend(1)) == 7
    finally:
        await store.aclose()
        server.kill()


# ----------------------------------------------------------------------------- processes


def run_spenders(url: str, prefix: str, mode: str, limit: int, size: int, overdraft: int) -> int:
    procs = [
        start_worker("spend", url, prefix, mode, str(limit), str(size), str(overdraft))
        for _ in range(4)
    ]
    for p in procs:
        assert read_line(p) == "ready"
    for p in procs:  # start them together so they contend
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    total = 0
    for p in procs:
        total += json.loads(read_line(p, 120))["spent"]
        assert p.wait(30) == 0
    return total


async def test_processes_sharing_a_budget_in_strict_mode_spend_exactly_the_limit(
    redis_server: RedisServer, prefix: str
) -> None:
    total = run_spenders(redis_server.url, prefix, "strict", 500, 0, 0)
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    try:
        assert total == 500 == await store.spent("shared-budget")
    finally:
        await store.aclose()


@pytest.mark.parametrize("overdraft", [0, 8])
async def test_processes_sharing_sliced_budgets_stay_within_the_bound(
    redis_server: RedisServer, prefix: str, overdraft: int
) -> None:
    limit, processes = 2000, 4
    total = run_spenders(redis_server.url, prefix, "sliced", limit, 50, overdraft)
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    try:
        # Every worker stopped only once the store said the budget was used up, and gave
        # back what it had not spent: so at least the limit was spent, at most the bound.
        assert limit <= total <= limit + processes * overdraft
        assert await store.spent("shared-budget") == total
    finally:
        await store.aclose()


async def test_a_revocation_reaches_every_process(redis_server: RedisServer, prefix: str) -> None:
    followers = [start_worker("follow", redis_server.url, prefix) for _ in range(3)]
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    try:
        for p in followers:
            assert read_line(p) == "ready"
        await store.revoke(rev("revoked-everywhere"))
        for p in followers:
            assert json.loads(read_line(p))["subject"] == "revoked-everywhere"
    finally:
        await store.aclose()
        stop_workers(followers)
