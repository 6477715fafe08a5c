"""SPIFFE trust bundles (SPIFFE Trust Domain and Bundle spec, section 4) and federation.

A bundle is a JWK Set with ``spiffe_sequence`` / ``spiffe_refresh_hint``. Only keys whose
``use`` we understand are kept (``jwt-svid`` and the WIMSE ``wit-svid``); unknown ``use``
or ``kty`` values are ignored as the spec requires, so a bundle that also carries X.509
roots or future key types still loads. A key of ours that cannot be used (malformed,
private material, a ``jwt-svid`` key without ``kid``, a duplicated ``kid``, an ``alg``
pin such as ``none`` that fits no allowed algorithm) is skipped and reported in
``TrustBundle.skipped``; the rest of the bundle applies, so a refresh still removes the
keys the publisher dropped. A bundle with an empty ``keys`` list is valid and means
"trust nothing from this domain": that is how a domain is revoked.

Bundles are immutable; :class:`BundleSet` swaps whole bundles atomically. Verifier caches
remember the bundle *object* they verified against, so replacing a bundle invalidates
their entries for that domain without any callback plumbing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tether.identity._jose import ALLOWED_ALGS, alg_fits_key, no_duplicate_members
from tether.identity.errors import InvalidBundle, InvalidSpiffeId
from tether.identity.spiffe_id import validate_trust_domain

__all__ = [
    "JWT_SVID_USE",
    "WIT_SVID_USE",
    "BundleKey",
    "BundleSet",
    "FileBundleSource",
    "HttpBundleSource",
    "PublicKey",
    "SkippedKey",
    "StaleBundle",
    "TrustBundle",
    "public_key_from_jwk",
]

log = logging.getLogger("tether.identity")

JWT_SVID_USE = "jwt-svid"
WIT_SVID_USE = "wit-svid"
_KNOWN_USES = frozenset({JWT_SVID_USE, WIT_SVID_USE})
_SUPPORTED_KTY = frozenset({"RSA", "EC"})
# JWK members that only exist on private/symmetric keys. A bundle is public by
# definition; one that carries these is a leak or a mix-up, so refuse it loudly.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS = 2048

PublicKey = RSAPublicKey | EllipticCurvePublicKey


class StaleBundle(InvalidBundle):
    """A bundle whose ``spiffe_sequence`` is lower than the one already held."""


@dataclass(frozen=True, slots=True)
class BundleKey:
    """One verification key from a bundle (or from a WIT's ``cnf.jwk``)."""

    kid: str | None
    use: str | None
    key: PublicKey = field(repr=False)
    alg: str | None = None  # the JWK's own ``alg`` pin, if it had one

    def supports(self, alg: str) -> bool:
        """True if a JWS with header ``alg`` may be verified with this key.

        This is the algorithm-confusion guard: an RSA key never verifies ES*, an EC key
        only verifies the ES* matching its curve, and a pinned JWK ``alg`` must match.
        """
        if self.alg is not None and self.alg != alg:
            return False
        return alg_fits_key(alg, self.key)

    def alg_problem(self) -> str | None:
        """Why this key's pinned ``alg`` can never verify anything (None: it can, or no pin).

        RFC 7517 4.4 lets a JWK name "the algorithm intended for use with the key"; a
        pin outside our allow-list (``none``, ``HS256``, ``EdDSA``...) or one that does
        not fit the key type or curve makes the key unusable.
        """
        if self.alg is None:
            return None
        shown = self.alg if len(self.alg) <= 16 else self.alg[:13] + "..."
        if self.alg not in ALLOWED_ALGS:
            return f"key 'alg' {shown!r} is not an allowed signature algorithm"
        if not alg_fits_key(self.alg, self.key):
            return f"key 'alg' {shown!r} does not fit the key type or curve"
        return None


@dataclass(frozen=True, slots=True)
class SkippedKey:
    """A bundle key that was left out because it cannot be used, and why."""

    index: int  # position in the document's ``keys`` list
    kid: str | None
    use: str | None
    reason: str

    def __str__(self) -> str:
        named = f" (kid {self.kid!r})" if self.kid is not None else ""
        return f"keys[{self.index}]{named}: {self.reason}"


def public_key_from_jwk(jwk_data: object, use: str | None) -> BundleKey | None:
    """Parse a public RSA/EC JWK. Returns None for key types and curves we do not support.

    Raises :class:`InvalidBundle` for keys that are malformed or contain private material.
    The JWK's ``alg`` is kept as given; :meth:`BundleKey.alg_problem` judges it.
    """
    if not isinstance(jwk_data, Mapping):
        raise InvalidBundle("a key is not a JSON object")
    kty = jwk_data.get("kty")
    if kty not in _SUPPORTED_KTY:
        return None  # unknown kty, and "oct": a symmetric key is never a trust anchor
    if _PRIVATE_MEMBERS.intersection(jwk_data):
        raise InvalidBundle("a key contains private key material")
    kid = jwk_data.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise InvalidBundle("key 'kid' must be a non-empty string")
    alg = jwk_data.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise InvalidBundle("key 'alg' must be a string")
    if kty == "EC" and jwk_data.get("crv") not in ("P-256", "P-384", "P-521"):
        return None  # unknown curve: ignorable like an unknown kty
    # The key type's own parser, not PyJWK: PyJWK picks a parser from the JWK's ``alg``
    # and raises NotImplementedError for ``alg: none``.
    parser = RSAAlgorithm if kty == "RSA" else ECAlgorithm
    try:
        key = parser.from_jwk(dict(jwk_data))
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        # Do not forward pyjwt's message: it may embed the whole JWK.
        raise InvalidBundle(f"malformed {kty} key") from exc
    if not isinstance(key, RSAPublicKey | EllipticCurvePublicKey):
        raise InvalidBundle(f"malformed {kty} key")
    if isinstance(key, RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        raise InvalidBundle(f"RSA key is shorter than {_MIN_RSA_BITS} bits")
    return BundleKey(kid=kid, use=use, key=key, alg=alg)


def _non_negative_int(doc: Mapping[str, Any], name: str) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidBundle(f"'{name}' must be a non-negative integer")
    return value


def _judge_key(entry: object, trust_domain: str) -> BundleKey | str | None:
    """A bundle entry's usable key, the reason it cannot be used, or None when the entry
    is not ours to judge (another ``use``, an unknown ``kty`` or curve: SPIFFE bundle
    4.1.3 and 4.2.1 say such entries MUST be ignored)."""
    use = entry.get("use") if isinstance(entry, Mapping) else None
    if isinstance(entry, Mapping) and use not in _KNOWN_USES:
        return None
    try:
        key = public_key_from_jwk(entry, use)
    except InvalidBundle as exc:
        return str(exc)
    if key is None:
        log.debug("ignoring unsupported %s key in bundle for %s", use, trust_domain)
        return None
    problem = key.alg_problem()
    if problem is not None:
        return problem
    if use == JWT_SVID_USE and key.kid is None:
        return "jwt-svid key has no 'kid'"  # SPIFFE JWT-SVID 6.1: kid MUST be set
    return key


@dataclass(frozen=True, slots=True, eq=False)
class TrustBundle:
    """A parsed, immutable SPIFFE bundle for one trust domain."""

    trust_domain: str
    jwt_keys: tuple[BundleKey, ...]
    wit_keys: tuple[BundleKey, ...]
    sequence: int | None = None
    refresh_hint: int | None = None
    digest: str = ""  # SHA-256 of the canonical document: same digest, same bundle
    skipped: tuple[SkippedKey, ...] = ()  # unusable keys left out, each with its reason
    _by_kid: dict[str, BundleKey] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, trust_domain: str, doc: Mapping[str, Any]) -> TrustBundle:
        trust_domain = _normalize_td(trust_domain)
        if not isinstance(doc, Mapping):
            raise InvalidBundle("bundle must be a JSON object")
        keys = doc.get("keys")
        if not isinstance(keys, list):
            raise InvalidBundle("bundle 'keys' must be a list")
        skipped: list[SkippedKey] = []
        jwt_keys: list[tuple[int, BundleKey]] = []
        wit_keys: list[BundleKey] = []
        for index, entry in enumerate(keys):
            judged = _judge_key(entry, trust_domain)
            if judged is None:
                continue
            if isinstance(judged, str):
                kid = entry.get("kid") if isinstance(entry, Mapping) else None
                use = entry.get("use") if isinstance(entry, Mapping) else None
                shown_kid = kid if isinstance(kid, str) else None
                skipped.append(SkippedKey(index, shown_kid, use, judged))
            elif judged.use == JWT_SVID_USE:
                jwt_keys.append((index, judged))
            else:
                wit_keys.append(judged)
        # Two jwt-svid keys with one kid: either could be meant, so neither is trusted.
        kid_counts = Counter(key.kid for _, key in jwt_keys)
        by_kid: dict[str, BundleKey] = {}
        kept: list[BundleKey] = []
        for index, key in jwt_keys:
            if key.kid is None or kid_counts[key.kid] > 1:
                skipped.append(SkippedKey(index, key.kid, JWT_SVID_USE, "duplicate jwt-svid kid"))
                continue
            by_kid[key.kid] = key
            kept.append(key)
        skipped.sort(key=lambda s: s.index)
        if skipped:
            log.warning(
                "bundle for %s: skipped %d unusable key(s): %s",
                trust_domain,
                len(skipped),
                "; ".join(map(str, skipped)),
            )
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        return cls(
            trust_domain=trust_domain,
            jwt_keys=tuple(kept),
            wit_keys=tuple(wit_keys),
            sequence=_non_negative_int(doc, "spiffe_sequence"),
            refresh_hint=_non_negative_int(doc, "spiffe_refresh_hint"),
            digest=hashlib.sha256(canonical.encode()).hexdigest(),
            skipped=tuple(skipped),
            _by_kid=by_kid,
        )

    @classmethod
    def from_json(cls, trust_domain: str, data: str | bytes) -> TrustBundle:
        return cls.from_dict(trust_domain, _loads_object(data))

    def jwt_key(self, kid: str) -> BundleKey | None:
        return self._by_kid.get(kid)

    def keys_for(self, use: str) -> tuple[BundleKey, ...]:
        return self.jwt_keys if use == JWT_SVID_USE else self.wit_keys

    @property
    def is_empty(self) -> bool:
        """No usable keys at all: the trust domain is distrusted."""
        return not self.jwt_keys and not self.wit_keys


def _loads_object(data: str | bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data, object_pairs_hook=no_duplicate_members(InvalidBundle))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        if isinstance(exc, InvalidBundle):
            raise
        raise InvalidBundle("bundle is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise InvalidBundle("bundle must be a JSON object")
    return doc


def _normalize_td(trust_domain: str) -> str:
    # Federated bundle maps are keyed either "example.org" or "spiffe://example.org".
    if trust_domain.startswith("spiffe://"):
        trust_domain = trust_domain[len("spiffe://") :]
    try:
        validate_trust_domain(trust_domain)
    except InvalidSpiffeId as exc:
        raise InvalidBundle(f"invalid trust domain: {exc.rule}") from exc
    return trust_domain


class BundleSet:
    """Federated bundle map: one current :class:`TrustBundle` per trust domain.

    Reads (``get``) are lock-free dict lookups; writers take a lock so the sequence
    check and the swap are atomic with respect to each other.
    """

    def __init__(self, bundles: Iterable[TrustBundle] = ()) -> None:
        self._bundles: dict[str, TrustBundle] = {}
        self._lock = threading.Lock()
        for bundle in bundles:
            self.add(bundle)

    @classmethod
    def from_dict(cls, federated: Mapping[str, Mapping[str, Any]]) -> BundleSet:
        """Build from ``{trust_domain: bundle_doc}`` (duplicate domains rejected)."""
        return cls(TrustBundle.from_dict(td, doc) for td, doc in federated.items())

    @classmethod
    def from_json(cls, data: str | bytes) -> BundleSet:
        return cls.from_dict(_loads_object(data))

    def add(self, bundle: TrustBundle) -> None:
        """Add a bundle for a new trust domain; a domain already present is an error."""
        with self._lock:
            if bundle.trust_domain in self._bundles:
                raise InvalidBundle(f"duplicate trust domain {bundle.trust_domain!r}")
            self._bundles[bundle.trust_domain] = bundle

    def update(self, bundle: TrustBundle) -> bool:
        """Install ``bundle``, replacing the domain's current one.

        Returns False when the content is identical (the current object is kept, so
        verified-token caches stay warm). Raises :class:`StaleBundle` when the new
        ``spiffe_sequence`` is lower than the current one: a rollback must never
        resurrect keys a newer bundle removed.
        """
        with self._lock:
            current = self._bundles.get(bundle.trust_domain)
            if current is not None:
                if current.digest == bundle.digest:
                    return False
                if (
                    current.sequence is not None
                    and bundle.sequence is not None
                    and bundle.sequence < current.sequence
                ):
                    raise StaleBundle(
                        f"bundle for {bundle.trust_domain!r} has sequence {bundle.sequence}, "
                        f"older than current {current.sequence}"
                    )
            self._bundles[bundle.trust_domain] = bundle
            return True

    def remove(self, trust_domain: str) -> None:
        with self._lock:
            self._bundles.pop(trust_domain, None)

    def get(self, trust_domain: str) -> TrustBundle | None:
        return self._bundles.get(trust_domain)

    def __contains__(self, trust_domain: object) -> bool:
        return trust_domain in self._bundles

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._bundles))

    def __len__(self) -> int:
        return len(self._bundles)


