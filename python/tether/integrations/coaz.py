"""The AuthZEN COAZ-MCP binding (Draft 1, Feb 2026) as an MCP server middleware.

Every request is mapped to an AuthZEN Access Evaluation(s) request and decided by a PDP:
tether in process (`TetherPdp`) or any AuthZEN PDP over HTTP (`HttpPdp`). As the
binding says: the human from the access token is the subject (`$token.sub`), the agent
rides in `context.agent` (from a token claim), `tools/call` may use the tool's declared
`x-authzen-mapping` (read from the server's own `tools/list`), `ping` and notifications
pass through, unknown methods are denied, and errors are JSON-RPC: -32602 for a mapping
error, -32001 for a denial, -32603 when the PDP cannot answer. All of it fails closed.

tether is stricter than the draft in two places, both to keep identities anchored to the
verified token: a mapping may not override `subject.id` (the draft allows it with a
warning), and `context.agent` must be exactly the token's agent claim, absent when the
token has none. A mismatch is a mapping error and the PDP is never asked.

CEL: `$`-values are evaluated by `cel-python` (celpy), except plain selection paths
(`token.sub`, `params.arguments["id"]`, `token.?client_id`), which tether resolves itself
because celpy 0.5 has no optional selection (`.?`). `.?` anywhere else is a mapping error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any, Protocol

import celpy
import httpx
import mcp_types as mt
from celpy.adapter import CELJSONEncoder, json_to_cel
from celpy.evaluation import CELEvalError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError

from tether.engine import Engine
from tether.identity import cedar_entity_uid
from tether.integrations.mcp import ACCESS_DENIED, bearer_token
from tether.integrations.tool_gate import cedar_arguments

__all__ = [
    "DEFAULT_MAPPINGS",
    "CoazGuard",
    "HttpPdp",
    "MappingError",
    "Pdp",
    "PdpUnavailable",
    "TetherPdp",
    "build_request",
]

MAPPING_KEY = "x-authzen-mapping"
_SUB = "$token.sub"
_AGENT = "$token.?client_id"


class MappingError(Exception):
    """The mapping could not produce a valid, trustworthy AuthZEN request."""


class PdpUnavailable(Exception):
    """The PDP could not be reached or answered something that is not a decision."""


class Pdp(Protocol):
    async def evaluate(self, request: Mapping[str, Any]) -> bool: ...

    async def evaluations(self, request: Mapping[str, Any]) -> list[bool]: ...


def _default(action: str, resource: Mapping[str, Any], **context: str) -> dict[str, Any]:
    return {
        "evaluation": {
            "subject": {"type": "identity", "id": _SUB},
            "context": {"agent": _AGENT, **context},
            "action": {"name": action},
            "resource": dict(resource),
        }
    }


_SERVER = {"type": "mcp_server", "id": "$token.aud"}
DEFAULT_MAPPINGS: dict[str, dict[str, Any]] = {
    "initialize": _default("initialize", _SERVER, protocol_version="$params.protocolVersion"),
    "tools/list": _default("tools/list", _SERVER),
    "tools/call": _default("tools/call", {"type": "tool", "id": "$params.name"}),
    "resources/list": _default("resources/list", _SERVER),
    **{
        m: _default(m, {"type": "resource", "id": "$params.uri"})
        for m in ("resources/read", "resources/subscribe", "resources/unsubscribe")
    },
    "prompts/list": _default("prompts/list", _SERVER),
    "prompts/get": _default("prompts/get", {"type": "prompt", "id": "$params.name"}),
    "completion/complete": _default(
        "completion/complete",
        {
            "type": "$params.ref.type == 'ref/prompt' ? 'prompt' : 'resource'",
            "id": "$params.ref.type == 'ref/prompt' ? params.ref.name : params.ref.uri",
        },
    ),
    "logging/setLevel": _default("logging/setLevel", _SERVER, level="$params.level"),
    **{
        m: _default(m, {"type": "task", "id": "$params.taskId"})
        for m in ("tasks/get", "tasks/result", "tasks/cancel")
    },
    "tasks/list": _default("tasks/list", _SERVER),
}
"""The binding's default mapping per method (section "Default Mappings")."""

# -- expressions ----------------------------------------------------------------------

_ABSENT = object()
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_SEGMENT = re.compile(rf"\.(\?)?({_IDENT})|\[\s*(?:'([^'\\]*)'|\"([^\"\\]*)\")\s*\]")
_PATH = re.compile(
    rf"^\s*(params|token)((?:\.\??{_IDENT}|\[\s*(?:'[^'\\]*'|\"[^\"\\]*\")\s*\])*)\s*$"
)


