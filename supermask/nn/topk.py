"""Straight-through top-k masks: the selection at the heart of edge-popup.

The rule, everywhere in the project: a tensor of ``n`` prunable weights at
``density`` keeps exactly ``kept_count(n, density) = max(1, floor(density * n + 0.5))``
entries (density times n, rounded half up, never zero). The kept entries are the
largest magnitudes; among entries that tie at the threshold, the lowest flat
(row-major) indices are kept, so a mask is a pure function of its scores.

Selection is O(n): one selection (``np.partition`` on the CPU, ``kthvalue`` on
accelerators) finds the threshold, then element-wise comparisons (and, only when
entries tie at the threshold, a cumulative sum) give the mask. Nothing is ever fully sorted.
The backward pass is the straight-through estimator: the gradient with respect
to the mask is passed unchanged to the magnitudes it was selected from.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import SupermaskError


def check_density(density: float, what: str = "density") -> float:
    """Return ``density`` as a float if it lies in (0, 1], else raise ``SupermaskError``."""
    try:
        value = float(density)
    except (TypeError, ValueError):
        raise SupermaskError(f"{what} must be a number in (0, 1], got {density!r}") from None
    if not (0.0 < value <= 1.0):  # also rejects NaN
        raise SupermaskError(f"{what} must be in (0, 1], got {density!r}")
    return value


def kept_count(n: int, density: float) -> int:
    """Number of entries a tensor of ``n`` entries keeps at ``density``."""
    density = check_density(density)
    return max(1, min(n, math.floor(density * n + 0.5)))


def kth_largest(flat: Tensor, k: int) -> Tensor | float:
    """The k-th largest entry of a 1-D tensor, by selection (O(n) expected), never a sort.

    On the CPU NumPy's introselect (``np.partition``) is several times faster than
    ``torch.kthvalue``; elsewhere ``kthvalue`` (a radix select on CUDA) is used.
    """
    n = flat.numel()
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        return float(np.partition(flat.numpy(), n - k)[n - k])
    return flat.kthvalue(n - k + 1).values


@torch.no_grad()
def topk_mask(magnitudes: Tensor, k: int) -> Tensor:
    """A {0, 1} mask (dtype of ``magnitudes``) keeping the ``k`` largest entries.

    Ties at the threshold go to the lowest flat indices. O(n): no sort.
    """
    flat = magnitudes.detach().reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(magnitudes)
    if k <= 0:
        return torch.zeros_like(magnitudes)
    threshold = kth_largest(flat, k)
    # On the CPU a count is free, and without ties at the threshold ``flat >= threshold`` is exact.
    # On accelerators the tie resolution always runs, to avoid a host synchronisation.
    if flat.device.type == "cpu":
        keep = flat >= threshold
        if int(keep.sum()) == k:
            return keep.to(magnitudes.dtype).view_as(magnitudes)
    missing = k - (flat > threshold).sum()  # how many of the tied entries are kept (>= 1)
    return threshold_mask(flat, threshold, missing).view_as(magnitudes)


class _StraightThroughTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, magnitudes: Tensor, k: int) -> Tensor:  # type: ignore[override]
        return topk_mask(magnitudes, k)

    @staticmethod
    def backward(ctx, grad_mask: Tensor):  # type: ignore[override]
        return grad_mask, None


def straight_through_topk(magnitudes: Tensor, k: int) -> Tensor:
    """Top-k mask in the forward pass, identity gradient in the backward pass."""
    return _StraightThroughTopK.apply(magnitudes, k)


@torch.no_grad()
def global_threshold(magnitudes: Sequence[Tensor], k: int) -> tuple[Tensor | float, list]:
    """One threshold over several tensors keeping ``k`` entries in all, and for each tensor
    the number of its entries tied at the threshold that it keeps (ties go to the lowest index
    in the concatenated flat order). On the CPU the counts are ints; elsewhere 0-d tensors, so
    no host synchronisation is needed."""
    flat = torch.cat([m.detach().reshape(-1) for m in magnitudes])
    threshold = kth_largest(flat, min(k, flat.numel()))
    above = torch.stack([(m > threshold).sum() for m in magnitudes])
    at = torch.stack([(m == threshold).sum() for m in magnitudes])
    missing = k - above.sum()
    quotas = torch.minimum(at, (missing - (at.cumsum(0) - at)).clamp(min=0))
    if flat.device.type == "cpu":
        return threshold, [(int(q), int(a)) for q, a in zip(quotas, at)]
    return threshold, list(zip(quotas, at))


@torch.no_grad()
def threshold_mask(magnitudes: Tensor, threshold: Tensor | float, quota, tied=None) -> Tensor:
    """Keep the entries above ``threshold`` and the first ``quota`` entries equal to it."""
    keep = magnitudes >= threshold
    if not (isinstance(quota, int) and quota == tied):  # some tied entries are dropped
        above = magnitudes > threshold
        at = (keep & ~above).reshape(-1)
        keep = above | (at & (at.cumsum(0) <= quota)).view_as(magnitudes)
    return keep.to(magnitudes.dtype)


class _StraightThroughThreshold(torch.autograd.Function):
    @staticmethod
    def forward(ctx, magnitudes, threshold, quota, tied):  # type: ignore[override]
        return threshold_mask(magnitudes, threshold, quota, tied)

    @staticmethod
    def backward(ctx, grad_mask):  # type: ignore[override]
        return grad_mask, None, None, None


def straight_through_threshold(magnitudes: Tensor, threshold, quota, tied=None) -> Tensor:
    return _StraightThroughThreshold.apply(magnitudes, threshold, quota, tied)


def global_topk_masks(magnitudes: Sequence[Tensor], density: float) -> list[Tensor]:
    """One threshold over several tensors: the masks keep ``kept_count(total, density)``
    entries in all, each tensor keeping however many of them it holds.

    Differentiable (straight-through) with respect to every input, each mask on its own graph.
    """
    if not magnitudes:
        return []
    k = kept_count(sum(m.numel() for m in magnitudes), density)
    threshold, quotas = global_threshold(magnitudes, k)
    return [straight_through_threshold(m, threshold, q, t) for m, (q, t) in zip(magnitudes, quotas)]
