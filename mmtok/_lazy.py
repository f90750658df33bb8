"""Lazy package attributes: a package names what it exports and where it lives, and the defining module is
imported only on first access, so `import mmtok` (and its subpackages) stays light."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_attributes(package: str, table: Mapping[str, str], namespace: dict) -> Callable[[str], object]:
    """A module-level `__getattr__` for `package`: `table` maps public name -> defining module; each value is
    cached in `namespace` (the package's globals) after its first import."""

    def __getattr__(name: str):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
