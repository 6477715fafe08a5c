"""Naming agents: entity uids from `Agent`s, `SpiffeId`s, SPIFFE ID strings and
uid strings; and the proof an agent must carry to act."""

from __future__ import annotations

from typing import Any

from tether.identity import (
    AGENT_ENTITY_TYPE,
    Agent,
    AuthenticationError,
    ExpiredToken,
    SpiffeId,
    cedar_entity_uid,
)


def agent_uid(agent: Agent | str) -> str:
    return agent.entity if isinstance(agent, Agent) else agent


def spiffe_of(agent: Agent | str) -> SpiffeId | None:
    if isinstance(agent, Agent):
        return agent.spiffe_id
    # `Agent::"spiffe://..."` strings still carry a trust domain.
    if '::"spiffe://' in agent:
        try:
            return SpiffeId.parse(agent.split('::"', 1)[1].rstrip('"'))
        except ValueError:
            return None
    return None


def target_uid(agent: Any) -> str:
    """The entity uid an operator means by `agent` (for revocation): an `Agent`, a
    `SpiffeId`, a SPIFFE ID string or an entity uid string. Anything else is a
    `ValueError`, so a kill switch never silently matches nothing."""
    if isinstance(agent, Agent):
        return agent.entity
    if isinstance(agent, SpiffeId):
        return cedar_entity_uid(AGENT_ENTITY_TYPE, str(agent))
    if isinstance(agent, str):
        if agent.startswith("spiffe://"):
            return cedar_entity_uid(AGENT_ENTITY_TYPE, str(SpiffeId.parse(agent)))
        ty, sep, rest = agent.partition('::"')
        if sep and ty and rest.endswith('"') and len(rest) > 1:
            return agent
    raise ValueError(
        f"cannot name an agent by {agent!r}: pass an Agent, a SpiffeId, a SPIFFE ID "
        'or an entity uid like Agent::"spiffe://example.org/agent"'
    )


def check_proof(
    agent: Agent | str, *, wall_now: float, leeway: float, unauthenticated_ok: bool
) -> None:
    """An agent may act only with a credential still valid (within `leeway`), or as a
    bare uid when the caller opted in."""
    if isinstance(agent, Agent):
        if agent.expires_at + leeway <= wall_now:
            raise ExpiredToken(
                f"credential of {agent.spiffe_id} expired {wall_now - agent.expires_at:.0f}s ago"
            )
        return
    if not unauthenticated_ok:
        raise AuthenticationError(
            f"{agent!r} is a bare uid with no proof of identity: authenticate a token "
            "(guard.authenticate) or open the Guard with allow_unauthenticated=True"
        )
