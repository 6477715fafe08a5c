"""MCP (official `mcp` SDK 2.x): a server middleware that authorizes every tool call,
and a client-side wrapper that authorizes before it calls.

Server side, `McpToolGuard` goes on `Server.middleware` / `MCPServer(middleware=[...])`,
the SDK's context-tier hook that sees every request before validation:

- the caller is authenticated on every request from a credential in `_meta["tether/token"]`
  or an HTTP `Authorization: Bearer` header: a task token (`typ: txntoken+jwt`, checked with
  a `TaskTokenVerifier`) names the task it belongs to; a JWT-SVID names an agent, and the
  server keeps one task per token. A task token of a task open in this process's Guard
  continues that task; otherwise the server opens a mirror task bounded by the token's
  scope and lifetime;
- `tools/call` is `task.authorize(Action::"call_tool", Tool::"<name>", {"arguments": ...})`;
  a refusal comes back as a tool result with `isError` and a sentence the model can read;
- `tools/list` keeps only the tools the task may call (none without a credential);
- an approval obligation asks the client's user by elicitation (a `elicitation/create`
  request on 2025-era connections, an `input_required` result on 2026-07-28 ones) or the
  Guard's approvers; no way to ask means no approval.

Other methods pass through: this mode guards tools (the COAZ mode, `tether.integrations.coaz`,
authorizes every method).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import mcp_types as mt
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from tether.identity import Agent, SpiffeId
from tether.integrations.tool_gate import (
    DEFAULT_POLICY,
    Approver,
    ToolPolicy,
    Verdict,
    authorize_tool_call,
    refusal,
    visible_tools,
)
from tether.leases import TaskTokenVerifier
from tether.leases.task_token import TXN_TOKEN_TYP
from tether.tasks import ApprovalRequest, Guard, Task, action_uid

__all__ = [
    "ACCESS_DENIED",
    "TOKEN_META_KEY",
    "McpToolGuard",
    "bearer_token",
    "call_tool_guarded",
]

TOKEN_META_KEY = "tether/token"
# JSON-RPC implementation-defined server error, as COAZ-MCP uses for a denial.
ACCESS_DENIED = -32001
_APPROVAL_KEY = "tether-approval"
_APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"approve": {"type": "boolean", "title": "Approve this tool call"}},
    "required": ["approve"],
}
_MAX_SESSIONS = 10_000


class _Unauthenticated(ValueError):
    pass


def bearer_token(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """The caller's credential: `_meta["tether/token"]`, else an `Authorization: Bearer`
    header (HTTP transports). Raises `ValueError` for a malformed one."""
    meta = (ctx.params or {}).get("_meta")
    if isinstance(meta, Mapping):
        token = meta.get(TOKEN_META_KEY)
        if token is not None:
            if not isinstance(token, str):
                raise _Unauthenticated(f"`_meta.{TOKEN_META_KEY}` must be a string")
            return token
    headers = getattr(ctx.request, "headers", None)
    if headers is not None:
        value = headers.get("authorization")
        if isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


def _token_type(token: str) -> str:
    """The JOSE `typ` of a compact JWT, lower-cased (only to pick a verifier: the verifier
    then checks everything). pyjwt's header parser costs ~100 µs; this costs a few."""
    head = token.split(".", 1)[0]
    if len(head) > 4096:
        raise _Unauthenticated("malformed token")
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, TypeError):
        raise _Unauthenticated("malformed token") from None
    if not isinstance(header, dict):
        raise _Unauthenticated("malformed token")
    return str(header.get("typ", "")).lower()


def _tool_result(ctx: ServerRequestContext[Any, Any], text: str) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": True}
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        result["resultType"] = "complete"
    return result


