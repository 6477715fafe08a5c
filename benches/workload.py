"""A synthetic agent-authorization workload: N policies over agents, tools and datasets.

Policies are spread over actions, principals and resource groups the way a real
deployment's are (many per-agent grants, a few broad forbids), so the index has
something to index and every request still evaluates real conditions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

N_ACTIONS = 20


@dataclass
class Workload:
    policies: str
    entities: list[dict[str, Any]]
    requests: list[tuple[str, str, str, dict[str, Any]]]


def build(n_policies: int, n_requests: int = 1000, seed: int = 7) -> Workload:
    rng = random.Random(seed)
    n_agents = max(5, n_policies // 4)
    n_datasets = max(5, n_policies // 8)
    n_groups = max(2, n_datasets // 10)
    entities: list[dict[str, Any]] = []
    for g in range(n_groups):
        entities.append({"uid": {"type": "Group", "id": f"g{g}"}, "attrs": {}, "parents": []})
    for d in range(n_datasets):
        entities.append(
            {
                "uid": {"type": "Dataset", "id": f"d{d}"},
                "attrs": {"sensitivity": d % 5, "owner": f"team{d % 7}"},
                "parents": [{"type": "Group", "id": f"g{d % n_groups}"}],
            }
        )
    for a in range(n_agents):
        entities.append(
            {
                "uid": {"type": "Agent", "id": f"a{a}"},
                "attrs": {"clearance": a % 5, "team": f"team{a % 7}", "tools": [f"t{a % 3}", "t9"]},
                "parents": [],
            }
        )
    lines: list[str] = []
    # A fixed handful of broad guardrails, as deployments have; the rest are grants.
    n_forbids = min(10, max(1, n_policies // 10))
    for i in range(n_forbids):
        lines.append(
            f'forbid (principal, action == Action::"act{i % N_ACTIONS}", resource is Dataset) '
            f"when {{ context.risk > {rng.randrange(5, 10)} }};"
        )
    for i in range(n_policies - n_forbids):
        act = f'Action::"act{rng.randrange(N_ACTIONS)}"'
        kind = i % 10
        if kind < 7:
            a = rng.randrange(n_agents)
            g = rng.randrange(n_groups)
            lines.append(
                f'permit (principal == Agent::"a{a}", action == {act}, resource in Group::"g{g}") '
                "when { resource.sensitivity <= principal.clearance && context.risk < 8 };"
            )
        else:
            d = rng.randrange(n_datasets)
            lines.append(
                f'permit (principal is Agent, action in [{act}], resource == Dataset::"d{d}") '
                'when { principal.team == resource.owner && context.intent like "*report*" };'
            )
    requests = []
    for _ in range(n_requests):
        requests.append(
            (
                f'Agent::"a{rng.randrange(n_agents)}"',
                f'Action::"act{rng.randrange(N_ACTIONS)}"',
                f'Dataset::"d{rng.randrange(n_datasets)}"',
                {"risk": rng.randrange(10), "intent": rng.choice(["weekly report", "cleanup"])},
            )
        )
    return Workload("\n".join(lines), entities, requests)


def cedarpy_request(r: tuple[str, str, str, dict[str, Any]]) -> dict[str, Any]:
    return {"principal": r[0], "action": r[1], "resource": r[2], "context": r[3]}
