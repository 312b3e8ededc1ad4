"""The one training loop both engines use.

The optimiser is handed exactly the parameters to train (scores for edge-popup,
weights for dense training and IMP). Everything else (progress bar, IMP's masking
after each step) is a :class:`~supermask.training.callbacks.Callback`.

Each epoch ends with an evaluation on the validation and test splits, appended to
``metrics.jsonl``, and a checkpoint written atomically. Before the first step the
untrained model is evaluated and logged as epoch 0. A run with a checkpoint resumes
from it: the data order of each epoch depends only on (seed, epoch), so the resumed
run sees the batches the uninterrupted one would have.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from ..data import Dataset, make_loader
from ..errors import RunError
from ..runs import RunDir
from .callbacks import Callback
from .config import TrainConfig
from ..io import load_checkpoint, save_checkpoint
from .optim import build_optimizer, lr_factor, set_lr

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    epoch: int = 0
    elapsed: float = 0.0  # seconds spent training, over every resume
    history: list[dict] = field(default_factory=list)  # one entry per evaluation: epoch, step, val/test loss+acc


@dataclass
class TrainSummary:
    epochs: int
    steps: int
    best_epoch: int  # the epoch of the best validation accuracy (ties: the earliest)
    best_val_accuracy: float
    test_accuracy: float  # test accuracy at best_epoch: model selection never looks at the test split
    last_val_accuracy: float
    last_test_accuracy: float
    initial_val_accuracy: float
    initial_test_accuracy: float
    min_val_loss_step: int  # the early-stopping iteration (Frankle & Carbin 2019)
    seconds: float
    history: list[dict]

    @classmethod
    def from_history(cls, history: list[dict], elapsed: float) -> "TrainSummary":
        trained = [h for h in history if h["epoch"] > 0] or history
        best = max(trained, key=lambda h: (h["val_accuracy"], -h["epoch"]))
        min_loss = min(trained, key=lambda h: (h["val_loss"], h["epoch"]))
        first, last = history[0], history[-1]
        return cls(
            epochs=last["epoch"], steps=last["step"], best_epoch=best["epoch"],
            best_val_accuracy=best["val_accuracy"], test_accuracy=best["test_accuracy"],
            last_val_accuracy=last["val_accuracy"], last_test_accuracy=last["test_accuracy"],
            initial_val_accuracy=first["val_accuracy"], initial_test_accuracy=first["test_accuracy"],
            min_val_loss_step=min_loss["step"], seconds=elapsed, history=history,
        )


@torch.no_grad()
def evaluate(model: nn.Module, loader) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader`` (eval mode)."""
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for images, labels in loader:
        logits = model(images)
        total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        count += labels.numel()
    model.train(was_training)
    return total_loss / max(1, count), correct / max(1, count)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    model: nn.Module,
    params: Iterable[nn.Parameter],
    data: Dataset,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    run: Optional[RunDir] = None,
    callbacks: Sequence[Callback] = (),
    describe: Optional[Callable[[nn.Module], dict]] = None,
    num_workers: Optional[int] = None,
) -> TrainSummary:
    """Train ``params`` of ``model`` on ``data``; log to and checkpoint in ``run`` if given.

    ``describe(model)`` adds fields (e.g. density) to every metrics record.
    """
    cfg.validate()
    device = torch.device(device)
    model.to(device)
    optimizer = build_optimizer(params, cfg)
    train_loader = make_loader(data.train, data.info, cfg.batch_size, train=True, seed=seed, device=device,
                               num_workers=num_workers)
    eval_loaders = {split: make_loader(getattr(data, split), data.info, max(cfg.batch_size, 256), train=False,
                                       device=device, num_workers=num_workers) for split in ("val", "test")}
    steps_per_epoch = len(train_loader)
    total_steps = cfg.iterations or cfg.epochs * steps_per_epoch
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    state = TrainState(model, optimizer, steps_per_epoch, total_steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def log_eval() -> None:
        extra = describe(model) if describe else {}
        entry = {"epoch": state.epoch, "step": state.step}
        records = []
        for split, loader in eval_loaders.items():
            loss, acc = evaluate(model, loader)
            entry[f"{split}_loss"], entry[f"{split}_accuracy"] = loss, acc
            records.append({"epoch": state.epoch, "step": state.step, "split": split, "loss": loss, "accuracy": acc,
                            "lr": optimizer.param_groups[0]["lr"], "seconds": round(state.elapsed, 3), **extra})
        state.history.append(entry)
        if run is not None:
            for record in records:
                run.append_metrics(record)
        for cb in callbacks:
            cb.on_eval(state, records)
        log.info("epoch %d step %d: val %.4f test %.4f", state.epoch, state.step, entry["val_accuracy"],
                 entry["test_accuracy"])

    if run is not None and run.has_checkpoint():
        ckpt = load_checkpoint(run.checkpoint_path, map_location=device)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            state.step, state.epoch, state.elapsed = ckpt["step"], ckpt["epoch"], ckpt["elapsed"]
            state.history = list(ckpt["history"])
            _set_rng_state(ckpt["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise RunError(f"{run.checkpoint_path}: checkpoint does not fit this run ({exc})") from None
        run.truncate_metrics(state.epoch)
        log.info("resuming %s at epoch %d (step %d)", run.path, state.epoch, state.step)
    else:
        if run is not None:
            run.truncate_metrics(-1)
        set_lr(optimizer, cfg.lr * lr_factor(0, total_steps, steps_per_epoch, cfg))
        log_eval()

    for cb in callbacks:
        cb.on_train_start(state)
    model.train()
    while state.step < total_steps:
        started = time.perf_counter()
        train_loader.set_epoch(state.epoch)
        for images, labels in train_loader:
            set_lr(optimizer, cfg.lr * lr_factor(state.step, total_steps, steps_per_epoch, cfg))
            logits = model(images)
            loss = criterion(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.step += 1
            for cb in callbacks:
                cb.after_step(state, loss.item(), (logits.argmax(1) == labels).sum().item(), labels.numel())
            if state.step >= total_steps:
                break
        state.epoch += 1
        state.elapsed += time.perf_counter() - started
        log_eval()
        model.train()
        if run is not None:
            save_checkpoint(run.checkpoint_path, {
                "format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "step": state.step, "epoch": state.epoch, "elapsed": state.elapsed, "history": state.history,
                "rng": _rng_state(),
            })
    for cb in callbacks:
        cb.on_train_end(state)
    if state.epoch != num_epochs:
        log.debug("trained %d epochs (expected %d)", state.epoch, num_epochs)
    return TrainSummary.from_history(state.history, state.elapsed)
