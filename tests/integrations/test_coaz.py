"""The COAZ-MCP binding mode on a real `mcp` SDK server, driven in memory.

The in-memory transport has no HTTP headers, so each test's `token_from` hands the
guard the connection's access token for every request, as an `Authorization` header
would. Spoofed identities are mapping errors and the PDP is never asked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest

pytest.importorskip("mcp", reason="tether[mcp] not installed")
pytest.importorskip("celpy", reason="tether[mcp] not installed (cel-python)")

import mcp_types as mt
from cryptography.hazmat.primitives.asymmetric import ec
from mcp import Client
from mcp.server import Server
from mcp.shared.exceptions import MCPError

from tether.engine import Engine
from tether.integrations.coaz import (
    CoazGuard,
    HttpPdp,
    MappingError,
    TetherPdp,
    build_request,
)
from tether.integrations.mcp import ACCESS_DENIED

pytestmark = pytest.mark.anyio
AUD = "https://mcp.example.com"
KEY = ec.generate_private_key(ec.SECP256R1())

POLICIES = """
permit (principal == User::"alice", action in [Action::"initialize", Action::"tools/list"],
        resource == McpServer::"https://mcp.example.com");
permit (principal == User::"alice", action == Action::"tools/call",
        resource == Tool::"get_local_weather");
permit (principal == User::"alice", action == Action::"get_customer", resource)
when { resource == customer::"cust-1" && context.agent == "agent-app" };
permit (principal == User::"alice", action == Action::"read",
        resource == storage_object::"/reports/q1");
permit (principal == User::"alice", action == Action::"write",
        resource == storage_object::"/archive/q1");
permit (principal, action == Action::"tools/call", resource)
when { context has agent && context.agent == "trusted-agent" };
"""

MAPPINGS: dict[str, dict[str, Any]] = {
    "get_customer": {
        "evaluation": {
            "subject": {"type": "identity", "id": "$token.sub"},
            "action": {"name": "get_customer"},
            "resource": {"type": "customer", "id": "$params.arguments.id"},
            "context": {"agent": "$token.?client_id", "case": "$params.arguments.?case"},
        }
    },
    "copy_object": {
        "evaluations": {
            "subject": {"type": "identity", "id": "$token.sub"},
            "context": {"agent": "$token.?client_id"},
            "evaluations": [
                {
                    "action": {"name": "read"},
                    "resource": {"type": "storage_object", "id": "$params.arguments.source"},
                },
                {
                    "action": {"name": "write"},
                    "resource": {"type": "storage_object", "id": "$params.arguments.destination"},
                },
            ],
        }
    },
    # Each asserts the agent a policy trusts: from a literal, or from the caller's arguments.
    "agent_literal": {
        "evaluation": {
            "action": {"name": "tools/call"},
            "resource": {"type": "tool", "id": "$params.name"},
            "context": {"agent": "trusted-agent"},
        }
    },
    "agent_from_args": {
        "evaluation": {
            "action": {"name": "tools/call"},
            "resource": {"type": "tool", "id": "$params.name"},
            "context": {"agent": "$params.arguments.agent"},
        }
    },
    "subject_from_args": {
        "evaluation": {
            "subject": {"type": "identity", "id": "$params.arguments.user"},
            "action": {"name": "tools/call"},
            "resource": {"type": "tool", "id": "$params.name"},
        }
    },
}
TOOLS = [
    "get_customer",
    "copy_object",
    "agent_literal",
    "agent_from_args",
    "subject_from_args",
    "get_local_weather",
]


def access_token(sub: str = "alice", **claims: Any) -> str:
    body = {"sub": sub, "iss": "https://auth.example.com", "aud": AUD, "exp": 2**31, **claims}
    return jwt.encode(body, KEY, algorithm="ES256")


def verify(token: str) -> Mapping[str, Any]:
    claims: Mapping[str, Any] = jwt.decode(
        token, KEY.public_key(), algorithms=["ES256"], audience=AUD
    )
    return claims


class Recording:
    """Wraps a PDP and records what it was asked."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.asked: list[Any] = []

    async def evaluate(self, request: Mapping[str, Any]) -> bool:
        self.asked.append(request)
        return bool(await self.inner.evaluate(request))

    async def evaluations(self, request: Mapping[str, Any]) -> list[bool]:
        self.asked.append(request)
        return list(await self.inner.evaluations(request))

    def last(self, action: str) -> Any:
        return next(r for r in reversed(self.asked) if r.get("action", {}).get("name") == action)


