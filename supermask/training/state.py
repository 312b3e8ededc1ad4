"""What the training loop hands its callbacks: the model, optimiser and where training is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already trained on
    elapsed: float = 0.0  # seconds spent training, over every resume
    stopped: Optional[str] = None  # why a callback ended training early (early-bird), if it did
    history: list[dict] = field(default_factory=list)  # one entry per evaluation: epoch, step, val/test loss+acc
    resumed: bool = False  # this training continues from a checkpoint of the same run
