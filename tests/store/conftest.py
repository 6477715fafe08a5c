"""Store fixtures: one redis-server per session, a fresh key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.store.redis_server import RedisServer

from tether.store.memory_state import MemoryStore
from tether.store.redis_state import RedisStore
from tether.store.shared_state import SharedStore


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's asyncio client runs on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[SharedStore]:
    made: SharedStore
    if request.param == "memory":
        made = MemoryStore()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        made = RedisStore.from_url(server.url, prefix=prefix)
    yield made
    await made.aclose()


@pytest.fixture(params=["memory", "redis"])
async def pair(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[tuple[SharedStore, SharedStore]]:
    """Two handles on one store, one per Guard (one object for the in-memory store)."""
    if request.param == "memory":
        m = MemoryStore()
        yield m, m
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    a = RedisStore.from_url(server.url, prefix=prefix)
    b = RedisStore.from_url(server.url, prefix=prefix)
    yield a, b
    await a.aclose()
    await b.aclose()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
