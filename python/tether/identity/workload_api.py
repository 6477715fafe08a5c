"""An async client for the SPIFFE Workload API (the SPIRE agent's socket).

The Workload API is gRPC over the node agent's Unix socket. This module talks to it with
grpcio's asyncio API and the official ``workload.proto`` (vendored with its generated code in
``tether/identity/_workload``): every call carries the ``workload.spiffe.io: true`` metadata
the spec requires against SSRF, and the address comes from the caller or, failing that, the
``SPIFFE_ENDPOINT_SOCKET`` environment variable (``unix:///path`` or ``tcp://ip:port``).

* :class:`WorkloadApiClient`: ``FetchJWTSVID``, ``ValidateJWTSVID`` and the
  ``FetchJWTBundles`` stream.
* :class:`WorkloadApiBundleSource`: keeps a :class:`~tether.identity.bundle.BundleSet` in
  step with the stream. Every message carries the complete set (spec 4.3), so a domain that
  disappears from it is unloaded; a bundle that fails to parse keeps the last good one;
  a dropped stream is reopened with jittered exponential backoff.
* :class:`WorkloadApiSvidSource`: JWT-SVIDs for the orchestrator's own outgoing calls,
  cached until shortly before they expire.

grpcio's asyncio API needs the asyncio event loop (it does not run under trio).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import grpc
import jwt
from anyio.abc import TaskStatus
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from tether._core import TetherError
from tether.identity._workload import workload_pb2 as pb
from tether.identity.bundle import (
    JWT_SVID_USE,
    BundleSet,
    StaleBundle,
    TrustBundle,
    _loads_object,
)
from tether.identity.errors import InvalidBundle

__all__ = [
    "ENDPOINT_ENV",
    "InvalidWorkloadApiResponse",
    "JwtSvid",
    "ValidatedJwtSvid",
    "WorkloadApiBundleSource",
    "WorkloadApiClient",
    "WorkloadApiDenied",
    "WorkloadApiError",
    "WorkloadApiSvidSource",
    "WorkloadApiUnavailable",
    "endpoint_target",
]

log = logging.getLogger("tether.identity")

ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"
_METADATA = (("workload.spiffe.io", "true"),)
_SERVICE = "/SpiffeWorkloadAPI/"

R = TypeVar("R", bound=Message)


class WorkloadApiError(TetherError):
    """The Workload API could not be used; the message names the endpoint and the cause."""


class WorkloadApiUnavailable(WorkloadApiError):
    """The agent is not there (no socket, not listening, stream dropped, deadline passed)."""


class WorkloadApiDenied(WorkloadApiError):
    """The agent does not entitle this workload to what it asked for (PermissionDenied)."""


class InvalidWorkloadApiResponse(WorkloadApiError):
    """The agent's answer lacks a mandatory field or carries something unparsable."""


def endpoint_target(address: str | None = None) -> str:
    """The gRPC target for a Workload API address (or ``$SPIFFE_ENDPOINT_SOCKET``).

    Follows the SPIFFE Workload Endpoint spec, section 4: ``unix:///absolute/path`` (no
    authority) or ``tcp://<ip>:<port>`` (an IP literal, nothing else). A bare absolute
    path is accepted as shorthand for the unix form.
    """
    raw = address if address is not None else os.environ.get(ENDPOINT_ENV)
    if not raw:
        raise WorkloadApiError(f"no Workload API address: pass one or set {ENDPOINT_ENV}")
    if raw.startswith("/"):
        return f"unix:{raw}"
    parts = urlsplit(raw)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise WorkloadApiError(f"Workload API address {raw!r} must not have query or userinfo")
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise WorkloadApiError(
                f"Workload API address {raw!r}: unix:// needs an absolute path and no authority"
            )
        return f"unix:{parts.path}"
    if parts.scheme == "tcp":
        if parts.path not in ("", "/") or parts.hostname is None or parts.port is None:
            raise WorkloadApiError(f"Workload API address {raw!r}: tcp:// needs ip:port only")
        import ipaddress

        try:
            ip = ipaddress.ip_address(parts.hostname)
        except ValueError as exc:
            raise WorkloadApiError(
                f"Workload API address {raw!r}: tcp:// needs an IP address, not a name"
            ) from exc
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        return f"{host}:{parts.port}"
    raise WorkloadApiError(f"Workload API address {raw!r}: scheme must be unix or tcp")


@dataclass(frozen=True, slots=True)
class JwtSvid:
    """A JWT-SVID as the agent issued it. ``expires_at`` is its ``exp`` (unverified: it came
    from our own agent over a local socket, and it is only used to know when to refetch)."""

    spiffe_id: str
    token: str
    hint: str
    expires_at: float

    def __repr__(self) -> str:  # never print the bearer token
        return f"JwtSvid(spiffe_id={self.spiffe_id!r}, expires_at={self.expires_at})"


@dataclass(frozen=True, slots=True)
class ValidatedJwtSvid:
    spiffe_id: str
    claims: dict[str, Any]


