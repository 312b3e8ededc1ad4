"""The strong-ticket engine: find a mask over a frozen random network.

``search(SearchConfig(arch="conv6"))`` builds the supermask model, optimises its
scores only with the one training loop, and leaves a run directory holding the
config, metrics, checkpoint, result and the ticket (mask + what rebuilds the network).

Defaults follow the edge-popup paper's small-scale setting (Ramanujan et al. 2020 and
its reference configs for Conv-2/4/6/8 on CIFAR-10): signed-constant weights (their
best init), density 0.5 layerwise (the paper's k = 50%, the best Conv-6 point), SGD lr 0.1,
momentum 0.9, weight decay 1e-4, cosine decay, batch 128. The paper trains 100 epochs on
CIFAR-10; the default here is 10, enough on the bundled 4,000 MNIST images.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from .data import DATASETS, load_dataset
from .data.datasets import IMAGEFOLDER_PREFIX
from .errors import SupermaskError
from .methods import METHODS
from .models import MODELS, InputSpec
from .models.registry import TORCHVISION_PREFIX
from .nn import SCORE_INITS, WEIGHT_INITS, check_density, check_scope, density_report, model_masks
from .nn.init import canonical
from .runs import RunDir, config_dict, config_hash, run_path
from .tickets import save_ticket
from .training import Callback, TrainConfig, resolve_device, train

log = logging.getLogger(__name__)

ENGINE = "search"


@dataclass
class SearchConfig:
    arch: str = "conv6"
    dataset: str = "mnist-5k"
    method: str = "edge-popup"
    density: float = 0.5
    scope: str = "layerwise"
    init: str = "signed-constant"
    scaled_fan: bool = False
    score_init: str = "kaiming-uniform"
    learned_bn: bool = False
    width: float = 1.0
    image_size: int = 224  # image folders only: the crop size
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    # Not part of the config hash: where things go and how they are read.
    out: str = "runs"
    device: str = "auto"
    data_root: Optional[str] = None
    download: bool = False
    num_workers: Optional[int] = None

    def validate(self) -> "SearchConfig":
        self.density = check_density(self.density)
        check_scope(self.scope)
        METHODS.get(self.method)
        self.init = canonical(self.init)
        WEIGHT_INITS.get(self.init)
        self.score_init = canonical(self.score_init)
        SCORE_INITS.get(self.score_init)
        if not self.arch.startswith(TORCHVISION_PREFIX):
            MODELS.get(self.arch)
        if not self.dataset.startswith(IMAGEFOLDER_PREFIX):
            DATASETS.get(self.dataset)
        if not (self.width > 0):
            raise SupermaskError(f"width must be positive, got {self.width!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise SupermaskError(f"seed must be a non-negative integer, got {self.seed!r}")
        self.train.validate()
        return self

    def run_dir(self) -> RunDir:
        return RunDir(run_path(Path(self.out), ENGINE, self.arch, self.dataset, config_hash(self), self.seed))


@dataclass
class SearchResult:
    run_dir: Path
    result: dict
    skipped: bool = False  # the run had finished before: nothing was trained


def ticket_meta(config: SearchConfig, spec: InputSpec) -> dict:
    """What rebuilds the frozen network a strong ticket's mask applies to."""
    return {
        "kind": "strong", "engine": ENGINE, "method": config.method, "arch": config.arch, "width": config.width,
        "in_channels": spec.in_channels, "image_size": spec.image_size, "num_classes": spec.num_classes,
        "init": config.init, "scaled_fan": config.scaled_fan, "seed": config.seed, "density": config.density,
        "scope": config.scope, "learned_bn": config.learned_bn,
    }


def search(config: SearchConfig, callbacks: Sequence[Callback] = ()) -> SearchResult:
    """Run (or resume, or skip if finished) one strong-ticket search."""
    config.validate()
    run = config.run_dir()
    if run.is_finished():
        log.info("finished run found, skipping: %s", run.path)
        return SearchResult(run.path, run.read_result(), skipped=True)
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, config.data_root, config.download, config.image_size)
    spec = InputSpec(data.info.in_channels, data.info.image_size, data.info.num_classes)
    run.prepare(config_dict(config))
    torch.manual_seed(config.seed)
    model = METHODS.get(config.method).build(config, spec)

    def describe(m) -> dict:
        return {"density": density_report(model_masks(m))[0]}

    started = time.time()
    summary = train(model, [p for p in model.parameters() if p.requires_grad], data, config.train,
                    seed=config.seed, device=device, run=run, callbacks=callbacks, describe=describe,
                    num_workers=config.num_workers)
    masks = model_masks(model)
    overall, per_layer = density_report(masks)
    save_ticket(run.ticket_dir, masks, ticket_meta(config, spec))
    result = {
        "status": "finished", "engine": ENGINE, "method": config.method, "arch": config.arch,
        "dataset": config.dataset, "seed": config.seed, "config_hash": config_hash(config),
        "init": config.init, "scope": config.scope, "requested_density": config.density,
        "density": overall, "density_per_layer": per_layer,
        "best_epoch": summary.best_epoch, "best_val_accuracy": summary.best_val_accuracy,
        "test_accuracy": summary.test_accuracy, "last_val_accuracy": summary.last_val_accuracy,
        "last_test_accuracy": summary.last_test_accuracy,
        "initial_test_accuracy": summary.initial_test_accuracy, "epochs": summary.epochs, "steps": summary.steps,
        "train_seconds": round(summary.seconds, 3), "wall_seconds": round(time.time() - started, 3),
        "device": str(device),
    }
    run.write_result(result)
    log.info("finished %s: test accuracy %.4f at density %.4f", run.path, summary.test_accuracy, overall)
    return SearchResult(run.path, result)