def tool_server(guard: CoazGuard, ran: list[str]) -> Server[Any]:
    async def list_tools(ctx: Any, params: Any) -> mt.ListToolsResult:
        tools = []
        for name in TOOLS:
            schema: dict[str, Any] = {"type": "object", "properties": {}}
            if name in MAPPINGS:
                schema["x-authzen-mapping"] = MAPPINGS[name]
            tools.append(mt.Tool(name=name, input_schema=schema))
        return mt.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: mt.CallToolRequestParams) -> mt.CallToolResult:
        ran.append(params.name)
        return mt.CallToolResult(content=[mt.TextContent(type="text", text="done")])

    server: Server[Any] = Server("coaz", on_list_tools=list_tools, on_call_tool=call_tool)
    server.middleware.append(guard)
    return server


@asynccontextmanager
async def connect(
    token: str, pdp: Any = None, **kw: Any
) -> AsyncIterator[tuple[Client, list[str], Recording]]:
    rec = Recording(pdp or TetherPdp(Engine(POLICIES)))
    guard = CoazGuard(rec, verify, token_from=lambda ctx: token, **kw)
    ran: list[str] = []
    async with Client(tool_server(guard, ran), mode="legacy") as client:
        yield client, ran, rec


async def refused(client: Client, tool: str, args: dict[str, Any]) -> int:
    with pytest.raises(MCPError) as e:
        await client.call_tool(tool, args)
    return e.value.code


async def test_default_mapping_allows_and_denies_by_tool() -> None:
    async with connect(access_token(client_id="agent-app")) as (client, _, rec):
        assert not (await client.call_tool("get_local_weather", {"zip": "1"})).is_error
        req = rec.last("tools/call")
        assert req["subject"] == {"type": "identity", "id": "alice"}
        assert req["action"] == {"name": "tools/call"}
        assert req["resource"] == {"type": "tool", "id": "get_local_weather"}
        assert req["context"] == {"agent": "agent-app"}
        assert await refused(client, "copy_object", {}) == mt.INVALID_PARAMS


def mcp_codes(exc: BaseException) -> set[int]:
    """Codes of the MCPErrors in an exception (groups and causes included)."""
    if isinstance(exc, MCPError):
        return {exc.code}
    found: set[int] = set()
    for inner in getattr(exc, "exceptions", ()):
        found |= mcp_codes(inner)
    if exc.__cause__ is not None:
        found |= mcp_codes(exc.__cause__)
    return found


async def test_unauthorised_subject_cannot_connect() -> None:
    with pytest.raises(BaseException) as e:  # the SDK wraps the refused initialize
        async with connect(access_token("bob")):
            pass
    assert ACCESS_DENIED in mcp_codes(e.value)


async def test_declared_mapping_checks_arguments() -> None:
    async with connect(access_token(client_id="agent-app")) as (client, ran, rec):
        assert not (await client.call_tool("get_customer", {"id": "cust-1", "case": "c9"})).is_error
        assert rec.last("get_customer")["resource"] == {"type": "customer", "id": "cust-1"}
        assert rec.last("get_customer")["context"] == {"agent": "agent-app", "case": "c9"}
        assert await refused(client, "get_customer", {"id": "cust-2"}) == ACCESS_DENIED
        assert ran == ["get_customer"]


async def test_mapping_error_on_missing_argument_and_pdp_not_asked() -> None:
    async with connect(access_token(client_id="agent-app")) as (client, ran, rec):
        n = len(rec.asked)
        assert await refused(client, "get_customer", {"case": "c9"}) == mt.INVALID_PARAMS
        assert len(rec.asked) == n and ran == []


