"""`tether demo`: a scripted multi-agent session on the embedded defaults.

LocalIssuer for identity, in-memory lease store, the example policies and state file
shipped in `tether/examples/`. Every decision is printed with its reasons.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console

from tether._core import Decision, DenialKind
from tether.engine import Engine
from tether.identity import Authenticator, LocalIssuer
from tether.leases import CredentialBroker, TaskTokenProvider, TaskTokenVerifier
from tether.store import MemoryLeaseStore
from tether.tasks import ApprovalRequest, Denied, Guard, Monitors, Task

AUDIENCE = "tether-demo"


def examples_dir() -> Path:
    """The example policies, schema, entities and state file shipped inside the package."""
    return Path(str(resources.files("tether") / "examples"))


WIDTH = 80


class Log:
    """Prints each event as it happens, in order, in 80 columns. Every "why" comes from
    what tether returned (the decision, the task's state), never from text in this file."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.step = 0
        # label -> the step and action that set it (seen as a label appearing in the state).
        self.label_origin: dict[str, str] = {}

    def say(self, text: str) -> None:
        self.console.print(text)

    def decide(
        self, task: Task, who: str, action: str, resource: str, ctx: dict[str, Any] | None = None
    ) -> bool:
        before = set(task.state().get("labels", []))
        d = task.authorize(action, resource, ctx, reasons=True)
        self.show(task, who, action, resource, d, before)
        return bool(d.allowed)

    def show(
        self, task: Task, who: str, action: str, resource: str, d: Decision, before: set[str]
    ) -> None:
        self.step += 1
        mark = "[green]allow[/]" if d.allowed else "[red]deny [/]"
        self.say(f"{self.step:>2} {mark} {who:<12} {action:<9} {resource}")
        state = task.state()
        labels = set(state.get("labels", []))
        for label in sorted(labels - before):
            self.label_origin[label] = f"step {self.step}"
            self.say(f"         [cyan]the task now carries label {label!r}[/]")
        for line in self._why(d, labels, state):
            self.say(f"         {line}")
        if d.revoked:
            self.say(f"         [bold red]task revoked now: {d.revoked}[/]")

    def _why(self, d: Decision, labels: set[str], state: dict[str, Any]) -> list[str]:
        if d.allowed:
            return [f"[dim]permitted by {', '.join(d.reasons)}[/]"] if d.reasons else []
        out: list[str] = []
        if d.reasons:
            out.append(f"forbidden by {', '.join(d.reasons)}")
            for label in sorted(labels):
                origin = self.label_origin.get(label, "an ancestor")
                out.append(f"  label {label!r} was set at {origin}")
        elif d.kind == DenialKind.POLICY:
            out.append("no policy permits it")
        if d.kind == DenialKind.BUDGET:
            budgets = state.get("budgets", {})
            spent = ", ".join(
                f"{n}: {b['spent']} of {b['limit']} spent" for n, b in budgets.items()
            )
            out.append(f"{d.message} ({spent})" if spent else str(d.message))
        elif (
            d.kind != DenialKind.POLICY and d.message and d.message != f"task revoked: {d.revoked}"
        ):
            out.append(str(d.message))
        return out


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
        console.print(f"   [yellow]approval asked[/] for {req.action} {req.resource}: yes")
        return True

    out = Log(console)
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
        console.print(f"authenticated [bold]{orch.spiffe_id}[/]\n  (a JWT-SVID from LocalIssuer)")
        async with guard.task(orch, intent="quarterly report", ttl=120) as task:
            lease = await task.lease("task-token")
            console.print(
                f"task {task.txn[:12]}… opened; task-token lease issued (ttl {lease.ttl:.0f}s)"
            )
            claims = TaskTokenVerifier(tokens.jwks(), "https://tools.example.org").verify(
                lease.secret.reveal()
            )
            console.print(f"  the token verifies downstream: txn {claims['txn'][:12]}…")
            o = "orchestrator"
            out.decide(task, o, "call_tool", 'Tool::"search"')
            out.decide(task, o, "call_tool", 'Tool::"shell"')
            out.decide(task, o, "egress", 'Domain::"api.github.com"')
            out.decide(task, o, "read", 'Dataset::"payroll"')
            out.decide(task, o, "egress", 'Domain::"api.github.com"')
            out.decide(task, o, "egress", 'Domain::"wiki.corp.internal"')
            before = set(task.state().get("labels", []))
            try:
                d = await task.require("call_tool", 'Tool::"deploy"')
            except Denied as e:
                if e.decision is None:
                    raise
                d = e.decision
            out.show(task, o, "call_tool", 'Tool::"deploy"', d, before)

            child_token = issuer.mint_svid("/agents/researcher", AUDIENCE, ttl=300)
            child = await task.delegate(child_token, intent="find sources")
            out.say(
                f"delegated to [bold]{child.agent_uid}[/]\n"
                f"  depth {child.depth}, actors: {len(child.actors)}"
            )
            r = "researcher"
            out.decide(child, r, "call_tool", 'Tool::"search"')
            out.decide(child, r, "read", 'Dataset::"payroll"')
            out.decide(child, r, "egress", 'Domain::"pastebin.com"')
            for _ in range(3):
                if not out.decide(task, o, "egress", 'Domain::"pastebin.com"') and task.revoked:
                    break
            out.decide(task, o, "call_tool", 'Tool::"search"')
            out.decide(child, r, "call_tool", 'Tool::"search"')
        live = broker.active()
        out.say(
            f"task ended: its lease is {'revoked' if not live else 'STILL LIVE'}; "
            f"live leases: {len(live)}"
        )
        if live:
            raise SystemExit("a lease outlived its task")


def run_demo() -> int:
    # The demo prints revocations itself, in order; the library's warning would repeat them.
    logging.getLogger("tether").setLevel(logging.ERROR)
    # 80 columns, so the story reads in any terminal (and in a log file).
    console = Console(width=WIDTH)
    anyio.run(_demo, console)
    return 0
