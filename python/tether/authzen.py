"""An AuthZEN Authorization API 1.0 Policy Decision Point over HTTP (starlette).

Endpoints: `POST /access/v1/evaluation`, `POST /access/v1/evaluations` (defaults and
`options.evaluations_semantic`: `execute_all`, `deny_on_first_deny`,
`permit_on_first_permit`), `POST /access/v1/search/{subject,resource,action}` and
`GET /.well-known/authzen-configuration`. A deny is
HTTP 200 with `"decision": false`; a malformed body is 400 with a message; a caller
without a valid JWT-SVID bearer token is 401; `X-Request-ID` is echoed.

Mapping to Cedar (the request becomes one `engine.authorize` call):

- `subject {type, id}` -> principal `type::"id"`; `resource {type, id}` -> resource
  `type::"id"`; `action {name}` -> `Action::"name"`.
- `context` -> the Cedar context; the `properties` of subject, resource and action
  (any JSON shape) are added to it as `context.subject`, `context.resource` and
  `context.action` (they replace context keys of those names).
- JSON `null` has no Cedar form: an object key whose value is null is dropped (so
  `context has x` is false) and a null list element is dropped. A float with no
  fractional part is a Long; any other float becomes a Cedar `decimal` (at most four
  fractional digits, else the item is rejected).
- Wire JSON is plain data: an object whose only key is `__entity` or `__extn` (tether's
  own escapes for entity references and extension values) stays a record with that key;
  the engine reads escapes only from plain `dict`s, and wire objects arrive here as
  `WireRecord`s.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from tether.engine import Engine
    from tether.identity import Authenticator

_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$")
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")


class BadRequest(Exception):
    """The request (or one evaluation of a batch) is malformed; the message says how."""


class WireRecord(dict[str, Any]):
    """A JSON object from the wire: always a Cedar record, never one of tether's escapes."""


def _cedar_value(v: Any, path: str) -> Any:
    """Wire JSON -> tether context value, by the stated rules (module docstring)."""
    if isinstance(v, dict):
        items = {k: _cedar_value(x, f"{path}.{k}") for k, x in v.items() if x is not None}
        # Only a one-key object could be taken for an escape; others stay plain dicts.
        return WireRecord(items) if len(items) == 1 else items
    if isinstance(v, list):
        return [_cedar_value(x, f"{path}[{i}]") for i, x in enumerate(v) if x is not None]
    if isinstance(v, float):
        if not math.isfinite(v):
            raise BadRequest(f"{path}: {v} is not a number Cedar can hold")
        if v.is_integer():
            return int(v)
        try:
            d = Decimal(repr(v))
        except InvalidOperation:
            raise BadRequest(f"{path}: {v} is not a decimal") from None
        exp = d.as_tuple().exponent
        if not isinstance(exp, int) or exp < -4:
            raise BadRequest(f"{path}: {v} has more than 4 fractional digits (Cedar decimal)")
        return {"__extn": {"fn": "decimal", "arg": f"{d:.4f}"}}
    return v


def _entity(doc: Any, key: str) -> tuple[str, Any]:
    if not isinstance(doc, dict):
        raise BadRequest(f"`{key}` must be an object with string `type` and `id`")
    t, i = doc.get("type"), doc.get("id")
    if not isinstance(t, str) or not isinstance(i, str) or not t or not i:
        raise BadRequest(f"`{key}` needs string `type` and `id`")
    if not _TYPE.match(t):
        raise BadRequest(f"`{key}.type` {t!r} is not a Cedar entity type name")
    return f"{t}::{json.dumps(i)}", doc.get("properties")


