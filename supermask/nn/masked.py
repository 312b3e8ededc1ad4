"""Masked layers for weak tickets (IMP): trained weights, a fixed {0, 1} ``weight_mask`` buffer.

The mask follows ``torch.nn.utils.prune``'s naming (``<name>.weight_mask``), is a buffer (so
it is in ``state_dict`` and never optimised) and is applied to the weight in place by
:func:`mask_applier` after every optimiser step, not in every forward pass: the forward and
backward passes cost exactly what the dense layer's do, and momentum or weight decay can
never revive a pruned weight because it is zeroed again right after each step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaskedMixin:
    weight: nn.Parameter
    weight_mask: Tensor

    def _setup_mask(self) -> None:
        self.register_buffer("weight_mask", torch.ones_like(self.weight))

    @torch.no_grad()
    def apply_mask(self) -> None:
        self.weight.mul_(self.weight_mask)

    @torch.no_grad()
    def set_mask(self, mask: Tensor) -> None:
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask of shape {tuple(mask.shape)} for a weight of shape {tuple(self.weight.shape)}")
        self.weight_mask.copy_(mask)
        self.apply_mask()


class MaskedConv2d(MaskedMixin, nn.Conv2d):
    """``nn.Conv2d`` whose weight is kept at zero where ``weight_mask`` is 0."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_mask()


class MaskedLinear(MaskedMixin, nn.Linear):
    """``nn.Linear`` whose weight is kept at zero where ``weight_mask`` is 0."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_mask()


def masked_layers(model: nn.Module) -> list[tuple[str, MaskedMixin]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MaskedMixin)]


def mask_applier(model: nn.Module):
    """A function zeroing every pruned weight of ``model`` with one fused multiply (``_foreach_mul_``).

    The layer list is gathered once, so the per-step cost is the multiply alone; use it
    after every optimiser step."""
    layers = [layer for _, layer in masked_layers(model)]

    @torch.no_grad()
    def apply() -> None:
        torch._foreach_mul_([l.weight for l in layers], [l.weight_mask for l in layers])

    return apply


def get_masks(model: nn.Module) -> dict[str, Tensor]:
    """The masks of every masked layer, keyed by the weight's name (``features.0.weight``)."""
    return {f"{name}.weight" if name else "weight": layer.weight_mask.detach().clone()
            for name, layer in masked_layers(model)}


@torch.no_grad()
def set_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Install ``masks`` (keyed by weight name) and zero the pruned weights."""
    layers = {f"{name}.weight" if name else "weight": layer for name, layer in masked_layers(model)}
    unknown = set(masks) - set(layers)
    if unknown:
        raise KeyError(f"no masked layer for {sorted(unknown)}")
    for name, mask in masks.items():
        layers[name].set_mask(mask.to(layers[name].weight_mask.device, layers[name].weight_mask.dtype))