async def test_evaluations_envelope_needs_every_decision() -> None:
    async with connect(access_token(client_id="agent-app")) as (client, ran, rec):
        ok = {"source": "/reports/q1", "destination": "/archive/q1"}
        assert not (await client.call_tool("copy_object", ok)).is_error
        assert [len(r["evaluations"]) for r in rec.asked if "evaluations" in r] == [2]
        bad = {"source": "/reports/q1", "destination": "/public/q1"}
        assert await refused(client, "copy_object", bad) == ACCESS_DENIED
        assert ran == ["copy_object"]


async def test_agent_spoofed_by_mapping_literal_is_a_mapping_error() -> None:
    async with connect(access_token(client_id="agent-app")) as (client, ran, rec):
        n = len(rec.asked)
        assert await refused(client, "agent_literal", {}) == mt.INVALID_PARAMS
        assert len(rec.asked) == n and ran == []
    # Twin: the token really carries the agent the literal names.
    async with connect(access_token(client_id="trusted-agent")) as (client, ran, rec):
        assert not (await client.call_tool("agent_literal", {})).is_error
        assert ran == ["agent_literal"]


async def test_agent_spoofed_by_argument_is_a_mapping_error() -> None:
    async with connect(access_token(client_id="agent-app")) as (client, ran, rec):
        n = len(rec.asked)
        code = await refused(client, "agent_from_args", {"agent": "trusted-agent"})
        assert code == mt.INVALID_PARAMS and len(rec.asked) == n and ran == []
    async with connect(access_token()) as (client, ran, rec):  # a token with no agent at all
        code = await refused(client, "agent_from_args", {"agent": "trusted-agent"})
        assert code == mt.INVALID_PARAMS and ran == []
    async with connect(access_token(client_id="trusted-agent")) as (client, ran, rec):
        assert not (await client.call_tool("agent_from_args", {"agent": "trusted-agent"})).is_error


async def test_subject_from_arguments_is_a_mapping_error() -> None:
    async with connect(access_token(client_id="agent-app")) as (client, ran, rec):
        n = len(rec.asked)
        assert await refused(client, "subject_from_args", {"user": "root"}) == mt.INVALID_PARAMS
        assert len(rec.asked) == n and ran == []


@pytest.mark.filterwarnings("ignore:ping is removed")
async def test_ping_passes_unknown_methods_are_denied() -> None:
    async with connect(access_token(client_id="agent-app")) as (client, _, rec):
        n = len(rec.asked)
        await client.send_ping()
        assert len(rec.asked) == n  # never asked
        with pytest.raises(MCPError) as e:
            await client.list_resource_templates()  # no default mapping in the binding
        assert e.value.code == ACCESS_DENIED and len(rec.asked) == n


async def test_invalid_token_is_denied() -> None:
    forged = jwt.encode({"sub": "alice", "aud": AUD}, "k" * 32, algorithm="HS256")
    with pytest.raises(BaseException) as e:  # initialize itself is refused
        async with connect(forged):
            pass
    assert ACCESS_DENIED in mcp_codes(e.value)


def pdp_app(handler: Any) -> tuple[HttpPdp, list[Any]]:
    seen: list[Any] = []

    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, body))
        return handler(request.url.path, body)

    client = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    return HttpPdp("https://pdp.example.com", client=client), seen


def allow_alice(path: str, body: Any) -> httpx.Response:
    if path.endswith("/evaluations"):
        return httpx.Response(
            200, json={"evaluations": [{"decision": True}] * len(body["evaluations"])}
        )
    return httpx.Response(200, json={"decision": body["subject"]["id"] == "alice"})


