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


def engine(*, policies: str = POLICIES) -> Engine:
    """The example engine, with other policies when given."""
    return Engine(policies, SCHEMA, json.dumps(ENTITIES), state=state_spec(STATE_DOC))
