"""Shared state in Redis, for workers spread over processes and machines.

Every read-modify-write is one server-side Lua script, so it is atomic and costs one round
trip. Revocations are written to a hash (the current set) and appended to a stream (the
log) by the same script; the log's entry ids are the revocation sequence numbers
(``<seq>-0``), so a watcher resumes exactly where it stopped and can tell when entries were
trimmed or the server lost its data (it then reloads the whole set).

The client is redis-py's asyncio client (so this store needs the asyncio backend). It
reconnects by itself: a command on a dead connection is retried once on a fresh one, and
when that fails too the call raises :class:`StoreUnavailable` at once instead of waiting:
decisions that need shared state deny, they do not hang.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from tether.store.shared_state import (
    Charge,
    Grant,
    MonitorCounts,
    Revocation,
    RevocationSnapshot,
    StoreError,
    StoreUnavailable,
    bucket_of,
    check_amount,
    check_charges,
    check_slice,
)

__all__ = ["RedisStore"]

T = TypeVar("T")

_SCHEMES = ("redis", "rediss", "unix")
# What forget() drops per key: budget totals, their slices, windows, monitor counts.
_TREE_KINDS = ("budget", "slices", "slice-exp", "win", "mon")

# KEYS: set, seq, log. ARGV: field, record (JSON without seq), log max length.
_REVOKE = """
local seq = redis.call('INCR', KEYS[2])
local value = seq .. '\\t' .. ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], value)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'r', value)
return seq
"""

# KEYS: budget keys. ARGV: amount, settle, partial (0/1), ttl ms (0: none), one limit per key.
_RESERVE = """
local amount = tonumber(ARGV[1])
local settle = tonumber(ARGV[2])
local room = nil
for i, key in ipairs(KEYS) do
  local cur = tonumber(redis.call('GET', key) or '0')
  if settle > 0 then cur = redis.call('INCRBY', key, settle) end
  local r = tonumber(ARGV[4 + i]) - cur
  if room == nil or r < room then room = r end
end
local granted = 0
if ARGV[3] == '1' then
  granted = math.max(0, math.min(amount, room))
elseif amount <= room then
  granted = amount
end
for _, key in ipairs(KEYS) do
  if granted > 0 then redis.call('INCRBY', key, granted) end
  if ARGV[4] ~= '0' and redis.call('EXISTS', key) == 1 then redis.call('PEXPIRE', key, ARGV[4]) end
end
return {granted, room - granted}
"""

# KEYS: per budget key, its total, its slices (holder -> amount) and their expiries (zset).
# ARGV: amount, used, settle, holder, ttl ms, state ttl ms (0: none), one limit per key.
_RESERVE_SLICE = """
local amount = tonumber(ARGV[1])
local used = tonumber(ARGV[2])
local settle = tonumber(ARGV[3])
local holder = ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS / 3
local room = nil
for i = 1, n do
  local total, slices, expiry = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  for _, h in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
    local gone = tonumber(redis.call('HGET', slices, h) or '0')
    if gone > 0 then redis.call('DECRBY', total, gone) end
    redis.call('HDEL', slices, h)
    redis.call('ZREM', expiry, h)
  end
  local held = tonumber(redis.call('HGET', slices, holder) or '0')
  local from_slice = math.min(used, held)
  redis.call('HSET', slices, holder, held - from_slice)
  redis.call('INCRBY', total, used - from_slice + settle)
  local r = tonumber(ARGV[6 + i]) - tonumber(redis.call('GET', total))
  if room == nil or r < room then room = r end
end
local granted = math.max(0, math.min(amount, room))
for i = 1, n do
  local total, slices, expiry = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if granted > 0 then
    redis.call('INCRBY', total, granted)
    redis.call('HINCRBY', slices, holder, granted)
  end
  redis.call('ZADD', expiry, now + tonumber(ARGV[5]), holder)
  if ARGV[6] ~= '0' then
    for _, k in ipairs({total, slices, expiry}) do redis.call('PEXPIRE', k, ARGV[6]) end
  end