def _jwt_bundle(trust_domain: str, raw: bytes) -> TrustBundle:
    """Parse one bundle of a ``JWTBundlesResponse``.

    These are plain RFC 7517 key sets whose keys are all JWT-SVID keys (the spec forbids
    other uses here), so a key without ``use`` is a JWT-SVID key; a key that says otherwise
    is not trusted for JWT-SVIDs.
    """
    doc = _loads_object(raw)
    keys = doc.get("keys")
    if isinstance(keys, list):
        normalized: list[Any] = []
        for key in keys:
            if isinstance(key, dict) and "use" not in key:
                key = {**key, "use": JWT_SVID_USE}
            if isinstance(key, dict) and key.get("use") != JWT_SVID_USE:
                continue
            normalized.append(key)
        doc = {**doc, "keys": normalized}
    return TrustBundle.from_dict(trust_domain, doc)


class WorkloadApiClient:
    """One channel to the agent. Open it inside the event loop; close with :meth:`aclose`."""

    def __init__(self, address: str | None = None, *, timeout: float = 5.0) -> None:
        self.target = endpoint_target(address)
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> WorkloadApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        return self._channel

    def _error(self, method: str, exc: grpc.aio.AioRpcError) -> WorkloadApiError:
        code = exc.code()
        message = f"Workload API {self.target} {method}: {code.name}: {exc.details()}"
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return WorkloadApiDenied(message)
        if code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.UNKNOWN,
        ):
            return WorkloadApiUnavailable(message)
        return WorkloadApiError(message)  # InvalidArgument, Unimplemented: do not retry

    def _check_socket(self) -> None:
        # grpc would report a missing socket as a generic connect failure; say what it is.
        if self.target.startswith("unix:") and not os.path.exists(self.target[5:]):
            raise WorkloadApiUnavailable(f"Workload API {self.target}: no socket at that path")

    async def _unary(self, method: str, request: Message, response_type: type[R]) -> R:
        self._check_socket()
        call = self._open().unary_unary(
            _SERVICE + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        try:
            return await call(request, metadata=_METADATA, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(method, exc) from exc

    async def fetch_jwt_svids(
        self, audience: Sequence[str], spiffe_id: str | None = None
    ) -> tuple[JwtSvid, ...]:
        """``FetchJWTSVID``: one JWT-SVID per identity the workload is entitled to."""
        if isinstance(audience, str) or not audience:
            raise ValueError("audience must be a non-empty sequence of strings")
        request = pb.JWTSVIDRequest(audience=list(audience), spiffe_id=spiffe_id or "")
        response = await self._unary("FetchJWTSVID", request, pb.JWTSVIDResponse)
        if not response.svids:
            raise InvalidWorkloadApiResponse(f"Workload API {self.target}: no JWT-SVIDs returned")
        return tuple(self._svid(s) for s in response.svids)

    def _svid(self, svid: pb.JWTSVID) -> JwtSvid:
        if not svid.spiffe_id or not svid.svid:
            raise InvalidWorkloadApiResponse(
                f"Workload API {self.target}: JWT-SVID without spiffe_id or token"
            )
        try:
            claims = jwt.decode(svid.svid, options={"verify_signature": False})
            exp = float(claims["exp"])
        except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
            raise InvalidWorkloadApiResponse(
                f"Workload API {self.target}: JWT-SVID for {svid.spiffe_id} is malformed"
            ) from exc
        return JwtSvid(svid.spiffe_id, svid.svid, svid.hint, exp)

    async def validate_jwt_svid(self, token: str, audience: str) -> ValidatedJwtSvid:
        """``ValidateJWTSVID``: let the agent verify a token (tether normally verifies
        locally against the streamed bundles, which costs no round trip)."""
        request = pb.ValidateJWTSVIDRequest(audience=audience, svid=token)
        response = await self._unary("ValidateJWTSVID", request, pb.ValidateJWTSVIDResponse)
        if not response.spiffe_id:
            raise InvalidWorkloadApiResponse(f"Workload API {self.target}: no spiffe_id")
        return ValidatedJwtSvid(response.spiffe_id, MessageToDict(response.claims))

    async def jwt_bundle_stream(self) -> AsyncIterator[Mapping[str, bytes]]:
        """``FetchJWTBundles``: each item is the complete ``{trust domain ID: JWKS}`` map."""
        self._check_socket()
        call = self._open().unary_stream(
            _SERVICE + "FetchJWTBundles",
            request_serializer=pb.JWTBundlesRequest.SerializeToString,
            response_deserializer=pb.JWTBundlesResponse.FromString,
        )
        stream = call(pb.JWTBundlesRequest(), metadata=_METADATA)
        try:
            async for response in stream:
                yield dict(response.bundles)
        except grpc.aio.AioRpcError as exc:
            raise self._error("FetchJWTBundles", exc) from exc
        finally:
            stream.cancel()
        raise WorkloadApiUnavailable(f"Workload API {self.target} FetchJWTBundles: stream ended")


class WorkloadApiBundleSource:
    """Streams the agent's JWT bundles into a :class:`BundleSet`, as rotation happens.

    ``run()`` never gives up on a dropped stream (it reconnects with backoff, keeping the
    last good bundles); it stops only on errors the spec says not to retry
    (``InvalidArgument``, ``Unimplemented``). On ``PermissionDenied`` the bundles it
    installed are removed: the agent no longer vouches for them.
    """

    def __init__(
        self,
        bundles: BundleSet,
        client: WorkloadApiClient,
        *,
        backoff: float = 0.1,
        max_backoff: float = 30.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.bundles = bundles
        self.client = client
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._rng = rng
        self.managed: set[str] = set()  # trust domains this source installed
        self.updates = 0  # messages applied
        self.reconnects = 0
        self.last_error: Exception | None = None

    def apply(self, message: Mapping[str, bytes]) -> None:
        """Install one complete bundle map (what each stream message carries).

        Raises :class:`InvalidWorkloadApiResponse` for an empty map (a mandatory field)
        without touching anything; a domain whose bundle fails to parse, or would roll
        back its sequence, keeps its last good bundle and is reported in ``last_error``.
        """
        if not message:
            raise InvalidWorkloadApiResponse(
                f"Workload API {self.client.target}: JWTBundlesResponse without bundles"
            )
        seen: set[str] = set()
        problems: list[str] = []
        for domain_id, raw in message.items():
            try:
                bundle = _jwt_bundle(domain_id, raw)
            except InvalidBundle as exc:
                problems.append(f"{domain_id}: {exc}")
                td = domain_id.removeprefix("spiffe://")
                if td in self.managed:
                    seen.add(td)  # keep the last good one, do not treat as redacted
                continue
            seen.add(bundle.trust_domain)
            try:
                self.bundles.update(bundle)
            except StaleBundle as exc:
                problems.append(f"{domain_id}: {exc}")
        for td in self.managed - seen:
            self.bundles.remove(td)  # absent from a complete message: redacted
        self.managed = seen
        self.updates += 1
        if problems:
            self.last_error = InvalidWorkloadApiResponse(
                f"Workload API {self.client.target}: rejected bundle(s), kept the last good: "
                + "; ".join(problems)
            )
            log.warning("%s", self.last_error)
        else:
            self.last_error = None

    def _unload(self) -> None:
        for td in self.managed:
            self.bundles.remove(td)
        self.managed = set()

    def next_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter in [base/2, base]."""
        base = min(self.max_backoff, self.backoff * 2.0 ** min(attempt, 32))
        return base * (0.5 + self._rng() / 2)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the stream forever. Reports started after the first message or failure."""
        started = False
        attempt = 0
        while True:
            try:
                async for message in self.client.jwt_bundle_stream():
                    try:
                        self.apply(message)
                    except InvalidWorkloadApiResponse as exc:
                        self.last_error = exc  # discard the message, keep the stream
                        log.warning("%s", exc)
                    attempt = 0
                    if not started:
                        started = True
                        task_status.started()
            except WorkloadApiDenied as exc:
                self.last_error = exc
                self._unload()
                log.warning("%s: unloading its bundles", exc)
            except WorkloadApiUnavailable as exc:
                self.last_error = exc
                log.warning("%s", exc)
            except WorkloadApiError:
                raise  # InvalidArgument / Unimplemented: retrying cannot help
            self.reconnects += 1
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(self.next_delay(attempt))
            attempt += 1


class WorkloadApiSvidSource:
    """JWT-SVIDs for the orchestrator's own calls, refetched before they expire."""

    def __init__(
        self,
        client: WorkloadApiClient,
        *,
        spiffe_id: str | None = None,
        refresh_before: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < refresh_before < 1:
            raise ValueError("refresh_before is a fraction of the lifetime, in (0, 1)")
        self.client = client
        self.spiffe_id = spiffe_id
        self.refresh_before = refresh_before
        self._clock = clock
        self._cache: dict[tuple[str, ...], tuple[JwtSvid, float]] = {}

    async def svid(self, audience: str | Sequence[str]) -> JwtSvid:
        """A JWT-SVID for ``audience``; cached until ``refresh_before`` of its life is left."""
        aud = (audience,) if isinstance(audience, str) else tuple(audience)
        now = self._clock()
        cached = self._cache.get(aud)
        if cached is not None and now < cached[1]:
            return cached[0]
        svids = await self.client.fetch_jwt_svids(aud, self.spiffe_id)
        svid = svids[0]
        if self.spiffe_id is not None and svid.spiffe_id != self.spiffe_id:
            raise InvalidWorkloadApiResponse(
                f"Workload API {self.client.target}: asked for {self.spiffe_id}, "
                f"got {svid.spiffe_id}"
            )
        lifetime = max(0.0, svid.expires_at - now)
        self._cache[aud] = (svid, now + lifetime * (1 - self.refresh_before))
        return svid

    async def token(self, audience: str | Sequence[str]) -> str:
        return (await self.svid(audience)).token
