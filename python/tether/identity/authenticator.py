"""Authenticator: turn a presented credential into an :class:`Agent` principal.

Verification is pure CPU over in-memory bundles (sources refresh them in the
background), so the sync and async entry points do identical work; the async ones
exist so request handlers can ``await`` uniformly and never block on I/O we might add.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from tether.identity.bundle import BundleSet, TrustBundle
from tether.identity.jwt_svid import (
    DEFAULT_LEEWAY,
    MAX_TOKEN_BYTES,
    Clock,
    JwtSvidVerifier,
    TokenCache,
)
from tether.identity.spiffe_id import SpiffeId
from tether.identity.wimse import DEFAULT_MAX_PROOF_LIFETIME, ReplayCache, WimseVerifier

__all__ = ["AGENT_ENTITY_TYPE", "Agent", "Authenticator", "cedar_entity_uid"]

AGENT_ENTITY_TYPE = "Agent"
EntityLookup = Callable[[str], Mapping[str, Any] | None]
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _escape_char(c: str) -> str:
    if c in ('"', "\\"):
        return "\\" + c
    if c < " " or c == "\x7f":
        return f"\\u{{{ord(c):x}}}"  # Cedar's unicode escape form: \u{1f}
    return c


def cedar_entity_uid(entity_type: str, entity_id: str) -> str:
    """``Type::"id"`` with ``"``, ``\\`` and control characters escaped for Cedar."""
    if entity_id.isprintable() and '"' not in entity_id and "\\" not in entity_id:
        return f'{entity_type}::"{entity_id}"'  # fast path: every SPIFFE ID lands here
    return f'{entity_type}::"{"".join(_escape_char(c) for c in entity_id)}"'


@dataclass(frozen=True, slots=True)
class Agent:
    """An authenticated workload. ``claims``/``attributes`` are read-only mappings
    (they may be shared with the verified-token cache, so mutation must be impossible).
    """

    spiffe_id: SpiffeId
    claims: Mapping[str, Any] = field(compare=False, hash=False)
    entity: str
    expires_at: float
    token_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False, hash=False)

    @classmethod
    def from_claims(cls, spiffe_id: SpiffeId, claims: dict[str, Any], expires_at: float) -> Agent:
        jti = claims.get("jti")
        return cls(
            spiffe_id=spiffe_id,
            claims=MappingProxyType(claims),
            entity=cedar_entity_uid(AGENT_ENTITY_TYPE, str(spiffe_id)),
            expires_at=expires_at,
            token_id=jti if isinstance(jti, str) else None,
        )


class Authenticator:
    """Verifies JWT-SVIDs and WIMSE WIT+WPT pairs against federated trust bundles."""

    def __init__(
        self,
        bundles: BundleSet | TrustBundle | Iterable[TrustBundle],
        audience: str | Collection[str],
        leeway: float = DEFAULT_LEEWAY,
        *,
        entity_attrs: EntityLookup | None = None,
        clock: Clock = time.time,
        cache_size: int = 10_000,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        max_proof_lifetime: float = DEFAULT_MAX_PROOF_LIFETIME,
        replay_cache: ReplayCache | None = None,
    ) -> None:
        if isinstance(bundles, TrustBundle):
            bundles = BundleSet([bundles])
        elif not isinstance(bundles, BundleSet):
            bundles = BundleSet(bundles)
        self.bundles = bundles
        self.entity_attrs = entity_attrs
        self._svid = JwtSvidVerifier(
            bundles,
            audience,
            leeway=leeway,
            clock=clock,
            cache_size=0,  # the Agent cache below is the only JWT-SVID cache
            max_token_bytes=max_token_bytes,
        )
        self._wimse = WimseVerifier(
            bundles,
            leeway=leeway,
            clock=clock,
            max_token_bytes=max_token_bytes,
            max_proof_lifetime=max_proof_lifetime,
            cache_size=cache_size,
            replay_cache=replay_cache,
        )
        self.clock = clock
        self.leeway = leeway
        # Cache the finished Agent, so a repeat token costs one dict lookup + two checks.
        self.cache: TokenCache[Agent] = TokenCache(cache_size)

    def authenticate_sync(self, token: str) -> Agent:
        """Verify a JWT-SVID and return the Agent; raises an AuthenticationError subclass."""
        now = self.clock()
        agent = self.cache.get(token, now, self.bundles) if isinstance(token, str) else None
        if agent is None:
            verified, bundle = self._svid.verify_uncached(token, now)
            agent = Agent.from_claims(verified.spiffe_id, verified.claims, verified.expires_at)
            self.cache.put(token, agent, verified.expires_at + self.leeway, bundle, now)
        return self._with_attributes(agent)

    async def authenticate(self, token: str) -> Agent:
        return self.authenticate_sync(token)

    def authenticate_wimse_sync(
        self,
        wit: str,
        wpt: str,
        target_uri: str,
        *,
        access_token: str | None = None,
        txn_token: str | None = None,
    ) -> Agent:
        """Verify a WIT and its per-request WPT for ``target_uri`` (jti replay-checked)."""
        proof = self._wimse.verify(
            wit, wpt, target_uri, access_token=access_token, txn_token=txn_token
        )
        # The principal lives as long as its identity token, not the one-shot proof.
        w = proof.wit
        return self._with_attributes(Agent.from_claims(w.spiffe_id, w.claims, w.expires_at))

    async def authenticate_wimse(
        self,
        wit: str,
        wpt: str,
        target_uri: str,
        *,
        access_token: str | None = None,
        txn_token: str | None = None,
    ) -> Agent:
        return self.authenticate_wimse_sync(
            wit, wpt, target_uri, access_token=access_token, txn_token=txn_token
        )

    def clear_cache(self) -> None:
        self.cache.clear()
        self._wimse.wit_cache.clear()

    def _with_attributes(self, agent: Agent) -> Agent:
        if self.entity_attrs is None:
            return agent
        attrs = self.entity_attrs(str(agent.spiffe_id))
        if not attrs:
            return agent
        return replace(agent, attributes=MappingProxyType(dict(attrs)))