end
return {granted, room - granted}
"""

# KEYS: as for _RESERVE_SLICE. ARGV: holder, unspent.
_RELEASE_SLICE = """
local unspent = tonumber(ARGV[2])
for i = 1, #KEYS / 3 do
  local total, slices, expiry = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local held = redis.call('HGET', slices, ARGV[1])
  if held then
    local back = math.min(unspent, tonumber(held))
    local cur = tonumber(redis.call('GET', total) or '0')
    redis.call('SET', total, math.max(0, cur - back), 'KEEPTTL')
    redis.call('HDEL', slices, ARGV[1])
    redis.call('ZREM', expiry, ARGV[1])
  end
end
return 0
"""

# KEYS: budget keys. ARGV: amount.
_RELEASE = """
local amount = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local cur = tonumber(redis.call('GET', key) or '0')
  redis.call('SET', key, math.max(0, cur - amount))
end
return 0
"""

# KEYS: window hash. ARGV: current bucket, oldest bucket kept, delta, ttl ms.
_WINDOW = """
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
local oldest = tonumber(ARGV[2])
local total = 0
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  if tonumber(flat[i]) < oldest then
    redis.call('HDEL', KEYS[1], flat[i])
  else
    total = total + tonumber(flat[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return total
"""

# KEYS: monitor hash. ARGV: allowed (0/1), ttl ms (0: none).
_DECISION = """
local n = redis.call('HINCRBY', KEYS[1], 'decisions', 1)
local denials
local streak
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'streak', 0)
  denials = tonumber(redis.call('HGET', KEYS[1], 'denials') or '0')
  streak = 0
else
  denials = redis.call('HINCRBY', KEYS[1], 'denials', 1)
  streak = redis.call('HINCRBY', KEYS[1], 'streak', 1)
end
if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {n, denials, streak}
"""


def redacted(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode_revocation(value: bytes | str) -> Revocation:
    raw = value.encode() if isinstance(value, str) else value
    seq, _, body = raw.partition(b"\t")
    record = msgspec.json.decode(body, type=Revocation)
    return msgspec.structs.replace(record, seq=int(seq))


def client_from_url(url: str, timeout: float, redis_options: dict[str, Any]) -> aioredis.Redis:
    """A lazily connecting client for a ``redis://``, ``rediss://`` or ``unix://`` URL that
    never waits longer than ``timeout`` and retries once on a fresh connection."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise StoreError(
            f"unsupported Redis URL scheme {scheme!r} in {redacted(url)!r}: "
            "use redis://, rediss:// or unix://"
        )
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # One quick retry on a fresh connection is the reconnect after a server restart;
        # more would only delay the fail-closed answer.
        "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    options.update(redis_options)
    options["protocol"] = 2  # RESP2: the reply shapes parsed here and in redis_leases
    return aioredis.Redis.from_url(url, **options)


