"""N:M structured masks: in every group of M consecutive weights, keep the N with the largest
magnitude (2:4 is what NVIDIA's sparse tensor cores run).

Groups run along the input dimension of the layer's matrix: a Linear weight ``(out, in)`` row by
row; a convolution's ``(out, in, kh, kw)`` as the ``(out, in*kh*kw)`` matrix of its im2col GEMM
(PyTorch's memory order). Within a group the N largest magnitudes are kept; among equal ones the
lowest index wins, so the mask is a pure function of the scores. Selection sorts each group of M
(a constant) and never the tensor: O(n). The density is N/M by construction.

A layer whose rows do not split into groups of M (a first convolution over 1 or 3 input channels
with a 3x3 kernel: rows of 9 or 27) keeps the unstructured top-k at density N/M instead, with a
warning, as NVIDIA's ASP leaves such layers out of the 2:4 format.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..errors import SupermaskError

log = logging.getLogger(__name__)

UNSTRUCTURED = "unstructured"
_NM = re.compile(r"^nm:(\d+):(\d+)$")


@dataclass(frozen=True)
class NM:
    n: int
    m: int

    @property
    def density(self) -> float:
        return self.n / self.m

    def __str__(self) -> str:
        return f"nm:{self.n}:{self.m}"


def parse_structure(text: Optional[str]) -> Optional[NM]:
    """``"unstructured"`` (or None) -> None; ``"nm:2:4"`` -> ``NM(2, 4)``."""
    if text is None or text == UNSTRUCTURED:
        return None
    match = _NM.match(str(text))
    if match is None:
        raise SupermaskError(f"structure must be unstructured or nm:N:M (e.g. nm:2:4), got {text!r}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m <= 64:
        raise SupermaskError(f"structure nm:{n}:{m}: need 0 < N < M <= 64")
    return NM(n, m)


def nm_applies(shape: torch.Size | tuple, m: int) -> bool:
    """Whether a weight of ``shape`` splits into rows of whole groups of ``m``."""
    row = 1
    for size in tuple(shape)[1:]:
        row *= size
    return len(shape) >= 2 and row % m == 0


def nm_mask(magnitudes: Tensor, n: int, m: int) -> Tensor:
    """The {0, 1} mask keeping, in each group of ``m`` consecutive entries of each row, the ``n``
    largest (ties: the lowest index)."""
    groups = magnitudes.detach().reshape(-1, m)
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices[:, :n]
    mask = torch.zeros_like(groups).scatter_(1, order, 1.0)
    return mask.view_as(magnitudes).to(magnitudes.dtype)


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
