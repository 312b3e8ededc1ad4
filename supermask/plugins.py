"""User code the command line can reach: models, data sets and methods registered outside
this package.

Two ways, both run before a command does anything else:

- ``--import MODULE`` (any command that builds models or reads data): ``MODULE`` is a module
  name, found on ``sys.path`` with the current directory first (as ``python -m`` does), or a
  path to a ``.py`` file. Importing it runs its ``register_model`` / ``DATASETS.add`` /
  ``METHODS.add`` calls.
- The entry-point group ``supermask.plugins`` of installed packages: each entry names a module
  (imported) or a function taking no arguments (called), e.g. in a plugin's ``pyproject.toml``::

      [project.entry-points."supermask.plugins"]
      my_nets = "my_package.supermask_models"
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .errors import SupermaskError

ENTRY_POINT_GROUP = "supermask.plugins"
log = logging.getLogger(__name__)
_loaded_entry_points = False


def load_entry_points() -> list[str]:
    """Load every installed ``supermask.plugins`` entry point, once per process; their names."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return []
    _loaded_entry_points = True
    names = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
            if callable(loaded):
                loaded()
        except Exception as exc:  # a broken plugin: one line naming it, not its traceback
            raise SupermaskError(f"plugin {point.name!r} ({point.value}) failed to load: "
                                 f"{type(exc).__name__}: {exc}") from None
        names.append(point.name)
    return names


def import_user_module(target: str) -> None:
    """Import ``target``: a module name (the current directory searched first) or a ``.py`` file."""
    try:
        if target.endswith(".py") or os.sep in target:
            path = Path(target)
            if not path.is_file():
                raise SupermaskError(f"--import {target}: no such file")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            importlib.import_module(target)
    except SupermaskError:
        raise
    except Exception as exc:
        raise SupermaskError(f"--import {target}: {type(exc).__name__}: {exc}") from None
    log.info("imported %s", target)
