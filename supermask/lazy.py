"""Packages whose public names are imported on first use (PEP 562), so that importing the
package (the CLI, ``supermask --help``, ``supermask list``) does not import torch."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: ``exports`` maps each public name to
    the submodule (relative, e.g. ``".search"``) that defines it.

    A submodule named like the export it defines (``supermask.search`` defines ``search``) would
    shadow it once imported (the import system sets the package attribute to the submodule); the
    package's module class turns that assignment into the export instead."""
    module = sys.modules[package]
    namespace = module.__dict__

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    shadowed = {name for name, source in exports.items() if source == f".{name}"}

    class _Package(types.ModuleType):
        def __setattr__(self, name: str, value: object) -> None:
            if name in shadowed and isinstance(value, types.ModuleType) and hasattr(value, name):
                value = getattr(value, name)
            super().__setattr__(name, value)

    module.__class__ = _Package
    return __getattr__, __dir__
