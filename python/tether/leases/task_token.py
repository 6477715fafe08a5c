"""Task tokens: short-lived signed JWTs shaped like OAuth Transaction Tokens.

A task token tells a downstream service *which task* a call belongs to (``txn``), who the
agent is (``sub``/``req_wl``), what it may do (``tctx.scope``) and who delegated to it
(``act``, the RFC 8693 nested actor chain), for no longer than the lease. Services verify it
with :class:`TaskTokenVerifier` from the issuer's published JWKS.

Tokens can be replaced (for example when a call fans out to a narrower sub-operation), but
only by narrowing: :meth:`TaskTokenVerifier.verify_replacement` rejects a replacement that
widens scope, changes the transaction, subject or audience, or lives longer.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tether.identity._jose import jwk_thumbprint
from tether.leases.errors import InvalidTaskToken, NotRenewable, TokenNarrowingError
from tether.leases.types import IssuedCredential, IssueRequest, Lease, Secret, TaskRef

__all__ = ["TXN_TOKEN_TYP", "TaskTokenProvider", "TaskTokenVerifier", "actor_chain"]

TXN_TOKEN_TYP: Final = "txntoken+jwt"
_ALG: Final = "ES256"
_REQUIRED: Final = ("iss", "txn", "sub", "aud", "iat", "exp", "jti", "tctx")


def actor_chain(actors: Iterable[str]) -> dict[str, Any] | None:
    """RFC 8693 ``act`` claim from a root-first chain: the most recent actor is outermost and
    each earlier actor is nested inside it, ending with the root."""
    act: dict[str, Any] | None = None
    for actor in actors:
        act = {"sub": actor} if act is None else {"sub": actor, "act": act}
    return act


class TaskTokenProvider:
    """Lease provider that mints ES256 transaction tokens (``typ: txntoken+jwt``).

    Tokens cannot be extended after signing, so leases from this provider are not renewable;
    revocation adds the ``jti`` to a deny-list that verifiers may consult via
    :meth:`is_revoked` (the short lifetime is the primary control).
    """

    renewable = False

    def __init__(
        self,
        audience: str,
        *,
        issuer: str = "tether",
        ttl: float = 300.0,
        key: ec.EllipticCurvePrivateKey | None = None,
        kid: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if key is None:
            key = ec.generate_private_key(ec.SECP256R1())
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("ES256 needs a P-256 key")
        self.audience = audience
        self.issuer = issuer
        self.ttl = float(ttl)
        self._key = key
        self._clock = clock
        public_jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.kid = kid or jwk_thumbprint(public_jwk)
        self._public_jwk = {**public_jwk, "kid": self.kid, "alg": _ALG, "use": "sig"}
        self._denied: dict[str, float] = {}
        self._by_lease: dict[str, tuple[str, float]] = {}

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public key set downstream verifiers should trust."""
        return {"keys": [dict(self._public_jwk)]}

    def mint(
        self, task: TaskRef, scope: Iterable[str] | None = None, ttl: float | None = None
    ) -> str:
        """Sign a token for ``task`` (scope defaults to the task's scope)."""
        now = self._clock()
        lifetime = self.ttl if ttl is None else float(ttl)
        narrowed = task.scope if scope is None else frozenset(scope)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": task.agent,
            "aud": self.audience,
            "txn": task.txn,
            "scope": task.intent,
            "tctx": {"scope": sorted(narrowed)},
            "req_wl": task.agent,
            "iat": math.floor(now),
            # Rounded down so the token never outlives the lease it backs.
            "exp": math.floor(now + lifetime),
            "jti": secrets.token_urlsafe(16),
        }
        act = actor_chain(task.actors)
        if act is not None:
            claims["act"] = act
        return self._sign(claims)

    def replace(
        self, token: str, *, scope: Iterable[str] | None = None, ttl: float | None = None
    ) -> str:
        """Mint a narrowed replacement of one of our own valid tokens (same txn/sub/aud,
        scope a subset, expiry no later)."""
        verifier = TaskTokenVerifier(
            self.jwks(), self.audience, issuer=self.issuer, clock=self._clock
        )
        old = verifier.verify(token)
        old_scope: list[str] = old["tctx"]["scope"]
        new_scope = old_scope if scope is None else sorted(frozenset(scope))
        if not set(new_scope) <= set(old_scope):
            raise TokenNarrowingError("replacement scope must be a subset of the original")
        now = self._clock()
        exp = old["exp"] if ttl is None else min(old["exp"], math.floor(now + float(ttl)))
        claims = {
            **old,
            "tctx": {**old["tctx"], "scope": new_scope},
            "iat": math.floor(now),
            "exp": exp,
            "jti": secrets.token_urlsafe(16),
        }
        return self._sign(claims)

    def _sign(self, claims: Mapping[str, Any]) -> str:
        return jwt.encode(
            dict(claims),
            self._key,
            algorithm=_ALG,
            headers={"typ": TXN_TOKEN_TYP, "kid": self.kid},
        )

    # Provider protocol ---------------------------------------------------------------

    async def issue(self, request: IssueRequest) -> IssuedCredential:
        token = self.mint(request.task, request.scope, request.ttl)
        claims = jwt.decode(token, options={"verify_signature": False})
        # Remembered by lease id too, so a lease whose jti was never recorded (cancelled or
        # timed-out issue) can still be revoked.
        self._by_lease[request.lease_id] = (claims["jti"], float(claims["exp"]))
        return IssuedCredential(secret=Secret(token), provider_ref=claims["jti"])

    async def renew(self, lease: Lease, ttl: float) -> None:
        raise NotRenewable("task tokens cannot be extended; issue a new lease")

    async def revoke(self, lease: Lease) -> None:
        known = self._by_lease.pop(lease.lease_id, None)
        jti = lease.provider_ref or (known[0] if known is not None else None)
        if jti is not None:
            # Remember until the token would have expired anyway (its exp is wall time),
            # then forget.
            self._denied[jti] = known[1] if known is not None else self._clock() + self.ttl
        now = self._clock()
        for j in [j for j, exp in self._denied.items() if exp < now]:
            del self._denied[j]
        for lease_id in [k for k, (_, exp) in self._by_lease.items() if exp < now]:
            del self._by_lease[lease_id]

    def is_revoked(self, jti: str) -> bool:
        return jti in self._denied

    def __repr__(self) -> str:
        return (
            f"TaskTokenProvider(issuer={self.issuer!r}, audience={self.audience!r}, "
            f"kid={self.kid!r})"
        )


