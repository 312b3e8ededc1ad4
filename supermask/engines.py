"""The engines: one registry entry per kind of run, and everything that dispatches on one.

An :class:`Engine` supplies its config type, how a config of it runs (a composition of run
stages, :mod:`supermask.stage`), a short label for progress and summaries, and how to rebuild
the network a finished run directory reports. The command line's run commands, ``export``,
``train --ticket`` and ``compare`` find the engine here, by the config's type or by the
``engine`` field of a run's ``result.json``, and never branch on an engine's name.

The built-in engines register themselves when their module is imported; :func:`engine` imports
it on first use (``supermask_imp`` only when an IMP or pruning run is asked for), so this module
and the command line import no torch until a command runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import RunError
from .registry import Registry
from .resolved import resolve


def _same_state(run_dir: Path, state: dict, masks: dict, meta: dict) -> dict:
    return state


def finder_parts(result: dict) -> tuple[str, str]:
    """(family, control) of a ticket finder's result, as ``compare`` labels it: the method, its mask
    structure (if not unstructured), its init and its scope if global (``snip nm:2:4 kaiming-normal``);
    no control."""
    from .structure import Structure

    structure = Structure.parse(result.get("structure")).label()
    label = f"{result.get('method', result.get('engine'))}{structure} {result.get('init', '')}".strip()
    return label + (" global" if result.get("scope") == "global" else ""), ""


@dataclass(frozen=True)
class Engine:
    name: str  # the run directory's top folder and result.json's "engine"
    config_type: type
    run: Callable[..., Any]  # run(resolved config, callbacks) -> ExperimentResult | IMPResult
    label: Callable[[Any], str]  # "conv6 edge-popup signed-constant d=0.5 s=0"
    rebuild: Callable[..., Any]  # rebuild(run_dir) -> the network the finished run reports, in eval mode
    kind: str  # "strong": the weights are the seed's, untrained; "weak": trained; "analysis": combines runs
    # The state a run's exports carry: its ticket's state with every masked weight replaced by what
    # the layer computes with (biprop's sign(w) * alpha); most engines compute with the stored weights.
    effective_state: Callable[[Path, dict, dict, dict], dict] = field(default=_same_state)
    # read_config(run_dir) -> the finished run's resolved config (what train --ticket fine-tunes from)
    read_config: Optional[Callable[[Path], Any]] = None
    # How compare reads the engine's results: (family, control) of a result's label; whether a
    # result's accuracy before training is a control (a strong ticket's random starting mask);
    # whether its early-stopping iteration is reported (IMP's, as Frankle & Carbin plot it).
    result_parts: Callable[[dict], tuple[str, str]] = field(default=finder_parts)
    initial_is_control: bool = False
    early_stopping: bool = False
    in_comparisons: bool = True  # False: an analysis, whose stages compare leaves out of its tables
    # An analysis's own report: report(finished run roots, out folder) -> (Markdown, files written)
    report: Optional[Callable[[list, Path], tuple[str, list]]] = None
    # check(resolved config, InputSpec): what the run refuses about its network before it writes
    # anything (the architecture takes the data and the structure), without training: a dry run's
    check: Optional[Callable[[Any, Any], None]] = None

    def resolve(self, config):
        """The resolved, frozen config (:func:`supermask.resolve`); refuses another engine's config."""
        if not isinstance(config, self.config_type):
            raise TypeError(f"the {self.name} engine runs {self.config_type.__name__}, not {type(config).__name__}")
        return resolve(config)


ENGINES: Registry[Engine] = Registry("engine")

#: Where each built-in engine registers itself.
BUILTIN = {"search": "supermask.search", "train": "supermask.dense", "imp": "supermask_imp.engine",
           "prune": "supermask_imp.pai", "stability": "supermask_imp.stability",
           "transfer": "supermask_imp.transfer"}


def engine(name: str) -> Engine:
    """The engine called ``name`` (a built-in one is imported on first use)."""
    if name not in ENGINES and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    return ENGINES.get(name)


def engine_for(config) -> Engine:
    """The engine that runs ``config`` (by its class's ``ENGINE``)."""
    return engine(type(config).ENGINE)


def engine_of_run(run_dir: Path, result: Optional[dict] = None) -> Engine:
    """The engine that wrote the finished run ``run_dir`` (its ``result.json``'s ``engine``)."""
    from .runs import RunDir

    result = RunDir(Path(run_dir)).read_result() if result is None else result
    name = result.get("engine") if isinstance(result, dict) else None
    if not isinstance(name, str) or (name not in ENGINES and name not in BUILTIN):
        raise RunError(f"{run_dir}: result.json names no engine this supermask knows ({name!r})")
    return engine(name)


def run(config, callbacks=()):
    """Resolve ``config`` (once) and run it with its engine."""
    found = engine_for(config)
    return found.run(found.resolve(config), callbacks)
