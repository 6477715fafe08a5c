"""AuthZEN 1.0 search endpoints (spec section 8) against `tether serve` on 127.0.0.1: the
working group's search interop vectors, pagination with opaque request-bound tokens,
bad input, and unauthenticated callers."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("uvicorn", reason="uvicorn not installed (pip install tether[serve])")

from tests.authzen.test_authzen import Pdp, serving

from tether.engine import Engine

SEARCH = Path(__file__).parent / "search"
VECTORS = {
    k: json.loads((SEARCH / f"{k}.json").read_text())["evaluation"]
    for k in ("subject", "resource", "action")
}


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    engine = Engine.from_files(SEARCH / "search.cedar", entities=SEARCH / "entities.json")
    with serving(engine) as p:
        yield p


def key(item: dict[str, str]) -> tuple[str, ...]:
    return (item["type"], item["id"]) if "type" in item else (item["name"],)


def same(got: list[dict[str, str]], want: list[dict[str, str]]) -> bool:
    """The harness's comparison: the same items in any order."""
    return sorted(map(key, got)) == sorted(map(key, want))


@pytest.mark.parametrize(
    ("kind", "vector"),
    [(k, v) for k, vs in VECTORS.items() for v in vs],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_search_interop_vectors(pdp: Pdp, kind: str, vector: dict[str, Any]) -> None:
    r = pdp.post(f"/access/v1/search/{kind}", vector["request"])
    assert r.status_code == 200, r.text
    assert same(r.json()["results"], vector["expected"]["results"]), (r.json(), vector)


def test_every_result_is_allowed_and_every_other_candidate_denied(pdp: Pdp) -> None:
    # The spec's semantics: a search result, evaluated, is a permit; the complement
    # (the other users) are denies.
    body = {
        "subject": {"type": "user"},
        "action": {"name": "edit"},
        "resource": {"type": "record", "id": "116"},
    }
    found = {x["id"] for x in pdp.post("/access/v1/search/subject", body).json()["results"]}
    assert found == {"dan"}
    for user in ("alice", "bob", "carol", "dan", "erin", "felix"):
        ev = {**body, "subject": {"type": "user", "id": user}}
        assert pdp.post("/access/v1/evaluation", ev).json()["decision"] is (user in found)


def test_the_searched_id_is_ignored(pdp: Pdp) -> None:
    body = {
        "subject": {"type": "user", "id": "alice"},
        "action": {"name": "delete"},
        "resource": {"type": "record", "id": "101"},
    }
    r = pdp.post("/access/v1/search/subject", body).json()
    assert r == {"results": [{"type": "user", "id": "alice"}]}
    bob = {**body, "subject": {"type": "user", "id": "bob"}}
    assert pdp.post("/access/v1/search/subject", bob).json() == r


def resources(limit: int | None = None, token: str | None = None, **extra: Any) -> dict[str, Any]:
    page: dict[str, Any] = {}
    if limit is not None:
        page["limit"] = limit
    if token is not None:
        page["token"] = token
    body: dict[str, Any] = {
        "subject": {"type": "user", "id": "alice"},
        "action": {"name": "view"},
        "resource": {"type": "record"},
        **extra,
    }
    if page:
        body["page"] = page
    return body


def test_pagination_walks_the_whole_result_set_once(pdp: Pdp) -> None:
    everything = pdp.post("/access/v1/search/resource", resources()).json()["results"]
    assert len(everything) == 20  # alice is a manager: every record
    seen: list[dict[str, str]] = []
    r = pdp.post("/access/v1/search/resource", resources(limit=7)).json()
    pages = 1
    while True:
        assert next(iter(r)) == "page"  # first, as the spec recommends
        assert r["page"]["count"] == len(r["results"]) and r["page"]["total"] == 20
        seen.extend(r["results"])
        if r["page"]["next_token"] == "":
            break
        r = pdp.post("/access/v1/search/resource", resources(token=r["page"]["next_token"])).json()
        pages += 1
    assert pages == 3 and seen == everything


def test_a_token_is_bound_to_its_request(pdp: Pdp) -> None:
    first = pdp.post("/access/v1/search/resource", resources(limit=5)).json()
    token = first["page"]["next_token"]
    assert token
    # The same request with the token: the next page (the benign twin of each case below).
    ok = pdp.post("/access/v1/search/resource", resources(limit=5, token=token))
    assert ok.status_code == 200 and ok.json()["results"][0] not in first["results"]
    changed = resources(token=token)
    changed["action"] = {"name": "edit"}
    r = pdp.post("/access/v1/search/resource", changed)
    assert r.status_code == 400 and "request changed" in r.json()["error"]["message"]
    r = pdp.post("/access/v1/search/resource", resources(limit=6, token=token))
    assert r.status_code == 400 and "limit" in r.json()["error"]["message"]
    other_kind = {
        "subject": {"type": "user"},
        "action": {"name": "view"},
        "resource": {"type": "record", "id": "101"},
        "page": {"token": token},
    }
    assert pdp.post("/access/v1/search/subject", other_kind).status_code == 400
    # A token edited to restart at offset 0 (its MAC kept) is refused.
    _, rest = base64.urlsafe_b64decode(token + "==").decode().split(":", 1)
    forged = base64.urlsafe_b64encode(f"0:{rest}".encode()).decode()
    r = pdp.post("/access/v1/search/resource", resources(limit=5, token=forged))
    assert r.status_code == 400 and "does not belong" in r.json()["error"]["message"]
    assert pdp.post("/access/v1/search/resource", resources(token="!!")).status_code == 400


@pytest.mark.parametrize(
    ("kind", "body", "words"),
    [
        (
            "subject",
            {"action": {"name": "view"}, "resource": {"type": "record", "id": "1"}},
            "subject",
        ),
        (
            "subject",
            {
                "subject": {"id": "x"},
                "action": {"name": "view"},
                "resource": {"type": "record", "id": "1"},
            },
            "type",
        ),
        (
            "resource",
            {
                "subject": {"type": "user", "id": "alice"},
                "action": {"name": "view"},
                "resource": {"type": 3},
            },
            "type",
        ),
        (
            "resource",
            {"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}},
            "resource",
        ),
        ("action", {"subject": {"type": "user", "id": "alice"}}, "resource"),
        (
            "action",
            {
                "subject": {"type": "user", "id": "alice"},
                "resource": {"type": "record", "id": "1"},
                "page": {"limit": -1},
            },
            "limit",
        ),
        (
            "action",
            {
                "subject": {"type": "user", "id": "alice"},
                "resource": {"type": "record", "id": "1"},
                "page": [],
            },
            "page",
        ),
        (
            "action",
            {
                "subject": {"type": "user", "id": "alice"},
                "resource": {"type": "record", "id": "1"},
                "page": {"limit": True},
            },
            "limit",
        ),
    ],
)
def test_malformed_searches_get_400(pdp: Pdp, kind: str, body: Any, words: str) -> None:
    r = pdp.post(f"/access/v1/search/{kind}", body)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"]


def test_unknown_types_find_nothing(pdp: Pdp) -> None:
    body = {
        "subject": {"type": "group"},
        "action": {"name": "view"},
        "resource": {"type": "record", "id": "101"},
    }
    r = pdp.post("/access/v1/search/subject", body)
    assert r.status_code == 200 and r.json() == {"results": []}


def test_unauthenticated_search_gets_401(pdp: Pdp) -> None:
    body = resources()
    assert httpx.post(f"{pdp.url}/access/v1/search/resource", json=body).status_code == 401
    assert pdp.post("/access/v1/search/resource", body).status_code == 200  # the twin


def test_large_results_are_paged_even_unasked() -> None:
    from tether.authzen import Pdp as Core

    ents = [
        {"uid": {"type": "doc", "id": f"d{i:03}"}, "attrs": {}, "parents": []} for i in range(25)
    ]
    engine = Engine(
        'permit(principal, action == Action::"read", resource);', None, json.dumps(ents)
    )
    core = Core(engine, max_page=10)
    body = {
        "subject": {"type": "user", "id": "u"},
        "action": {"name": "read"},
        "resource": {"type": "doc"},
    }
    r = core.search("resource", body)
    assert r["page"]["count"] == 10 and r["page"]["total"] == 25 and r["page"]["next_token"]
    small = Core(engine, max_page=100).search("resource", body)
    assert "page" not in small and len(small["results"]) == 25
