"""Weights & Biases logging beside ``metrics.jsonl`` (``--wandb PROJECT``; needs the ``wandb`` extra).

One W&B run per run directory (an IMP level is a run of its own, grouped under its IMP run):
its name is the run directory's path below ``--out``, its config the run's ``config.json``
(resolved, hashed fields and all), its files under ``<run>/wandb/``. Logged: ``train/loss`` and
``train/lr`` every step, and per evaluation each split's ``loss`` and ``accuracy`` and
``density``, all against the training step; the test split measured at the end (the default) in
the run's summary (``test/accuracy@<step>``). ``WANDB_MODE=offline`` writes the run locally (what
the tests do; ``wandb sync <run>/wandb/offline-run-*`` uploads it later).

Writing your own logger is the same few lines: subclass :class:`supermask.training.Callback`,
implement ``after_step`` and ``on_eval``, and pass it to any engine (``search(config,
callbacks=[MyLogger()])``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..errors import SupermaskError
from .callbacks import Callback

WANDB_DIR = "wandb"


def _wandb():
    try:
        import wandb
    except ImportError:
        raise SupermaskError("--wandb needs the wandb package: pip install 'supermask[wandb]'") from None
    return wandb


class WandbLogger(Callback):
    """A W&B run for one run directory (see the module docstring)."""

    def __init__(self, run_path: Path, project: str, name: str, group: Optional[str] = None):
        self.path, self.project, self.name, self.group = Path(run_path), project, name, group
        self.run = None
        _wandb()  # fail early, before training, if the package is missing

    def _start(self) -> None:
        if self.run is not None:
            return
        wandb = _wandb()
        config_file = self.path / "config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        self.run = wandb.init(project=self.project, name=self.name, group=self.group, config=config,
                              dir=str(self.path), reinit="create_new")  # wandb writes <dir>/wandb/

    def on_train_start(self, state):
        self._start()

    def after_step(self, state, loss, correct, count):
        if self.run is not None:
            self.run.log({"train/loss": loss, "train/lr": state.optimizer.param_groups[0]["lr"]}, step=state.step)

    def on_eval(self, state, records):
        self._start()  # the epoch-0 evaluation runs before on_train_start
        values = {}
        for record in records:
            for key in ("loss", "accuracy"):
                if isinstance(record.get(key), (int, float)):
                    values[f"{record['split']}/{key}"] = record[key]
            if isinstance(record.get("density"), (int, float)):
                values["density"] = record["density"]
        self.run.log(values, step=state.step)

    def on_final_test(self, state, records):
        """W&B steps only increase: the test accuracies measured at the end (of the last network, and
        of the best-validation one at its earlier step) go into the run's summary, keyed by step."""
        self._start()
        for record in records:
            self.run.summary[f"test/accuracy@{record['step']}"] = record["accuracy"]
            self.run.summary[f"test/loss@{record['step']}"] = record["loss"]

    def on_train_end(self, state):
        if self.run is not None:
            self.run.finish()
            self.run = None
