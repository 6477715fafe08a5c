"""AuthZEN evaluations per second over loopback: `tether serve`'s app under uvicorn on
127.0.0.1, called by an httpx client in the same process (client and server share the
GIL and the machine's cores, so this is a floor). Single evaluations and batches of 100
(evaluations/s = 1 / mean for single, 100 / mean for the batch), and a resource search
over 10,000 candidate records.

Run: python -m pytest benches/test_bench_authzen.py --benchmark-only
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

uvicorn = pytest.importorskip("uvicorn", reason="uvicorn not installed (pip install tether[serve])")

from tether.authzen import create_app, listening_socket  # noqa: E402
from tether.engine import Engine  # noqa: E402

TODO = Path(__file__).resolve().parent.parent / "tests" / "authzen" / "todo"
RICK = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"
ONE = {
    "subject": {"type": "user", "id": RICK},
    "action": {"name": "can_update_todo"},
    "resource": {"type": "todo", "id": "t1", "properties": {"ownerID": "x@y"}},
}


def serve(engine: Engine) -> Iterator[httpx.Client]:
    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine, None), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}") as c:
        yield c
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    yield from serve(Engine.from_files(TODO / "todo.cedar", entities=TODO / "entities.json"))


SEARCH = Path(__file__).resolve().parent.parent / "tests" / "authzen" / "search"
RECORDS = 10_000


@pytest.fixture(scope="module")
def search_client() -> Iterator[httpx.Client]:
    """The search interop scenario's policies over 10,000 records and 100 users."""
    depts = ["Sales", "Legal", "Finance", "Accounting"]
    users = [
        {
            "uid": {"type": "user", "id": f"u{i}"},
            "attrs": {"role": "manager" if i % 10 == 0 else "employee", "department": depts[i % 4]},
            "parents": [],
        }
        for i in range(100)
    ]
    records = [
        {
            "uid": {"type": "record", "id": f"r{i}"},
            "attrs": {
                "title": f"record {i}",
                "department": depts[i % 4],
                "owner": {"__entity": {"type": "user", "id": f"u{i % 100}"}},
            },
            "parents": [],
        }
        for i in range(RECORDS)
    ]
    engine = Engine((SEARCH / "search.cedar").read_text(), None, json.dumps(users + records))
    yield from serve(engine)


def test_authzen_resource_search_10k(benchmark: Any, search_client: httpx.Client) -> None:
    """One resource search deciding 10,000 candidates (a quarter are in the department)."""
    body = {
        "subject": {"type": "user", "id": "u1"},
        "action": {"name": "view"},
        "resource": {"type": "record"},
        "page": {"limit": 50},
    }

    def search() -> int:
        r = search_client.post("/access/v1/search/resource", json=body).json()
        return int(r["page"]["total"])

    assert benchmark(search) == RECORDS // 4


def test_authzen_single(benchmark: Any, client: httpx.Client) -> None:
    def one() -> bool:
        return bool(client.post("/access/v1/evaluation", json=ONE).json()["decision"])

    assert benchmark(one)


def test_authzen_batch_100(benchmark: Any, client: httpx.Client) -> None:
    body = {
        **ONE,
        "evaluations": [{"resource": {"type": "todo", "id": f"t{i}"}} for i in range(100)],
    }

    def batch() -> int:
        return len(client.post("/access/v1/evaluations", json=body).json()["evaluations"])

    assert benchmark(batch) == 100
