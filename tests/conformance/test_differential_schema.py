"""Differential tests with a schema on both sides (Cedar's strict validation).

Each generated policy is validated by tether (Cedar 4.14's validator, inside the engine) and by
cedarpy (its bundled Cedar 4.12 validator); the verdicts and Cedar's messages must agree, except
for the one documented change between those versions: "impossible policy" became a warning in
Cedar 4.13. The policies both accept then decide a world conformed to the schema
(`schema_world.py`), request by request, exactly as `compare_world` checks without a schema.
Scale with TETHER_DIFF_SCHEMA_WORLDS (default 60).
"""

from __future__ import annotations

import os
import time
from collections import Counter

import cedarpy

from tests.conformance.cedar_gen import random_world
from tests.conformance.cedar_oracle import ID_RE, Tally, compare_world, require_engine
from tests.conformance.differential_count import record
from tests.conformance.schema_world import SCHEMA, conform_world
from tether import PolicyError

WORLDS = int(os.environ.get("TETHER_DIFF_SCHEMA_WORLDS", "60"))
IMPOSSIBLE = "unable to find an applicable action given the policy scope constraints"


def validation_agrees(policy: str, verdicts: Counter[str]) -> bool:
    """Compare one policy's strict-validation verdict; True when tether accepts it."""
    cedar = cedarpy.validate_policies(policy, SCHEMA)
    cedar_errors = [e.error for e in cedar.errors]
    try:
        engine = require_engine()(policy, SCHEMA)
    except PolicyError as e:
        assert not cedar.validation_passed, f"tether rejects what Cedar accepts: {e}\n{policy}"
        real = [m for m in cedar_errors if IMPOSSIBLE not in m]
        assert real, f"tether rejects a policy Cedar only finds impossible: {e}\n{policy}"
        for message in real:
            # tether names the policy (and its position) ahead of Cedar's own text.
            named = ID_RE.search(policy)
            body = message
            if message.startswith("for policy `"):
                pid, _, body = message.removeprefix("for policy `").partition("`, ")
                pid = named.group(1) if named else pid
                assert f"policy `{pid}` at " in str(e), f"{pid} not named in {e}\n{policy}"
            assert body in str(e), f"Cedar's {body!r} missing from {e}\n{policy}"
        assert f"({len(real)} error" in str(e), f"{e} vs Cedar's {real}\n{policy}"
        verdicts["invalid"] += 1
        verdicts["validation messages"] += len(real)
        return False
    if cedar.validation_passed:
        verdicts["valid"] += 1
    else:
        assert all(IMPOSSIBLE in m for m in cedar_errors), f"{cedar_errors}\n{policy}"
        assert any("impossible" in w for w in engine.warnings()), engine.warnings()
        verdicts["impossible (4.12 error, 4.14 warning)"] += 1
    return True


def test_differential_with_schema() -> None:
    tally, verdicts = Tally(), Counter[str]()
    start = time.perf_counter()
    for seed in range(WORLDS):
        world = random_world(50_000 + seed, n_policies=30, n_requests=16)
        valid = [p for p in world.policies if validation_agrees(p, verdicts)]
        compare_world(conform_world(world, valid), tally, SCHEMA)
    record("schema", tally.cases)
    print(f"\nschema differential: {tally.summary(time.perf_counter() - start)}; {dict(verdicts)}")
    assert verdicts["valid"] > 0 and verdicts["invalid"] > 0, verdicts
    assert tally.outcomes["allow"] > 0 and tally.outcomes["deny"] > 0, tally.outcomes