# --------------------------------------------------------------------------- sources


class FileBundleSource:
    """Keeps ``bundles[trust_domain]`` in sync with a SPIFFE bundle file.

    ``refresh()`` re-reads the file only when its mtime or size changed, so polling it
    often is cheap. A file that fails to parse leaves the last good bundle in place and
    is reported through ``last_error`` and the ``tether.identity`` logger; ``refresh()``
    never raises. Unusable keys in a file that parses are skipped and reported in the
    installed bundle's ``skipped``; the rest apply.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        trust_domain: str,
        bundles: BundleSet,
        *,
        poll_interval: float = 1.0,
    ) -> None:
        self.path = os.fspath(path)
        self.trust_domain = _normalize_td(trust_domain)
        self.bundles = bundles
        self.poll_interval = poll_interval
        self.last_error: Exception | None = None
        self._stamp: tuple[int, int] | None = None

    def refresh(self) -> bool:
        """Re-read if changed. Returns True if the bundle set was updated."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return False
            # Remember the stamp even if parsing fails: a broken file is reported once,
            # and is picked up again as soon as someone fixes it (its stamp changes).
            self._stamp = stamp
            with open(self.path, "rb") as f:
                bundle = TrustBundle.from_json(self.trust_domain, f.read())
            changed = self.bundles.update(bundle)
        except Exception as exc:
            # Deliberately broad, as in HttpBundleSource.refresh: this runs as a poll
            # loop, and any failure must keep the last good bundle, be reported in
            # ``last_error`` and leave the loop alive, never escape to the caller.
            self.last_error = exc
            log.warning("bundle file refresh for %s failed: %s", self.trust_domain, exc)
            return False
        self.last_error = None
        return changed

    async def run(self) -> None:
        """Poll forever (run it in a task group; cancel the scope to stop)."""
        while True:
            # A stat (and, rarely, reading a few KiB) is cheaper than a thread hop, and
            # keeps this loop independent of the backend's thread-pool support.
            self.refresh()
            await anyio.sleep(self.poll_interval)


