"""The one training loop both engines use.

The optimiser is handed exactly the parameters to train (scores for edge-popup,
weights for dense training and IMP). Everything else (progress bar, IMP's masking
after each step) is a :class:`~supermask.training.callbacks.Callback`.

Each epoch ends with an evaluation on the validation split, appended to ``metrics.jsonl``, and a
checkpoint written atomically (also every ``checkpoint_every`` steps if given). Before the first
step the untrained model is evaluated on both splits and logged as epoch 0. **The test split** is
evaluated once more at the end, for the last network and the best-validation one (the two whose
test accuracy a result reports; model selection never looks at the test split, so this changes no
result and saves a test pass an epoch);
``TrainConfig.test_every_epoch`` evaluates it after every epoch instead (test curves).

**Resume is exact.** A checkpoint holds the model, the optimiser (and fp16 grad
scaler), the step, the position in the epoch and every RNG state (torch, CUDA, numpy,
Python). The data order and augmentation of an epoch depend only on (seed, epoch), and
a resumed epoch skips the batches already trained on, so a run killed at any point and
resumed from its checkpoint ends with the masks and metrics of the uninterrupted run.

**The selected network.** ``cfg.selection`` says which evaluation a run reports: ``best-val``
(the best validation accuracy among the trailing evaluations at the final density; ties: the
earliest) or ``last``. ``train`` returns with the model holding that evaluation's state (masks,
weights, BatchNorm statistics), so the ticket an engine saves is the network whose accuracy it
reports. With a run directory the selected state is kept in ``selected-<step>.safetensors``
(written before the checkpoint that follows its evaluation), so a resumed run has it too.

**Numerical faults.** A NaN or infinite loss stops the run before its optimiser step, and a
non-finite trained tensor (scores or weights) is caught before every evaluation and every
checkpoint, with :class:`~supermask.errors.TrainingDiverged`, naming the step and the last good
checkpoint (which is never a damaged state); the run directory's status becomes ``failed``.

**Execution options** never change what is computed on the CPU: ``precision`` (bf16 or
fp16 autocast, with a grad scaler for fp16), ``channels_last`` and ``cudnn.benchmark``
apply on CUDA only; ``compile`` wraps the training forward in ``torch.compile``. Under
``torchrun`` the model is wrapped in DDP (see :mod:`.distributed`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..data import Dataset, make_loader
from ..errors import RunError, TrainingDiverged
from ..runs import RunDir
from . import distributed
from .callbacks import Callback
from .config import TrainConfig
from .optim import build_optimizer, lr_factor, set_lr
from .state import TrainState
from ..resolved import resolve

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}
#: The keys of a history entry that are measurements of the splits (the rest describe the network).
_EVALUATION_KEYS = frozenset({"val_loss", "val_accuracy", "test_loss", "test_accuracy", "initial"})


def is_initial(entry: dict) -> bool:
    """The evaluation before the first step of a run (histories written before the flag existed:
    epoch 0)."""
    return entry.get("initial", entry["epoch"] == 0)


def final_density_evaluations(history: list[dict]) -> list[dict]:
    """The trained evaluations (epoch > 0) at the final density, the trailing run of them: a method
    whose density moves during training (Gem-Miner's freezing) is judged by the ticket it ends with."""
    final = history[-1].get("density")
    trailing = []
    for h in reversed(history):
        if is_initial(h) or h.get("density") != final:
            break
        trailing.append(h)
    return trailing[::-1] or history[-1:]


def best_evaluation(history: list[dict], by_loss: bool = False) -> dict:
    """The best validation accuracy among :func:`final_density_evaluations` (ties: the earliest);
    ``by_loss`` (language models): the lowest validation loss."""
    if by_loss:
        return min(final_density_evaluations(history), key=lambda h: (h["val_loss"], h["epoch"]))
    return max(final_density_evaluations(history), key=lambda h: (h["val_accuracy"], -h["epoch"]))


def selected_evaluation(history: list[dict], selection: str, by_loss: bool = False) -> dict:
    """The evaluation whose network a run reports and keeps (see the module docstring)."""
    return history[-1] if selection == "last" else best_evaluation(history, by_loss)


@dataclass
class TrainSummary:
    epochs: int
    steps: int
    selection: str  # TrainConfig.selection: which evaluation is the reported network
    selected_epoch: int
    selected_step: int
    val_accuracy: float  # of the selected network
    test_accuracy: float  # of the selected network: model selection never looks at the test split
    best_epoch: int  # the epoch of the best validation accuracy (ties: the earliest) at the final density
    best_val_accuracy: float
    best_test_accuracy: float  # test accuracy at best_epoch
    last_val_accuracy: float
    last_test_accuracy: float
    initial_val_accuracy: float
    initial_test_accuracy: float
    min_val_loss_step: int  # the early-stopping iteration (Frankle & Carbin 2019)
    seconds: float
    history: list[dict]
    start_step: int = 0  # the step training started from (late rewinding: the rewind step)
    val_loss: float = float("nan")  # of the selected network (per character for a language model)
    test_loss: float = float("nan")
    by_loss: bool = False  # "best" meant the lowest validation loss (language models)

    @classmethod
    def from_history(cls, history: list[dict], elapsed: float, selection: str = "best-val",
                     by_loss: bool = False) -> "TrainSummary":
        best = best_evaluation(history, by_loss)
        chosen = selected_evaluation(history, selection, by_loss)
        min_loss = min(final_density_evaluations(history), key=lambda h: (h["val_loss"], h["epoch"]))
        first, last = history[0], history[-1]
        return cls(
            epochs=last["epoch"], steps=last["step"], selection=selection, selected_epoch=chosen["epoch"],
            selected_step=chosen["step"], val_accuracy=chosen["val_accuracy"], test_accuracy=chosen["test_accuracy"],
            best_epoch=best["epoch"], best_val_accuracy=best["val_accuracy"], best_test_accuracy=best["test_accuracy"],
            last_val_accuracy=last["val_accuracy"], last_test_accuracy=last["test_accuracy"],
            initial_val_accuracy=first["val_accuracy"], initial_test_accuracy=first["test_accuracy"],
            min_val_loss_step=min_loss["step"], seconds=elapsed, history=history, start_step=first["step"],
            val_loss=chosen["val_loss"], test_loss=chosen["test_loss"], by_loss=by_loss,
        )


class _SelectedNetwork:
    """The state of the best-validation evaluation (:func:`best_evaluation`), kept as training goes
    (in memory, and in the run directory for resume) when the run reports it (selection ``best-val``)
    or evaluates its test split at the end (``test_every_epoch`` off: the best network's test
    accuracy is then measured on this state)."""

    def __init__(self, model: nn.Module, selection: str, run: Optional[RunDir], writer: bool, by_loss: bool,
                 keeps_best: bool):
        self.model, self.selection, self.run, self.writer, self.by_loss = model, selection, run, writer, by_loss
        self.keeps_best = keeps_best
        self.step: Optional[int] = None
        self.state: Optional[dict] = None

    def after_eval(self, history: list[dict]) -> None:
        if not self.keeps_best:
            return
        chosen = best_evaluation(history, self.by_loss)
        if chosen["step"] == self.step:
            return
        if chosen is not history[-1]:
            raise RunError(f"internal: the selected evaluation (step {chosen['step']}) was not kept")
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self.step = chosen["step"]
        if self.run is not None and self.writer and not is_initial(chosen):
            self.run.save_selected(self.state, self.step)

    def resumed(self, history: list[dict]) -> None:
        if not self.keeps_best:
            return
        chosen = best_evaluation(history, self.by_loss)
        if not is_initial(chosen) and self.run is not None:
            self.state, self.step = self.run.load_selected(chosen["step"]), chosen["step"]
        self.discard_others()

    def discard_others(self) -> None:
        if self.run is not None and self.writer:
            self.run.discard_selected(keep=self.step)

    def best_state(self, entry: dict) -> dict:
        """The kept state of ``entry``, the best-validation evaluation."""
        if self.state is None or self.step != entry["step"]:
            raise RunError(f"internal: the best network (step {entry['step']}) was not kept")
        return self.state

    def restore(self, history: list[dict]) -> None:
        """Put the selected network into the model (a no-op when it is the last one)."""
        if self.selection == "last" or self.step == history[-1]["step"]:
            return
        self.model.load_state_dict(self.best_state(best_evaluation(history, self.by_loss)))


def eval_batch_size(cfg: TrainConfig) -> int:
    """The batch the validation and test splits are evaluated in."""
    return max(cfg.batch_size, 256)


def flat(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, targets) as cross-entropy takes them: one row per prediction. A classifier's
    ``(batch, classes)`` stays; a language model's ``(batch, context, vocabulary)`` becomes one
    row per character, so its loss is in nats per character and its accuracy is next-character."""
    return logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)


@torch.no_grad()
def evaluate(model: nn.Module, loader) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader`` (eval mode): per example, or per
    character for a language model."""
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for images, labels in loader:
        logits, labels = flat(model(images), labels)
        total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        count += labels.numel()
    model.train(was_training)
    return total_loss / max(1, count), correct / max(1, count)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _numpy_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
            "cached": cached}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Execution:
    """How the training step runs on ``device``: autocast, grad scaler, memory format, compile."""

    def __init__(self, precision: str, device: torch.device, channels_last: bool, compile: bool):
        cuda = device.type == "cuda"
        if precision != "32" and not cuda:
            log.warning("--precision %s applies on CUDA only; training in float32 on %s", precision, device)
        self.dtype = AUTOCAST_DTYPES.get(precision) if cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and precision == "16")
        self.channels_last = channels_last and cuda
        self.compile = compile
        self.device = device
        if cuda:
            torch.backends.cudnn.benchmark = True

    def prepare(self, model: nn.Module) -> nn.Module:
        """The module the training step calls (the model itself keeps the state dict's names)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        step_model = distributed.wrap(model, self.device)
        return torch.compile(step_model) if self.compile else step_model

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


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
    checkpoint_every: Optional[int] = None,
    channels_last: bool = False,
    compile: bool = False,
    start_step: int = 0,
) -> TrainSummary:
    """Train ``params`` of ``model`` on ``data``; log to and checkpoint in ``run`` if given.

    ``describe(model)`` adds fields (e.g. density) to every metrics record. ``start_step`` k
    starts a fresh run at step k of the schedule (open_lth's ``start_step``: the data order and
    learning rate of step k, a fresh optimiser) and trains the remaining steps; late rewinding
    uses it. Under ``torchrun`` every rank calls this; only rank 0 writes to ``run``.
    """
    cfg = resolve(cfg)
    device = torch.device(device)
    writer = distributed.is_main()
    model.to(device)
    optimizer = build_optimizer(params, cfg)
    execution = _Execution(cfg.precision, device, channels_last, compile)
    step_model = execution.prepare(model)
    world = distributed.world_size()
    train_loader = make_loader(data.train, data.info, cfg.batch_size, train=True, seed=seed, device=device,
                               num_workers=num_workers, rank=distributed.rank(), world_size=world)
    eval_loaders = {split: make_loader(getattr(data, split), data.info, eval_batch_size(cfg), train=False,
                                       device=device, num_workers=num_workers) for split in ("val", "test")}
    steps_per_epoch = len(train_loader)
    total_steps = cfg.planned_steps(steps_per_epoch)
    if not 0 <= start_step < total_steps:
        raise RunError(f"start step {start_step} is outside the training length ({total_steps} steps)")
    state = TrainState(model, optimizer, steps_per_epoch, total_steps)
    by_loss = getattr(data.info, "task", None) == "language-model"  # "best" is the lowest validation loss
    selected = _SelectedNetwork(model, cfg.selection, run, writer, by_loss,
                                keeps_best=cfg.selection != "last" or not cfg.test_every_epoch)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def loss_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        per_example = labels[0].numel() if labels.dim() > 1 else 1  # a language model: characters a window
        logits, labels = flat(logits, labels)
        if world == 1:
            return criterion(logits, labels)
        # DDP averages gradients over ranks: scale each shard's sum so the average is the global batch's mean.
        total = nn.functional.cross_entropy(logits, labels, reduction="sum", label_smoothing=cfg.label_smoothing)
        return total * (world / (train_loader.global_batch_size(state.batch_in_epoch) * per_example))

    trained = [p for group in optimizer.param_groups for p in group["params"]]

    checked_at = [-1]  # the step last checked: an epoch's evaluation and its checkpoint share one check

    def check_finite() -> None:
        """Any non-finite trained tensor (scores or weights) fails the run: a finite loss can hide
        it (an all-zero network from NaN scores computes a finite loss)."""
        if checked_at[0] == state.step:
            return
        checked_at[0] = state.step
        bad = [p for p in trained if not bool(torch.isfinite(p.detach()).all())]
        if bad:
            _diverged(run, state, None, what=f"{len(bad)} trained tensor(s) became non-finite")

    def log_eval(initial: bool = False) -> None:
        check_finite()
        extra = describe(model) if describe else {}
        entry = {"epoch": state.epoch, "step": state.step, **extra, **({"initial": True} if initial else {})}
        records = []
        for split, loader in eval_loaders.items():
            if split == "test" and not (initial or cfg.test_every_epoch):
                continue  # left to final_test
            loss, acc = evaluate(model, loader)
            entry[f"{split}_loss"], entry[f"{split}_accuracy"] = loss, acc
            records.append({"epoch": state.epoch, "step": state.step, "split": split, "loss": loss, "accuracy": acc,
                            "lr": optimizer.param_groups[0]["lr"], "seconds": round(state.elapsed, 3), **extra})
        state.history.append(entry)
        selected.after_eval(state.history)
        if run is not None and writer:
            for record in records:
                run.append_metrics(record)
        for cb in callbacks:
            cb.on_eval(state, records)
        log.info("epoch %d step %d: val %.4f%s", state.epoch, state.step, entry["val_accuracy"],
                 f" test {entry['test_accuracy']:.4f}" if "test_accuracy" in entry else "")

    def final_test() -> None:
        """The test split of the last and the best-validation networks, when it was not evaluated
        every epoch: the accuracies a result reports (the selected network is one of the two)."""
        last, best = state.history[-1], best_evaluation(state.history, by_loss)
        pending = [entry for entry in ([last] if best is last else [last, best]) if "test_accuracy" not in entry]
        records = []
        for entry in pending:
            current = None
            if entry is not last:  # the model holds the last network: evaluate the kept best one
                current = {k: v.detach().clone() for k, v in model.state_dict().items()}
                model.load_state_dict(selected.best_state(entry))
            loss, acc = evaluate(model, eval_loaders["test"])
            if current is not None:
                model.load_state_dict(current)
            entry["test_loss"], entry["test_accuracy"] = loss, acc
            measured = {k: v for k, v in entry.items() if k not in _EVALUATION_KEYS}
            records.append({**measured, "split": "test", "loss": loss, "accuracy": acc})
        if not records:
            return
        if run is not None and writer:
            for record in records:
                run.append_metrics(record)
        for cb in callbacks:
            cb.on_final_test(state, records)
        log.info("test: %s", "; ".join(f"step {r['step']} {r['accuracy']:.4f}" for r in records))
        checkpoint()  # the history with the test accuracies: a resume does not measure them again

    def checkpoint() -> None:
        if run is None or not writer:
            return
        check_finite()  # never keep a damaged state as the last good checkpoint
        run.save_checkpoint({
            "format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": execution.scaler.state_dict(), "step": state.step, "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch, "elapsed": state.elapsed, "history": state.history,
            "rng": _rng_state(), "stopped": state.stopped, "callbacks": _callback_states(callbacks),
        })
        selected.discard_others()

    if run is not None and run.has_checkpoint():
        ckpt, path = run.load_checkpoint(map_location=device)
        if ckpt.get("final") and ckpt.get("step", 0) < total_steps:
            raise RunError(f"{path}: the final checkpoint of a finished run (step {ckpt.get('step')}, without its "
                           f"optimiser state) cannot continue training to step {total_steps}; delete {run.path} "
                           f"to rerun it")
        try:
            model.load_state_dict(ckpt["model"])
            if not ckpt.get("final"):
                optimizer.load_state_dict(ckpt["optimizer"])
                _set_rng_state(ckpt["rng"])
            if ckpt.get("scaler"):
                execution.scaler.load_state_dict(ckpt["scaler"])
            state.step, state.epoch, state.elapsed = ckpt["step"], ckpt["epoch"], ckpt["elapsed"]
            state.batch_in_epoch = ckpt.get("batch_in_epoch", 0)
            state.history = list(ckpt["history"])
            state.stopped = ckpt.get("stopped")
            for name, cb_state in (ckpt.get("callbacks") or {}).items():
                for cb in callbacks:
                    if _callback_key(cb) == name:
                        cb.load_state_dict(cb_state)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            detail = " ".join(str(exc).split())[:300]  # load_state_dict's report spans lines
            raise RunError(f"{path}: checkpoint does not fit this run ({detail})") from None
        selected.resumed(state.history)
        state.resumed = True
        if writer:
            run.truncate_metrics(state.step, tested={h["step"] for h in state.history if "test_accuracy" in h})
        log.info("resuming %s at step %d (epoch %d, batch %d)", run.path, state.step, state.epoch,
                 state.batch_in_epoch)
    else:
        if run is not None and writer:
            run.truncate_metrics(-1)
        state.step = start_step
        state.epoch, state.batch_in_epoch = divmod(start_step, steps_per_epoch)
        set_lr(optimizer, cfg.lr * lr_factor(state.step, total_steps, steps_per_epoch, cfg))
        log_eval(initial=True)

    for cb in callbacks:
        cb.on_train_start(state)
    penalised = [cb for cb in callbacks if type(cb).loss_penalty is not Callback.loss_penalty]
    model.train()
    while state.step < total_steps and not state.stopped:
        started = time.perf_counter()
        for cb in callbacks:
            cb.on_epoch_start(state)
        train_loader.set_epoch(state.epoch, state.batch_in_epoch)
        for images, labels in train_loader:
            set_lr(optimizer, cfg.lr * lr_factor(state.step, total_steps, steps_per_epoch, cfg))
            with execution.autocast():
                logits = step_model(execution.inputs(images))
                loss = loss_of(logits, labels)
                for cb in penalised:
                    term = cb.loss_penalty(state)
                    if term is not None:
                        loss = loss + term
            loss_value = loss.item()  # the one host sync of the loss: the finiteness check and the callbacks
            if not distributed.all_finite(loss_value):
                _diverged(run, state, loss_value)
            optimizer.zero_grad(set_to_none=True)
            execution.scaler.scale(loss).backward()
            execution.scaler.step(optimizer)
            execution.scaler.update()
            state.step += 1
            state.batch_in_epoch += 1
            if callbacks:
                predicted, targets = flat(logits.detach(), labels)
                correct = (predicted.argmax(1) == targets).sum().item()
                for cb in callbacks:
                    cb.after_step(state, loss_value, correct, labels.numel())
            if state.step >= total_steps or state.batch_in_epoch == steps_per_epoch:
                break
            if checkpoint_every and state.step % checkpoint_every == 0:
                state.elapsed += time.perf_counter() - started
                started = time.perf_counter()
                checkpoint()
        state.epoch += 1
        state.batch_in_epoch = 0
        state.elapsed += time.perf_counter() - started
        log_eval()
        model.train()
        checkpoint()
    final_test()
    for cb in callbacks:
        cb.on_train_end(state)
    selected.restore(state.history)
    return TrainSummary.from_history(state.history, state.elapsed, cfg.selection, by_loss)


def _callback_key(cb: Callback) -> str:
    return type(cb).__name__


def _callback_states(callbacks: Sequence[Callback]) -> dict:
    return {_callback_key(cb): s for cb in callbacks if (s := cb.state_dict()) is not None}


def _diverged(run: Optional[RunDir], state: TrainState, loss: Optional[float], what: str = "") -> None:
    where = run.last_checkpoint() if run is not None else None
    if loss is not None:
        what, step = f"the loss became {loss}", state.step + 1
    else:
        step = state.step
    message = (f"{what} at step {step} (epoch {state.epoch + (loss is not None)}); "
               f"last good checkpoint: {where or 'none'}; lower the learning rate or check the data")
    raise TrainingDiverged(message, reason="non-finite loss" if loss is not None else "non-finite parameters",
                           step=step, checkpoint=str(where or ""))  # the run stage records it in status.json
