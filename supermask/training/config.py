"""The training hyperparameters, shared by every engine."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

from ..catalog import GENERIC_TRAIN_DEFAULTS
from ..errors import SupermaskError
from ..resolved import Resolvable

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("32", "bf16", "16")
#: Which evaluation's network a run reports and keeps as its ticket: the best validation
#: accuracy at the final density (ties: the earliest), or the last one.
SELECTIONS = ("best-val", "last")
FLOAT32_MAX = 3.4028234663852886e38
#: The most optimiser steps a run may plan (epochs, iterations, and epochs times an epoch's
#: batches): a billion steps is 11½ days at a millisecond a step, more than any run of the papers
#: this library reproduces (ImageNet ResNet-50 trains ~0.5 million); a count beyond it is a typo that
#: would run until killed, so it is refused.
MAX_STEPS = 10**9
#: The largest batch: batch indices and sizes stay within a 32-bit integer.
MAX_BATCH_SIZE = 2**31 - 1
#: What a training field left None resolves to when neither the engine nor the method sets it.
GENERIC_DEFAULTS = GENERIC_TRAIN_DEFAULTS
DEFAULT_LR, DEFAULT_WEIGHT_DECAY = GENERIC_DEFAULTS["lr"], GENERIC_DEFAULTS["weight_decay"]


@dataclass
class TrainConfig(Resolvable):
    """How to train. Defaults are edge-popup's small-scale setting (Ramanujan et al. 2020,
    the reference configs for Conv-2/4/6/8): SGD, lr 0.1, momentum 0.9, weight decay 1e-4,
    cosine decay, batch 128."""

    epochs: int = 10
    iterations: Optional[int] = None  # when set, train this many steps instead of whole epochs
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: Optional[float] = None  # None: the engine's or method's default, else DEFAULT_LR
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: Optional[float] = None  # None: the engine's or method's default, else DEFAULT_WEIGHT_DECAY
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    milestones: tuple[float, ...] = field(default_factory=tuple)  # epochs where "step" multiplies lr by gamma
    gamma: float = 0.1
    label_smoothing: float = 0.0
    precision: str = "32"  # CUDA autocast: "bf16", or "16" with a grad scaler; the CPU always trains in float32
    selection: str = "best-val"  # the evaluation whose network is reported and kept as the ticket (SELECTIONS)
    # the test split after every epoch (per-epoch test curves); off: before training and, at the end, for
    # the best-validation and the last network only (the accuracies a result reports; selection never
    # looks at the test split, so the results are the same either way)
    test_every_epoch: bool = False

    def with_defaults(self, **defaults) -> "TrainConfig":
        """This config with the fields left None (not given) taken from ``defaults`` (a method's or
        an engine's): a new, unresolved config, or this one if nothing was left None."""
        missing = {name: value for name, value in defaults.items() if getattr(self, name) is None}
        return dataclasses.replace(self, **missing) if missing else self

    def planned_steps(self, steps_per_epoch: int) -> int:
        """The optimiser steps this config trains for with ``steps_per_epoch`` batches an epoch."""
        steps = self.iterations or self.epochs * steps_per_epoch
        if steps > MAX_STEPS:
            raise SupermaskError(f"this run plans {steps:,} optimiser steps ({self.epochs:,} epochs of "
                                 f"{steps_per_epoch:,} batches): more than a run can finish (at most "
                                 f"{MAX_STEPS:,}); lower --epochs or give --iterations")
        return steps

    def _resolve_fields(self) -> None:
        for name, value in GENERIC_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.optimizer not in OPTIMIZERS:
            raise SupermaskError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise SupermaskError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.nesterov and self.optimizer != "sgd":
            raise SupermaskError(f"--nesterov applies to SGD only, not {self.optimizer}")
        if self.selection not in SELECTIONS:
            raise SupermaskError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if not isinstance(self.test_every_epoch, bool):
            raise SupermaskError(f"test every epoch must be true or false, got {self.test_every_epoch!r}")
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise SupermaskError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _positive_int(self.epochs, "epochs", MAX_STEPS)
        if self.iterations is not None:
            _positive_int(self.iterations, "iterations", MAX_STEPS)
        _positive_int(self.batch_size, "batch size", MAX_BATCH_SIZE)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise SupermaskError(f"learning rate must be a positive number, got {self.lr!r}")
        if self.lr > FLOAT32_MAX:  # the optimiser's step multiplies float32 tensors by it
            raise SupermaskError(f"learning rate {self.lr!r} overflows float32 (at most {FLOAT32_MAX:.3g})")
        for name in ("momentum", "weight_decay", "warmup_epochs", "label_smoothing"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SupermaskError(f"{name.replace('_', ' ')} must be >= 0, got {value!r}")
        if self.label_smoothing >= 1:
            raise SupermaskError(f"label smoothing must be < 1, got {self.label_smoothing!r}")
        self.milestones = tuple(float(m) for m in self.milestones)
        if not all(math.isfinite(m) and m >= 0 for m in self.milestones):
            raise SupermaskError(f"milestones must be finite epochs >= 0, got {list(self.milestones)!r}")
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma) and self.gamma > 0):
            raise SupermaskError(f"gamma must be a positive number, got {self.gamma!r}")


def _positive_int(value, name: str, most: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SupermaskError(f"{name} must be a positive integer, got {value!r}")
    if value > most:
        raise SupermaskError(f"{name} {value:,} is more than a run can finish (at most {most:,}: "
                             f"a billion steps is 11 days at a millisecond a step)" if most == MAX_STEPS else
                             f"{name} {value:,} is more than the largest allowed ({most:,})")
