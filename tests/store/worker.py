"""A worker process for the multi-process store tests and benchmarks.

``python -m tests.store.worker spend URL PREFIX MODE LIMIT SLICE OVERDRAFT`` prints "ready",
waits for a line on stdin, spends one shared budget until it is used up, prints
``{"spent": n}``. ``python -m tests.store.worker follow URL PREFIX`` follows the revocation
log and prints ``{"subject": s, "received": t}`` per revocation until stdin closes.
"""

from __future__ import annotations

import json
import random
import sys
import time

import anyio
import anyio.to_thread

from tether.store.budgets import BudgetSlice, StrictBudget
from tether.store.redis_state import RedisStore
from tether.store.revocation_feed import RevocationFeed
from tether.store.shared_state import Charge, Revocation

KEY = "shared-budget"


def say(obj: object) -> None:
    print(obj if isinstance(obj, str) else json.dumps(obj), flush=True)


async def spend_strict(store: RedisStore, limit: int) -> int:
    budget = StrictBudget(store, [Charge(KEY, limit)])
    spent = 0
    while True:
        amount = random.randint(1, 3)
        if not await budget.spend(amount):
            amount = 1
            if not await budget.spend(1):
                return spent
        spent += amount


async def spend_sliced(store: RedisStore, limit: int, size: int, overdraft: int) -> int:
    budget = BudgetSlice(store, [Charge(KEY, limit)], slice_size=size, overdraft=overdraft)
    spent = 0
    async with anyio.create_task_group() as tg:
        await tg.start(budget.run)
        while True:
            if budget.try_spend(1):
                spent += 1
                if spent % 16 == 0:
                    await anyio.sleep(0)  # let the background refill run
                continue
            await budget.refill()
            if budget.try_spend(1):
                spent += 1
            elif budget.exhausted:
                break
        await budget.release()
        tg.cancel_scope.cancel()
    return spent


async def spend(url: str, prefix: str, mode: str, limit: int, size: int, overdraft: int) -> None:
    store = RedisStore.from_url(url, prefix=prefix)
    say("ready")
    await anyio.to_thread.run_sync(sys.stdin.readline)
    if mode == "strict":
        spent = await spend_strict(store, limit)
    else:
        spent = await spend_sliced(store, limit, size, overdraft)
    say({"spent": spent})
    await store.aclose()


async def follow(url: str, prefix: str) -> None:
    store = RedisStore.from_url(url, prefix=prefix)

    def apply(r: Revocation) -> None:
        say({"subject": r.subject, "received": time.time(), "sent": r.revoked_at})

    feed = RevocationFeed(store, apply, poll=0.5)
    async with anyio.create_task_group() as tg:
        await feed.sync()
        say("ready")
        tg.start_soon(feed.run)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the parent closes stdin
        tg.cancel_scope.cancel()
    await store.aclose()


def main(argv: list[str]) -> None:
    if argv[0] == "spend":
        url, prefix, mode, limit, size, overdraft = argv[1:7]
        anyio.run(spend, url, prefix, mode, int(limit), int(size), int(overdraft))
    else:
        anyio.run(follow, argv[1], argv[2])


if __name__ == "__main__":
    main(sys.argv[1:])