class TaskTokenVerifier:
    """Verifies task tokens for a downstream service.

    Checks the header (``typ``, ``alg``, known ``kid``), the ES256 signature, ``iss``, ``aud``,
    ``exp``/``iat`` against ``clock`` (injectable, so tests and replays use one notion of
    time), required claims and, optionally, a revocation callback.
    """

    def __init__(
        self,
        jwks: Mapping[str, Any],
        audience: str,
        *,
        issuer: str | None = "tether",
        leeway: float = 0.0,
        clock: Callable[[], float] = time.time,
        is_revoked: Callable[[str], bool] | None = None,
    ) -> None:
        self.audience = audience
        self.issuer = issuer
        self._leeway = float(leeway)
        self._clock = clock
        self._is_revoked = is_revoked
        self._keys: dict[str, Any] = {}
        for jwk in jwks.get("keys", ()):
            if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or not jwk.get("kid"):
                continue  # Only ES256 keys with a kid can ever match; ignore the rest.
            self._keys[jwk["kid"]] = ECAlgorithm.from_jwk(json.dumps(jwk))
        if not self._keys:
            raise ValueError("JWKS contains no usable P-256 key with a kid")

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid token; raise :class:`InvalidTaskToken` otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTaskToken(f"malformed token: {type(exc).__name__}") from None
        if str(header.get("typ", "")).lower() != TXN_TOKEN_TYP:
            raise InvalidTaskToken("wrong typ header (want txntoken+jwt)")
        if header.get("alg") != _ALG:
            raise InvalidTaskToken("wrong alg (want ES256)")
        key = self._keys.get(str(header.get("kid", "")))
        if key is None:
            raise InvalidTaskToken("unknown kid")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[_ALG],
                audience=self.audience,
                issuer=self.issuer,
                # Time checks are done below against the injected clock.
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": list(_REQUIRED),
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidTaskToken(f"token rejected: {type(exc).__name__}") from None
        now = self._clock()
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise InvalidTaskToken("exp and iat must be numbers")
        if now >= exp + self._leeway:
            raise InvalidTaskToken("token expired")
        if iat > now + self._leeway:
            raise InvalidTaskToken("token issued in the future")
        tctx = claims["tctx"]
        if (
            not isinstance(tctx, dict)
            or not isinstance(tctx.get("scope"), list)
            or not all(isinstance(s, str) for s in tctx["scope"])
        ):
            raise InvalidTaskToken("tctx.scope must be a list of strings")
        for name in ("txn", "sub", "jti"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise InvalidTaskToken(f"{name} must be a non-empty string")
        if self._is_revoked is not None and self._is_revoked(claims["jti"]):
            raise InvalidTaskToken("token revoked")
        return claims

    def verify_replacement(self, old_token: str, new_token: str) -> dict[str, Any]:
        """Verify both tokens and that ``new_token`` only narrows ``old_token``.

        Returns the new token's claims; raises :class:`TokenNarrowingError` if it widens
        ``tctx.scope``, changes ``txn``/``sub``/``aud``, or expires later.
        """
        old = self.verify(old_token)
        new = self.verify(new_token)
        for claim in ("txn", "sub", "aud"):
            if _as_set(new[claim]) != _as_set(old[claim]):
                raise TokenNarrowingError(f"replacement changes {claim}")
        widened = set(new["tctx"]["scope"]) - set(old["tctx"]["scope"])
        if widened:
            raise TokenNarrowingError(f"replacement widens tctx.scope by {sorted(widened)}")
        if new["exp"] > old["exp"]:
            raise TokenNarrowingError("replacement expires after the token it replaces")
        return new


def _as_set(value: Any) -> frozenset[Any]:
    # aud may be a string or a list; compare as sets so ["a"] and "a" are the same audience.
    if isinstance(value, list):
        return frozenset(value)
    return frozenset([value])
