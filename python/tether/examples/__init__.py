"""The example world shipped with tether (the one `tether demo` runs): agents' policies, their
schema, entities and a task state file.

`tether.examples.path("agents.cedar")` returns the installed file's path, so scripts and the
README's examples run from any folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["FILES", "path"]

FILES = ("agents.cedar", "agents.cedarschema", "entities.json", "state.toml")


def path(name: str) -> Path:
    """The installed example file `name`, one of `FILES`."""
    if name not in FILES:
        raise ValueError(f"no example file {name!r}; the examples are {', '.join(FILES)}")
    return Path(str(resources.files(__name__) / name))
