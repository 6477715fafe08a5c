"""A realistic agent deployment, seeded: Cedar policies, entities, requests, and the same
rules hand-compiled into plain Python `if`s per tool (the baseline a user could write).

Shape (what agent deployments write, see issue 9): ~200 tool actions in 20 action groups with
attributes (`egress`, `risk`, `kind`, `group`); 50 agents in 8 roles; ~1,500 resources of three
types; ~10 unscoped guardrail forbids reading action, principal, resource and context attributes
(a 20-host allow-list, an intent list, delegation depth); the rest permits scoped by
`principal in Role` or `principal == Agent` and `action ==` or `action in group`, each with 1-3
conditions; requests name entities by `Type::"id"` strings with a 5-key context (strings, ints,
bools). About 37% of requests are allowed.

The Python baseline is competent, not naive: entities are slotted objects in dicts keyed by the
uid string, guardrails are folded per tool with the tool's attributes known in advance, and each
tool gets its own function holding only its permits.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

N_ROLES = 8
N_AGENTS = 50
N_GROUPS = 20
N_ACTIONS = 200
N_RESOURCES = 1500
N_PROJECTS = 30
TENANTS = ["t0", "t1", "t2"]
KINDS = ["read", "write", "exec"]
INTENTS = ["summarize", "report", "build", "deploy", "triage", "cleanup", "explore", "exfiltrate"]
SAFE_INTENTS = ["summarize", "report", "build", "deploy"]
ALLOWED_HOSTS = [f"api{i}.example.com" for i in range(14)] + [
    "github.com",
    "api.github.com",
    "pypi.org",
    "files.pythonhosted.org",
    "slack.com",
    "api.openai.com",
]
OTHER_HOSTS = [f"host{i}.unknown.net" for i in range(10)]
RES_TYPES = ["Doc", "Repo", "Host"]

Request = tuple[str, str, str, dict[str, Any]]


@dataclass
class Agent:
    id: str
    roles: list[str]
    suspended: bool
    allowed_groups: list[str]
    tenant: str
    clearance: int
    tier: str


@dataclass
class Tool:
    id: str
    group: str
    egress: bool
    risk: int
    kind: str


@dataclass
class Resource:
    ty: str
    id: str
    tenant: str
    sensitivity: int
    owner: str
    project: str


@dataclass
class Permit:
    agent: str | None  # `principal == Agent::"..."`
    role: str | None  # `principal in Role::"..."`
    action: str | None  # `action == Action::"..."`
    group: str | None  # `action in Action::"group:..."`
    res_type: str | None  # `resource is T` (scope), or any
    conds: list[str]  # condition keys, see COND_CEDAR / COND_PY


@dataclass
class Workload:
    policies: str
    entities: list[dict[str, Any]]
    requests: list[Request]
    agents: list[Agent]
    tools: list[Tool]
    resources: list[Resource]
    permits: list[Permit] = field(default_factory=list)


# Permit conditions, as Cedar and as the Python a user would write (p, r, c in scope).
COND_CEDAR: dict[str, str] = {
    "clearance": "resource.sensitivity <= principal.clearance",
    "owner": "resource.owner == principal",
    "intent_summarize": 'context.intent == "summarize"',
    "intent_set": '["report", "summarize", "triage"].contains(context.intent)',
    "mfa": "context.mfa",
    "hours": "context.hour >= 7 && context.hour < 20",
    "shallow": "context.delegation_depth <= 1",
    "trusted": 'principal.tier == "trusted"',
    "low": "resource.sensitivity < 3",
}
COND_PY: dict[str, str] = {
    "clearance": "r.sensitivity <= p.clearance",
    "owner": "r.owner == p.uid",
    "intent_summarize": 'c["intent"] == "summarize"',
    "intent_set": 'c["intent"] in ("report", "summarize", "triage")',
    "mfa": 'c["mfa"]',
    "hours": '7 <= c["hour"] < 20',
    "shallow": 'c["delegation_depth"] <= 1',
    "trusted": 'p.tier == "trusted"',
    "low": "r.sensitivity < 3",
}
# Per-project conditions are generated: `resource.project == "pN"`.


def _cedar_set(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def guardrails() -> str:
    hosts = _cedar_set(ALLOWED_HOSTS)
    intents = _cedar_set(SAFE_INTENTS)
    return "\n".join(
        [
            "forbid (principal, action, resource) when { principal.suspended };",
            "forbid (principal, action, resource) when "
            "{ !principal.allowed_groups.contains(action.group) };",
            "forbid (principal, action, resource) when { resource.tenant != principal.tenant };",
            "forbid (principal, action, resource) when "
            f"{{ action.egress == true && !{hosts}.contains(context.destination) }};",
            "forbid (principal, action, resource) when "
            '{ context.delegation_depth > 2 && action.kind != "read" };',
            "forbid (principal, action, resource) when { action.risk == 3 && !context.mfa };",
            "forbid (principal, action, resource) when "
            "{ action.risk >= 2 && resource.sensitivity > principal.clearance };",
            "forbid (principal, action, resource) when "
            f'{{ action.kind == "exec" && !{intents}.contains(context.intent) }};',
            "forbid (principal, action, resource) when "
            "{ resource.sensitivity == 4 && action.egress };",
            "forbid (principal, action, resource) when "
            "{ context.delegation_depth > 0 && action.risk >= 2 "
            '&& principal.tier != "trusted" };',
        ]
    )


def _guard_py(t: Tool) -> list[str]:
    """The guardrails a user would write for one tool, its attributes folded in."""
    lines = [
        "if p.suspended: return False",
        f'if "{t.group}" not in p.allowed_groups: return False',
        "if r.tenant != p.tenant: return False",
    ]
    if t.egress:
        lines.append('if c["destination"] not in ALLOWED_HOSTS: return False')
    if t.kind != "read":
        lines.append('if c["delegation_depth"] > 2: return False')
    if t.risk == 3:
        lines.append('if not c["mfa"]: return False')
    if t.risk >= 2:
        lines.append("if r.sensitivity > p.clearance: return False")
    if t.kind == "exec":
        lines.append('if c["intent"] not in SAFE_INTENTS: return False')
    if t.egress:
        lines.append("if r.sensitivity == 4: return False")
    if t.risk >= 2:
        lines.append('if c["delegation_depth"] > 0 and p.tier != "trusted": return False')
    return lines


def _cond_cedar(k: str) -> str:
    return f'resource.project == "{k[5:]}"' if k.startswith("proj:") else COND_CEDAR[k]


def _cond_py(k: str) -> str:
    return f'r.project == "{k[5:]}"' if k.startswith("proj:") else COND_PY[k]


def build(n_policies: int = 800, n_requests: int = 10_000, seed: int = 42) -> Workload:
    rng = random.Random(seed)
    roles = [f"r{i}" for i in range(N_ROLES)]
    groups = [f"group:g{i}" for i in range(N_GROUPS)]
    agents = [
        Agent(
            id=f"a{i}",
            roles=rng.sample(roles, rng.choice([1, 1, 2])),
            suspended=i % 25 == 7,
            allowed_groups=sorted(rng.sample(groups, rng.randrange(17, 21))),
            tenant=rng.choice(TENANTS),
            clearance=rng.randrange(2, 5),
            tier=rng.choice(["trusted", "trusted", "standard"]),
        )
        for i in range(N_AGENTS)
    ]
    tools = [
        Tool(
            id=f"tool{i}",
            group=groups[i % N_GROUPS],
            egress=rng.random() < 0.25,
            risk=rng.choice([0, 0, 1, 1, 2, 3]),
            kind=rng.choice(["read", "read", "write", "exec"]),
        )
        for i in range(N_ACTIONS)
    ]
    resources = [
        Resource(
            ty=RES_TYPES[i % 3],
            id=f"res{i}",
            tenant=rng.choice(TENANTS),
            sensitivity=rng.choice([0, 1, 1, 2, 2, 3, 4]),
            owner=f"a{rng.randrange(N_AGENTS)}",
            project=f"p{rng.randrange(N_PROJECTS)}",
        )
        for i in range(N_RESOURCES)
    ]
    permits: list[Permit] = []
    n_forbids = len(guardrails().splitlines())
    cond_keys = list(COND_CEDAR)
    for _ in range(n_policies - n_forbids):
        by_agent = rng.random() < 0.4
        by_group = rng.random() < 0.25
        n_conds = rng.choice([1, 1, 1, 2, 2, 3])
        conds = rng.sample(cond_keys, n_conds)
        if rng.random() < 0.15:
            conds[0] = f"proj:p{rng.randrange(N_PROJECTS)}"
        permits.append(
            Permit(
                agent=f"a{rng.randrange(N_AGENTS)}" if by_agent else None,
                role=None if by_agent else rng.choice(roles),
                action=None if by_group else rng.choice(tools).id,
                group=rng.choice(groups) if by_group else None,
                res_type=rng.choice(RES_TYPES) if rng.random() < 0.3 else None,
                conds=conds,
            )
        )
    w = Workload(
        policies=_cedar_text(permits),
        entities=_entities(agents, tools, resources, roles, groups),
        requests=[],
        agents=agents,
        tools=tools,
        resources=resources,
        permits=permits,
    )
    w.requests = _requests(rng, w, n_requests)
    return w


def _cedar_text(permits: list[Permit]) -> str:
    out = [guardrails()]
    for p in permits:
        pr = f'principal == Agent::"{p.agent}"' if p.agent else f'principal in Role::"{p.role}"'
        ac = f'action == Action::"{p.action}"' if p.action else f'action in Action::"{p.group}"'
        rs = f"resource is {p.res_type}" if p.res_type else "resource"
        cond = " && ".join(f"({_cond_cedar(k)})" for k in p.conds)
        out.append(f"permit ({pr}, {ac}, {rs}) when {{ {cond} }};")
    return "\n".join(out)


def _uid(ty: str, id: str) -> dict[str, str]:
    return {"type": ty, "id": id}


def _entities(
    agents: list[Agent],
    tools: list[Tool],
    resources: list[Resource],
    roles: list[str],
    groups: list[str],
) -> list[dict[str, Any]]:
    ents: list[dict[str, Any]] = []
    ents += [{"uid": _uid("Role", r), "attrs": {}, "parents": []} for r in roles]
    ents += [{"uid": _uid("Action", g), "attrs": {}, "parents": []} for g in groups]
    ents += [
        {
            "uid": _uid("Action", t.id),
            "attrs": {"group": t.group, "egress": t.egress, "risk": t.risk, "kind": t.kind},
            "parents": [_uid("Action", t.group)],
        }
        for t in tools
    ]
    ents += [
        {
            "uid": _uid("Agent", a.id),
            "attrs": {
                "suspended": a.suspended,
                "allowed_groups": a.allowed_groups,
                "tenant": a.tenant,
                "clearance": a.clearance,
                "tier": a.tier,
            },
            "parents": [_uid("Role", r) for r in a.roles],
        }
        for a in agents
    ]
    ents += [
        {
            "uid": _uid(r.ty, r.id),
            "attrs": {
                "tenant": r.tenant,
                "sensitivity": r.sensitivity,
                "owner": {"__entity": _uid("Agent", r.owner)},
                "project": r.project,
            },
            "parents": [],
        }
        for r in resources
    ]
    return ents


def _context(rng: random.Random) -> dict[str, Any]:
    return {
        "destination": rng.choice(ALLOWED_HOSTS if rng.random() < 0.8 else OTHER_HOSTS),
        "intent": rng.choice(INTENTS if rng.random() < 0.4 else SAFE_INTENTS),
        "delegation_depth": rng.choice([0, 0, 0, 0, 0, 1, 1, 2, 3]),
        "mfa": rng.random() < 0.85,
        "hour": rng.randrange(24),
    }


def _requests(rng: random.Random, w: Workload, n: int) -> list[Request]:
    """Mostly requests some permit was written for (an agent using its tools), the rest
    random, so that guardrails and conditions decide and ~37% are allowed."""
    by_role: dict[str, list[Agent]] = {}
    for a in w.agents:
        for r in a.roles:
            by_role.setdefault(r, []).append(a)
    in_group: dict[str, list[Tool]] = {}
    for t in w.tools:
        in_group.setdefault(t.group, []).append(t)
    by_type_tenant: dict[tuple[str, str], list[Resource]] = {}
    for res in w.resources:
        by_type_tenant.setdefault((res.ty, res.tenant), []).append(res)
    out: list[Request] = []
    for _ in range(n):
        if rng.random() < 0.9:
            pm = rng.choice(w.permits)
            agent = (
                next(a for a in w.agents if a.id == pm.agent)
                if pm.agent
                else rng.choice(by_role.get(pm.role or "", w.agents))
            )
            tool = (
                next(t for t in w.tools if t.id == pm.action)
                if pm.action
                else rng.choice(in_group[pm.group or ""])
            )
            ty = pm.res_type or rng.choice(RES_TYPES)
            pool = by_type_tenant[(ty, agent.tenant)] if rng.random() < 0.97 else w.resources
            res = rng.choice(pool)
        else:
            agent, tool, res = rng.choice(w.agents), rng.choice(w.tools), rng.choice(w.resources)
        out.append(
            (
                f'Agent::"{agent.id}"',
                f'Action::"{tool.id}"',
                f'{res.ty}::"{res.id}"',
                _context(rng),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# The plain-Python baseline


class _P:
    __slots__ = ("allowed_groups", "clearance", "roles", "suspended", "tenant", "tier", "uid")

    def __init__(self, a: Agent) -> None:
        self.uid = a.id
        self.roles = frozenset(a.roles)
        self.suspended = a.suspended
        self.allowed_groups = frozenset(a.allowed_groups)
        self.tenant = a.tenant
        self.clearance = a.clearance
        self.tier = a.tier


class _R:
    __slots__ = ("owner", "project", "sensitivity", "tenant", "ty")

    def __init__(self, r: Resource) -> None:
        self.ty = r.ty
        self.tenant = r.tenant
        self.sensitivity = r.sensitivity
        self.owner = r.owner
        self.project = r.project


def python_source(w: Workload) -> str:
    """One function per tool: its folded guardrails, then its permits."""
    lines: list[str] = []
    table: list[str] = []
    for t in w.tools:
        fn = f"_t_{t.id}"
        lines.append(f"def {fn}(p, r, c):")
        lines += [f"    {g}" for g in _guard_py(t)]
        for pm in w.permits:
            if pm.action is not None and pm.action != t.id:
                continue
            if pm.group is not None and pm.group != t.group:
                continue
            tests = [f'p.uid == "{pm.agent}"' if pm.agent else f'"{pm.role}" in p.roles']
            if pm.res_type:
                tests.append(f'r.ty == "{pm.res_type}"')
            tests += [f"({_cond_py(k)})" for k in pm.conds]
            lines.append(f"    if {' and '.join(tests)}: return True")
        lines.append("    return False")
        table.append(f"    'Action::\"{t.id}\"': {fn},")
    lines.append("TOOLS = {")
    lines += table
    lines.append("}")
    lines.append("def is_allowed(principal, action, resource, c):")
    lines.append("    return TOOLS[action](AGENTS[principal], RESOURCES[resource], c)")
    return "\n".join(lines)


def python_baseline(w: Workload) -> Callable[[str, str, str, dict[str, Any]], bool]:
    ns: dict[str, Any] = {
        "ALLOWED_HOSTS": frozenset(ALLOWED_HOSTS),
        "SAFE_INTENTS": frozenset(SAFE_INTENTS),
        "AGENTS": {f'Agent::"{a.id}"': _P(a) for a in w.agents},
        "RESOURCES": {f'{r.ty}::"{r.id}"': _R(r) for r in w.resources},
    }
    exec(compile(python_source(w), "<baseline>", "exec"), ns)
    fn: Callable[[str, str, str, dict[str, Any]], bool] = ns["is_allowed"]
    return fn


def cedarpy_request(r: Request) -> dict[str, Any]:
    return {"principal": r[0], "action": r[1], "resource": r[2], "context": r[3]}
