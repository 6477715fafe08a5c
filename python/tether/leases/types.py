"""The values of the lease layer: secrets, task references, leases, and the provider contract.

Secrets live in :class:`Secret`, whose repr/str are masked and which refuses to pickle, and
in a non-field slot of :class:`Lease`, so ``repr(lease)`` and ``msgspec.json.encode(lease)``
(the form that ends up in logs) never contain them.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Literal, NoReturn, Protocol

import msgspec

from tether.leases.errors import LeaseError, LeaseExpired, LeaseRevoked
from tether.store.records import QuarantinedRow

__all__ = [
    "IssueRequest",
    "IssuedCredential",
    "Lease",
    "Provider",
    "RecoveryReport",
    "Secret",
    "TaskRef",
    "Zombie",
]

Clock = Callable[[], float]


class Secret:
    """A credential value that masks itself everywhere except :meth:`reveal`.

    Not picklable and not hashable: both are ways a value ends up copied somewhere it was not
    meant to go (caches, task queues, crash dumps).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, so comparing a guess against a secret leaks nothing about prefixes.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled")


class TaskRef(msgspec.Struct, frozen=True):
    """The slice of a task that leases depend on; built by the task layer.

    ``deadline`` is on the broker's clock (monotonic by default); the task layer translates
    its own deadline into it.
    """

    txn: str
    agent: str
    scope: frozenset[str]
    intent: str
    actors: tuple[str, ...]
    deadline: float
    parent_txn: str | None = None


class IssueRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider is asked for. Tag the credential with ``lease_id`` (and ``task.txn``):
    after a crash the broker may only know the lease id, and revokes by it."""

    lease_id: str
    task: TaskRef
    scope: frozenset[str]
    ttl: float

    @property
    def txn(self) -> str:
        return self.task.txn


class IssuedCredential(msgspec.Struct, frozen=True):
    """What a provider returns. ``provider_ref`` is stored; ``secret`` never is.

    ``provider_ref`` must let the provider revoke the credential later without the secret
    (a token id, a database user name, an API key id).
    """

    secret: Secret | str
    provider_ref: str

    def __post_init__(self) -> None:
        # Accept a plain str for convenience but never keep it unmasked.
        if isinstance(self.secret, str):
            msgspec.structs.force_setattr(self, "secret", Secret(self.secret))


class LeaseState:
    """Mutable state shared by a Lease handle and the broker (no reference cycle).

    ``revoked`` is a plain attribute: setting it is atomic under the GIL, so any thread can
    make a lease unusable at once, before any event loop runs.
    """

    __slots__ = ("clock", "reason", "revoked")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.revoked = False
        self.reason: Literal["revoked", "expired"] = "revoked"

    def kill(self, reason: Literal["revoked", "expired"]) -> bool:
        """Make the lease unusable; False if it already was."""
        if self.revoked:
            return False
        self.reason = reason  # set before the flag, so a reader never sees a stale reason
        self.revoked = True
        return True


class Lease(msgspec.Struct, frozen=True, dict=True, eq=False, kw_only=True):
    """A handle on one leased credential.

    Fields are the lease's public, loggable description; the secret is kept outside the fields
    so repr, str and every msgspec encoding omit it. The broker updates ``expires_at``/``ttl``
    in place on renewal, so a handle held by the agent sees renewals and revocations.
    ``issued_at``/``expires_at`` are on the broker's clock (monotonic by default).
    """

    lease_id: str
    provider: str
    task: str
    agent: str
    scope: frozenset[str]
    issued_at: float
    ttl: float
    max_ttl: float
    expires_at: float
    renewable: bool
    provider_ref: str | None = None

    @property
    def secret(self) -> Secret:
        """The credential; raises :class:`LeaseExpired`/:class:`LeaseRevoked` if unusable."""
        self.check()
        value: Secret | None = self.__dict__.get("_secret")
        if value is None:
            raise LeaseError(f"lease {self.lease_id} carries no secret (recovered from store)")
        return value

    def check(self, now: float | None = None) -> None:
        """Raise unless the lease is usable at ``now`` (default: the broker's clock)."""
        state: LeaseState | None = self.__dict__.get("_state")
        if state is not None and state.revoked:
            if state.reason == "expired":
                raise LeaseExpired(f"lease {self.lease_id} expired")
            raise LeaseRevoked(f"lease {self.lease_id} was revoked")
        if now is None:
            now = state.clock() if state is not None else time.monotonic()
        if now >= self.expires_at:
            raise LeaseExpired(f"lease {self.lease_id} expired")

    def remaining(self, now: float | None = None) -> float:
        """Seconds left before expiry (0 if expired)."""
        state: LeaseState | None = self.__dict__.get("_state")
        if now is None:
            now = state.clock() if state is not None else time.monotonic()
        return max(0.0, self.expires_at - now)


class Zombie(msgspec.Struct, frozen=True):
    """A lease the provider has not confirmed revoked (the broker keeps retrying it)."""

    lease_id: str
    provider: str
    provider_ref: str | None
    attempts: int
    last_error: str | None


class RecoveryReport(msgspec.Struct, frozen=True):
    """What :meth:`CredentialBroker.recover` did.

    ``revoked``: confirmed revoked at the provider now. ``zombies``: found but not confirmed
    (still retried by the reaper). ``quarantined``: rows that did not decode, set aside (those
    with a lease id are also in ``revoked`` or ``zombies``). ``damage``: what could not be read
    at all, naming the file; empty when the store was sound.
    """

    revoked: list[str]
    zombies: list[Zombie]
    quarantined: list[QuarantinedRow]
    damage: list[str]

    @property
    def clean(self) -> bool:
        """Everything found was confirmed revoked and nothing was damaged."""
        return not (self.zombies or self.damage or self.quarantined)


class Provider(Protocol):
    """A source of secrets; the contract every provider keeps.

    * ``issue(request)`` creates a credential tagged with ``request.lease_id`` (and
      ``request.txn``) so it can be found again without the broker's help; raising means
      nothing was created.
    * ``revoke(lease)`` must be idempotent and succeed when the credential is already gone:
      retries and crash recovery call it again, and with ``lease.provider_ref=None`` when the
      broker died between asking and recording the answer (revoke by ``lease.lease_id``).
    * ``renew(lease, ttl)`` extends the credential to ``ttl`` seconds from now.

    Each call is bounded by the broker's ``provider_timeout``; a provider may set
    ``renewable = False`` to make its leases non-renewable.
    """

    async def issue(self, request: IssueRequest) -> IssuedCredential: ...

    async def renew(self, lease: Lease, ttl: float) -> None: ...

    async def revoke(self, lease: Lease) -> None: ...