def _select_path(expr: str, variables: Mapping[str, Any]) -> Any:
    m = _PATH.match(expr)
    assert m is not None
    value: Any = variables[m.group(1)]
    for seg in _SEGMENT.finditer(m.group(2)):
        optional, name = seg.group(1), seg.group(2)
        key = name if name is not None else (seg.group(3) or seg.group(4) or "")
        if not isinstance(value, Mapping) or key not in value:
            if optional:
                return _ABSENT
            raise MappingError(f"expression '${expr}' failed: no such key '{key}'")
        value = value[key]
    return value


@lru_cache(maxsize=1024)
def _program(expr: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expr))


def _cel(expr: str, variables: Mapping[str, Any]) -> Any:
    if _PATH.match(expr):
        return _select_path(expr, variables)
    if ".?" in expr:
        raise MappingError(f"expression '${expr}': optional selection only in plain paths")
    try:
        activation = {k: json_to_cel(v) for k, v in variables.items()}
        result = _program(expr).evaluate(activation)
    except MappingError:
        raise
    except Exception as e:
        raise MappingError(f"expression '${expr}' failed: {type(e).__name__}") from None
    if isinstance(result, CELEvalError):
        raise MappingError(f"expression '${expr}' failed: {result.args[0] if result.args else ''}")
    try:
        return json.loads(json.dumps(result, cls=CELJSONEncoder))
    except (TypeError, ValueError):
        raise MappingError(f"expression '${expr}' did not yield a JSON value") from None


def _resolve(value: Any, variables: Mapping[str, Any], depth: int = 0) -> Any:
    if depth > 16:
        raise MappingError("mapping is nested too deeply")
    if isinstance(value, str):
        if value.startswith("$$"):
            return value[1:]
        if value.startswith("$"):
            return _cel(value[1:], variables)
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            r = _resolve(v, variables, depth + 1)
            if r is not _ABSENT:
                out[str(k)] = r
        return out
    if isinstance(value, list):
        return [r for r in (_resolve(v, variables, depth + 1) for v in value) if r is not _ABSENT]
    return value


# -- building the request ----------------------------------------------------------------


def _check_entity(where: str, obj: Any, *, need_type: bool = True) -> None:
    if not isinstance(obj, Mapping):
        raise MappingError(f"`{where}` is missing or not an object")
    if need_type and not isinstance(obj.get("type"), str):
        raise MappingError(f"`{where}.type` is missing or not a string")
    if not isinstance(obj.get("id"), str):
        raise MappingError(f"`{where}.id` is missing or not a string")


def _anchor(
    resolved: dict[str, Any],
    token: Mapping[str, Any],
    subject_claim: str,
    agent_claim: str,
) -> None:
    """Subject and agent come from the token, whatever the mapping or arguments say."""
    sub = token.get(subject_claim)
    if not isinstance(sub, str):
        raise MappingError(f"the token has no `{subject_claim}` claim")
    subject = resolved.get("subject")
    if subject is None or (isinstance(subject, Mapping) and "id" not in subject):
        subject = {**(subject or {}), "id": sub}
    if not isinstance(subject, Mapping):
        raise MappingError("`subject` is not an object")
    if subject.get("id") != sub:
        raise MappingError("`subject.id` is not the subject of the validated token")
    resolved["subject"] = {"type": "identity", **subject}
    agent = token.get(agent_claim)
    context = resolved.get("context")
    if context is None:
        context = {}
    if not isinstance(context, Mapping):
        raise MappingError("`context` is not an object")
    context = dict(context)
    if "agent" in context and context["agent"] != agent:
        raise MappingError("`context.agent` asserts an agent identity the token does not carry")
    if isinstance(agent, str):
        context["agent"] = agent
    resolved["context"] = context


