"""The run stage: one training with one run directory, start to finish, for every kind of run.

A :class:`Stage` says what to train (a function building the model with its starting weights
and mask in place), on what data, into which directory, and what the run records; :func:`run_stage`
does the rest, the same way for every engine:

1. a finished directory is skipped (its config checked against this one);
2. the model is built (before anything is written: a model that cannot be built writes nothing);
3. ``config.json`` is written or checked, the lock taken (unless a composite run holds it),
   ``status.json`` kept (running, then finished or failed);
4. the one training loop runs, resuming exactly from a checkpoint;
5. the selected network's ticket (``ticket/``) and the stage's extra files are written, then
   ``result.json`` last; the selected snapshots are discarded; every rank lines up.

A search, a dense run or a pruning at initialisation is one stage (:func:`run_single`); an IMP
run is a :func:`composite` of one stage per level, and so are its controls and the channel
early-bird ticket. Nothing else in the package writes ``status.json``, ``result.json`` or
``ticket/``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from .configs import ExperimentConfig, identified, load_data
from .resolved import resolve
from .errors import SupermaskError
from .io import save_state
from .nn import density_report, model_masks
from .runs import RESULT_KEYS, RunDir, config_dict, config_hash
from .ticket_files import library_versions, regenerated_keys, save_ticket, weights_checksum
from .training import Callback, distributed, eval_batch_size, resolve_device, train
from .training.callbacks import announce_stage

log = logging.getLogger(__name__)


@dataclass
class ExperimentResult:
    run_dir: Path
    result: dict
    skipped: bool = False  # the run had finished before: nothing was trained


@dataclass
class Stage:
    """One training with one run directory (see the module docstring)."""

    run: RunDir
    record: dict  # what config.json holds (an IMP level: the run's config and its level)
    build: Callable[[], nn.Module]  # the model to train, starting weights and mask in place
    result_fields: dict  # the engine's fields of result.json (method, init, scope, ...)
    ticket_fields: Optional[dict] = None  # the engine's fields of ticket.json (kind, what rebuilds it)
    callbacks: Sequence[Callback] = ()
    start_step: int = 0  # a rewound level trains from step k
    lock: bool = True  # False: a composite run holds the lock of the folder this stage is in
    label: Optional[object] = None  # str() of it: the stage's name for the progress display (IMP: "level 2/5 d=0.6400")
    masks: Callable[[nn.Module], dict] = model_masks  # the masks the result and ticket record
    keep_start: Optional[str] = None  # a file name in ticket/ for the weights the stage started from
    finish: Optional[Callable[[dict, object], None]] = None  # adds to the result (row, summary) before it is written
    seed: Optional[int] = None  # the data order's and augmentation's seed (default: the config's)
    train: Optional[object] = None  # the TrainConfig it trains with (default: the config's)


@dataclass
class StageResult:
    run_dir: Path
    result: dict
    skipped: bool = False
    model: Optional[nn.Module] = None  # the trained (selected) network; None when skipped


def run_stage(config: ExperimentConfig, data, stage: Stage, device=None,
              callbacks: Sequence[Callback] = ()) -> StageResult:
    """Run (or resume, or skip if finished) ``stage`` of a run of ``config`` on ``data``."""
    run = stage.run
    if run.is_finished():
        run.check_config(stage.record)
        log.info("finished run found, skipping: %s", run.path)
        backfill_tracking(config, run)
        return StageResult(run.path, run.read_result(RESULT_KEYS), skipped=True)
    device = resolve_device(config.device) if device is None else device
    writer = distributed.is_main()
    model = stage.build()
    with writing(run, stage.record, lock=stage.lock):
        start = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()} if stage.keep_start else None
        if stage.label is not None:
            announce_stage(callbacks, str(stage.label))
        started = time.time()
        summary = train(model, [p for p in model.parameters() if p.requires_grad], data,
                        config.train if stage.train is None else stage.train,
                        seed=config.seed if stage.seed is None else stage.seed, device=device, run=run,
                        callbacks=[*stage.callbacks, *callbacks, *tracking(config, run)],
                        describe=describe_density, start_step=stage.start_step, **config.execution())
        masks = stage.masks(model)  # the selected network's (train() leaves it in the model)
        row = result_record(config, summary, masks, started, device, stage.result_fields)
        if getattr(config, "structure", None) == "head":
            row.update(heads_record(model, masks))
        if stage.finish is not None:
            stage.finish(row, summary)
        if writer:
            meta = ticket_record(config, data.info, summary, model, masks, stage.ticket_fields)
            save_ticket(run.ticket_dir, masks, meta, model.state_dict())
            if start is not None:
                save_state(run.ticket_dir / stage.keep_start, start)
            run.write_result(row)
            run.discard_selected(keep=None)
            if not config.keep_checkpoints:  # finished: what only a resume of training reads goes
                run.keep_final_checkpoint()
        distributed.barrier()  # the next stage may read this one's files
    return StageResult(run.path, row, model=model)


def open_run(config: ExperimentConfig):
    """What every run starts with: ``config`` resolved (once) and naming its data's fingerprint, the
    data, the input it gives the model and the run directory: ``(config, data, spec, run)``."""
    config = resolve(config)
    data, spec = load_data(config)
    config = identified(config, data)
    planned_steps(config, data)  # refuses a plan no run can finish, before any directory is made
    return config, data, spec, config.run_dir()


def finished_rows(run: RunDir, config: ExperimentConfig, key: str) -> Optional[list]:
    """A finished composite run's rows (its config checked against ``config``), or None if it has not
    finished."""
    if not run.is_finished():
        return None
    run.check_config(config_dict(config))
    log.info("finished run found, skipping: %s", run.path)
    backfill_tracking(config, run)
    return run.read_result((key,))[key]


def run_single(config: ExperimentConfig, build: Callable, *, callbacks: Sequence[Callback] = (),
               ticket_fields: Optional[Callable] = None, result_fields: Optional[dict] = None) -> ExperimentResult:
    """A run of one stage (a search, a dense run, a pruning at initialisation): ``build(spec, data)``
    returns the model (built with ``config.seed`` as the global seed, and probed with one input of
    the data's shape); ``ticket_fields(spec)`` the engine's fields of ``ticket.json``."""
    config, data, spec, run = open_run(config)
    record = config_dict(config)

    def build_model() -> nn.Module:
        torch.manual_seed(config.seed)
        model = build(spec, data)
        check_input_shape(model, spec, config.arch)
        return model

    stage = Stage(run, record, build_model, result_fields or {},
                  ticket_fields=ticket_fields(spec) if ticket_fields else None)
    done = run_stage(config, data, stage, callbacks=callbacks)
    if not done.skipped:
        log.info("finished %s: test accuracy %.4f at density %.4f", run.path, done.result["test_accuracy"],
                 done.result["density"])
    return ExperimentResult(done.run_dir, done.result, skipped=done.skipped)


@contextlib.contextmanager
def composite(run: RunDir, config: ExperimentConfig) -> Iterator[Callable[[dict], None]]:
    """A run made of stages in sub-folders (IMP's levels): its ``config.json``, lock and status,
    held while its stages run; the body calls the yielded ``finish(result)`` to write its
    ``result.json`` (one row per stage), which is written last."""
    writer = distributed.is_main()
    with writing(run, config_dict(config)):
        def finish(result: dict) -> None:
            if writer:
                run.write_result(result)
            distributed.barrier()

        yield finish


@contextlib.contextmanager
def writing(run: RunDir, record: dict, lock: bool = True):
    """Start writing ``run``: write (or check) its config, hold its lock and keep its status
    (running, then finished or failed), in the process that writes it (rank 0 under
    ``torchrun``); then line every rank up."""
    writer = distributed.is_main()
    if writer:
        run.prepare(record)
    with run.lock() if writer and lock else contextlib.nullcontext():
        if writer:  # the lock is held (this run's, or its composite's): no one else writes here
            run.remove_temporaries()
        with run.tracking_status() if writer else contextlib.nullcontext():
            distributed.barrier()
            yield


def tracking(config: ExperimentConfig, run: RunDir) -> list[Callback]:
    """The experiment-tracking callbacks ``config`` asks for (written by rank 0 only)."""
    if not distributed.is_main():
        return []
    callbacks: list[Callback] = []
    if config.tensorboard:
        from .training.tensorboard import TensorBoardLogger

        callbacks.append(TensorBoardLogger(run.path))
    if config.wandb_project:
        from .training.wandb_logger import WandbLogger

        name = _below(run.path, Path(config.out))
        group = _below(run.path.parent, Path(config.out)) if run.path.name.startswith("level-") else None
        callbacks.append(WandbLogger(run.path, config.wandb_project, name, group))
    return callbacks


def _below(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` where it lies below it (a run's name in a tracker), else as is."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def backfill_tracking(config: ExperimentConfig, run: RunDir) -> None:
    """A finished run asked for tracking it did not have: its event files from ``metrics.jsonl``."""
    if not (config.tensorboard and distributed.is_main()):
        return
    from .training.tensorboard import events_from_metrics

    for folder in events_from_metrics(run.path):
        log.warning("%s: written from metrics.jsonl (the run had finished without --tensorboard): its "
                    "evaluations only, no per-step training loss", folder)


def provenance(config: ExperimentConfig, info, summary, state: dict) -> dict:
    """What every ticket records about where it came from and what it expects as input."""
    return {
        **library_versions(), "engine": config.ENGINE, "config_hash": config_hash(config), "arch": config.arch,
        "width": config.width, "dropout": config.dropout, **data_fields(config),
        "data_fingerprint": config.data_fingerprint,
        "input_shape": [info.in_channels, info.image_size, info.image_size],
        **({"depth": config.depth} if config.depth is not None else {}),
        **({"bias": config.bias} if config.bias is not None else {}),
        **({"init_from_checksum": config.init_from_checksum} if getattr(config, "init_from_checksum", None) else {}),
        **({"task": info.task} if info.task != "image-classification" else {}),
        "num_classes": info.num_classes, "normalization": {"mean": list(info.mean), "std": list(info.std)},
        "selection": summary.selection, "selected_epoch": summary.selected_epoch,
        "selected_step": summary.selected_step, "eval_batch_size": eval_batch_size(config.train),
        "state_checksum": weights_checksum(state),
    }


def data_fields(config: ExperimentConfig) -> dict:
    """What a result or ticket says of its data: the data set and, if a subset, its classes and, if
    converted, the shape its images were converted to, and the part of its training split it used."""
    return {"dataset": config.dataset, **({"classes": config.classes} if config.classes is not None else {}),
            **({"train_subset": config.train_subset} if config.train_subset is not None else {}),
            **({"converted_to": config.input_shape} if config.input_shape is not None else {}),
            **({"context": config.context} if config.context is not None else {})}


def ticket_record(config: ExperimentConfig, info, summary, model: nn.Module, masks: dict,
                  engine_fields: Optional[dict]) -> dict:
    """``ticket.json``: the provenance, the engine's own fields and, for a strong ticket, the
    checksum of the frozen weights its seed regenerates."""
    state = model.state_dict()
    record = {**provenance(config, info, summary, state), **(engine_fields or {})}
    if record.get("kind") == "strong":
        record["weights_checksum"] = weights_checksum({k: state[k] for k in regenerated_keys(state, masks)})
    return record


def describe_density(model: nn.Module) -> dict:
    """The ``density`` field of every metrics record."""
    return {"density": density_report(model_masks(model))[0]}


def check_input_shape(model: nn.Module, spec, arch: str) -> None:
    """One forward pass of a zero image of the data's shape (eval mode, no grad, the RNG untouched):
    an architecture that cannot take the data (a ViT's fixed image size, a patch size that does
    not divide it, a net that pools 8-pixel images to nothing, a classifier of the wrong size) is
    one line, not a traceback from the middle of training."""
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            out = model.eval()(spec.example())
    except (RuntimeError, AssertionError, ValueError, IndexError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SupermaskError(f"{arch} cannot take {spec.describe()}: {first}") from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != spec.output_shape():
        gives = f"outputs of shape {list(shape)}" if shape is not None else f"a {type(out).__name__}"
        wanted = (f"{list(spec.output_shape())} (a score per character and vocabulary entry)" if spec.is_language_model
                  else f"one score per class ({spec.num_classes} classes)")
        raise SupermaskError(f"{arch} gives {gives} for one input, not {wanted}: its last layer must have "
                             f"spec.num_classes outputs")


def language_model_fields(summary) -> dict:
    """What a language model's result reports besides its next-character accuracy: the selected
    network's validation and test loss in nats per character (selection took the lowest validation
    loss), its test perplexity, and the test loss before training and at the last evaluation."""
    first, last = summary.history[0], summary.history[-1]
    return {"task": "language-model", "val_loss": summary.val_loss, "test_loss": summary.test_loss,
            "test_perplexity": math.exp(summary.test_loss), "last_test_loss": last["test_loss"],
            "initial_test_loss": first["test_loss"]}


def heads_record(model: nn.Module, masks: dict) -> dict:
    """A head-structured result's heads: kept and in all, and kept per block."""
    from .nn.heads import attention_heads, kept_heads

    kept = kept_heads(attention_heads(model), masks)
    return {"heads_kept": int(sum(k.sum() for k in kept.values())), "heads_total": sum(k.numel() for k in kept.values()),
            "heads_per_block": {name: [int(x) for x in k.tolist()] for name, k in kept.items()}}


def collapsed_layers(per_layer: dict[str, float]) -> list[str]:
    """The prunable tensors left with no kept weight (layer collapse, Tanaka et al. 2020)."""
    return [name for name, density in per_layer.items() if density == 0.0]


def result_record(config: ExperimentConfig, summary, masks: dict, started: float, device, fields: Optional[dict]) -> dict:
    """The ``result.json`` of one trained stage: accuracies, densities, steps and times."""
    overall, per_layer = density_report(masks)
    collapsed = collapsed_layers(per_layer)
    if collapsed:
        log.warning("layer collapse: %s keep%s no weight; the network cannot pass a signal through %s",
                    ", ".join(collapsed), "s" if len(collapsed) == 1 else "", "it" if len(collapsed) == 1 else "them")
    return {
        "status": "finished", "engine": config.ENGINE, "arch": config.arch, **data_fields(config),
        "seed": config.seed, "config_hash": config_hash(config), **(fields or {}),
        "density": overall, "density_per_layer": per_layer, "collapsed_layers": collapsed,
        "selection": summary.selection, "selected_epoch": summary.selected_epoch,
        "selected_step": summary.selected_step, "val_accuracy": summary.val_accuracy,
        "test_accuracy": summary.test_accuracy,
        "best_epoch": summary.best_epoch, "best_val_accuracy": summary.best_val_accuracy,
        "best_test_accuracy": summary.best_test_accuracy, "last_val_accuracy": summary.last_val_accuracy,
        "last_test_accuracy": summary.last_test_accuracy, "initial_test_accuracy": summary.initial_test_accuracy,
        "min_val_loss_step": summary.min_val_loss_step, "epochs": summary.epochs, "steps": summary.steps,
        "start_step": summary.start_step, "trained_steps": summary.steps - summary.start_step,
        "train_seconds": round(summary.seconds, 3), "wall_seconds": round(time.time() - started, 3),
        "device": str(device), **(language_model_fields(summary) if summary.by_loss else {}),
    }


def planned_steps(config: ExperimentConfig, data) -> int:
    """The steps a stage of ``config`` plans on ``data`` in one process: ``iterations``, or every
    epoch's batches (the loop counts them with the same ``TrainConfig.planned_steps``; the
    early-bird results and the rewind check read it here)."""
    return config.train.planned_steps(steps_per_epoch(config, data))


def steps_per_epoch(config: ExperimentConfig, data) -> int:
    """Batches in one epoch of ``data``'s training split (the last one partial), in one process."""
    return -(-len(data.train) // config.train.batch_size)
