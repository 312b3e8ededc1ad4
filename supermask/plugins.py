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
        except SystemExit as exc:  # a plugin that exits would end the command having done nothing
            raise SupermaskError(f"plugin {point.name!r} ({point.value}) called sys.exit({exc.code!r}) "
                                 f"while loading") from None
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
            _import_file(path)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(target)
            _check_not_shadowed(target, module)
    except SupermaskError:
        raise
    except SystemExit as exc:  # the command would exit as if it had run
        raise SupermaskError(f"--import {target}: the module called sys.exit({exc.code!r}) while being "
                             f"imported") from None
    except Exception as exc:
        raise SupermaskError(f"--import {target}: {type(exc).__name__}: {exc}") from None
    log.info("imported %s", target)


def _import_file(path: Path) -> None:
    """Run the file ``path`` as a module. Its name is the file's stem unless that is already taken
    (a ``json.py`` must not replace the standard ``json`` for the rest of the process): then a
    private name."""
    name = path.stem
    if name in sys.modules or name in sys.stdlib_module_names:
        previous = getattr(sys.modules.get(name), "__file__", None)
        if previous is not None and Path(previous).resolve() == path.resolve():
            return  # this very file, imported before
        name = f"_imported_{abs(hash(str(path.resolve())))}_{name}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _check_not_shadowed(target: str, module) -> None:
    """``--import json`` with a ``json.py`` here imports the standard module, not the user's file:
    refused, naming the way that works."""
    local = Path(os.getcwd()) / (target.replace(".", os.sep) + ".py")
    found = getattr(module, "__file__", None)
    if local.is_file() and (found is None or Path(found).resolve() != local.resolve()):
        raise SupermaskError(f"--import {target}: that name is taken by an installed or standard module "
                             f"({found or 'built in'}), not ./{local.name}: pass the file's path "
                             f"(--import ./{local.name}) or rename it")