class HttpBundleSource:
    """Fetches a trust domain's bundle from an HTTPS (or HTTP) endpoint.

    ``run()`` refreshes every ``spiffe_refresh_hint`` seconds (or ``default_refresh``),
    minus up to ``jitter`` of it at random so a fleet does not poll in lockstep. A failed
    fetch keeps the last good bundle, records ``last_error``, logs, and retries after
    ``retry_interval``. Old keys stay trusted until a newer bundle drops them, because
    bundles are only ever replaced whole, by a successfully fetched one.
    """

    def __init__(
        self,
        url: str,
        trust_domain: str,
        bundles: BundleSet,
        *,
        default_refresh: float = 300.0,
        retry_interval: float = 10.0,
        min_refresh: float = 1.0,
        jitter: float = 0.1,
        timeout: float = 10.0,
        max_bytes: int = 1 << 20,
        verify: ssl.SSLContext | str | bool = True,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError("bundle endpoint URL must be https:// (or http:// for local use)")
        self.url = url
        self.verify = verify  # CA bundle path or SSLContext for private endpoint CAs
        self.trust_domain = _normalize_td(trust_domain)
        self.bundles = bundles
        self.default_refresh = default_refresh
        self.retry_interval = retry_interval
        self.min_refresh = min_refresh
        self.jitter = jitter
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._rng = rng
        self.last_error: Exception | None = None
        self.last_success: float | None = None

    async def _fetch(self) -> bytes:
        import httpx  # deferred: only endpoint users pay for the import

        async with (
            httpx.AsyncClient(
                timeout=self.timeout, follow_redirects=False, verify=self.verify
            ) as client,
            client.stream("GET", self.url, headers={"accept": "application/json"}) as resp,
        ):
            if resp.status_code != 200:
                raise InvalidBundle(f"bundle endpoint returned HTTP {resp.status_code}")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise InvalidBundle(f"bundle larger than {self.max_bytes} bytes")
            return bytes(body)

    async def refresh(self) -> bool:
        """Fetch once. Returns True if the bundle set changed; never raises on failure."""
        try:
            bundle = TrustBundle.from_json(self.trust_domain, await self._fetch())
            changed = self.bundles.update(bundle)
        except Exception as exc:
            # Deliberately broad: this runs as a background task, and any failure (network,
            # TLS, HTTP status, parse, rollback) must keep the last good bundle, be
            # reported, and leave the loop alive for the next attempt.
            self.last_error = exc
            log.warning(
                "bundle endpoint refresh for %s failed: %s: %s",
                self.trust_domain,
                type(exc).__name__,
                exc,
            )
            return False
        self.last_error = None
        self.last_success = time.time()
        return changed

    def next_delay(self) -> float:
        """Seconds until the next refresh, from the current bundle's hint and jitter."""
        current = self.bundles.get(self.trust_domain)
        hint = float(current.refresh_hint) if current and current.refresh_hint else None
        base = hint if hint is not None else self.default_refresh
        if self.last_error is not None:
            base = min(base, self.retry_interval)
        # Refresh early, never late: expiring keys are the risk, not an extra request.
        return max(self.min_refresh, base * (1.0 - self.jitter * self._rng()))

    async def run(self) -> None:
        """Refresh forever (run it in a task group; cancel the scope to stop)."""
        while True:
            await self.refresh()
            await anyio.sleep(self.next_delay())
