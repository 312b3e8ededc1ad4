"""TensorBoard scalars beside ``metrics.jsonl`` (``--tensorboard``; needs the ``tensorboard`` extra).

Written to ``<run>/tensorboard/``: ``train/loss`` and ``train/lr`` every step; per evaluation
``val/loss``, ``val/accuracy``, ``test/loss``, ``test/accuracy``, ``density/overall`` and
``density/<layer>``, and ``mask/flipped``: the fraction of mask bits that changed since the
previous evaluation (a strong ticket's mask moving, or IMP's pruning). A resumed run purges
events past its checkpoint, so the curves never double back.

A run that finished without ``--tensorboard`` gets its event file from ``metrics.jsonl`` when it
is run again with it (:func:`events_from_metrics`): every evaluation's loss, accuracy and
density (the per-step training loss, the learning rate and the mask flips are not in
``metrics.jsonl``, so they are not there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..errors import SupermaskError
from ..nn import density_report, model_masks
from .callbacks import Callback

TENSORBOARD_DIR = "tensorboard"


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SupermaskError("--tensorboard needs the tensorboard package: pip install 'supermask[tensorboard]'") \
            from None
    return SummaryWriter


def events_from_metrics(run_path: Path) -> list[Path]:
    """Write ``<run>/tensorboard/`` from ``metrics.jsonl`` for ``run_path`` and every run inside it
    (IMP's levels) that has metrics and no event file yet; the folders written."""
    import json

    written = []
    for metrics in sorted(Path(run_path).rglob("metrics.jsonl")):
        folder = metrics.parent / TENSORBOARD_DIR
        if folder.exists():
            continue
        writer = _summary_writer()(str(folder))
        for line in metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash: the loop's reader skips it too
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                continue
            for key in ("loss", "accuracy"):
                if isinstance(record.get(key), (int, float)) and isinstance(record.get("split"), str):
                    writer.add_scalar(f"{record['split']}/{key}", record[key], record["step"])
            if isinstance(record.get("density"), (int, float)):
                writer.add_scalar("density/overall", record["density"], record["step"])
        writer.close()
        written.append(folder)
    return written


class TensorBoardLogger(Callback):
    def __init__(self, run_path: Path, every: int = 1):
        self.path = Path(run_path) / TENSORBOARD_DIR
        self.every = every
        self.writer = None
        self.previous: Optional[dict[str, torch.Tensor]] = None
        _summary_writer()  # fail early, before training, if the package is missing

    def on_train_start(self, state):
        if self.writer is None:  # a resumed run: drop events logged after its checkpoint
            self.writer = _summary_writer()(str(self.path), purge_step=state.step or None)

    def after_step(self, state, loss, correct, count):
        if self.writer is not None and state.step % self.every == 0:
            self.writer.add_scalar("train/loss", loss, state.step)
            self.writer.add_scalar("train/lr", state.optimizer.param_groups[0]["lr"], state.step)

    def on_eval(self, state, records):
        if self.writer is None:  # the epoch-0 evaluation runs before on_train_start
            self.writer = _summary_writer()(str(self.path))
        for record in records:
            if "accuracy" in record:
                self.writer.add_scalar(f"{record['split']}/loss", record["loss"], state.step)
                self.writer.add_scalar(f"{record['split']}/accuracy", record["accuracy"], state.step)
        masks = {n: m.to(torch.uint8).cpu() for n, m in model_masks(state.model).items()}
        if masks:
            overall, per_layer = density_report(masks)
            self.writer.add_scalar("density/overall", overall, state.step)
            for name, value in per_layer.items():
                self.writer.add_scalar(f"density/{name}", value, state.step)
            if self.previous is not None and self.previous.keys() == masks.keys():
                flipped = sum(int((masks[n] != self.previous[n]).sum()) for n in masks)
                self.writer.add_scalar("mask/flipped", flipped / sum(m.numel() for m in masks.values()), state.step)
            self.previous = masks
        self.writer.flush()

    def on_final_test(self, state, records):
        if self.writer is None:  # a resumed run whose training had ended
            self.writer = _summary_writer()(str(self.path))
        for record in records:  # at the steps of the networks evaluated (the best one's is earlier)
            self.writer.add_scalar("test/loss", record["loss"], record["step"])
            self.writer.add_scalar("test/accuracy", record["accuracy"], record["step"])
        self.writer.flush()

    def on_train_end(self, state):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def state_dict(self) -> dict:
        return {"previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.previous = state.get("previous")
