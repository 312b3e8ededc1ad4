"""The dense baseline: the same zoo, data and trainer, with the weights trained (density 1.0).

Every comparison needs its reference: ``train_dense(DenseConfig(arch="conv6"))`` (the CLI's
``supermask train``) writes a run directory of the same format under ``<out>/train/``.
Defaults: Kaiming-normal init and SGD lr 0.01 (the edge-popup reference's dense
baselines for Conv-2/4/6/8), momentum 0.9, weight decay 1e-4, cosine, batch 128.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .experiment import ExperimentConfig, ExperimentResult, run_experiment
from .models import DENSE, InputSpec, create_model
from .nn import WEIGHT_INITS, init_model
from .nn.init import canonical
from .training import Callback, TrainConfig


@dataclass
class DenseConfig(ExperimentConfig):
    init: str = "kaiming-normal"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=0.01))

    ENGINE = "train"

    def validate(self) -> "DenseConfig":
        self.init = canonical(self.init)
        WEIGHT_INITS.get(self.init)
        return super().validate()


def build_dense(config: DenseConfig, spec: InputSpec):
    model = create_model(config.arch, spec, DENSE, **config.model_kwargs())
    return init_model(model, config.init, config.seed)


def train_dense(config: DenseConfig, callbacks: Sequence[Callback] = ()) -> ExperimentResult:
    """Run (or resume, or skip if finished) one dense training run."""
    return run_experiment(config, lambda spec, data: build_dense(config, spec), callbacks=callbacks,
                          result_fields={"method": "dense", "init": config.init, "requested_density": 1.0})
