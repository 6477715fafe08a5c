"""The tool world every adapter test runs against: agents, tools, policies, task state.

The orchestrator may call `search`, `read_payroll` and `post_web`; the researcher only
`search`. Searching for passwords is refused (an argument-level rule), reading payroll
taints the task, a tainted task may not call an egress tool, and `deploy` needs approval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tether.engine import Engine
from tether.identity import Agent, Authenticator, LocalIssuer
from tether.leases import CredentialBroker, TaskTokenProvider, TaskTokenVerifier
from tether.state import state_spec
from tether.store import MemoryLeaseStore
from tether.tasks import Approver, Guard

ORCH_ID = "spiffe://example.org/agents/orchestrator"
RES_ID = "spiffe://example.org/agents/researcher"
ORCH = f'Agent::"{ORCH_ID}"'
RESEARCHER = f'Agent::"{RES_ID}"'
AUDIENCE = "tools.example.org"

POLICIES = """
@id("tools-granted")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { principal.tools.contains(resource) };

@id("no-secret-queries")
forbid (principal, action == Action::"call_tool", resource == Tool::"search")
when { context has arguments && context.arguments has q
       && context.arguments.q like "*password*" };

@id("no-exfiltration")
forbid (principal, action == Action::"call_tool", resource)
when { resource.egress && context has task && context.task.labels.contains("restricted") };

@id("approval-for-deploy")
@obligation("approval")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"deploy")
when { principal.role == "orchestrator" };
"""

STATE = {
    "labels": {
        "restricted": {"set_when": 'action == Action::"call_tool" && resource.sensitivity >= 3'}
    },
    "counters": {"tool_calls_60s": {"window": "60s", "count_when": "true"}},
}


def _tool(name: str, *, sensitivity: int = 0, egress: bool = False) -> dict[str, Any]:
    return {
        "uid": {"type": "Tool", "id": name},
        "attrs": {"sensitivity": sensitivity, "egress": egress},
        "parents": [],
    }


def _agent(spiffe: str, role: str, tools: list[str]) -> dict[str, Any]:
    return {
        "uid": {"type": "Agent", "id": spiffe},
        "attrs": {"role": role, "tools": [{"__entity": {"type": "Tool", "id": t}} for t in tools]},
        "parents": [],
    }


ENTITIES = [
    _agent(ORCH_ID, "orchestrator", ["search", "read_payroll", "post_web"]),
    _agent(RES_ID, "worker", ["search"]),
    _tool("search"),
    _tool("read_payroll", sensitivity=3),
    _tool("post_web", egress=True),
    _tool("deploy"),
    _tool("shell"),
]


def engine() -> Engine:
    return Engine(POLICIES, None, json.dumps(ENTITIES), state=state_spec(STATE))


@dataclass
class World:
    issuer: LocalIssuer
    tokens: TaskTokenProvider
    guard: Guard

    def svid(self, spiffe: str) -> str:
        return self.issuer.mint_svid(spiffe.removeprefix("spiffe://example.org"), AUDIENCE, 300)

    async def agent(self, uid: str) -> Agent:
        """An authenticated agent for `Agent::"spiffe://..."` (tasks need proof)."""
        return await self.guard.authenticate(self.svid(uid.split('"')[1]))

    def verifier(self) -> TaskTokenVerifier:
        return TaskTokenVerifier(self.tokens.jwks(), AUDIENCE, is_revoked=self.tokens.is_revoked)


def world(approvers: dict[str, Approver] | None = None) -> World:
    issuer = LocalIssuer("example.org")
    tokens = TaskTokenProvider(AUDIENCE)
    auth = Authenticator(issuer.bundle_set(), audience=AUDIENCE)
    broker = CredentialBroker(MemoryLeaseStore(), {"task-token": tokens})
    guard = Guard(engine(), auth, broker=broker, approvers=approvers or {})
    return World(issuer, tokens, guard)
