"""Smaller identity promises, checked through the public API: entity-uid escaping, the
verified-token cache's eviction and validity window, the async WIMSE path's token
bindings, refusing JSON constants, removing an absent bundle. Written against
mutmut's survivors (issue 15)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tether.identity import (
    Authenticator,
    BundleSet,
    InvalidToken,
    JwtSvidVerifier,
    LocalIssuer,
    cedar_entity_uid,
    generate_proof_key,
    mint_wpt,
)
from tether.identity.jwt_svid import TokenCache

TARGET = "https://api.example.org/orders"


def test_entity_uid_escapes_quotes_backslashes_and_controls_only() -> None:
    assert cedar_entity_uid("Agent", 'A b"\\\x1f\x7f~') == 'Agent::"A b\\"\\\\\\u{1f}\\u{7f}~"'
    assert cedar_entity_uid("Agent", "spiffe://x/ A") == 'Agent::"spiffe://x/ A"'


def _filled(maxsize: int, bundles: BundleSet, untils: list[float]) -> TokenCache[str]:
    cache: TokenCache[str] = TokenCache(maxsize)
    bundle = bundles.get("example.org")
    assert bundle is not None
    for i, until in enumerate(untils):
        cache.put(f"t{i}", f"v{i}", until, bundle, 0.0)
    return cache


@pytest.mark.parametrize(("maxsize", "dropped"), [(10, 1), (20, 2), (35, 3)])
def test_full_cache_drops_the_oldest_tenth(bundles: BundleSet, maxsize: int, dropped: int) -> None:
    cache = _filled(maxsize, bundles, [100.0] * maxsize)
    bundle = bundles.get("example.org")
    assert bundle is not None
    cache.put("new", "v", 100.0, bundle, 50.0)
    assert len(cache) == maxsize - dropped + 1
    for i in range(maxsize):
        assert (cache.get(f"t{i}", 50.0, bundles) is None) is (i < dropped), i
    assert cache.get("new", 50.0, bundles) == "v"


def test_full_cache_drops_expired_entries_first(bundles: BundleSet) -> None:
    """Entries valid until before `now` go first; one valid until exactly `now` is still
    valid and stays; when that frees room, nothing live is dropped."""
    untils = [40.0, 40.0, 50.0, 40.0] + [100.0] * 6
    cache = _filled(10, bundles, untils)
    bundle = bundles.get("example.org")
    assert bundle is not None
    cache.put("new", "v", 100.0, bundle, 50.0)
    assert len(cache) == 8
    assert cache.get("t2", 50.0, bundles) == "v2"
    assert [cache.get(f"t{i}", 50.0, bundles) for i in (0, 1, 3)] == [None, None, None]
    assert all(cache.get(f"t{i}", 50.0, bundles) == f"v{i}" for i in range(4, 10))


def test_verifier_cache_lasts_through_the_leeway_and_evicts(
    bundles: BundleSet, clock: Any, keys: Any, forge: Any, good_claims: dict[str, Any]
) -> None:
    verifier = JwtSvidVerifier(bundles, "svc", clock=clock, cache_size=1)
    token = forge({"alg": "ES256", "kid": "k1"}, good_claims, keys.ec256)
    first = verifier.verify(token)
    clock.now = good_claims["exp"] + 4  # past exp, inside the 5 s leeway: from the cache
    assert verifier.verify(token) is first
    clock.now = good_claims["exp"] - 10
    other = forge({"alg": "ES256", "kid": "k1"}, {**good_claims, "jti": "2"}, keys.ec256)
    assert verifier.verify(other).claims["jti"] == "2"  # the full cache made room
    assert len(verifier.cache) == 1


def test_verifier_refuses_a_non_string_token_as_invalid(bundles: BundleSet, clock: Any) -> None:
    verifier = JwtSvidVerifier(bundles, "svc", clock=clock)
    with pytest.raises(InvalidToken):
        verifier.verify(["not", "a", "token"])  # type: ignore[arg-type]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_in_claims_are_refused_by_name(
    bundles: BundleSet,
    clock: Any,
    keys: Any,
    forge: Any,
    good_claims: dict[str, Any],
    constant: str,
) -> None:
    claims = json.dumps({**good_claims, "exp": 0}).replace('"exp": 0', f'"exp": {constant}')
    token = forge({"alg": "ES256", "kid": "k1"}, claims.encode(), keys.ec256)
    verifier = JwtSvidVerifier(bundles, "svc", clock=clock)
    with pytest.raises(InvalidToken) as e:
        verifier.verify(token)
    assert str(e.value) == f"non-JSON constant {constant}"


def test_removing_an_absent_bundle_is_a_no_op(bundles: BundleSet) -> None:
    bundles.remove("absent.org")
    assert "absent.org" not in bundles and "example.org" in bundles


@pytest.mark.anyio
@pytest.mark.parametrize("bound", ["access", "txn"])
async def test_async_wimse_passes_token_bindings(
    auth: Authenticator, issuer: LocalIssuer, clock: Any, bound: str
) -> None:
    """`authenticate_wimse` (async) checks `ath`/`tth` like the sync call: a proof bound to
    a token is accepted with that token and refused with another."""
    key, jwk = generate_proof_key()
    wit = issuer.mint_wit("/agent/w", jwk, ttl=600)
    kw: dict[str, Any] = {"access_token": "AT"} if bound == "access" else {"txn_token": "TT"}
    other = {k: "other" for k in kw}

    def wpt() -> str:
        return mint_wpt(key, wit, TARGET, now=clock.now, **kw)

    agent = await auth.authenticate_wimse(wit, wpt(), TARGET, **kw)
    assert agent.spiffe_id.path == "/agent/w"
    with pytest.raises(InvalidToken, match="does not match"):
        await auth.authenticate_wimse(wit, wpt(), TARGET, **other)
