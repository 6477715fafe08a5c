"""Policy tests (`tether test`): requests with expected decisions, and coverage.

A suite is a TOML or YAML file:

```toml
policies = ["agents.cedar"]          # paths relative to the suite file
schema = "agents.cedarschema"        # optional
entities = "entities.json"           # optional

[[case]]
name = "orchestrator may search"
principal = 'Agent::"spiffe://example.org/agents/orchestrator"'
action = 'Action::"call_tool"'        # or just "call_tool"
resource = 'Tool::"search"'
context = { }                         # optional
expect = "allow"                      # or "deny"
reasons = ["tools-granted"]           # optional: the policies that must decide it
```

YAML uses the same keys, with `cases:` as a list. Coverage lists the policies that
determined no case's decision (never exercised).
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.cli_load import InputError, load_engine, read_text
from tether.engine import Engine

_CASE_KEYS = {"name", "principal", "action", "resource", "context", "expect", "reasons"}


@dataclass
class Case:
    name: str
    principal: str
    action: str
    resource: str
    context: dict[str, Any]
    expect: bool
    reasons: list[str] | None


@dataclass
class CaseResult:
    case: Case
    allowed: bool | None
    reasons: list[str]
    error: str | None = None

    @property
    def passed(self) -> bool:
        if self.error is not None or self.allowed != self.case.expect:
            return False
        return self.case.reasons is None or sorted(self.case.reasons) == sorted(self.reasons)


@dataclass
class SuiteResult:
    results: list[CaseResult]
    policies: list[str]
    exercised: set[str] = field(default_factory=set)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    @property
    def never_exercised(self) -> list[str]:
        return [p for p in self.policies if p not in self.exercised]


@dataclass
class Suite:
    path: Path
    policies: list[str]
    schema: str | None
    entities: str | None
    state: str | None
    cases: list[Case]

    def engine(self, policies: list[str] | None = None) -> Engine:
        return load_engine(policies or self.policies, self.schema, self.entities, self.state)


def _doc(path: Path) -> dict[str, Any]:
    text = read_text(path, "test suite")
    if path.suffix == ".toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{path}: {e}") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            yaml: Any = importlib.import_module("yaml")  # no stubs needed: used untyped
        except ImportError:
            raise InputError(f"{path}: YAML suites need PyYAML (pip install pyyaml)") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise InputError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    else:
        raise InputError(f"{path}: a test suite is a .toml, .yaml or .yml file")
    if not isinstance(doc, dict):
        raise InputError(f"{path}: a test suite is a table/mapping at the top level")
    return doc


def _uid(value: Any, where: str, key: str, *, action: bool = False) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f'{where}: `{key}` must be an entity uid string like Type::"id"')
    if action and "::" not in value:
        return f'Action::"{value}"'
    return value


def load_suite(path: str | Path) -> Suite:
    p = Path(path)
    doc = _doc(p)
    base = p.parent

    def rel(v: Any, key: str) -> str:
        if not isinstance(v, str):
            raise InputError(f"{p}: `{key}` must be a path string")
        return str(base / v)

    pol = doc.get("policies")
    if isinstance(pol, str):
        pol = [pol]
    if not isinstance(pol, list) or not pol:
        raise InputError(f"{p}: `policies` must list one or more policy files")
    raw = doc.get("case", doc.get("cases"))
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{p}: no test cases (`[[case]]` in TOML, `cases:` in YAML)")
    cases = []
    for i, c in enumerate(raw, start=1):
        where = f"{p}: case {i}"
        if not isinstance(c, dict):
            raise InputError(f"{where}: must be a table/mapping")
        unknown = set(c) - _CASE_KEYS
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name = str(c.get("name", f"case {i}"))
        where = f"{p}: case {i} ({name})"
        expect = c.get("expect")
        if expect not in ("allow", "deny"):
            raise InputError(f'{where}: `expect` must be "allow" or "deny"')
        context = c.get("context", {})
        if not isinstance(context, dict):
            raise InputError(f"{where}: `context` must be a table/mapping")
        reasons = c.get("reasons")
        if reasons is not None and (
            not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons)
        ):
            raise InputError(f"{where}: `reasons` must be a list of policy ids")
        cases.append(
            Case(
                name=name,
                principal=_uid(c.get("principal"), where, "principal"),
                action=_uid(c.get("action"), where, "action", action=True),
                resource=_uid(c.get("resource"), where, "resource"),
                context=context,
                expect=expect == "allow",
                reasons=reasons,
            )
        )
    return Suite(
        path=p,
        policies=[rel(x, "policies") for x in pol],
        schema=rel(doc["schema"], "schema") if "schema" in doc else None,
        entities=rel(doc["entities"], "entities") if "entities" in doc else None,
        state=rel(doc["state"], "state") if "state" in doc else None,
        cases=cases,
    )


def run_suite(suite: Suite, engine: Engine | None = None) -> SuiteResult:
    from tether import TetherError

    engine = engine or suite.engine()
    out = SuiteResult([], engine.policy_ids())
    for case in suite.cases:
        try:
            d = engine.authorize(
                case.principal, case.action, case.resource, case.context, reasons=True
            )
        except TetherError as e:
            out.results.append(CaseResult(case, None, [], str(e)))
            continue
        out.exercised.update(d.reasons)
        err = "; ".join(d.errors) if d.errors and not d.allowed else None
        res = CaseResult(case, d.allowed, list(d.reasons))
        if err and case.expect:
            res.error = err
        out.results.append(res)
    return out
