"""`tether serve` as an AuthZEN 1.0 PDP: a real uvicorn server on 127.0.0.1, called over
HTTP with httpx. The interop Todo scenario's decision vectors, every endpoint and
option, bad input, escape-looking keys and unauthenticated callers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

uvicorn = pytest.importorskip("uvicorn", reason="uvicorn not installed (pip install tether[serve])")

from tether.authzen import create_app, listening_socket  # noqa: E402
from tether.engine import Engine  # noqa: E402
from tether.identity import Authenticator, LocalIssuer  # noqa: E402

TODO = Path(__file__).parent / "todo"
AUD = "tether-pdp"
RICK = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"
BETH = "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"
VECTORS = json.loads((TODO / "decisions.json").read_text())


class Pdp:
    def __init__(self, url: str, token: str, issuer: LocalIssuer) -> None:
        self.url = url
        self.issuer = issuer
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        if isinstance(body, bytes | str):
            return self.client.post(path, content=body, **kw)
        return self.client.post(path, json=body, **kw)


@contextmanager
def serving(engine: Engine) -> Iterator[Pdp]:
    """`create_app(engine)` served by uvicorn on 127.0.0.1, and a client holding a
    trusted JWT-SVID."""
    issuer = LocalIssuer("example.org")
    app = create_app(engine, Authenticator(issuer.trust_bundle(), AUD))
    # Bound and listening before the server starts: the first request simply waits in
    # the backlog, so no polling or sleeping is needed.
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    token = issuer.mint_svid("pep/todo-app", AUD)
    p = Pdp(f"http://127.0.0.1:{port}", token, issuer)
    try:
        yield p
    finally:
        p.client.close()
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    with serving(Engine.from_files(TODO / "todo.cedar", entities=TODO / "entities.json")) as p:
        yield p


def subject(sid: str = RICK) -> dict[str, Any]:
    return {"type": "user", "id": sid}


def todo(owner: str | None = None, **props: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"type": "todo", "id": "t1"}
    if owner is not None:
        props["ownerID"] = owner
    if props:
        r["properties"] = props
    return r


@pytest.mark.parametrize(
    "vector", VECTORS["evaluation"], ids=lambda v: f"{v['request']['action']['name']}"
)
def test_todo_interop_evaluation(pdp: Pdp, vector: dict[str, Any]) -> None:
    r = pdp.post("/access/v1/evaluation", vector["request"])
    assert r.status_code == 200, r.text
    assert r.json()["decision"] is vector["expected"]


@pytest.mark.parametrize("vector", VECTORS["evaluations"])
def test_todo_interop_evaluations(pdp: Pdp, vector: dict[str, Any]) -> None:
    r = pdp.post("/access/v1/evaluations", vector["request"])
    assert r.status_code == 200, r.text
    assert r.json()["evaluations"] == vector["expected"]


def test_well_known_configuration(pdp: Pdp) -> None:
    r = pdp.client.get("/.well-known/authzen-configuration")
    assert r.status_code == 200
    doc = r.json()
    assert doc["policy_decision_point"] == pdp.url
    assert doc["access_evaluation_endpoint"] == f"{pdp.url}/access/v1/evaluation"
    assert doc["access_evaluations_endpoint"] == f"{pdp.url}/access/v1/evaluations"
    for kind in ("subject", "resource", "action"):
        assert doc[f"search_{kind}_endpoint"] == f"{pdp.url}/access/v1/search/{kind}"


def test_deny_is_200_with_false(pdp: Pdp) -> None:
    body = {"subject": subject(BETH), "action": {"name": "can_create_todo"}, "resource": todo()}
    r = pdp.post("/access/v1/evaluation", body)
    assert r.status_code == 200 and r.json() == {"decision": False}


def batch(semantic: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": subject(BETH),
        "resource": todo(),
        "evaluations": [
            {"action": {"name": "can_read_todos"}},
            {"action": {"name": "can_create_todo"}},
            {"action": {"name": "can_read_todos"}},
            {"action": {"name": "can_delete_todo"}},
        ],
    }
    if semantic is not None:
        body["options"] = {"evaluations_semantic": semantic}
    return body


@pytest.mark.parametrize(
    ("semantic", "expected"),
    [
        (None, [True, False, True, False]),
        ("execute_all", [True, False, True, False]),
        ("deny_on_first_deny", [True, False]),
        ("permit_on_first_permit", [True]),
    ],
)
def test_evaluations_semantics(pdp: Pdp, semantic: str | None, expected: list[bool]) -> None:
    r = pdp.post("/access/v1/evaluations", batch(semantic))
    assert r.status_code == 200, r.text
    assert [e["decision"] for e in r.json()["evaluations"]] == expected


def test_item_overrides_defaults_and_empty_list_is_single(pdp: Pdp) -> None:
    body = {
        "subject": subject(BETH),
        "action": {"name": "can_create_todo"},
        "resource": todo(),
        "evaluations": [{}, {"subject": subject(RICK)}],
    }
    r = pdp.post("/access/v1/evaluations", body)
    assert [e["decision"] for e in r.json()["evaluations"]] == [False, True]
    body["evaluations"] = []
    body["subject"] = subject(RICK)
    assert pdp.post("/access/v1/evaluations", body).json() == {"decision": True}


def test_bad_item_denied_without_failing_the_batch(pdp: Pdp) -> None:
    body = {
        "subject": subject(RICK),
        "resource": todo(),
        "evaluations": [
            {"action": {"name": "can_read_todos"}},
            {"action": {"nome": "typo"}},
            "not an object",
            {"action": {"name": "can_read_todos"}},
        ],
    }
    r = pdp.post("/access/v1/evaluations", body)
    assert r.status_code == 200
    out = r.json()["evaluations"]
    assert [e["decision"] for e in out] == [True, False, False, True]
    assert out[1]["context"]["error"]["status"] == 400
    assert "action" in out[1]["context"]["error"]["message"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        ({"action": {"name": "can_read_todos"}, "resource": todo()}, "missing `subject`"),
        ({"subject": {"type": "user"}, "action": {"name": "x"}, "resource": todo()}, "`id`"),
        ({"subject": subject(), "action": {"name": 3}, "resource": todo()}, "`name`"),
        ({"subject": subject(), "action": {"name": "x"}, "resource": "todo"}, "`resource`"),
        (
            {
                "subject": {"type": "bad type!", "id": "x"},
                "action": {"name": "x"},
                "resource": todo(),
            },
            "entity type",
        ),
        (
            {"subject": subject(), "action": {"name": "x"}, "resource": todo(), "context": []},
            "`context`",
        ),
    ],
)
def test_malformed_bodies_get_400(pdp: Pdp, body: Any, words: str) -> None:
    r = pdp.post("/access/v1/evaluation", body)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"]


def test_bad_semantic_is_400(pdp: Pdp) -> None:
    r = pdp.post("/access/v1/evaluations", batch("first_come"))
    assert r.status_code == 400 and "evaluations_semantic" in r.text


def test_unknown_fields_are_ignored(pdp: Pdp) -> None:
    body = {
        "subject": {**subject(RICK), "extra": 1},
        "action": {"name": "can_read_todos", "more": [1]},
        "resource": todo(),
        "whatever": {"x": 1},
    }
    assert pdp.post("/access/v1/evaluation", body).json() == {"decision": True}


def test_request_id_is_echoed(pdp: Pdp) -> None:
    body = {"subject": subject(), "action": {"name": "can_read_todos"}, "resource": todo()}
    r = pdp.post("/access/v1/evaluation", body, headers={"X-Request-ID": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    r = pdp.post("/access/v1/evaluation", b"{")
    assert r.status_code == 400  # echoed on errors too
    r = pdp.post("/access/v1/evaluation", b"{", headers={"X-Request-ID": "req-43"})
    assert r.headers["x-request-id"] == "req-43"


def test_unauthenticated_callers_get_401(pdp: Pdp) -> None:
    body = {"subject": subject(), "action": {"name": "can_read_todos"}, "resource": todo()}
    r = httpx.post(f"{pdp.url}/access/v1/evaluation", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    other = LocalIssuer("example.org")  # same trust domain name, keys we do not trust
    forged = other.mint_svid("pep/todo-app", AUD)
    r = httpx.post(
        f"{pdp.url}/access/v1/evaluation", json=body, headers={"Authorization": f"Bearer {forged}"}
    )
    assert r.status_code == 401
    wrong_aud = pdp.issuer.mint_svid("pep/todo-app", "someone-else")
    r = httpx.post(
        f"{pdp.url}/access/v1/evaluation",
        json=body,
        headers={"Authorization": f"Bearer {wrong_aud}"},
    )
    assert r.status_code == 401
    # The twin: the same request with the trusted token is decided.
    assert pdp.post("/access/v1/evaluation", body).status_code == 200


def test_properties_reach_policies_as_context(pdp: Pdp) -> None:
    morty = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"
    body = {"subject": subject(morty), "action": {"name": "can_update_todo"}}
    own = pdp.post("/access/v1/evaluation", {**body, "resource": todo("morty@the-citadel.com")})
    other = pdp.post("/access/v1/evaluation", {**body, "resource": todo("rick@the-citadel.com")})
    assert own.json()["decision"] is True and other.json()["decision"] is False


def test_escape_looking_keys_are_never_read_as_escapes(pdp: Pdp) -> None:
    morty = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

    def update(owner: Any) -> bool:
        body = {
            "subject": subject(morty),
            "action": {"name": "can_update_todo"},
            "resource": {"type": "todo", "id": "t1", "properties": {"ownerID": owner}},
        }
        r = pdp.post("/access/v1/evaluation", body)
        assert r.status_code == 200, r.text
        return bool(r.json()["decision"])

    # Morty's own todo: the plain string is his email.
    assert update("morty@the-citadel.com")
    # An attacker dresses ownerID up as an entity reference or an extension value; as plain
    # records they equal no email, so the editor rule does not apply (and nothing errors).
    assert not update({"__entity": {"type": "user", "id": morty}})
    assert not update({"__extn": {"fn": "ip", "arg": "10.0.0.1"}})


def test_escape_keys_reach_policies_as_records() -> None:
    from tether.authzen import Pdp as Decider

    engine = Engine(
        'permit (principal, action, resource) when { context.meta has "__entity" && '
        'context.meta["__entity"].type == "user" };'
    )
    body = {
        "subject": subject(),
        "action": {"name": "a"},
        "resource": todo(),
        "context": {"meta": {"__entity": {"type": "user", "id": "x"}}},
    }
    assert Decider(engine).decide(body) == {"decision": True}
    body["context"] = {"meta": {"__entity": {"type": "robot", "id": "x"}}}
    assert Decider(engine).decide(body) == {"decision": False}


def test_null_and_float_rules(pdp: Pdp) -> None:
    from tether.authzen import BadRequest, to_cedar

    req = {
        "subject": subject(),
        "action": {"name": "a"},
        "resource": todo(),
        "context": {"gone": None, "n": 2.0, "d": 1.25, "xs": [1, None, 2]},
    }
    _, _, _, ctx = to_cedar(req)
    assert "gone" not in ctx and ctx["n"] == 2 and isinstance(ctx["n"], int)
    assert ctx["d"] == {"__extn": {"fn": "decimal", "arg": "1.2500"}}
    assert ctx["xs"] == [1, 2]
    req["context"] = {"d": 1.23456}
    with pytest.raises(BadRequest, match="4 fractional digits"):
        to_cedar(req)
    r = pdp.post(
        "/access/v1/evaluation",
        {
            "subject": subject(),
            "action": {"name": "can_read_todos"},
            "resource": todo(),
            "context": {"gone": None, "score": 0.5},
        },
    )
    assert r.json() == {"decision": True}
