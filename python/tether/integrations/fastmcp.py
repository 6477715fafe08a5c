"""FastMCP (the `fastmcp` package, 4.x): the MCP tool guard as a FastMCP `Middleware`.

`FastMCP("tools", middleware=[FastMcpToolGuard(guard, ...)])`: the same credentials and
decisions as `McpToolGuard` (`_meta["tether/token"]` or an `Authorization: Bearer` header;
task tokens or JWT-SVIDs), at FastMCP's own hooks: `on_call_tool` refuses with a `ToolError`
(an `isError` result the model reads) and `on_list_tools` keeps only the tools the task may
call. Approval obligations go to the Guard's approvers (elicitation is not wired here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import mcp_types as mt
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import get_http_headers
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import Tool, ToolResult

from tether.integrations.mcp import TOKEN_META_KEY, McpToolGuard
from tether.integrations.tool_gate import (
    DEFAULT_POLICY,
    ToolPolicy,
    authorize_tool_call,
    visible_tools,
)
from tether.leases import TaskTokenVerifier
from tether.tasks import Guard

__all__ = ["FastMcpToolGuard"]


def _meta_token(meta: Any) -> str | None:
    token = meta.get(TOKEN_META_KEY) if isinstance(meta, Mapping) else None
    if token is not None and not isinstance(token, str):
        raise ToolError(f"`_meta.{TOKEN_META_KEY}` must be a string")
    return token


def _request_meta(context: MiddlewareContext[Any]) -> Any:
    # FastMCP hands the middleware params without `_meta`; the request context keeps it.
    fctx = context.fastmcp_context
    request = fctx.request_context if fctx is not None else None
    return getattr(request, "meta", None)


def _token(context: MiddlewareContext[Any]) -> str | None:
    token = _meta_token(_request_meta(context))
    if token is not None:
        return token
    value = get_http_headers(include={"authorization"}).get("authorization", "")
    return value[7:].strip() if value[:7].lower() == "bearer " else None


class FastMcpToolGuard(Middleware):
    """FastMCP middleware authorizing every tool call with tether."""

    def __init__(
        self,
        guard: Guard,
        *,
        task_tokens: TaskTokenVerifier | None = None,
        policy: ToolPolicy = DEFAULT_POLICY,
        scope: Iterable[str] | None = None,
        intent: str = "MCP session",
        ttl: float = 3600.0,
    ) -> None:
        self.policy = policy
        self.core = McpToolGuard(
            guard,
            task_tokens=task_tokens,
            policy=policy,
            scope=scope,
            intent=intent,
            ttl=ttl,
            approval="guard",
        )

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        name, arguments = context.message.name, context.message.arguments
        task, allowed_actions = await self.core.authenticate(_token(context))
        outside = self.core.outside_token_scope(name, allowed_actions)
        if outside is not None:
            raise ToolError(outside.reason)
        verdict = await authorize_tool_call(task, name, arguments, policy=self.policy)
        if not verdict.allowed:
            raise ToolError(verdict.reason)
        return await call_next(context)

    async def on_list_tools(
        self,
        context: MiddlewareContext[mt.ListToolsRequest],
        call_next: CallNext[mt.ListToolsRequest, Sequence[Tool]],
    ) -> Sequence[Tool]:
        token = _token(context)
        tools = await call_next(context)
        if token is None:
            return []  # anonymous: nothing (as McpToolGuard)
        task, allowed_actions = await self.core.authenticate(token)
        names = [t.name for t in tools]
        if allowed_actions is not None:
            names = [n for n in names if self.policy.names(n)[0] in allowed_actions]
        visible = visible_tools(task, names, policy=self.policy)
        return [t for t in tools if t.name in visible]
