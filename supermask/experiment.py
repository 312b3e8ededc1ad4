"""What every engine does around the training loop: one run directory, start to finish.

An engine supplies a config (an :class:`ExperimentConfig`), a function building its
model for the data's input shape, and what to record; :func:`run_experiment` skips
a finished run, loads the data, writes ``config.json``, trains (resuming from a
checkpoint if there is one), saves the ticket and writes ``result.json`` last.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .data import DATASETS, Dataset, DatasetInfo, fingerprint, load_dataset
from .catalog import IMAGEFOLDER_PREFIX, TORCHVISION_PREFIX
from .errors import SupermaskError
from .models import MODELS, InputSpec, Layers
from .models.torchvision_models import check_torchvision_name
from .nn import density_report, model_masks
from .runs import RESULT_KEYS, RunDir, config_dict, config_hash, run_path
from .tickets import library_versions, regenerated_keys, save_ticket, weights_checksum
from .training import Callback, TrainConfig, distributed, eval_batch_size, resolve_device, train

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224
#: The architectures with fully connected layers to put dropout before.
DROPOUT_ARCHS = ("lenet_300_100", "conv2", "conv4", "conv6", "conv8", "vgg11", "vgg16", "vgg19")


@dataclass
class ExperimentConfig:
    """Fields every engine shares. Subclasses add their own (density, init, ...)."""

    arch: str = "conv6"
    dataset: str = "mnist-5k"
    width: float = 1.0
    dropout: float = 0.0  # before the fully connected layers (LeNet, Conv-N, VGG's classifier); 0: none
    image_size: Optional[int] = None  # image folders only: the crop size [224]; ignored (None) for other data
    seed: int = 0
    # What identifies the data's content (set when the data is first loaded; see data.fingerprint):
    # with it the hash holds no path, so moved data keeps its runs.
    data_fingerprint: Optional[str] = None
    train: TrainConfig = field(default_factory=TrainConfig)
    # Not part of the config hash: where things go and how they are read.
    out: str = "runs"
    device: str = "auto"
    data_root: Optional[str] = None
    download: bool = False
    num_workers: Optional[int] = None
    # Nor is how the training executes: same results (on the CPU, bit for bit).
    checkpoint_every: Optional[int] = None  # also checkpoint every N steps (besides every epoch)
    channels_last: bool = False  # CUDA only
    compile: bool = False  # torch.compile the training forward
    tensorboard: bool = False  # also write TensorBoard scalars to <run>/tensorboard/

    ENGINE = "experiment"

    def validate(self):
        if self.arch.startswith(TORCHVISION_PREFIX):
            check_torchvision_name(self.arch[len(TORCHVISION_PREFIX):])
        else:
            MODELS.get(self.arch)
        if self.dataset.startswith(IMAGEFOLDER_PREFIX):
            if self.image_size is None:
                self.image_size = DEFAULT_IMAGE_SIZE
            _positive_size(self.image_size)
            _check_batch_fits(self.image_size, self.train.batch_size)
        else:
            DATASETS.get(self.dataset)
            if self.image_size is not None:
                log.warning("--image-size applies to image folders only; ignored for %s", self.dataset)
                self.image_size = None
        if not (self.width > 0 and math.isfinite(self.width)):
            raise SupermaskError(f"width must be positive, got {self.width!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise SupermaskError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.dropout > 0 and self.arch not in DROPOUT_ARCHS:
            raise SupermaskError(f"--dropout applies to {', '.join(DROPOUT_ARCHS)}, not {self.arch}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise SupermaskError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.checkpoint_every is not None and (not isinstance(self.checkpoint_every, int)
                                                  or self.checkpoint_every <= 0):
            raise SupermaskError(f"checkpoint every must be a positive number of steps, got {self.checkpoint_every!r}")
        self.train.validate()
        return self

    def model_kwargs(self) -> dict:
        return {"width": self.width} if self.width != 1.0 else {}

    def layer_types(self, layers: Layers) -> Layers:
        """``layers`` (an engine's variant) with this config's dropout."""
        return layers.with_dropout(self.dropout)

    def execution(self) -> dict:
        """The keyword arguments of :func:`~supermask.training.train` that say how, not what."""
        return {"num_workers": self.num_workers, "checkpoint_every": self.checkpoint_every,
                "channels_last": self.channels_last, "compile": self.compile}

    def run_dir(self) -> RunDir:
        """This config's run directory: validated (defaults resolved) first, and the data loaded
        once to fingerprint it, if not yet."""
        self.validate()
        if self.data_fingerprint is None:
            load_data(self)
        return RunDir(run_path(Path(self.out), self.ENGINE, self.arch, self.dataset, config_hash(self), self.seed))


@dataclass
class ExperimentResult:
    run_dir: Path
    result: dict
    skipped: bool = False  # the run had finished before: nothing was trained


def _positive_size(size) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise SupermaskError(f"image size must be a positive integer, got {size!r}")


def _physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_batch_fits(image_size: int, batch_size) -> None:
    """Refuse an image size whose one batch of RGB float32 images outgrows this machine's memory."""
    memory = _physical_memory()
    batch = batch_size if isinstance(batch_size, int) and batch_size > 0 else 1
    needed = batch * 3 * image_size * image_size * 4
    if memory is not None and needed > memory:
        raise SupermaskError(f"image size {image_size}: one batch of {batch} images takes {needed / 2**30:,.1f} GiB "
                             f"as float32, more than this machine's {memory / 2**30:.0f} GiB of memory")


def load_data(config: ExperimentConfig) -> tuple[Dataset, InputSpec]:
    """The config's data and the input it gives the model; fills in ``config.data_fingerprint``
    (refusing data whose content differs from the fingerprint the config already names)."""
    data = load_dataset(config.dataset, config.data_root, config.download, config.image_size or DEFAULT_IMAGE_SIZE)
    found = fingerprint(data)
    if config.data_fingerprint is None:
        config.data_fingerprint = found
    elif config.data_fingerprint != found:
        raise SupermaskError(f"{config.dataset}: the data's content (fingerprint {found}) is not the data this "
                             f"config names ({config.data_fingerprint})")
    return data, InputSpec(data.info.in_channels, data.info.image_size, data.info.num_classes)


def tracking(config: ExperimentConfig, run: RunDir) -> list[Callback]:
    """The experiment-tracking callbacks ``config`` asks for (written by rank 0 only)."""
    if not (config.tensorboard and distributed.is_main()):
        return []
    from .training.tensorboard import TensorBoardLogger

    return [TensorBoardLogger(run.path)]


@contextlib.contextmanager
def writing(run: RunDir, config: ExperimentConfig):
    """Start writing ``run``: write (or check) its config, hold its lock and keep its status
    (running, then finished or failed), in the process that writes it (rank 0 under
    ``torchrun``); then line every rank up."""
    writer = distributed.is_main()
    if writer:
        run.prepare(config_dict(config))
    with run.lock() if writer else contextlib.nullcontext():
        with run.tracking_status() if writer else contextlib.nullcontext():
            distributed.barrier()
            yield


def provenance(config: ExperimentConfig, info: DatasetInfo, summary, state: dict) -> dict:
    """What every ticket records about where it came from and what it expects as input."""
    return {
        **library_versions(), "engine": config.ENGINE, "config_hash": config_hash(config), "arch": config.arch,
        "width": config.width, "dropout": config.dropout, "dataset": config.dataset,
        "data_fingerprint": config.data_fingerprint,
        "input_shape": [info.in_channels, info.image_size, info.image_size],
        "num_classes": info.num_classes, "normalization": {"mean": list(info.mean), "std": list(info.std)},
        "selection": summary.selection, "selected_epoch": summary.selected_epoch,
        "selected_step": summary.selected_step, "eval_batch_size": eval_batch_size(config.train),
        "state_checksum": weights_checksum(state),
    }


def ticket_record(config: ExperimentConfig, info: DatasetInfo, summary, model: nn.Module, masks: dict,
                  engine_meta: Optional[dict]) -> dict:
    """``ticket.json``: the provenance, the engine's own fields and, for a strong ticket, the
    checksum of the frozen weights its seed regenerates."""
    state = model.state_dict()
    record = {**provenance(config, info, summary, state), **(engine_meta or {})}
    if record.get("kind") == "strong":
        record["weights_checksum"] = weights_checksum({k: state[k] for k in regenerated_keys(state, masks)})
    return record


def describe_density(model: nn.Module) -> dict:
    """The ``density`` field of every metrics record."""
    return {"density": density_report(model_masks(model))[0]}


def check_input_shape(model: nn.Module, spec: InputSpec, arch: str) -> None:
    """One forward pass of a zero image of the data's shape (eval mode, no grad, the RNG untouched):
    an architecture that cannot take the data (a ViT's fixed image size, a patch size that does
    not divide it, a net that pools 8-pixel images to nothing) is one line, not a traceback
    from the middle of training."""
    was_training = model.training
    x = torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size)
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()(x)
    except (RuntimeError, AssertionError, ValueError, IndexError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SupermaskError(f"{arch} cannot take {spec.in_channels}x{spec.image_size}x{spec.image_size} inputs "
                             f"with {spec.num_classes} classes: {first}") from None
    finally:
        model.train(was_training)


def run_experiment(
    config: ExperimentConfig,
    build: Callable[[InputSpec, Dataset], nn.Module],
    *,
    callbacks: Sequence[Callback] = (),
    ticket_meta: Optional[Callable[[InputSpec], dict]] = None,
    result_fields: Optional[dict] = None,
) -> ExperimentResult:
    """Run (or resume, or skip if finished) one experiment.

    ``build(spec, data)`` returns the model; its parameters that require grad are trained.
    ``ticket/`` receives the selected network's state and masks, and with ``ticket_meta`` what
    rebuilds it from the seed (a strong ticket).
    """
    config.validate()
    data, spec = load_data(config)
    run = config.run_dir()
    if run.is_finished():
        run.check_config(config_dict(config))
        log.info("finished run found, skipping: %s", run.path)
        return ExperimentResult(run.path, run.read_result(RESULT_KEYS), skipped=True)
    device = resolve_device(config.device)
    writer = distributed.is_main()
    torch.manual_seed(config.seed)
    model = build(spec, data)  # before the run directory is written: a model that cannot be built writes nothing
    check_input_shape(model, spec, config.arch)
    with writing(run, config):
        started = time.time()
        summary = train(model, [p for p in model.parameters() if p.requires_grad], data, config.train,
                        seed=config.seed, device=device, run=run, callbacks=[*callbacks, *tracking(config, run)],
                        describe=describe_density, **config.execution())
        masks = model_masks(model)  # the selected network's (train() leaves it in the model)
        result = result_record(config, summary, masks, started, device, result_fields)
        if writer:
            meta = ticket_record(config, data.info, summary, model, masks, ticket_meta(spec) if ticket_meta else None)
            save_ticket(run.ticket_dir, masks, meta, model.state_dict())
            run.write_result(result)
            run.discard_selected(keep=None)
        distributed.barrier()
    log.info("finished %s: test accuracy %.4f at density %.4f", run.path, summary.test_accuracy, result["density"])
    return ExperimentResult(run.path, result)


def collapsed_layers(per_layer: dict[str, float]) -> list[str]:
    """The prunable tensors left with no kept weight (layer collapse, Tanaka et al. 2020)."""
    return [name for name, density in per_layer.items() if density == 0.0]


def result_record(config: ExperimentConfig, summary, masks: dict, started: float, device, fields: Optional[dict]) -> dict:
    """The ``result.json`` of one trained run: accuracies, densities, steps and times."""
    overall, per_layer = density_report(masks)
    collapsed = collapsed_layers(per_layer)
    if collapsed:
        log.warning("layer collapse: %s keep%s no weight; the network cannot pass a signal through %s",
                    ", ".join(collapsed), "s" if len(collapsed) == 1 else "", "it" if len(collapsed) == 1 else "them")
    return {
        "status": "finished", "engine": config.ENGINE, "arch": config.arch, "dataset": config.dataset,
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
        "device": str(device),
    }
