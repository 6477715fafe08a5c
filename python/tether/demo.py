"""`tether demo`: a scripted multi-agent session on the embedded defaults.

LocalIssuer for identity, in-memory lease store, the example policies and state file
shipped in `tether/examples/`. Every decision is printed with its reasons.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

from tether.engine import Engine
from tether.identity import Authenticator, LocalIssuer
from tether.leases import CredentialBroker, TaskTokenProvider, TaskTokenVerifier
from tether.store import MemoryLeaseStore
from tether.tasks import ApprovalRequest, Denied, Guard, Monitors, Task

AUDIENCE = "tether-demo"


def examples_dir() -> Path:
    """The example policies, schema, entities and state file shipped inside the package."""
    return Path(str(resources.files("tether") / "examples"))


class Printer:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.table = Table(title="tether demo", show_lines=False)
        for col in ("agent", "action", "resource", "decision", "why"):
            self.table.add_column(col)

    def row(self, who: str, action: str, resource: str, ok: bool, why: str) -> None:
        verdict = "[green]allow[/]" if ok else "[red]deny[/]"
        self.table.add_row(who, action, resource, verdict, why)

    def decide(
        self, task: Task, who: str, action: str, resource: str, ctx: dict[str, Any] | None = None
    ) -> bool:
        d = task.authorize(action, resource, ctx, reasons=True)
        names = [dict(task.guard.engine.annotations(r)).get("id", r) for r in d.reasons]
        why = d.message or ", ".join(names) or "no policy permits it"
        if d.revoked:
            why = f"{why} [bold](task revoked: {d.revoked})[/]"
        self.row(who, action, resource, d.allowed, why)
        return d.allowed


async def _demo(console: Console) -> None:
    ex = examples_dir()
    engine = Engine.from_files(
        ex / "agents.cedar",
        ex / "agents.cedarschema",
        ex / "entities.json",
        state=ex / "state.toml",
    )
    issuer = LocalIssuer("example.org")
    auth = Authenticator(issuer.bundle_set(), audience=AUDIENCE)
    tokens = TaskTokenProvider(audience="https://tools.example.org")
    broker = CredentialBroker(MemoryLeaseStore(), {"task-token": tokens})

    async def approve(req: ApprovalRequest) -> bool:
        console.print(f"  [yellow]approval requested[/] for {req.action} on {req.resource}: yes")
        return True

    out = Printer(console)
    guard = Guard(
        engine,
        auth,
        broker=broker,
        approvers={"approval": approve},
        monitors=Monitors(max_deny_streak=3),
    )
    async with guard:
        token = issuer.mint_svid("/agents/orchestrator", AUDIENCE, ttl=300)
        orch = await guard.authenticate(token)
        console.print(f"authenticated [bold]{orch.spiffe_id}[/] with a JWT-SVID from LocalIssuer")
        async with guard.task(orch, intent="quarterly report", ttl=120) as task:
            lease = await task.lease("task-token")
            console.print(f"lease [bold]{lease.lease_id}[/] issued (ttl {lease.ttl:.0f}s)")
            claims = TaskTokenVerifier(tokens.jwks(), "https://tools.example.org").verify(
                lease.secret.reveal()
            )
            console.print(f"  task token verifies downstream: txn={claims['txn']}")
            o = "orchestrator"
            out.decide(task, o, "call_tool", 'Tool::"search"')
            out.decide(task, o, "call_tool", 'Tool::"shell"')
            out.decide(task, o, "egress", 'Domain::"api.github.com"')
            out.decide(task, o, "read", 'Dataset::"payroll"')
            out.decide(task, o, "egress", 'Domain::"api.github.com"')
            out.decide(task, o, "egress", 'Domain::"wiki.corp.internal"')
            try:
                await task.require("call_tool", 'Tool::"deploy"')
                out.row(o, "call_tool", 'Tool::"deploy"', True, "approval-for-deploy, approved")
            except Denied as e:
                out.row(o, "call_tool", 'Tool::"deploy"', False, str(e))

            child_token = issuer.mint_svid("/agents/researcher", AUDIENCE, ttl=300)
            child = await task.delegate(child_token, intent="find sources")
            r = "researcher (delegated)"
            console.print(
                f"delegated to [bold]{child.agent_uid}[/], depth {child.depth}, "
                f"actors {list(child.actors)}"
            )
            out.decide(child, r, "call_tool", 'Tool::"search"')
            out.decide(child, r, "read", 'Dataset::"payroll"')
            out.decide(child, r, "egress", 'Domain::"pastebin.com"')
            for _ in range(3):
                out.decide(task, o, "egress", 'Domain::"pastebin.com"')
            out.decide(task, o, "call_tool", 'Tool::"search"')
            out.decide(child, r, "call_tool", 'Tool::"search"')
        console.print(out.table)
        live = broker.active()
        console.print(
            f"task ended: lease {lease.lease_id} "
            f"{'revoked' if not live else 'STILL LIVE'}; live leases: {len(live)}"
        )
        if live:
            raise SystemExit("a lease outlived its task")


def run_demo() -> int:
    # Wide enough for uids and reasons even when stdout is not a terminal.
    console = Console(width=max(Console().width, 140))
    anyio.run(_demo, console)
    return 0
