"""A reference provider that keeps its own ledger, as a real credential system would.

Tests count live credentials *here*, at the provider, never in tether's own bookkeeping.
The ledger is a SQLite file (or ``:memory:``), so it outlives a broker process killed with
SIGKILL, like a remote vault outlives its client. It keeps the provider contract: every
credential is tagged with the lease id and txn it was issued for, and ``revoke`` finds it by
``provider_ref`` or, when that was never recorded, by lease id; revoking twice is a no-op.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

import anyio

from tether.leases import CallbackProvider, IssuedCredential, IssueRequest, Lease

Hook = Callable[[str], None]
Behaviour = str  # "ok", "hang", "raise", "slow"


class LedgerProvider:
    renewable = True

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        hook: Hook | None = None,
        revoke_behaviour: Behaviour = "ok",
        slow: float = 0.0,
    ) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA synchronous=OFF")  # a killed process loses nothing anyway
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS creds (cred_id TEXT PRIMARY KEY, lease_id TEXT NOT NULL,"
            " txn TEXT NOT NULL, live INTEGER NOT NULL, revoked_by TEXT)"
        )
        self._hook = hook
        self.revoke_behaviour = revoke_behaviour
        self._slow = slow
        self.revoke_calls = 0

    async def issue(self, request: IssueRequest) -> IssuedCredential:
        cred_id = secrets.token_hex(8)
        self._db.execute(
            "INSERT INTO creds VALUES (?, ?, ?, 1, NULL)", (cred_id, request.lease_id, request.txn)
        )
        if self._hook is not None:
            self._hook("issued")  # the credential exists; the broker has not recorded it
        return IssuedCredential(secret=f"secret-{cred_id}", provider_ref=cred_id)

    async def renew(self, lease: Lease, ttl: float) -> None:
        # Like many real services, renewing extends the credential whatever its state: a
        # renewal that races a revocation brings it back unless the broker revokes again.
        self._db.execute("UPDATE creds SET live = 1 WHERE cred_id = ?", (lease.provider_ref,))

    async def revoke(self, lease: Lease) -> None:
        self.revoke_calls += 1
        if self.revoke_behaviour == "hang":
            await anyio.sleep_forever()
        if self.revoke_behaviour == "raise":
            raise ConnectionError("credential service unavailable")
        if self.revoke_behaviour == "slow":
            await anyio.sleep(self._slow)
        if lease.provider_ref is not None:
            self._db.execute(
                "UPDATE creds SET live = 0, revoked_by = 'ref' WHERE cred_id = ? AND live = 1",
                (lease.provider_ref,),
            )
        else:
            self._db.execute(
                "UPDATE creds SET live = 0, revoked_by = 'lease_id'"
                " WHERE lease_id = ? AND live = 1",
                (lease.lease_id,),
            )
        if self._hook is not None:
            self._hook("revoked")  # revoked here; the broker has not recorded it

    def live(self) -> list[str]:
        """Lease ids whose credential is still live at the provider."""
        rows = self._db.execute("SELECT lease_id FROM creds WHERE live = 1 ORDER BY lease_id")
        return [r[0] for r in rows]

    def issued(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM creds").fetchone()[0])

    def revoked_by_lease_id(self) -> int:
        row = self._db.execute("SELECT count(*) FROM creds WHERE revoked_by = 'lease_id'")
        return int(row.fetchone()[0])

    def as_callbacks(self) -> CallbackProvider:
        """The same ledger behind the documented CallbackProvider signatures."""
        return CallbackProvider(issue=self.issue, revoke=self.revoke, renew=self.renew)

    def close(self) -> None:
        self._db.close()