def build_request(
    mapping: Mapping[str, Any],
    params: Mapping[str, Any],
    token: Mapping[str, Any],
    *,
    server_id: str | None = None,
    subject_claim: str = "sub",
    agent_claim: str = "client_id",
) -> tuple[str, dict[str, Any]]:
    """Resolve a mapping into (`"evaluation"` | `"evaluations"`, AuthZEN request body);
    raises `MappingError`."""
    if not isinstance(mapping, Mapping) or len(mapping) != 1:
        raise MappingError("a mapping has exactly one key: `evaluation` or `evaluations`")
    ((envelope, template),) = mapping.items()
    if envelope not in ("evaluation", "evaluations") or not isinstance(template, Mapping):
        raise MappingError(f"unknown mapping envelope `{envelope}`")
    claims = dict(token)
    if server_id is not None:
        claims["aud"] = server_id  # the PEP knows its own resource identifier
    elif isinstance(claims.get("aud"), list) and len(claims["aud"]) == 1:
        claims["aud"] = claims["aud"][0]
    # (An `aud` list naming several servers stays a list: `resource.id` then fails.)
    variables = {"params": dict(params), "token": claims}
    resolved = _resolve(template, variables)
    _anchor(resolved, token, subject_claim, agent_claim)
    if envelope == "evaluation":
        _check_entity("resource", resolved.get("resource"))
        if not isinstance(resolved.get("action"), Mapping) or not isinstance(
            resolved["action"].get("name"), str
        ):
            raise MappingError("`action.name` is missing or not a string")
        return envelope, resolved
    entries = resolved.get("evaluations")
    if not isinstance(entries, list) or not entries:
        raise MappingError("`evaluations` must be a non-empty list")
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise MappingError(f"`evaluations[{i}]` is not an object")
        if "subject" in entry:
            raise MappingError(f"`evaluations[{i}]` sets a subject (identity smuggling)")
        ctx = entry.get("context")
        if (
            isinstance(ctx, Mapping)
            and "agent" in ctx
            and ctx["agent"] != resolved["context"].get("agent")
        ):
            raise MappingError(f"`evaluations[{i}].context.agent` asserts another agent")
        _check_entity(f"evaluations[{i}].resource", entry.get("resource", resolved.get("resource")))
    return envelope, resolved


# -- PDPs -----------------------------------------------------------------------------------

_CEDAR_TYPES = {
    "identity": "User",
    "tool": "Tool",
    "mcp_server": "McpServer",
    "resource": "Resource",
    "prompt": "Prompt",
    "task": "Task",
}


class TetherPdp:
    """tether's engine as the PDP, in process: `subject` -> principal, `action.name` ->
    `Action::"<name>"`, `resource` -> entity (AuthZEN types renamed by `entity_types`,
    `identity` -> `User`, `tool` -> `Tool`, ...), `context` -> context (with subject and
    resource `properties` as `context.subject_properties` / `context.resource_properties`)."""

    def __init__(self, engine: Engine, *, entity_types: Mapping[str, str] | None = None) -> None:
        self.engine = engine
        self.types = {**_CEDAR_TYPES, **(entity_types or {})}

    def _entity(self, obj: Mapping[str, Any]) -> str:
        t = str(obj["type"])
        return cedar_entity_uid(self.types.get(t, t), str(obj["id"]))

    def _decide(self, subject: Mapping[str, Any], entry: Mapping[str, Any], ctx: Any) -> bool:
        context = dict(ctx or {})
        for key, obj in (("subject", subject), ("resource", entry["resource"])):
            if obj.get("properties"):
                context[f"{key}_properties"] = obj["properties"]
        try:
            return self.engine.authorize(
                self._entity(subject),
                cedar_entity_uid("Action", str(entry["action"]["name"])),
                self._entity(entry["resource"]),
                cedar_arguments(context),
            ).allowed
        except Exception as e:
            raise PdpUnavailable(f"engine error: {type(e).__name__}") from None

    async def evaluate(self, request: Mapping[str, Any]) -> bool:
        return self._decide(request["subject"], request, request.get("context"))

    async def evaluations(self, request: Mapping[str, Any]) -> list[bool]:
        out = []
        for entry in request["evaluations"]:
            full = {"action": request.get("action"), "resource": request.get("resource"), **entry}
            ctx = {**(request.get("context") or {}), **(entry.get("context") or {})}
            out.append(self._decide(request["subject"], full, ctx))
        return out


class HttpPdp:
    """Any AuthZEN 1.0 PDP: `POST {base}/access/v1/evaluation(s)`; anything but a well-formed
    decision is `PdpUnavailable`. The binding requires TLS: `http://` needs
    `allow_plain_http=True` (a PDP on localhost, say)."""

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        allow_plain_http: bool = False,
    ) -> None:
        if not base_url.startswith("https://") and not allow_plain_http:
            raise ValueError("AuthZEN PDPs are reached over TLS: use an https:// URL")
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.AsyncClient(timeout=timeout)
        self.headers = dict(headers or {})

    async def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        try:
            r = await self.client.post(self.base_url + path, json=body, headers=self.headers)
            r.raise_for_status()
            return r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise PdpUnavailable(f"PDP request failed: {type(e).__name__}") from None

    async def evaluate(self, request: Mapping[str, Any]) -> bool:
        body = await self._post("/access/v1/evaluation", request)
        if not isinstance(body, Mapping) or not isinstance(body.get("decision"), bool):
            raise PdpUnavailable("PDP answered without a boolean `decision`")
        return bool(body["decision"])

    async def evaluations(self, request: Mapping[str, Any]) -> list[bool]:
        body = await self._post("/access/v1/evaluations", request)
        items = body.get("evaluations") if isinstance(body, Mapping) else None
        if not isinstance(items, list) or not all(
            isinstance(i, Mapping) and isinstance(i.get("decision"), bool) for i in items
        ):
            raise PdpUnavailable("PDP answered without a list of boolean decisions")
        return [bool(i["decision"]) for i in items]


