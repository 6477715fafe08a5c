"""Lease records in Redis, so every broker of a deployment sees every lease.

One hash holds the records (lease id -> msgspec JSON, never a secret); a record that does
not decode is moved to a quarantine hash and replaced by a ``pending`` stand-in of the
scanning owner, so recovery revokes it by lease id and it never blocks a scan again.

An owner name is claimed with a token key that expires after ``claim_ttl`` seconds unless
renewed: the store renews it in the background every ``claim_ttl / 3`` while claimed, so a
broker that died (however it died) frees its name for a successor after ``claim_ttl``. A
broker cut off from Redis for longer can lose its claim; the renewal then logs an error.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tether.leases.errors import LeaseStoreBusy, LeaseStoreError
from tether.store.records import (
    LIVE_STATUSES,
    LeaseRecord,
    QuarantinedRow,
    StoreScan,
    lease_id_parts,
    orphan_record,
    valid_owner,
)
from tether.store.redis_state import client_from_url, redacted

__all__ = ["RedisLeaseStore"]

log = logging.getLogger("tether.store")

T = TypeVar("T")

_decoder = msgspec.json.Decoder(LeaseRecord)

# KEYS: owner key. ARGV: token, ttl ms. Renew only a claim that is still ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: owner key. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLeaseStore:
    """:class:`~tether.store.records.LeaseStore` on Redis (``redis>=5``, asyncio)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        name: str = "redis",
        prefix: str = "tether:",
        claim_ttl: float = 30.0,
    ) -> None:
        if not claim_ttl > 0:
            raise ValueError(f"claim_ttl must be positive seconds, got {claim_ttl!r}")
        self._client = client
        self.name = name
        self._prefix = prefix
        self._claim_ms = max(1, int(claim_ttl * 1000))
        self._k_records = f"{prefix}lease:records"
        self._k_quarantine = f"{prefix}lease:quarantine"
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._claims: dict[str, tuple[str, asyncio.Task[None]]] = {}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "tether:",
        timeout: float = 2.0,
        claim_ttl: float = 30.0,
        **redis_options: Any,
    ) -> RedisLeaseStore:
        """``redis://``, ``rediss://`` or ``unix://``; ``prefix`` as for ``RedisStore``."""
        client = client_from_url(url, timeout, redis_options)
        return cls(client, name=f"redis {redacted(url)}", prefix=prefix, claim_ttl=claim_ttl)

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            return await op()
        except (RedisError, OSError) as exc:
            raise LeaseStoreError(
                f"lease store {self.name}: {type(exc).__name__}: {exc}", self.name
            ) from exc

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}lease:owner:{owner}"

    async def put(self, record: LeaseRecord) -> None:
        body = msgspec.json.encode(record)
        await self._call(lambda: self._client.hset(self._k_records, record.lease_id, body))

    async def get(self, lease_id: str) -> LeaseRecord | None:
        raw = await self._call(lambda: self._client.hget(self._k_records, lease_id))
        if raw is None:
            return None
        try:
            return _decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise LeaseStoreError(
                f"lease store {self.name}: record {lease_id} does not decode ({exc});"
                " recover() quarantines it",
                self.name,
            ) from exc

    async def _rows(self) -> dict[bytes, bytes]:
        # Any: redis-py types replies for both its sync and async clients.
        rows: Any = await self._call(lambda: self._client.hgetall(self._k_records))
        return dict(rows)

    async def scan(self, owner: str, now: float) -> StoreScan:
        rows = await self._rows()
        records: list[LeaseRecord] = []
        quarantined: list[QuarantinedRow] = []
        for key_raw, raw in rows.items():
            key = key_raw.decode(errors="replace")
            try:
                record = _decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                quarantined.append(await self._quarantine(key, raw, str(exc), owner, now))
                continue
            if record.owner == owner and record.status in LIVE_STATUSES:
                records.append(record)
        for q in quarantined:
            if q.lease_id is not None:
                stand_in = orphan_record(q.lease_id, owner, now, q.reason)
                if stand_in is not None:
                    records.append(stand_in)
        return StoreScan(records, quarantined, [])

    async def _quarantine(
        self, key: str, raw: bytes, why: str, owner: str, now: float
    ) -> QuarantinedRow:
        """Move an undecodable row aside; a key that names a lease gets a stand-in."""
        reason = f"record does not decode: {why}"
        lease_id = key if lease_id_parts(key) is not None else None
        stand_in = None if lease_id is None else orphan_record(lease_id, owner, now, reason)

        async def move() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._k_quarantine, key, raw)
                if stand_in is not None:
                    pipe.hset(self._k_records, key, msgspec.json.encode(stand_in))
                else:
                    pipe.hdel(self._k_records, key)
                await pipe.execute()

        await self._call(move)
        return QuarantinedRow(key, reason, lease_id)

    async def purge(self, before: float) -> int:
        rows = await self._rows()
        doomed: list[bytes] = []
        for key, raw in rows.items():
            try:
                record = _decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # scan() quarantines it; purge only drops what it can read
            if record.status not in LIVE_STATUSES and record.updated_at < before:
                doomed.append(key)
        if doomed:
            await self._call(lambda: self._client.hdel(self._k_records, *doomed))
        return len(doomed)

    async def size(self) -> int:
        return int(await self._call(lambda: self._client.hlen(self._k_records)))

    async def claim(self, owner: str) -> None:
        key = self._owner_key(valid_owner(owner))
        token = secrets.token_hex(16)
        won = await self._call(lambda: self._client.set(key, token, nx=True, px=self._claim_ms))
        if not won:
            raise LeaseStoreBusy(
                f"owner {owner!r} of lease store {self.name} is held by a live broker "
                f"(or one that died less than {self._claim_ms / 1000:g}s ago); give this "
                "broker another owner name, or stop that one",
                self.name,
            )
        renewer = asyncio.get_running_loop().create_task(self._keep(owner, key, token))
        self._claims[owner] = (token, renewer)

    async def _keep(self, owner: str, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._claim_ms / 3000)
            try:
                kept = await self._call(
                    lambda: self._renew(keys=[key], args=[token, self._claim_ms])
                )
            except LeaseStoreError as exc:
                log.warning("could not renew the claim on owner %r: %s", owner, exc)
                continue
            if not kept:
                log.error("lost the claim on owner %r of %s (expired)", owner, self.name)
                return

    async def release(self, owner: str) -> None:
        held = self._claims.pop(owner, None)
        if held is None:
            return
        token, renewer = held
        renewer.cancel()
        key = self._owner_key(owner)
        await self._call(lambda: self._release(keys=[key], args=[token]))

    async def close(self) -> None:
        for owner in list(self._claims):
            try:
                await self.release(owner)
            except LeaseStoreError as exc:  # the claim then expires by itself
                log.warning("could not release owner %r: %s", owner, exc)
        await self._client.aclose()