def to_cedar(req: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """One AuthZEN evaluation -> (principal, action, resource, context) for the engine."""
    for key in ("subject", "action", "resource"):
        if key not in req:
            raise BadRequest(f"missing `{key}`")
    principal, sprops = _entity(req["subject"], "subject")
    resource, rprops = _entity(req["resource"], "resource")
    act = req["action"]
    if not isinstance(act, dict) or not isinstance(act.get("name"), str) or not act["name"]:
        raise BadRequest("`action` must be an object with a string `name`")
    ctx = req.get("context")
    if ctx is None:
        ctx = {}
    if not isinstance(ctx, dict):
        raise BadRequest("`context` must be an object")
    context = _cedar_value(ctx, "context")
    for key, props in (
        ("subject", sprops),
        ("resource", rprops),
        ("action", act.get("properties")),
    ):
        if props is None:
            continue
        if not isinstance(props, dict):
            raise BadRequest(f"`{key}.properties` must be an object")
        context[key] = _cedar_value(props, f"{key}.properties")
    return principal, f"Action::{json.dumps(act['name'])}", resource, context


SEARCH_KINDS = ("subject", "resource", "action")


class Pdp:
    """Decides AuthZEN requests with an engine; HTTP-free so it can be tested alone.

    Searches (spec section 8) enumerate the candidates of the requested type from the
    engine's store (entities of that type, and uids of that type the policies name;
    actions are the `Action` entities) and decide each with one `authorize_batch` call,
    so a result is exactly what an evaluation of it would decide. Pagination: results
    are in sorted order; `page.limit` (or `max_page`, when the caller gives none) cuts
    a page, and `next_token` is an opaque HMAC-bound offset valid only for the same
    request (anything but `page.token` changed is a 400, as the spec recommends)."""

    def __init__(self, engine: Engine, *, max_page: int = 1000) -> None:
        self.engine = engine
        self.max_page = max_page
        self._key = secrets.token_bytes(32)  # tokens are valid for this PDP's lifetime

    def decide(self, req: dict[str, Any]) -> dict[str, Any]:
        from tether import TetherError

        p, a, r, c = to_cedar(req)
        try:
            d = self.engine.authorize(p, a, r, c)
        except TetherError as e:
            raise BadRequest(str(e)) from None
        return {"decision": bool(d.allowed)}

    def decide_item(self, req: dict[str, Any]) -> dict[str, Any]:
        """A batch item: a bad item is a deny carrying the error, never a failed batch."""
        try:
            return self.decide(req)
        except BadRequest as e:
            return {"decision": False, "context": {"error": {"status": 400, "message": str(e)}}}

    def batch(self, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("evaluations")
        defaults: dict[str, Any] = {
            k: body[k] for k in ("subject", "action", "resource", "context") if k in body
        }
        if items is None or items == []:
            return self.decide(defaults)  # no list: a single evaluation (spec)
        if not isinstance(items, list):
            raise BadRequest("`evaluations` must be an array")
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise BadRequest("`options` must be an object")
        semantic = options.get("evaluations_semantic", "execute_all")
        if semantic not in SEMANTICS:
            raise BadRequest(
                f"`options.evaluations_semantic` must be one of {', '.join(SEMANTICS)}"
            )
        out = []
        for item in items:
            if not isinstance(item, dict):
                out.append(
                    {
                        "decision": False,
                        "context": {
                            "error": {"status": 400, "message": "an evaluation is an object"}
                        },
                    }
                )
            else:
                out.append(self.decide_item({**defaults, **item}))
            decision = out[-1]["decision"]
            if (semantic == "deny_on_first_deny" and not decision) or (
                semantic == "permit_on_first_permit" and decision
            ):
                break
        return {"evaluations": out}

    def search(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """One search: `kind` is "subject", "resource" or "action" (the key searched)."""
        from tether import TetherError

        page = body.get("page")
        if page is None:
            page = {}
        if not isinstance(page, dict):
            raise BadRequest("`page` must be an object")
        limit = page.get("limit")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise BadRequest("`page.limit` must be a non-negative integer")
        # The searched entity needs only its type (an id is ignored, per the spec);
        # a placeholder id lets the rest of the request go through the usual checks.
        probe = {k: v for k, v in body.items() if k in ("subject", "action", "resource", "context")}
        if kind == "action":
            probe["action"] = {"name": "_"}
        else:
            target = body.get(kind)
            if not isinstance(target, dict) or not isinstance(target.get("type"), str):
                raise BadRequest(f"`{kind}` must be an object with a string `type`")
            probe[kind] = {**target, "id": "_"}
        p, a, r, ctx = to_cedar(probe)
        ctype = probe[kind]["type"] if kind != "action" else "Action"
        ids = self.engine.entity_ids(ctype)
        # Candidates as (type, id) tuples: no uid text to format and parse per candidate.
        reqs: list[tuple[Any, Any, Any]]
        if kind == "subject":
            reqs = [((ctype, i), a, r) for i in ids]
        elif kind == "resource":
            reqs = [(p, a, (ctype, i)) for i in ids]
        else:
            reqs = [(p, (ctype, i), r) for i in ids]
        try:
            allowed = self.engine.authorize_batch(reqs, ctx) if reqs else []
        except TetherError as e:
            raise BadRequest(str(e)) from None
        found = [i for i, ok in zip(ids, allowed, strict=True) if ok]
        results = [{"name": i} if kind == "action" else {"type": ctype, "id": i} for i in found]
        digest = self._request_digest(kind, body)
        start, limit = self._open_token(page.get("token"), digest, limit)
        if not page and len(results) <= self.max_page:
            return {"results": results}
        size = self.max_page if limit is None else limit
        chunk = results[start : start + size]
        end = start + len(chunk)
        more = end < len(results) or (size == 0 and start < len(results))
        return {
            "page": {
                "next_token": self._token(end, digest, limit) if more else "",
                "count": len(chunk),
                "total": len(results),
            },
            "results": chunk,
        }

    def _request_digest(self, kind: str, body: dict[str, Any]) -> bytes:
        """What a token binds: the search kind and the request without `page.token`."""
        page = body.get("page") or {}
        rest = {k: v for k, v in body.items() if k != "page"}
        extra = {k: v for k, v in page.items() if k not in ("token", "limit")}
        return hashlib.sha256(
            json.dumps([kind, rest, extra], sort_keys=True, separators=(",", ":")).encode()
        ).digest()

    def _token(self, offset: int, digest: bytes, limit: int | None) -> str:
        payload = f"{offset}:{'' if limit is None else limit}"
        mac = hmac.new(self._key, digest + payload.encode(), hashlib.sha256).digest()[:16]
        raw = payload.encode() + b":" + base64.urlsafe_b64encode(mac).rstrip(b"=")
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _open_token(self, token: Any, digest: bytes, limit: int | None) -> tuple[int, int | None]:
        """(offset, limit) from a `page.token`; (0, limit) without one."""
        if token is None or token == "":
            return 0, limit
        if not isinstance(token, str):
            raise BadRequest("`page.token` must be a string")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            offset_s, limit_s, mac = raw.split(":")
            payload = f"{offset_s}:{limit_s}"
            want = hmac.new(self._key, digest + payload.encode(), hashlib.sha256).digest()[:16]
            ok = hmac.compare_digest(base64.urlsafe_b64encode(want).rstrip(b"=").decode(), mac)
            offset, token_limit = int(offset_s), (int(limit_s) if limit_s else None)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("`page.token` is not a token this PDP issued") from None
        if not ok:
            raise BadRequest(
                "`page.token` does not belong to this request (the request changed since"
                " the token was issued, or the token is not from this PDP)"
            )
        if limit is not None and limit != token_limit:
            raise BadRequest("`page.limit` changed since the token was issued")
        return offset, token_limit


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def create_app(
    engine: Engine,
    authenticator: Authenticator | None,
    *,
    base_url: str | None = None,
) -> Starlette:
    """The ASGI app. `authenticator=None` accepts unauthenticated callers (tests, local)."""
    pdp = Pdp(engine)

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    def endpoint(
        fn: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            denied = await _authenticate(request, authenticator)
            if denied is not None:
                return denied
            try:
                return JSONResponse(fn(await body_of(request)))
            except BadRequest as e:
                return _error(400, str(e))

        return handle

    async def configuration(request: Request) -> Response:
        base = base_url or str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "policy_decision_point": base,
                "access_evaluation_endpoint": f"{base}/access/v1/evaluation",
                "access_evaluations_endpoint": f"{base}/access/v1/evaluations",
                **{f"search_{k}_endpoint": f"{base}/access/v1/search/{k}" for k in SEARCH_KINDS},
            }
        )

    return Starlette(
        routes=[
            Route("/access/v1/evaluation", endpoint(pdp.decide), methods=["POST"]),
            Route("/access/v1/evaluations", endpoint(pdp.batch), methods=["POST"]),
            *(
                Route(f"/access/v1/search/{k}", endpoint(partial(pdp.search, k)), methods=["POST"])
                for k in SEARCH_KINDS
            ),
            Route("/.well-known/authzen-configuration", configuration, methods=["GET"]),
        ],
        middleware=[Middleware(EchoRequestId)],
    )


class EchoRequestId:
    """Pure ASGI middleware: copy the caller's `X-Request-ID` onto the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        if rid is None:
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _authenticate(request: Request, authenticator: Authenticator | None) -> Response | None:
    if authenticator is None:
        return None
    from tether.identity import AuthenticationError

    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("a JWT-SVID bearer token is required")
    try:
        await authenticator.authenticate(token.strip())
    except AuthenticationError as e:
        return _unauthorized(f"invalid token: {e}")
    return None


def _unauthorized(message: str) -> JSONResponse:
    r = _error(401, message)
    r.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return r


def serve_from_args(args: Any, engine: Engine) -> int:
    """`tether serve`: build the authenticator from `--bundle`/`--audience` and run uvicorn."""
    from tether.cli_load import InputError, parse_json, read_text

    authenticator = None
    if not args.insecure_no_auth:
        if not args.bundle or not args.audience:
            raise InputError(
                "serve: callers authenticate with JWT-SVIDs: give --bundle TRUST_DOMAIN=FILE and"
                " --audience (or --insecure-no-auth for local testing)"
            )
        from tether.identity import Authenticator, InvalidBundle, TrustBundle

        bundles = []
        for spec in args.bundle:
            td, sep, path = spec.partition("=")
            if not sep or not td or not path:
                raise InputError(f"--bundle {spec!r}: expected TRUST_DOMAIN=FILE")
            try:
                bundles.append(
                    TrustBundle.from_dict(td, parse_json(read_text(path, "bundle"), path))
                )
            except InvalidBundle as e:
                raise InputError(f"{path}: {e}") from None
        authenticator = Authenticator(bundles, args.audience)
    try:
        import uvicorn
    except ImportError:
        raise InputError("serve needs uvicorn: pip install 'tether[serve]'") from None
    sock = listening_socket(args.host, args.port)
    config = uvicorn.Config(create_app(engine, authenticator), lifespan="off")
    print(f"AuthZEN PDP on http://{args.host}:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket with TCP_NODELAY (inherited by accepted connections): without
    it, small responses wait on Nagle and delayed ACKs, ~40 ms per request on loopback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock
