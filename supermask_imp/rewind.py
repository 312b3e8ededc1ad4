"""Rewind points (θ0 or θk) and rewinding the survivors to them.

``--rewind 0`` rewinds to the initialisation (Frankle & Carbin 2019); ``500it`` or ``2ep``
to the weights after 500 iterations or 2 epochs of the dense run ("late rewinding",
Frankle et al. 2020). A snapshot is the model's whole state dict (weights, biases,
BatchNorm), so rewinding restores all of it, then re-applies the masks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from supermask.errors import SupermaskError
from supermask.nn.masked import set_masks
from supermask.training import Callback
from supermask.training.config import MAX_STEPS

_REWIND = re.compile(r"^\s*(\d+)\s*(it|ep)?\s*$")


@dataclass(frozen=True)
class RewindPoint:
    value: int
    unit: str  # "it" or "ep"

    @classmethod
    def parse(cls, text: str | int) -> "RewindPoint":
        match = _REWIND.match(str(text))
        if not match:
            raise SupermaskError(f"rewind must be 0, <N>it or <N>ep (e.g. 500it, 2ep), got {text!r}")
        value, unit = int(match.group(1)), match.group(2) or "it"
        if value > MAX_STEPS:
            raise SupermaskError(f"rewind point {text!r} is beyond any run's end (at most {MAX_STEPS:,} steps)")
        return cls(value, unit)

    def step(self, steps_per_epoch: int) -> int:
        return self.value * steps_per_epoch if self.unit == "ep" else self.value

    def __str__(self) -> str:
        return "0" if self.value == 0 else f"{self.value}{self.unit}"


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@torch.no_grad()
def rewind(model: nn.Module, state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    """Load the snapshot's weights (and BatchNorm state), then install ``masks``: survivors
    take their snapshot values bit for bit, pruned weights are zero."""
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if not k.endswith("weight_mask")} | {
        k: own[k] for k in own if k.endswith("weight_mask")})
    set_masks(model, masks)


class SnapshotAt(Callback):
    """Takes a snapshot of the model right after optimiser step ``step`` (θk)."""

    def __init__(self, step: int):
        self.step = step
        self.state: dict[str, torch.Tensor] | None = None

    def after_step(self, state, loss, correct, count):
        if state.step == self.step:
            self.state = snapshot(state.model)
