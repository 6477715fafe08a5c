"""A worker process holding a Guard on a shared Redis store, driven over stdin/stdout.

``python -m tests.store.guard_worker URL PREFIX MODE LIMIT SLICE OVERDRAFT STALENESS
HOLD_TTL`` prints
"ready" once its Guard has loaded the revocation set, then answers one JSON line per
command line (JSON ``{"op": ..., "txn": ...}``) until stdin closes:

- ``open``: open a task of the orchestrator in tree ``txn``;
- ``decide``: one decision (``read`` the wiki: no budget) -> allowed / error / revoked;
- ``watch``: answer "watching", then decide until denied -> the wall time it was seen;
- ``spend``: spend the shared ``risk`` budget one unit at a time until it is used up.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import anyio
import anyio.to_thread
from tests.store.guard_world import ORCH, SEARCH, Mode, guard

from tether.store.redis_state import RedisStore
from tether.tasks import Denied, Guard, Task

WIKI = 'Dataset::"wiki"'


def say(obj: object) -> None:
    print(obj if isinstance(obj, str) else json.dumps(obj), flush=True)


def decide(task: Task) -> dict[str, Any]:
    try:
        d = task.authorize("read", WIKI)
    except Exception as exc:  # reported to the test, which asserts on it
        return {"allowed": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"allowed": d.allowed, "error": None, "revoked": task.revoked}


async def watch(task: Task) -> dict[str, Any]:
    say("watching")
    while True:
        d = task.authorize("read", WIKI)
        if not d.allowed:
            return {"denied_at": time.time(), "message": d.message}
        await anyio.sleep(0.0005)


async def spend(task: Task, mode: Mode) -> dict[str, Any]:
    spent = 0
    if mode == "strict":
        while True:
            try:
                await task.require("call_tool", SEARCH)
            except Denied:
                return {"spent": spent}
            spent += 1
    assert task.shared is not None
    budget = task.shared.slices["risk"]
    with anyio.fail_after(60):
        while True:
            # Spend only what is held (an uncovered spend still counts locally).
            while not budget.available and not budget.exhausted:
                await anyio.sleep(0.0005)
            if not budget.available:
                return {"spent": spent}
            d = task.authorize("call_tool", SEARCH)
            assert d.allowed, d.message
            spent += 1
            await anyio.sleep(0)


def task_spends(task: Task) -> bool:
    try:
        return task.authorize("call_tool", SEARCH).allowed
    except Denied:
        return False


async def serve(g: Guard, mode: Mode) -> None:
    tasks: dict[str, Task] = {}
    openers: list[Any] = []
    try:
        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            cmd = json.loads(line)
            op, txn = cmd["op"], cmd.get("txn", "")
            if op == "open":
                try:
                    opener = g.task(ORCH, intent="worker", txn=txn)
                    tasks[txn] = await opener.__aenter__()
                    openers.append(opener)
                    say({"ok": True})
                except Exception as exc:
                    say({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            elif op == "decide":
                say(decide(tasks[txn]))
            elif op == "watch":
                say(await watch(tasks[txn]))
            elif op == "decide_spend":  # one unit, if the slice holds it
                ok = task_spends(tasks[txn])
                say({"spent": int(ok)})
            elif op == "spend":
                say(await spend(tasks[txn], mode))
            elif op == "close":
                for opener in openers:
                    await opener.__aexit__(None, None, None)
                openers.clear()
                say({"ok": True})
    finally:
        for opener in openers:
            await opener.__aexit__(None, None, None)


async def main(argv: list[str]) -> None:
    url, prefix, mode, limit, size, overdraft, staleness, hold_ttl = argv
    store = RedisStore.from_url(url, prefix=prefix, timeout=0.5)
    g = guard(
        store,
        mode=mode,  # type: ignore[arg-type]
        risk_limit=int(limit),
        slice_size=int(size),
        overdraft=int(overdraft),
        max_staleness=float(staleness),
        hold_ttl=float(hold_ttl),
    )
    async with g:
        say("ready")
        await serve(g, mode)  # type: ignore[arg-type]
    await store.aclose()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
