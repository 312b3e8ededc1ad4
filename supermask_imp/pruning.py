"""Pruning as pure functions over masks: ``prune(weights, masks, ...) -> new masks``.

Masks and weights are dicts keyed by the weight's qualified name (``features.0.weight``).
Magnitude pruning removes the lowest-|w| ``fraction`` of each tensor's *surviving*
weights (``layerwise``) or of all surviving weights together (``global``); the removed
count is ``floor(fraction * survivors + 0.5)``, and ties go to the lowest flat indices,
exactly as the top-k rule of :mod:`supermask.nn.topk`.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional, Union

import torch
from torch import Tensor

from supermask.errors import SupermaskError
from supermask.nn.topk import topk_mask

Masks = dict[str, Tensor]
Fractions = Union[float, Mapping[str, float]]

SCOPES = ("global", "layerwise")


def check_fraction(fraction: float, what: str = "prune fraction") -> float:
    value = float(fraction)
    if not (0.0 < value < 1.0):
        raise SupermaskError(f"{what} must be in (0, 1), got {fraction!r}")
    return value


def removed_count(survivors: int, fraction: float) -> int:
    return min(survivors, math.floor(fraction * survivors + 0.5))


def _survivor_magnitudes(weight: Tensor, mask: Tensor) -> Tensor:
    """|w| for survivors and -1 for pruned weights, so the top-k over it picks survivors only."""
    return torch.where(mask.bool(), weight.detach().abs().float(), torch.tensor(-1.0, device=weight.device))


def magnitude_prune(
    weights: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    fraction: Fractions = 0.2,
    *,
    scope: str = "global",
    keep: Iterable[str] = (),
) -> Masks:
    """New masks with the lowest-magnitude ``fraction`` of the survivors removed.

    ``fraction`` is one number, or one per tensor name (per-layer rates, ``layerwise`` only;
    a name missing from the mapping is not pruned). Tensors named in ``keep`` are left as they are.
    """
    if scope not in SCOPES:
        raise SupermaskError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    keep = set(keep)
    new = {name: mask.clone() for name, mask in masks.items()}
    prunable = [name for name in masks if name not in keep]
    if scope == "global":
        if not isinstance(fraction, (int, float)):
            raise SupermaskError("per-layer prune fractions need layerwise scope")
        fraction = check_fraction(fraction)
        magnitudes = [_survivor_magnitudes(weights[n], masks[n]).reshape(-1) for n in prunable]
        flat = torch.cat(magnitudes)
        survivors = int(sum(int(masks[n].sum()) for n in prunable))
        kept = topk_mask(flat, survivors - removed_count(survivors, fraction))
        for name, part in zip(prunable, kept.split([m.numel() for m in magnitudes])):
            new[name] = part.view_as(masks[name]).to(masks[name].dtype)
        return new
    for name in prunable:
        rate = fraction.get(name) if isinstance(fraction, Mapping) else fraction
        if rate is None or rate == 0:
            continue
        rate = check_fraction(rate, f"prune fraction of {name}")
        survivors = int(masks[name].sum())
        kept = topk_mask(_survivor_magnitudes(weights[name], masks[name]), survivors - removed_count(survivors, rate))
        new[name] = kept.to(masks[name].dtype)
    return new


def random_masks_like(masks: Mapping[str, Tensor], seed: int) -> Masks:
    """Random masks with exactly the same number of kept weights in every tensor (the random-pruning
    control). Each tensor draws from its own generator, seeded from ``seed`` and its name, so the
    result does not depend on the order of ``masks`` (safetensors files do not keep one)."""
    from supermask.seeding import derived_seed

    out = {}
    for name, mask in masks.items():
        gen = torch.Generator().manual_seed(derived_seed(seed, name))
        kept = int(mask.sum())
        order = torch.randperm(mask.numel(), generator=gen)
        flat = torch.zeros(mask.numel(), dtype=mask.dtype)
        flat[order[:kept]] = 1
        out[name] = flat.view_as(mask).to(mask.device)
    return out


def frankle_carbin_rates(names: list[str], *, conv: float, fc: float = 0.2, output: float = 0.1,
                         conv_names: Optional[set[str]] = None) -> dict[str, float]:
    """Per-layer prune fractions in the style of Frankle & Carbin 2019: convolutions ``conv``,
    fully connected layers ``fc``, the output layer (the last tensor) ``output``."""
    conv_names = conv_names or set()
    rates = {}
    for i, name in enumerate(names):
        if i == len(names) - 1:
            rates[name] = output
        elif name in conv_names:
            rates[name] = conv
        else:
            rates[name] = fc
    return rates
