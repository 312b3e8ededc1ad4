"""The one training loop, its config, optimisers, schedules, callbacks and checkpoint I/O."""

from . import distributed
from .callbacks import Callback, MaskAfterStep, ProgressBar
from .config import TrainConfig
from .device import resolve_device
from .loop import TrainState, TrainSummary, eval_batch_size, evaluate, train
from .optim import build_optimizer, lr_factor

__all__ = ["Callback", "MaskAfterStep", "ProgressBar", "TrainConfig", "TrainState", "TrainSummary", "build_optimizer", "distributed", "eval_batch_size", "evaluate",
           "lr_factor", "resolve_device", "train"]
