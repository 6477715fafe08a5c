"""What a lease store holds, and the protocol every store implements.

The broker writes a record *before* it asks a provider for a secret and updates it once the
provider answers, so a broker that crashed can be replaced by one that finds every lease that
might still be alive and revokes it. Records hold what a provider needs to revoke
(``lease_id``, ``provider_ref``) and never the secret itself: the store is not a vault, and
anything written here should be safe to read in a backup or a debugging session.

Times in records are wall-clock epoch seconds (for people and for retention); the broker
decides expiry on its own monotonic clock and never reads these back for that.
"""

from __future__ import annotations

import re
from typing import Final, Literal, Protocol, runtime_checkable

import msgspec

__all__ = [
    "LIVE_STATUSES",
    "TERMINAL_STATUSES",
    "LeaseRecord",
    "LeaseStatus",
    "LeaseStore",
    "QuarantinedRow",
    "StoreScan",
    "lease_id_parts",
    "orphan_record",
    "valid_owner",
]

LeaseStatus = Literal["pending", "issued", "revoke_failed", "revoked", "failed"]
"""Lifecycle of a record.

``pending``: written before the provider was asked; the credential may or may not exist.
``issued``: the provider returned a credential; it is alive until revoked.
``revoke_failed``: revocation was attempted and the provider did not confirm it.
``revoked``: the provider confirmed revocation. Terminal.
``failed``: the provider refused to issue (raised), so nothing was created. Terminal.
"""

# Every status in which a credential may still exist at the provider. recover() revokes these.
LIVE_STATUSES: Final[frozenset[str]] = frozenset({"pending", "issued", "revoke_failed"})
TERMINAL_STATUSES: Final[frozenset[str]] = frozenset({"revoked", "failed"})

# tasks/<txn>/<provider>/<16 hex>: the id alone names the provider to revoke at, so a lease
# can be revoked even when nothing else of its record survived.
LEASE_ID_RE: Final = re.compile(
    r"tasks/([^/\"\x00-\x1f]{1,256})/([^/\"\x00-\x1f]{1,128})/([0-9a-f]{16})"
)
_OWNER_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def lease_id_parts(lease_id: str) -> tuple[str, str] | None:
    """``(txn, provider)`` of a well-formed lease id, else None."""
    m = LEASE_ID_RE.fullmatch(lease_id)
    return None if m is None else (m.group(1), m.group(2))


def valid_owner(owner: str) -> str:
    if not _OWNER_RE.fullmatch(owner):
        raise ValueError(f"owner must match {_OWNER_RE.pattern}: {owner!r}")
    return owner


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the store knows about one lease. Contains no secret by construction."""

    lease_id: str
    provider: str
    txn: str
    agent: str
    scope: tuple[str, ...]
    issued_at: float
    ttl: float
    max_ttl: float
    expires_at: float
    renewable: bool
    status: LeaseStatus
    parent_txn: str | None = None
    # Set once the provider answered; None while pending (a crash in that window leaves the
    # provider to find the credential by lease_id, which it was told at issue).
    provider_ref: str | None = None
    revoke_attempts: int = 0
    last_error: str | None = None
    # The broker that issued it: recover() only touches its own owner's records.
    owner: str = "default"
    updated_at: float = 0.0


def orphan_record(lease_id: str, owner: str, now: float, why: str) -> LeaseRecord | None:
    """A stand-in for a record that could not be read: enough to revoke by lease id."""
    parts = lease_id_parts(lease_id)
    if parts is None:
        return None
    txn, provider = parts
    return LeaseRecord(
        lease_id=lease_id,
        provider=provider,
        txn=txn,
        agent="",
        scope=(),
        issued_at=0.0,
        ttl=0.0,
        max_ttl=0.0,
        expires_at=0.0,
        renewable=False,
        status="pending",
        owner=owner,
        updated_at=now,
        last_error=why,
    )


class QuarantinedRow(msgspec.Struct, frozen=True):
    """A stored row that could not be decoded; kept aside for forensics.

    ``lease_id`` is set when the row's key still names a lease: recovery then revokes that
    lease by id. When it is None, nothing identifies the credential and ``reason`` says so.
    """

    key: str
    reason: str
    lease_id: str | None


class StoreScan(msgspec.Struct, frozen=True):
    """What :meth:`LeaseStore.scan` found: live records, rows set aside, unreadable damage."""

    records: list[LeaseRecord]
    quarantined: list[QuarantinedRow] = []
    damage: list[str] = []


@runtime_checkable
class LeaseStore(Protocol):
    """Persistence used by :class:`tether.leases.CredentialBroker`.

    Implementations raise :class:`tether.leases.LeaseStoreError` (with the cause attached)
    for every storage failure, never a driver's own exception type.
    """

    async def put(self, record: LeaseRecord) -> None:
        """Insert or replace the record with this ``lease_id``; durable when this returns."""
        ...

    async def get(self, lease_id: str) -> LeaseRecord | None: ...

    async def scan(self, owner: str, now: float) -> StoreScan:
        """Every record of ``owner`` in a live status, plus rows of any owner that could not
        be decoded. Undecodable rows whose key names a lease are replaced by a ``pending``
        stand-in of ``owner`` (see :func:`orphan_record`), so they are revoked and never
        reported twice. Never raises for damage it can describe in ``damage``."""
        ...

    async def purge(self, before: float) -> int:
        """Delete terminal records (revoked/failed) last updated before ``before``."""
        ...

    async def size(self) -> int:
        """Number of records held (live and terminal)."""
        ...

    async def claim(self, owner: str) -> None:
        """Mark ``owner`` as in use by this process until :meth:`release` or process exit;
        raise :class:`tether.leases.LeaseStoreBusy` if another live holder has it."""
        ...

    async def release(self, owner: str) -> None: ...

    async def close(self) -> None: ...
