"""Just-in-time credential leases bound to tasks.

Typical use (the task layer does this for you via ``task.lease(...)``)::

    broker = CredentialBroker(SqliteLeaseStore("leases.db"), {"db": CallbackProvider(...)})
    await broker.recover()              # revoke whatever a crashed predecessor left alive
    async with broker:                  # background reaper
        lease = await broker.issue(task_ref, "db", scope={"db:read"}, ttl=60)
        use(lease.secret.reveal())      # raises LeaseExpired/LeaseRevoked once unusable
        await broker.revoke_task(task_ref.txn)
"""

from __future__ import annotations

from tether.leases.broker import (
    CredentialBroker,
    InvalidTaskToken,
    IssuedCredential,
    Lease,
    LeaseError,
    LeaseExpired,
    LeaseNotFound,
    LeaseRevoked,
    LeaseScopeError,
    NotRenewable,
    Provider,
    Secret,
    TaskRef,
    TokenNarrowingError,
    Zombie,
)
from tether.leases.providers import CallbackProvider
from tether.leases.store import LeaseRecord, LeaseStore, MemoryLeaseStore, SqliteLeaseStore
from tether.leases.task_token import TaskTokenProvider, TaskTokenVerifier, actor_chain

__all__ = [
    "CallbackProvider",
    "CredentialBroker",
    "InvalidTaskToken",
    "IssuedCredential",
    "Lease",
    "LeaseError",
    "LeaseExpired",
    "LeaseNotFound",
    "LeaseRecord",
    "LeaseRevoked",
    "LeaseScopeError",
    "LeaseStore",
    "MemoryLeaseStore",
    "NotRenewable",
    "Provider",
    "Secret",
    "SqliteLeaseStore",
    "TaskRef",
    "TaskTokenProvider",
    "TaskTokenVerifier",
    "TokenNarrowingError",
    "Zombie",
    "actor_chain",
]
