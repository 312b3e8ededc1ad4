"""biprop (Diffenderfer & Kailkhura 2021, "Multi-Prize Lottery Ticket Hypothesis").

The edge-popup mask, over binarised weights: a kept weight computes with ``sign(w) * alpha``,
``alpha`` the mean |w| of the kept weights of its layer, so each layer's effective weights take
exactly two magnitudes (0 and alpha). ``alpha`` follows the mask as it changes (computed from
the current mask, without a gradient of its own); the scores get the straight-through gradient
of the binarised product. ``--scope global`` uses one score threshold over all layers (the
paper's global variant).

Init: the paper draws Kaiming-normal weights with the fan scaled by the density; pass
``--init kaiming-normal --scaled-fan``. (With the search default, signed constants, every |w| is
equal, alpha is that constant and biprop computes exactly what edge-popup does.) The optimiser
is the search default (SGD lr 0.1, cosine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..models import InputSpec
from ..nn.layers import SupermaskConv2d, SupermaskLinear
from . import METHODS, Method
from .edge_popup import build_edge_popup, retype

if TYPE_CHECKING:  # pragma: no cover
    from ..search import SearchConfig


class BinarisedMixin:
    """Kept weights become sign(w) * alpha, alpha = mean |w| over the layer's kept weights."""

    def effective_weight(self, mask: Tensor) -> Tensor:
        kept = mask.detach()
        alpha = (self.weight.abs() * kept).sum() / kept.sum().clamp_min(1)
        return torch.sign(self.weight) * alpha * mask


class BinarisedConv2d(BinarisedMixin, SupermaskConv2d):
    pass


class BinarisedLinear(BinarisedMixin, SupermaskLinear):
    pass


def build_biprop(config: "SearchConfig", spec: InputSpec) -> nn.Module:
    return retype(build_edge_popup(config, spec), BinarisedConv2d, BinarisedLinear)


METHODS.add("biprop", Method(
    "biprop",
    "Diffenderfer & Kailkhura 2021: edge-popup mask over binarised weights sign(w)*alpha per layer",
    build_biprop,
))