class RedisStore:
    """:class:`~tether.store.shared_state.SharedStore` on Redis (``redis>=5``, asyncio)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        name: str = "redis",
        prefix: str = "tether:",
        timeout: float = 2.0,
        revocation_log: int = 100_000,
        wait_replicas: int = 0,
        state_ttl: float | None = None,
    ) -> None:
        if state_ttl is not None and state_ttl <= 0:
            raise ValueError("state_ttl must be positive (or None: keep until forget())")
        self._client = client
        # Milliseconds of idleness after which a budget or monitor key vanishes; 0 = never.
        self._ttl_ms = 0 if state_ttl is None else max(1, int(state_ttl * 1000))
        self._name = name
        self._prefix = prefix
        self._timeout = timeout
        self._log_len = revocation_log
        self._wait_replicas = wait_replicas
        self._k_set = f"{prefix}rev:set"
        self._k_seq = f"{prefix}rev:seq"
        self._k_log = f"{prefix}rev:log"
        self._revoke_script = client.register_script(_REVOKE)
        self._reserve_script = client.register_script(_RESERVE)
        self._release_script = client.register_script(_RELEASE)
        self._reserve_slice_script = client.register_script(_RESERVE_SLICE)
        self._release_slice_script = client.register_script(_RELEASE_SLICE)
        self._window_script = client.register_script(_WINDOW)
        self._decision_script = client.register_script(_DECISION)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "tether:",
        timeout: float = 2.0,
        revocation_log: int = 100_000,
        wait_replicas: int = 0,
        state_ttl: float | None = None,
        **redis_options: Any,
    ) -> RedisStore:
        """Connect lazily to ``redis://``, ``rediss://`` (TLS) or ``unix://`` URLs.

        ``prefix`` namespaces every key so several deployments can share one Redis.
        ``timeout`` bounds connecting and every reply. ``wait_replicas`` makes
        :meth:`revoke` wait until that many replicas hold the revocation (Redis ``WAIT``).
        ``state_ttl`` (seconds) expires budget and monitor keys left idle that long, a safety
        net for trees nobody :meth:`forget`s; it must exceed the longest task tree's life, or
        an idle tree's budget would start again from zero. Revocations and labels never
        expire. ``redis_options`` go to :meth:`redis.asyncio.Redis.from_url`.
        """
        client = client_from_url(url, timeout, redis_options)
        return cls(
            client,
            name=f"redis {redacted(url)}",
            prefix=prefix,
            timeout=timeout,
            revocation_log=revocation_log,
            wait_replicas=wait_replicas,
            state_ttl=state_ttl,
        )

    @property
    def name(self) -> str:
        return self._name

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            return await op()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(self._name, f"{type(exc).__name__}: {exc}") from exc
        except RedisError as exc:
            raise StoreError(f"shared store {self._name}: {type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------ revocations

    async def revoke(self, revocation: Revocation) -> Revocation:
        body = msgspec.json.encode(msgspec.structs.replace(revocation, seq=0))
        keys = [self._k_set, self._k_seq, self._k_log]
        args: list[str | bytes | int] = [revocation.key, body, self._log_len]
        seq = int(await self._call(lambda: self._revoke_script(keys=keys, args=args)))
        if self._wait_replicas:
            timeout_ms = max(1, int(self._timeout * 500))  # half: the reply must beat the socket
            acked = int(
                await self._call(lambda: self._client.wait(self._wait_replicas, timeout_ms))
            )
            if acked < self._wait_replicas:
                raise StoreUnavailable(
                    self._name,
                    f"revocation {seq} reached {acked} of {self._wait_replicas} replicas",
                )
        return msgspec.structs.replace(revocation, seq=seq)

    async def revocations(self) -> RevocationSnapshot:
        async def snapshot() -> list[Any]:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hvals(self._k_set)
                pipe.get(self._k_seq)
                return list(await pipe.execute())

        values, seq = await self._call(snapshot)
        records = sorted((_decode_revocation(v) for v in values), key=lambda r: r.seq)
        return RevocationSnapshot(tuple(records), int(seq or 0))

    async def revocations_after(self, seq: int, wait: float) -> Sequence[Revocation] | None:
        # Block for less than the socket timeout, or an idle log would look like an outage.
        block_ms = max(1, int(min(wait, self._timeout / 2) * 1000))
        # Any: redis-py types the RESP3 shape; with the default RESP2 this is
        # [[stream, [(id, {field: value})...]]].
        reply: Any = await self._call(
            lambda: self._client.xread({self._k_log: f"{seq}-0"}, block=block_ms)
        )
        if not reply:
            # Nothing new, or the server lost its data (restart without persistence): then
            # its sequence went backwards and only a full reload is correct.
            current = await self._call(lambda: self._client.get(self._k_seq))
            return None if int(current or 0) < seq else []
        entries = reply[0][1]
        out = [_decode_revocation(fields[b"r"]) for _, fields in entries]
        if out[0].seq != seq + 1:
            return None  # trimmed past our cursor: some revocations are not in the log
        return out

    # ------------------------------------------------------------------ budgets

    def _budget(self, key: str) -> str:
        return f"{self._prefix}budget:{key}"

    async def reserve(
        self, charges: Sequence[Charge], amount: int, *, settle: int = 0, partial: bool = False
    ) -> Grant:
        check_charges(charges)
        check_amount("amount", amount)
        check_amount("settle", settle)
        keys = [self._budget(c.key) for c in charges]
        args = [amount, settle, 1 if partial else 0, self._ttl_ms, *(c.limit for c in charges)]
        granted, remaining = await self._call(lambda: self._reserve_script(keys=keys, args=args))
        return Grant(int(granted), int(remaining))

    async def release(self, keys: Sequence[str], amount: int) -> None:
        check_amount("amount", amount)
        if not keys or not amount:
            return
        full = [self._budget(k) for k in keys]
        await self._call(lambda: self._release_script(keys=full, args=[amount]))

    async def spent(self, key: str) -> int:
        return int(await self._call(lambda: self._client.get(self._budget(key))) or 0)

    def _slice_keys(self, keys: Sequence[str]) -> list[str]:
        return [
            f"{self._prefix}{kind}:{k}" for k in keys for kind in ("budget", "slices", "slice-exp")
        ]

    async def reserve_slice(
        self,
        charges: Sequence[Charge],
        amount: int,
        *,
        holder: str,
        ttl: float,
        used: int = 0,
        settle: int = 0,
    ) -> Grant:
        check_slice(charges, amount, used, settle, ttl)
        keys = self._slice_keys([c.key for c in charges])
        args: list[str | int] = [amount, used, settle, holder, max(1, int(ttl * 1000))]
        args += [self._ttl_ms, *(c.limit for c in charges)]
        granted, remaining = await self._call(
            lambda: self._reserve_slice_script(keys=keys, args=args)
        )
        return Grant(int(granted), int(remaining))

    async def release_slice(self, keys: Sequence[str], *, holder: str, unspent: int) -> None:
        check_amount("unspent", unspent)
        if not keys:
            return
        full = self._slice_keys(keys)
        await self._call(lambda: self._release_slice_script(keys=full, args=[holder, unspent]))

    # ------------------------------------------------------------------ counters, labels

    async def add_count(self, key: str, delta: int, *, now: float, window: float) -> int:
        check_amount("delta", delta)
        current, oldest = bucket_of(now, window)
        args = [current, oldest, delta, max(1, int(window * 1000))]
        full = f"{self._prefix}win:{key}"
        return int(await self._call(lambda: self._window_script(keys=[full], args=args)))

    async def add_labels(self, agent: str, labels: Sequence[str]) -> frozenset[str]:
        key = f"{self._prefix}labels:{agent}"

        async def add() -> set[bytes]:
            async with self._client.pipeline(transaction=True) as pipe:
                if labels:
                    pipe.sadd(key, *labels)
                pipe.smembers(key)
                result = await pipe.execute()
            return set(result[-1])

        return frozenset(_text(m) for m in await self._call(add))

    async def labels(self, agent: str) -> frozenset[str]:
        members = await self._call(lambda: self._client.smembers(f"{self._prefix}labels:{agent}"))
        return frozenset(_text(m) for m in members)

    async def record_decision(self, tree: str, allowed: bool) -> MonitorCounts:
        key = f"{self._prefix}mon:{tree}"
        n, denials, streak = await self._call(
            lambda: self._decision_script(keys=[key], args=[1 if allowed else 0, self._ttl_ms])
        )
        return MonitorCounts(int(n), int(denials), int(streak))

    async def forget(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        full = [f"{self._prefix}{kind}:{k}" for k in keys for kind in _TREE_KINDS]
        await self._call(lambda: self._client.delete(*full))

    async def aclose(self) -> None:
        await self._client.aclose()
