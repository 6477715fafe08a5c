"""Every package's `__all__` lists exactly what it exports, and every listed name exists."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import tether


def modules() -> list[ModuleType]:
    found = [tether]
    for info in pkgutil.walk_packages(tether.__path__, "tether."):
        found.append(importlib.import_module(info.name))
    return found


def public(module: ModuleType) -> bool:
    return not any(part.startswith("_") for part in module.__name__.split("."))


PACKAGES = [m for m in modules() if hasattr(m, "__path__") and public(m)]
WITH_ALL = [m for m in modules() if hasattr(m, "__all__")]


def exported(package: ModuleType) -> set[str]:
    """The tether-defined public names in a package's namespace (what its `__init__` imports or
    defines for users), leaving out submodules and helpers imported from elsewhere."""
    return {
        name
        for name, value in vars(package).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and str(getattr(value, "__module__", "")).split(".")[0] == "tether"
    }


@pytest.mark.parametrize("package", PACKAGES, ids=lambda m: m.__name__)
def test_package_all_is_its_namespace(package: ModuleType) -> None:
    assert hasattr(package, "__all__"), f"{package.__name__} has no __all__"
    listed = set(package.__all__)
    assert len(listed) == len(package.__all__), f"{package.__name__}.__all__ repeats a name"
    # Every class and function it imports from tether is listed; the names it lists exist
    # (test_every_listed_name_exists). The root imports lazily, so its namespace may be partial.
    unlisted = exported(package) - listed
    assert not unlisted, f"{package.__name__} exports {sorted(unlisted)} without listing them"


@pytest.mark.parametrize("module", WITH_ALL, ids=lambda m: m.__name__)
def test_every_listed_name_exists(module: ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module.__name__}.__all__ lists missing names {missing}"


def test_native_errors_are_exported() -> None:
    """Every error class of the native module is importable from `tether`."""
    from tether import _core

    native = {
        name
        for name, value in vars(_core).items()
        if inspect.isclass(value) and issubclass(value, tether.TetherError)
    }
    assert native == {n for n in tether.__all__ if n.endswith("Error")}
