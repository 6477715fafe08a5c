"""Loading the files a CLI command names, with errors as `file:line:col: message`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PolicySources:
    """Several policy files concatenated (as `Engine.from_files` does), with the line
    where each starts, to map an error's line back to its file."""

    paths: list[str]
    starts: list[int]
    text: str

    @classmethod
    def read(cls, paths: list[str]) -> PolicySources:
        texts = [read_text(p, "policy") for p in paths]
        starts, line = [], 1
        for t in texts:
            starts.append(line)
            line += t.count("\n") + 1
        return cls(list(paths), starts, "\n".join(texts))

    def locate(self, line: int) -> tuple[str, int]:
        i = max(k for k, s in enumerate(self.starts) if s <= line)
        return self.paths[i], line - self.starts[i] + 1


def describe(e: BaseException, sources: PolicySources | None, files: dict[str, str]) -> str:
    """One line for a load error: `file:line:col: message [policy id]`."""
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
        elif isinstance(e, StateFileError):
            file = files.get("state")
        elif sources is not None and line is not None:
            file, line = sources.locate(line)
            # The engine's message counts lines in the concatenated text: drop that.
            msg = re.sub(r" at line \d+, column \d+", "", msg)
        elif sources is not None and len(sources.paths) == 1:
            file = sources.paths[0]
        elif sources is not None:
            file = ", ".join(sources.paths)
    where = file or "tether"
    if line is not None:
        where += f":{line}"
        if col is not None:
            where += f":{col}"
    suffix = f" (policy {pid})" if pid and pid not in msg else ""
    return f"{where}: {msg}{suffix}"


def load_engine(
    policies: list[str],
    schema: str | None = None,
    entities: str | None = None,
    state: str | None = None,
) -> Engine:
    """Build an engine from files; every failure is an `InputError` naming its file."""
    sources = PolicySources.read(policies)
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
        return Engine(sources.text, schema_text, entities_text, state=state_spec)
    except _core.TetherError as e:
        raise InputError(describe(e, sources, files)) from None


def parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