# -- the middleware ---------------------------------------------------------------------------

TokenVerifier = Callable[[str], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
TokenSource = Callable[[ServerRequestContext[Any, Any]], str | None]


class CoazGuard:
    """`ServerMiddleware` enforcing COAZ-MCP with `pdp`.

    `verify_token` validates the access token (signature, issuer, audience, expiry) and
    returns its claims; it raises to reject. `token_from` finds the token (default:
    `_meta["tether/token"]` or the `Authorization: Bearer` header). `mappings` adds or
    replaces default mappings (e.g. for `server/discover` on 2026 connections).
    """

    def __init__(
        self,
        pdp: Pdp,
        verify_token: TokenVerifier,
        *,
        server_id: str | None = None,
        subject_claim: str = "sub",
        agent_claim: str = "client_id",
        mappings: Mapping[str, Mapping[str, Any]] | None = None,
        pass_through: Sequence[str] = ("ping",),
        token_from: TokenSource = bearer_token,
    ) -> None:
        self.pdp = pdp
        self.verify_token = verify_token
        self.server_id = server_id
        self.subject_claim = subject_claim
        self.agent_claim = agent_claim
        self.mappings = {**DEFAULT_MAPPINGS, **(mappings or {})}
        self.pass_through = frozenset(pass_through)
        self.token_from = token_from
        self._declared: dict[str, Mapping[str, Any]] | None = None

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.request_id is None or ctx.method in self.pass_through:
            return await call_next(ctx)  # notifications and ping: never asked
        mapping = self.mappings.get(ctx.method)
        if mapping is None:
            raise MCPError(ACCESS_DENIED, f"Access denied: method `{ctx.method}` is not mapped")
        claims = await self._claims(ctx)
        params = {k: v for k, v in (ctx.params or {}).items() if k != "_meta"}
        if ctx.method == "tools/call":
            mapping = await self._tool_mapping(ctx, call_next, params.get("name")) or mapping
        try:
            envelope, request = build_request(
                mapping,
                params,
                claims,
                server_id=self.server_id,
                subject_claim=self.subject_claim,
                agent_claim=self.agent_claim,
            )
        except MappingError as e:
            raise MCPError(mt.INVALID_PARAMS, f"COAZ mapping error: {e}") from None
        try:
            if envelope == "evaluation":
                allowed = await self.pdp.evaluate(request)
            else:
                decisions = await self.pdp.evaluations(request)
                allowed = len(decisions) == len(request["evaluations"]) and all(decisions)
        except Exception:
            raise MCPError(mt.INTERNAL_ERROR, "Authorization service unavailable") from None
        if allowed is not True:
            raise MCPError(ACCESS_DENIED, f"Access denied: {ctx.method} was not permitted")
        return await call_next(ctx)

    async def _claims(self, ctx: ServerRequestContext[Any, Any]) -> Mapping[str, Any]:
        try:
            token = self.token_from(ctx)
            if token is None:
                raise ValueError("no access token")
            claims = self.verify_token(token)
            if isinstance(claims, Awaitable):
                claims = await claims
            if not isinstance(claims, Mapping):
                raise ValueError("token verifier returned no claims")
            return claims
        except Exception as e:
            raise MCPError(ACCESS_DENIED, f"Access denied: unauthenticated ({e})") from None

    async def _tool_mapping(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext, tool: Any
    ) -> Mapping[str, Any] | None:
        """The tool's declared mapping, read once from the server's own `tools/list`."""
        if self._declared is None:
            meta = (ctx.params or {}).get("_meta")
            listing = await call_next(
                replace(ctx, method="tools/list", params=None if meta is None else {"_meta": meta})
            )
            tools = listing.get("tools") if isinstance(listing, Mapping) else None
            if not isinstance(tools, list):
                raise MCPError(mt.INTERNAL_ERROR, "Authorization service unavailable")
            self._declared = {
                t["name"]: t["inputSchema"][MAPPING_KEY]
                for t in tools
                if isinstance(t, Mapping)
                and isinstance(t.get("inputSchema"), Mapping)
                and MAPPING_KEY in t["inputSchema"]
            }
        return self._declared.get(tool) if isinstance(tool, str) else None

    def forget_declared_mappings(self) -> None:
        """Re-read declared mappings on the next `tools/call` (after the tools change)."""
        self._declared = None
