"""tether: authenticate an agent's workload identity once, authorize every action.

Public API, re-exports only. The native engine is imported lazily so the pure-Python
parts (identity, leases) stay importable in environments that have not built it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether._core import (
        Decision,
        DenialKind,
        Entity,
        EntityError,
        PolicyError,
        RequestError,
        SchemaError,
    )
    from tether.engine import Engine

from tether.errors import TetherError

__all__ = [
    "Decision",
    "DenialKind",
    "Engine",
    "Entity",
    "EntityError",
    "PolicyError",
    "RequestError",
    "SchemaError",
    "TetherError",
]

_CORE_NAMES = {
    "Decision",
    "DenialKind",
    "Entity",
    "EntityError",
    "PolicyError",
    "RequestError",
    "SchemaError",
}


def __getattr__(name: str) -> Any:
    if name in _CORE_NAMES:
        from tether import _core

        return getattr(_core, name)
    if name == "Engine":
        from tether.engine import Engine

        return Engine
    raise AttributeError(f"module 'tether' has no attribute {name!r}")
