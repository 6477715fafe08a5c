"""Loading the files a CLI command names, with errors as `file:line:col: message`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether import _core
from tether.engine import Engine
from tether.state import StateFileError, load_state


class InputError(Exception):
    """A file the user named is missing, unreadable or wrong; `str()` is one line
    that starts with the file (and line and column where known)."""


def read_text(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a {what} file") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None


def describe(e: BaseException, policies: list[str], files: dict[str, str]) -> str:
    """One line for a load error: `file:line:col: message (policy id)`. The engine names
    the policy file itself (named sources); schema, entities and state are named here."""
    msg = str(e)
    file = getattr(e, "file", None)
    line = getattr(e, "line", None)
    col = getattr(e, "column", None)
    pid = getattr(e, "policy_id", None)
    if file is None:
        if isinstance(e, _core.SchemaError):
            file = files.get("schema")
        elif isinstance(e, _core.EntityError):
            file = files.get("entities")
        elif isinstance(e, StateFileError) or msg.startswith("state file"):
            # The engine checks state.toml conditions like policies; it names the table.
            file = files.get("state")
        elif len(policies) == 1:
            file = policies[0]
        elif policies:
            file = ", ".join(policies)
    where = file or "tether"
    if line is not None:
        where += f":{line}"
        if col is not None:
            where += f":{col}"
    suffix = f" (policy {pid})" if pid and pid not in msg else ""
    if msg.startswith(f"{where}:"):  # the engine already put the location first
        return f"{msg}{suffix}"
    return f"{where}: {msg}{suffix}"


def load_engine(
    policies: list[str],
    schema: str | None = None,
    entities: str | None = None,
    state: str | None = None,
    *,
    validate_requests: bool = True,
) -> Engine:
    """Build an engine from files; every failure is an `InputError` naming its file."""
    sources = [(p, read_text(p, "policy")) for p in policies]
    files = {k: v for k, v in (("schema", schema), ("entities", entities), ("state", state)) if v}
    schema_text = read_text(schema, "schema") if schema else None
    entities_text = read_text(entities, "entities") if entities else None
    try:
        state_spec = load_state(state) if state else None
    except FileNotFoundError:
        raise InputError(f"{state}: no such state file") from None
    except (StateFileError, ValueError) as e:
        raise InputError(f"{state}: {e}") from None
    try:
        return Engine(
            sources,
            schema_text,
            entities_text,
            state=state_spec,
            validate_requests=validate_requests,
        )
    except _core.TetherError as e:
        raise InputError(describe(e, policies, files)) from None


def parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