async def test_http_pdp_decides_and_is_never_asked_about_a_spoof() -> None:
    pdp, seen = pdp_app(allow_alice)
    async with connect(access_token(client_id="agent-app"), pdp) as (client, ran, _):
        assert not (await client.call_tool("get_local_weather", {})).is_error
        assert ran == ["get_local_weather"]
        assert {path for path, _ in seen} == {"/access/v1/evaluation"}
        n = len(seen)
        assert await refused(client, "agent_literal", {}) == mt.INVALID_PARAMS
        assert len(seen) == n


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(500),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"decision": "yes"}),
    ],
)
async def test_pdp_failure_is_internal_error_and_fails_closed(answer: httpx.Response) -> None:
    state = {"up": True}

    def handler(path: str, body: Any) -> httpx.Response:
        if state["up"]:
            return allow_alice(path, body)
        return answer

    pdp, _ = pdp_app(handler)
    async with connect(access_token(client_id="agent-app"), pdp) as (client, ran, _):
        state["up"] = False
        assert await refused(client, "get_local_weather", {}) == mt.INTERNAL_ERROR
        assert ran == []


def test_build_request_resolution_rules() -> None:
    token = {"sub": "alice", "client_id": "agent", "aud": ["a", "b"], "roles": ["treasury"]}
    params = {"name": "t", "arguments": {"amount": 20000, "currency": "EUR", "price": "$5"}}
    mapping = {
        "evaluation": {
            "subject": {"type": "$token.roles.exists(r, r == 'treasury') ? 'treasury' : 'std'"},
            "action": {"name": "$params.arguments.currency == 'USD' ? 'dom' : 'intl'"},
            "resource": {
                "type": "account",
                "id": "$$literal",
                "properties": {"size": "$params.arguments.amount > 10000 ? 'high' : 'low'"},
            },
            "context": {"price": '$params.arguments["price"]', "none": "$token.?nope"},
        }
    }
    envelope, req = build_request(mapping, params, token)
    assert envelope == "evaluation"
    assert req["subject"] == {"type": "treasury", "id": "alice"}
    assert req["action"] == {"name": "intl"}
    assert req["resource"] == {"type": "account", "id": "$literal", "properties": {"size": "high"}}
    assert req["context"] == {"price": "$5", "agent": "agent"}
    server = {
        "evaluation": {
            "action": {"name": "tools/list"},
            "resource": {"type": "mcp_server", "id": "$token.aud"},
        }
    }
    with pytest.raises(MappingError):  # two audiences, no configured server id
        build_request(server, {}, token)
    assert build_request(server, {}, token, server_id="a")[1]["resource"]["id"] == "a"
    bads: list[dict[str, Any]] = [{}, {"evaluation": {}, "evaluations": {}}, {"other": {}}]
    for bad in bads:
        with pytest.raises(MappingError):
            build_request(bad, params, token)
    smuggle = {
        "evaluations": {
            "evaluations": [
                {
                    "subject": {"id": "alice"},
                    "action": {"name": "x"},
                    "resource": {"type": "t", "id": "i"},
                }
            ]
        }
    }
    with pytest.raises(MappingError):
        build_request(smuggle, params, token)


DISCOVER = {
    "server/discover": {
        "evaluation": {
            "action": {"name": "initialize"},
            "resource": {"type": "mcp_server", "id": "$token.aud"},
        }
    }
}


async def test_2026_connections_need_server_discover_mapped() -> None:
    # The draft predates `server/discover` (MCP 2026-07-28): unmapped, it is denied like
    # any unknown method; mapped by the deployment, the same calls work.
    token = access_token(client_id="agent-app")
    rec = Recording(TetherPdp(Engine(POLICIES)))
    denied = CoazGuard(rec, verify, token_from=lambda ctx: token)
    ran: list[str] = []
    with pytest.raises(BaseException) as e:  # discovery refused: the client cannot connect
        async with Client(tool_server(denied, ran)) as client:
            await client.call_tool("get_local_weather", {})
    assert mcp_codes(e.value) and ran == []
    mapped = CoazGuard(rec, verify, token_from=lambda ctx: token, mappings=DISCOVER)
    async with Client(tool_server(mapped, ran)) as client:
        assert not (await client.call_tool("get_local_weather", {})).is_error
        assert await refused(client, "agent_literal", {}) == mt.INVALID_PARAMS
    assert ran == ["get_local_weather"]


def test_http_pdp_requires_tls() -> None:
    with pytest.raises(ValueError):
        HttpPdp("http://pdp.example.com")
    assert HttpPdp("http://localhost:8080", allow_plain_http=True).base_url.startswith("http:")
