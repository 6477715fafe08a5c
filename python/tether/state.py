"""The task state file (`state.toml`): what tether tracks per task, as Cedar conditions.

```toml
[labels.restricted]            # taint: set once, never cleared within the task
set_when = 'action == Action::"read" && resource.sensitivity >= 3'
scope = "agent"                # optional: stick to the agent across tasks ("task" default)
ttl = "24h"                    # optional, with scope = "agent": forget after this long
[counters.egress_60s]          # sliding-window count of permitted actions
window = "60s"
count_when = 'action == Action::"egress"'
[budgets.risk]                 # a sum with a limit, reserved atomically on permit
add = "resource.risk"
limit = 100
when = 'action == Action::"call_tool"'   # optional
```

Rules see it as `context.task`: `labels` (set of names), `counters.<name>` (long),
`budgets.<name>.{spent,limit,remaining}`, `depth` and `actors` (the delegation chain),
and what the task declared: `intent`, `id` and `agent` (a caller's context cannot
shadow any of it). Counters and budgets count over the whole delegation tree: what a
child counts or spends, its ancestors count and spend too.
"""

from __future__ import annotations

import json
import re
import tomllib
from os import PathLike
from pathlib import Path
from typing import Any

from tether.errors import TetherError

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")


class StateFileError(TetherError, ValueError):
    """The state file is malformed; the message names the table and key."""


def _window_ms(where: str, value: Any, key: str = "window") -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        ms = float(value) * 1000
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        ms = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise StateFileError(f"{where}.{key}: expected seconds or a duration like '60s'")
    if ms < 1:
        raise StateFileError(f"{where}.{key} must be positive")
    return int(ms)


def _str(where: str, table: dict[str, Any], key: str, required: bool = True) -> str | None:
    v = table.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v.strip():
        raise StateFileError(f"{where}.{key}: expected a Cedar expression string")
    return v


def _tables(doc: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    section = doc.get(kind, {})
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise StateFileError(f"[{kind}] must hold one table per name")
    return section


def state_spec(doc: dict[str, Any]) -> str:
    """Validate a parsed state document and return the engine's JSON spec."""
    unknown = set(doc) - {"labels", "counters", "budgets"}
    if unknown:
        raise StateFileError(f"unknown sections: {', '.join(sorted(unknown))}")
    spec: dict[str, dict[str, Any]] = {"labels": {}, "counters": {}, "budgets": {}}
    for name, t in _tables(doc, "labels").items():
        where = f"labels.{name}"
        unknown_keys = set(t) - {"set_when", "scope", "ttl"}
        if unknown_keys:
            raise StateFileError(f"{where}: unknown keys: {', '.join(sorted(unknown_keys))}")
        label: dict[str, Any] = {"set_when": _str(where, t, "set_when")}
        scope = t.get("scope", "task")
        if scope not in ("task", "agent"):
            raise StateFileError(f'{where}.scope: expected "task" or "agent", got {scope!r}')
        label["scope"] = scope
        if "ttl" in t:
            if scope != "agent":
                raise StateFileError(f'{where}.ttl: only labels with scope = "agent" expire')
            label["ttl_ms"] = _window_ms(where, t["ttl"], "ttl")
        spec["labels"][name] = label
    for name, t in _tables(doc, "counters").items():
        where = f"counters.{name}"
        spec["counters"][name] = {
            "window_ms": _window_ms(where, t.get("window")),
            "count_when": _str(where, t, "count_when"),
        }
    for name, t in _tables(doc, "budgets").items():
        where = f"budgets.{name}"
        limit = t.get("limit")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise StateFileError(f"{where}.limit: expected a non-negative integer")
        entry: dict[str, Any] = {"add": _str(where, t, "add"), "limit": limit}
        when = _str(where, t, "when", required=False)
        if when is not None:
            entry["when"] = when
        spec["budgets"][name] = entry
    return json.dumps(spec)


def load_state(path: str | PathLike[str]) -> str:
    """Read a `state.toml` file into the engine's JSON spec."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise StateFileError(f"{path}: {e}") from e
    return state_spec(doc)
