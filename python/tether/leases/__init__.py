"""Just-in-time credential leases bound to tasks.

Typical use (the task layer does this for you via ``task.lease(...)``)::

    broker = CredentialBroker(SqliteLeaseStore("leases.db"), {"db": CallbackProvider(...)})
    report = await broker.recover()     # revoke whatever a crashed predecessor left alive
    async with broker:                  # background reaper
        lease = await broker.issue(task_ref, "db", scope={"db:read"}, ttl=60)
        use(lease.secret.reveal())      # raises LeaseExpired/LeaseRevoked once unusable
        await broker.revoke_task(task_ref.txn)

Stores live in :mod:`tether.store`.
"""

from __future__ import annotations

from tether.leases.broker import CredentialBroker
from tether.leases.errors import (
    CorruptLeaseStore,
    ForeignLeaseStore,
    InvalidTaskToken,
    LeaseError,
    LeaseExpired,
    LeaseNotFound,
    LeaseRevoked,
    LeaseScopeError,
    LeaseStoreBusy,
    LeaseStoreError,
    NotRenewable,
    ProviderError,
    ProviderTimeout,
    TokenNarrowingError,
)
from tether.leases.providers import CallbackProvider
from tether.leases.task_token import TaskTokenProvider, TaskTokenVerifier, actor_chain
from tether.leases.types import (
    IssuedCredential,
    IssueRequest,
    Lease,
    Provider,
    RecoveryReport,
    Secret,
    TaskRef,
    Zombie,
)

__all__ = [
    "CallbackProvider",
    "CorruptLeaseStore",
    "CredentialBroker",
    "ForeignLeaseStore",
    "InvalidTaskToken",
    "IssueRequest",
    "IssuedCredential",
    "Lease",
    "LeaseError",
    "LeaseExpired",
    "LeaseNotFound",
    "LeaseRevoked",
    "LeaseScopeError",
    "LeaseStoreBusy",
    "LeaseStoreError",
    "NotRenewable",
    "Provider",
    "ProviderError",
    "ProviderTimeout",
    "RecoveryReport",
    "Secret",
    "TaskRef",
    "TaskTokenProvider",
    "TaskTokenVerifier",
    "TokenNarrowingError",
    "Zombie",
    "actor_chain",
]
