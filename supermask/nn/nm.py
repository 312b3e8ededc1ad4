"""N:M structured masks: in every group of M consecutive weights, keep the N with the largest
magnitude (2:4 is what NVIDIA's sparse tensor cores run).

Groups run along the input dimension, as NVIDIA's ASP (apex ``contrib/sparsity``) lays them out
for the sparse tensor cores: a Linear weight ``(out, in)`` row by row; a convolution's
``(out, in, kh, kw)`` along the input channels, separately at each kernel position (ASP permutes
it to ``(kh, kw, out, in)``). Within a group the N largest magnitudes are kept (ASP: the pattern
of largest kept sum, the same set); among equal ones the lowest index wins, so the mask is a pure
function of the scores. Selection sorts each group of M (a constant) and never the tensor: O(n).
The density is N/M by construction.

A layer whose input dimension does not split into groups of M (a first convolution over 1 or 3
input channels) keeps the unstructured top-k at density N/M instead, with a warning. NVIDIA's ASP
(apex ``contrib/sparsity/asp.py``, ``init_model_for_pruning``) instead skips such layers, leaving
them dense, and skips more: every weight whose outputs are not a multiple of 8 or whose inputs
(a convolution's input channels) are not a multiple of 16, what its tensor cores need; LeNet's
three layers (300, 100 and 10 outputs), which it would all leave dense, are masked here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..structure import CHANNEL, HEAD, NM, UNSTRUCTURED, check_structure, parse_structure  # noqa: F401  (re-exported)


def nm_applies(shape: torch.Size | tuple, m: int) -> bool:
    """Whether a weight of ``shape`` (``(out, in)`` or ``(out, in, kh, kw)``) splits its input
    dimension into whole groups of ``m``."""
    return len(shape) in (2, 4) and shape[1] % m == 0


def to_groups(t: Tensor, m: int) -> Tensor:
    """``t`` (``(out, in)`` or ``(out, in, kh, kw)``) as rows of ``m`` consecutive inputs, the N:M
    groups: a convolution permuted to ``(out, kh, kw, in)`` first, as ASP lays them out."""
    return (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).reshape(-1, m)


def from_groups(groups: Tensor, shape: torch.Size | tuple) -> Tensor:
    """The inverse of :func:`to_groups`: rows of ``m`` back into a tensor of ``shape``."""
    if len(shape) == 4:
        out, inputs, kh, kw = shape
        return groups.reshape(out, kh, kw, inputs).permute(0, 3, 1, 2).contiguous()
    return groups.reshape(shape)


def nm_mask(magnitudes: Tensor, n: int, m: int) -> Tensor:
    """The {0, 1} mask keeping, in each group of ``m`` consecutive entries along the input
    dimension, the ``n`` largest (ties: the lowest index)."""
    groups = to_groups(magnitudes.detach(), m)
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices[:, :n]
    mask = torch.zeros_like(groups).scatter_(1, order, 1.0)
    return from_groups(mask, magnitudes.shape).to(magnitudes.dtype)


class _StraightThroughNM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, magnitudes: Tensor, n: int, m: int) -> Tensor:  # type: ignore[override]
        return nm_mask(magnitudes, n, m)

    @staticmethod
    def backward(ctx, grad_mask: Tensor):  # type: ignore[override]
        return grad_mask, None, None


def straight_through_nm(magnitudes: Tensor, n: int, m: int) -> Tensor:
    """The N:M mask in the forward pass, identity gradient to every score in the backward pass."""
    return _StraightThroughNM.apply(magnitudes, n, m)