def _call_digest(txn: str, tool: str, arguments: Any) -> str:
    body = json.dumps([txn, tool, arguments], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


class McpToolGuard:
    """`ServerMiddleware` authorizing `tools/call` and filtering `tools/list` with tether.

    `guard` must be entered (`async with guard:`) while the server runs. `task_tokens`
    verifies task tokens (omit it to accept only JWT-SVIDs, through `guard.authenticator`).
    `scope`/`intent`/`ttl` apply to the tasks this server opens for JWT-SVID callers.
    `approval="elicit"` asks the client's user; `"guard"` uses the Guard's approvers.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        task_tokens: TaskTokenVerifier | None = None,
        policy: ToolPolicy = DEFAULT_POLICY,
        scope: Iterable[str] | None = None,
        intent: str = "MCP session",
        ttl: float = 3600.0,
        approval: Literal["elicit", "guard"] = "elicit",
    ) -> None:
        self.guard = guard
        self.task_tokens = task_tokens
        self.policy = policy
        self.scope = None if scope is None else frozenset(scope)
        self.intent = intent
        self.ttl = ttl
        self.approval = approval
        # Tasks this server opened, by txn (task tokens) or token digest (JWT-SVIDs).
        self._sessions: OrderedDict[str, Task] = OrderedDict()
        # Outstanding approval prompts (2026 connections): nonce -> call digest.
        self._pending: OrderedDict[str, str] = OrderedDict()

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method == "tools/call":
            return await self._call(ctx, call_next)
        if ctx.method == "tools/list":
            return await self._list(ctx, call_next)
        return await call_next(ctx)

    # -- authentication ----------------------------------------------------------------

    async def task_for(self, ctx: ServerRequestContext[Any, Any]) -> Task:
        """The task a request acts in; raises `MCPError(-32001)` when unauthenticated."""
        task, _ = await self._caller(ctx)
        return task

    async def _caller(
        self, ctx: ServerRequestContext[Any, Any]
    ) -> tuple[Task, frozenset[str] | None]:
        """The task, and the actions the presented credential allows (None: any)."""
        try:
            token = bearer_token(ctx)
        except ValueError as e:
            raise MCPError(ACCESS_DENIED, f"unauthenticated: {e}") from None
        return await self.authenticate(token)

    async def authenticate(self, token: str | None) -> tuple[Task, frozenset[str] | None]:
        """The task a credential acts in, and the actions the credential allows (None:
        any); raises `MCPError(-32001)` when it does not authenticate."""
        try:
            if token is None:
                raise _Unauthenticated("no credential: send a task token or JWT-SVID")
            if _token_type(token) == TXN_TOKEN_TYP:
                return await self._task_from_task_token(token)
            return await self._task_from_svid(token), None
        except Exception as e:  # every failure to authenticate denies, with its reason
            raise MCPError(ACCESS_DENIED, f"unauthenticated: {e}") from None

    async def _task_from_svid(self, token: str) -> Task:
        agent = await self.guard.authenticate(token)
        key = "svid:" + hashlib.sha256(token.encode()).hexdigest()
        task = self._live(key)
        if task is None:
            ttl = min(self.ttl, agent.expires_at - self.guard.clock())
            task = await _opened(
                self.guard.task(agent, intent=self.intent, scope=self.scope, ttl=ttl)
            )
            self._remember(key, task)
        return task

    async def _task_from_task_token(self, token: str) -> tuple[Task, frozenset[str] | None]:
        if self.task_tokens is None:
            raise _Unauthenticated("this server does not accept task tokens")
        claims = self.task_tokens.verify(token)
        txn, sub = claims["txn"], claims["sub"]
        raw_scope = claims.get("tctx", {}).get("scope")
        # An unscoped task's token carries an empty scope list (see `Task.ref`).
        scope = frozenset(str(action_uid(str(a))) for a in raw_scope or ()) or None
        task = self.guard.tasks.get(txn) or self._live("txn:" + txn)
        if task is None:
            ttl = float(claims["exp"]) - self.guard.clock()
            if ttl <= 0:
                raise _Unauthenticated("task token expired")
            # The verified task token is the agent's proof of identity for this task.
            agent = Agent.from_claims(SpiffeId.parse(sub), dict(claims), float(claims["exp"]))
            opener = self.guard.task(
                agent, intent=str(claims.get("scope") or self.intent), scope=scope, ttl=ttl
            )
            task = await _opened(opener)
            self._remember("txn:" + txn, task)
        if task.ref().agent != sub:
            raise _Unauthenticated("task token does not match its task's agent")
        return task, scope

    def _live(self, key: str) -> Task | None:
        task = self._sessions.get(key)
        if task is None or task.closed:
            return None
        return task

    def _remember(self, key: str, task: Task) -> None:
        self._sessions[key] = task
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)

    # -- tools ---------------------------------------------------------------------------

    async def _call(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        params = ctx.params or {}
        name, arguments = params.get("name"), params.get("arguments")
        if not isinstance(name, str) or not (arguments is None or isinstance(arguments, dict)):
            raise MCPError(
                mt.INVALID_PARAMS, "tools/call needs a string `name` and object `arguments`"
            )
        task, allowed_actions = await self._caller(ctx)
        outside = self.outside_token_scope(name, allowed_actions)
        if outside is not None:
            return _tool_result(ctx, self.explain(name, outside))
        approver, asked = self._approver(ctx, task, name, arguments)
        verdict = await authorize_tool_call(
            task, name, arguments, policy=self.policy, approver=approver
        )
        if verdict.allowed:
            return await call_next(ctx)
        if asked is not None and asked.get("nonce"):
            return self._input_required(ctx, name, asked["nonce"])
        return _tool_result(ctx, self.explain(name, verdict))

    def outside_token_scope(
        self, tool: str, allowed_actions: frozenset[str] | None
    ) -> Verdict | None:
        """A refusal when the presented task token does not allow this tool's action."""
        if allowed_actions is None or self.policy.names(tool)[0] in allowed_actions:
            return None
        return refusal(tool, None, "it is outside the scope of the presented task token")

    def explain(self, tool: str, verdict: Verdict) -> str:
        """The refusal text the model reads (override to add guidance)."""
        return verdict.reason

    async def _list(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        try:
            anonymous = bearer_token(ctx) is None
        except ValueError as e:
            raise MCPError(ACCESS_DENIED, f"unauthenticated: {e}") from None
        if anonymous:
            # No credential, no tools: an anonymous listing reveals nothing (SDK clients
            # list without `_meta` to validate results; that must not fail the call).
            task, allowed_actions = None, None
        else:
            task, allowed_actions = await self._caller(ctx)
        result = await call_next(ctx)
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            raise MCPError(mt.INTERNAL_ERROR, "tools/list result has an unexpected shape")
        named = [
            t for t in result["tools"] if isinstance(t, Mapping) and isinstance(t.get("name"), str)
        ]
        if allowed_actions is not None:
            named = [t for t in named if self.policy.names(t["name"])[0] in allowed_actions]
        visible = (
            set()
            if task is None
            else visible_tools(task, (t["name"] for t in named), policy=self.policy)
        )
        tools = [t for t in named if t["name"] in visible]
        return {**result, "tools": tools}

    # -- approvals -------------------------------------------------------------------------

    def _approver(
        self,
        ctx: ServerRequestContext[Any, Any],
        task: Task,
        tool: str,
        arguments: Any,
    ) -> tuple[Approver | None, dict[str, str] | None]:
        """An approver for this request, and a record of whether it had to ask (2026 era)."""
        if self.approval != "elicit":
            return None, None
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return self._elicit_now(ctx, tool), None
        asked: dict[str, str] = {}
        digest = _call_digest(task.txn, tool, arguments)
        params = ctx.params or {}

        async def from_responses(req: ApprovalRequest) -> bool:
            # Only an answer to the prompt this server issued for this very call counts.
            state = params.get("requestState")
            responses = params.get("inputResponses")
            if isinstance(state, str) and self._pending.get(state) == digest:
                del self._pending[state]
                answer = responses.get(_APPROVAL_KEY) if isinstance(responses, Mapping) else None
                return _accepted(answer)
            nonce = secrets.token_urlsafe(16)
            self._pending[nonce] = digest
            while len(self._pending) > _MAX_SESSIONS:
                self._pending.popitem(last=False)
            asked["nonce"] = nonce
            return False

        return from_responses, asked

    def _elicit_now(self, ctx: ServerRequestContext[Any, Any], tool: str) -> Approver:
        async def elicit(req: ApprovalRequest) -> bool:
            result = await ctx.session.elicit_form(
                _prompt(tool, req.obligation), _APPROVAL_SCHEMA, related_request_id=ctx.request_id
            )
            return _accepted(result.model_dump())

        return elicit

    def _input_required(
        self, ctx: ServerRequestContext[Any, Any], tool: str, nonce: str
    ) -> dict[str, Any]:
        request = {
            "method": "elicitation/create",
            "params": {
                "mode": "form",
                "message": _prompt(tool, "approval"),
                "requestedSchema": _APPROVAL_SCHEMA,
            },
        }
        return {
            "resultType": "input_required",
            "inputRequests": {_APPROVAL_KEY: request},
            "requestState": nonce,
        }


def _prompt(tool: str, obligation: str) -> str:
    return f"An agent asks to call the tool `{tool}`, which needs your {obligation}. Approve it?"


def _accepted(answer: Any) -> bool:
    if not isinstance(answer, Mapping) or answer.get("action") != "accept":
        return False
    content = answer.get("content")
    return isinstance(content, Mapping) and content.get("approve") is True


async def _opened(opener: Any) -> Task:
    # `guard.task(...)` is an async context manager; the server keeps the task open past
    # this request and the Guard closes it at its deadline or when the Guard stops.
    task: Task = await opener.__aenter__()
    return task


async def call_tool_guarded(
    session: Any,
    task: Task,
    name: str,
    arguments: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    policy: ToolPolicy = DEFAULT_POLICY,
    approver: Approver | None = None,
) -> mt.CallToolResult:
    """Client side: authorize `name` for `task` before calling it on an MCP `Client` or
    `ClientSession`, and send `token` (the task token) in `_meta`. A refused call never
    reaches the server; its result is an `isError` tool result with the reason."""
    verdict = await authorize_tool_call(task, name, arguments, policy=policy, approver=approver)
    if not verdict.allowed:
        return mt.CallToolResult(
            content=[mt.TextContent(type="text", text=verdict.reason)], is_error=True
        )
    meta = None if token is None else {TOKEN_META_KEY: token}
    result: mt.CallToolResult = await session.call_tool(name, arguments, meta=meta)
    return result
