"""`explain` against Cedar's conformance cases: its verdict (Cedar's own evaluator) is the
expected one, the compiled engine agrees, and the per-policy verdicts add up."""

from __future__ import annotations

import json
from typing import Any

import pytest

import tether
from tests.conformance.corpus import MISSING, corpus_root
from tether.engine import Engine
from tether.explain import explain

CORPUS = corpus_root()
if CORPUS is None:
    pytest.skip(MISSING, allow_module_level=True)


def test_explain_agrees_with_cedar_conformance_cases() -> None:
    assert CORPUS is not None
    cases = sorted((CORPUS / "tests").rglob("*.json"))
    assert cases, f"no hand-written cases under {CORPUS}"
    checked = 0
    for case_file in cases:
        case: dict[str, Any] = json.loads(case_file.read_text())
        policies = (CORPUS / case["policies"]).read_text()
        schema = (CORPUS / case["schema"]).read_text() if case.get("schema") else None
        entities = (CORPUS / case["entities"]).read_text()
        try:
            engine = Engine(policies, schema, entities, validate=False, validate_requests=False)
        except tether.PolicyError:
            continue
        named = "@id(" not in policies
        for req in case["requests"]:

            def uid(d: dict[str, str]) -> str:
                return f"{d['type']}::{json.dumps(d['id'])}"

            # The engine takes contexts in tether's form (extension values explicit);
            # Cedar reads that form too, so both see the same request.
            ctx = json.loads(
                engine.normalize_context(
                    (req["action"]["type"], req["action"]["id"]),
                    json.dumps(req["context"]),
                    validate=bool(req.get("validateRequest")),
                )
            )
            ex = explain(
                engine,
                uid(req["principal"]),
                uid(req["action"]),
                uid(req["resource"]),
                ctx,
                entities=entities,
                schema=schema,
            )
            where = f"{case_file.name}: {req.get('description', '')}"
            assert ex.allowed == (req["decision"] == "allow"), where
            assert ex.engine_allowed == ex.allowed, where
            if named:
                assert sorted(ex.reasons) == sorted(req["reason"]), where
            # The per-policy verdicts add up to the decision.
            permits = any(p.satisfied for p in ex.policies if p.effect == "permit")
            forbids = any(p.satisfied for p in ex.policies if p.effect == "forbid")
            assert ex.allowed == (permits and not forbids), where
            # `engine.explain` reads the engine's own store (exported to Cedar JSON): the
            # same explanation as from the entity file the engine was loaded with.
            own = engine.explain(
                uid(req["principal"]), uid(req["action"]), uid(req["resource"]), ctx
            )
            assert own == ex, where
            checked += 1
    assert checked > 0
