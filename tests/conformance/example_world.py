"""The example world shipped in `tether/examples` (policies, schema, entities, state), for the
oracle suites that replay it in cedarpy."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import tether
from tether.engine import Engine
from tether.state import state_spec

EXAMPLES = Path(tether.__file__).parent / "examples"
POLICIES = (EXAMPLES / "agents.cedar").read_text(encoding="utf-8")
SCHEMA = (EXAMPLES / "agents.cedarschema").read_text(encoding="utf-8")
ENTITIES: list[dict[str, Any]] = json.loads((EXAMPLES / "entities.json").read_text("utf-8"))
STATE_DOC: dict[str, Any] = tomllib.loads((EXAMPLES / "state.toml").read_text("utf-8"))
T0 = 1_700_000_000.0


def engine(*, policies: str = POLICIES, risk_limit: int | None = None) -> Engine:
    """The example engine, with other policies or another `risk` budget limit when given."""
    doc = json.loads(json.dumps(STATE_DOC))
    if risk_limit is not None:
        doc["budgets"]["risk"]["limit"] = risk_limit
    return Engine(policies, SCHEMA, json.dumps(ENTITIES), state=state_spec(doc))
