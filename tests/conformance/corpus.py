"""Running Cedar's conformance cases (the integration-test JSON format) through tether."""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether import Engine, PolicyError

ENV = "TETHER_CEDAR_CORPUS"
SOURCE = "https://github.com/cedar-policy/cedar-integration-tests"
MISSING = (
    f"Cedar conformance corpus not configured: set {ENV} to a checkout of {SOURCE} "
    "(a folder holding tests/ and corpus-tests.tar.gz)"
)


def corpus_root() -> Path | None:
    """The corpus folder named by TETHER_CEDAR_CORPUS, or None when the variable is unset.
    Third-party test data: it is never looked up anywhere else."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def unpack_generated(corpus: Path, dest: Path) -> Path:
    """Unpack the generated corpus into `dest` (never into the read-only corpus folder)."""
    with tarfile.open(corpus / "corpus-tests.tar.gz") as tar:
        tar.extractall(dest, filter="data")
    return dest


def uid(d: dict[str, str]) -> tuple[str, str]:
    return (d["type"], d["id"])


@dataclass
class Tally:
    ran: int = 0
    passed: int = 0
    requests: int = 0
    # case name -> the unsupported feature tether named when it refused the case
    skipped: dict[str, str] = field(default_factory=dict)
    # Cases whose `shouldValidate` predates Cedar 4.13, where "impossible policy"
    # became a validator warning instead of an error (decisions are unaffected).
    validator_version_diffs: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        skipped = len(self.skipped)
        return (
            f"cases: {self.ran + skipped}, ran: {self.ran}, passed: {self.passed}, failed: "
            f"{len(self.failures)}, requests compared: {self.requests}, skipped: {skipped}; "
            f"validation verdicts differing only by Cedar's impossible-policy warning: "
            f"{len(self.validator_version_diffs)}"
        )


def run_case(case_file: Path, root: Path, tally: Tally) -> None:
    case: dict[str, Any] = json.loads(case_file.read_text())
    policies = (root / case["policies"]).read_text()
    schema = (root / case["schema"]).read_text() if case.get("schema") else None
    entities = (root / case["entities"]).read_text()
    name = case_file.stem
    try:
        engine = Engine(policies, schema, entities, validate=False, validate_requests=False)
        # Requests the case marks `validateRequest` go through tether's own request
        # validation: it must accept every request Cedar accepted.
        checked = (
            Engine(policies, schema, entities, validate=False) if schema is not None else engine
        )
    except PolicyError as e:
        if e.feature is not None:
            tally.skipped[name] = e.feature
            return
        tally.failures.append(f"{name}: engine build failed: {e}")
        tally.ran += 1
        return
    except Exception as e:
        tally.failures.append(f"{name}: engine build failed: {type(e).__name__}: {e}")
        tally.ran += 1
        return
    tally.ran += 1
    ok = True
    # Our validator is Cedar's: its verdict must match the case's `shouldValidate`.
    if schema is not None:
        warnings: list[str] = []
        try:
            warnings = Engine(policies, schema, entities, validate=True).warnings()
            validates = True
        except PolicyError:
            validates = False
        impossible = any("unable to find an applicable action" in w for w in warnings)
        if validates and not case["shouldValidate"] and impossible:
            tally.validator_version_diffs.append(name)
        elif validates != case["shouldValidate"]:
            ok = False
            tally.failures.append(f"{name}: validation gave {validates}")
    for i, req in enumerate(case["requests"]):
        tally.requests += 1
        action = uid(req["action"])
        try:
            ctx_json = engine.normalize_context(
                action, json.dumps(req["context"]), validate=bool(req.get("validateRequest"))
            )
            ctx = json.loads(ctx_json)
            eng = checked if req.get("validateRequest") else engine
            d = eng.authorize(
                uid(req["principal"]), action, uid(req["resource"]), ctx, reasons=True
            )
            fast = eng.is_allowed(uid(req["principal"]), action, uid(req["resource"]), ctx)
        except Exception as e:
            ok = False
            tally.failures.append(f"{name} request {i}: {type(e).__name__}: {e}")
            continue
        want_allow = req["decision"] == "allow"
        got = (d.allowed, sorted(d.reasons), sorted(d.errors), fast)
        want = (want_allow, sorted(req["reason"]), sorted(req["errors"]), want_allow)
        if got != want:
            ok = False
            tally.failures.append(f"{name} request {i}: got {got}, want {want}")
    if ok:
        tally.passed += 1
