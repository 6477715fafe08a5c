"""Generic providers: wrap any async secret source as a lease provider."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tether.leases.errors import NotRenewable
from tether.leases.types import IssuedCredential, IssueRequest, Lease

__all__ = ["CallbackProvider", "IssueFn", "RenewFn", "RevokeFn"]

IssueFn = Callable[[IssueRequest], Awaitable[IssuedCredential]]
RenewFn = Callable[[Lease, float], Awaitable[None]]
RevokeFn = Callable[[Lease], Awaitable[None]]


class CallbackProvider:
    """A provider built from async callables (a vault client, a cloud STS call, a test fake).

    ``issue`` gets an :class:`IssueRequest`: tag what it creates with ``request.lease_id``.
    ``revoke`` receives a :class:`Lease` that, after a crash, is rebuilt from the store and has
    no secret: revoke by ``lease.provider_ref``, or by ``lease.lease_id`` when the ref is None
    (the broker died before recording the answer, or the record was damaged). It must succeed
    if the credential is already gone or was never created.
    """

    def __init__(
        self,
        issue: IssueFn,
        revoke: RevokeFn,
        renew: RenewFn | None = None,
    ) -> None:
        self._issue = issue
        self._revoke = revoke
        self._renew = renew
        # Leases from a source that cannot extend credentials must say so up front.
        self.renewable = renew is not None

    async def issue(self, request: IssueRequest) -> IssuedCredential:
        return await self._issue(request)

    async def renew(self, lease: Lease, ttl: float) -> None:
        if self._renew is None:
            raise NotRenewable(f"provider of lease {lease.lease_id} cannot renew")
        await self._renew(lease, ttl)

    async def revoke(self, lease: Lease) -> None:
        await self._revoke(lease)

    def __repr__(self) -> str:
        return f"CallbackProvider(renewable={self.renewable})"
