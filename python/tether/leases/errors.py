"""Typed errors for credential leases.

Every failure raised by the lease layer is a :class:`LeaseError`, itself a
:class:`tether.errors.TetherError`. Messages name leases, tasks and files, never secrets.
Storage and provider failures keep the underlying exception as ``__cause__``.
"""

from __future__ import annotations

from os import PathLike

from tether.errors import TetherError

__all__ = [
    "CorruptLeaseStore",
    "ForeignLeaseStore",
    "InvalidTaskToken",
    "LeaseError",
    "LeaseExpired",
    "LeaseNotFound",
    "LeaseRevoked",
    "LeaseScopeError",
    "LeaseStoreBusy",
    "LeaseStoreError",
    "NotRenewable",
    "ProviderError",
    "ProviderTimeout",
    "TokenNarrowingError",
]


class LeaseError(TetherError):
    """Base class for every lease failure."""


class LeaseExpired(LeaseError):
    """The lease (or the task it is bound to) is past its expiry."""


class LeaseRevoked(LeaseError):
    """The lease, its task, or an ancestor task was revoked."""


class LeaseNotFound(LeaseError):
    """No lease with this id is known to the broker or its store."""


class LeaseScopeError(LeaseError):
    """The requested scope is not a subset of the task's scope."""


class NotRenewable(LeaseError):
    """The lease or its provider does not support renewal."""


class ProviderError(LeaseError):
    """A provider call failed; the provider's own exception is the ``__cause__``."""


class ProviderTimeout(ProviderError):
    """A provider call did not return within the broker's ``provider_timeout``."""


class LeaseStoreError(LeaseError):
    """The lease store could not be read or written; ``path`` names it when it is a file."""

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


class CorruptLeaseStore(LeaseStoreError):
    """The store file is damaged. ``recover()`` still revokes what it can read from it;
    writes are refused until the file is moved aside and a new store started."""


class ForeignLeaseStore(LeaseStoreError):
    """The file exists but is not a tether lease store (empty, another application's
    database, or not a database); it is refused rather than adopted."""


class LeaseStoreBusy(LeaseStoreError):
    """Another live broker holds this owner name on the store."""


class InvalidTaskToken(LeaseError):
    """A transaction token failed verification (signature, typ, exp, aud, claims)."""


class TokenNarrowingError(InvalidTaskToken):
    """A replacement token widens or re-targets the token it replaces."""
