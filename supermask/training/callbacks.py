"""Callbacks: everything the training loop does besides training.

The loop calls, in order: ``on_train_start`` once; ``on_epoch_start`` per epoch; per step ``loss_penalty`` (a term added to
the loss before the backward pass: Gem-Miner's penalty on the scores) and ``after_step`` (after the
optimiser step: IMP re-applies its masks here); per evaluation ``on_eval`` (which may end
training early by setting ``state.stopped``); ``on_final_test`` once after training, when the test
split was left to the end (the default); ``on_train_end`` once. The progress bar is a
callback the CLI installs. A callback with state that shapes the rest of the run returns it
from ``state_dict`` (tensors, numbers, lists, dicts); every checkpoint holds it and a resumed
run hands it back through ``load_state_dict``. An engine that trains several times (IMP's
levels) calls ``on_stage`` with the stage's name before each.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from .state import TrainState


class Callback:
    """What the training loop calls besides training; subclass it and override what you need.

    Every engine takes a list of them (``search(config, callbacks=[...])``, ``run_imp``, ``train``):
    a logger implements ``after_step`` and ``on_eval``; a method's regulariser ``loss_penalty``; a
    callback with state that must survive a crash ``state_dict`` and ``load_state_dict``. ``state``
    is the loop's :class:`~supermask.training.state.TrainState` (``model``, ``optimizer``, ``step``,
    ``epoch``, ``total_steps``, ``steps_per_epoch``, ``resumed``; ``stopped`` ends training early)."""

    def on_stage(self, stage: str) -> None:
        """An engine that trains more than once (IMP's levels) names the next stage before it starts."""

    def on_train_start(self, state: "TrainState") -> None:
        """Once, before the first step (after a resume: with ``state.step`` where it resumes)."""

    def on_epoch_start(self, state: "TrainState") -> None:
        """Before the first step of every epoch (``state.epoch``, counted from 0; a run resumed inside
        an epoch: before its next step)."""

    def after_step(self, state: "TrainState", loss: float, correct: int, count: int) -> None:
        """After every optimiser step: the batch's mean ``loss`` and ``correct`` of ``count`` predictions."""

    def on_eval(self, state: "TrainState", records: list[dict]) -> None:
        """After every evaluation (epoch 0, before training, and each epoch's end): one record per
        split, as ``metrics.jsonl`` holds them (``split``, ``loss``, ``accuracy``, ``density``, ``step``,
        ``epoch``, ``lr``); the test split's record only with ``TrainConfig.test_every_epoch`` (and
        before training). Setting ``state.stopped`` ends training after it."""

    def on_final_test(self, state: "TrainState", records: list[dict]) -> None:
        """After training, when the test split is evaluated at the end only (``test_every_epoch``
        off, the default): one test record per network evaluated (the last, and the best-validation
        one when it is another), each with the ``step`` and ``epoch`` of its evaluation."""

    def on_train_end(self, state: "TrainState") -> None:
        """Once, after the last step and evaluation (also when training stopped early)."""

    def loss_penalty(self, state: "TrainState") -> Optional["Tensor"]:
        """A term added to the training loss of every step (a method's regulariser), or None."""
        return None

    def state_dict(self) -> Optional[dict]:
        """State that shapes the rest of the run (tensors, numbers, lists, dicts), saved in every
        checkpoint; None: none."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Take back what :meth:`state_dict` returned, when a run resumes from a checkpoint."""


def announce_stage(callbacks, stage: str) -> None:
    """Tell ``callbacks`` the name of the stage the next training runs (e.g. ``level 3/10 d=0.5120``)."""
    for callback in callbacks:
        callback.on_stage(stage)


class ProgressBar(Callback):
    """Progress on stderr: on a terminal a tqdm bar over the steps (running loss and accuracy, the
    last val accuracy and loss: a language model is read by its loss); elsewhere (a log file, a pipe) one plain line per evaluation, with no
    carriage returns or cursor escapes. ``plain`` forces one or the other."""

    def __init__(self, description: str = "", every: int = 5, plain: Optional[bool] = None):
        self.description, self.every = description, every
        self.plain = (not sys.stderr.isatty()) if plain is None else plain
        self.stage = ""
        self.bar = None
        self._loss = self._correct = self._count = 0

    def on_stage(self, stage: str) -> None:
        self.stage = stage

    def _label(self) -> str:
        return f"{self.description} {self.stage}".strip()

    def on_train_start(self, state):
        if state.resumed:  # said in a plain line of its own, on a terminal too
            sys.stderr.write(f"{self._label()}: resuming from step {state.step} of {state.total_steps} "
                             f"(epoch {state.epoch}, batch {state.batch_in_epoch})\n".lstrip(": "))
            sys.stderr.flush()
        if self.plain:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.total_steps, initial=state.step, desc=self._label(), unit="step",
                        dynamic_ncols=True, leave=False)

    def after_step(self, state, loss, correct, count):
        self._loss += loss * count
        self._correct += correct
        self._count += count
        if self.bar is None:
            return
        self.bar.update(1)
        if state.step % self.every == 0:
            self.bar.set_postfix(loss=f"{self._loss / self._count:.3f}", acc=f"{self._correct / self._count:.3f}",
                                 refresh=False)

    def on_eval(self, state, records):
        val = next((r for r in records if r["split"] == "val"), None)
        if self.plain:
            train = (f" loss {self._loss / self._count:.4f} acc {self._correct / self._count:.4f}"
                     if self._count else " before training")
            epochs = -(-state.total_steps // state.steps_per_epoch)
            shown = f" val acc {val['accuracy']:.4f} loss {val['loss']:.4f}" if val is not None else ""
            sys.stderr.write(f"{self._label()} epoch {state.epoch}/{epochs} step {state.step}/{state.total_steps}"
                             f"{train}{shown}\n")
            sys.stderr.flush()
        elif val is not None and self.bar is not None:
            self.bar.set_description(f"{self._label()} ep {state.epoch} val acc {val['accuracy']:.3f} "
                                     f"loss {val['loss']:.3f}")
        self._loss = self._correct = self._count = 0

    def on_train_end(self, state):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MaskAfterStep(Callback):
    """Zero the pruned weights of masked layers after every optimiser step (IMP, pruning at init,
    fine-tuned tickets): momentum and weight decay can never revive them."""

    def __init__(self):
        self._apply = None

    def after_step(self, state, loss, correct, count):
        if self._apply is None:
            from ..nn.masked import mask_applier

            self._apply = mask_applier(state.model)
        self._apply()
