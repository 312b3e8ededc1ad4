"""biprop (Diffenderfer & Kailkhura 2021, "Multi-Prize Lottery Ticket Hypothesis").

The edge-popup mask, over binarised weights: a kept weight computes with ``sign(w) * alpha``,
``alpha`` the mean |w| of the kept weights of its layer, so each layer's effective weights take
exactly two magnitudes (0 and alpha). ``alpha`` follows the mask as it changes (computed from
the current mask, without a gradient of its own); the scores get the straight-through gradient
of the binarised product. ``--scope global`` uses one score threshold over all layers (the
paper's global variant).

The score gradient is the reference's (chrundle/biprop ``utils/conv_type.py``,
``GetQuantnet_binary``): the incoming gradient times |w| through the quantised net, times sign(w)
from ``w = sign(w) * quantnet``: ``g * w``, not the ``g * sign(w) * alpha`` of differentiating
the product. alpha counts the kept weights exactly (the reference divides by ``int(k * n)``,
which can differ from the number of ones by one).

Defaults, the reference's small-scale configs (``configs/smallscale/conv4/conv4_kn_unsigned.yml``):
Kaiming-normal weights with the fan scaled by the density (``--init kaiming-normal --scaled-fan``;
with signed constants every |w| is equal and biprop's forward is edge-popup's), SGD lr 0.1,
momentum 0.9, weight decay 1e-4, cosine.
"""

from __future__ import annotations



import torch
from torch import Tensor, nn

from ..models import InputSpec
from ..nn.layers import SupermaskConv2d, SupermaskLinear
from .registry import METHODS, Method
from .edge_popup import build_edge_popup


class BinarisedMixin:
    """Kept weights become sign(w) * alpha, alpha = mean |w| over the layer's kept weights; the
    mask's gradient is the reference's: g * |w| through the quantised net, i.e. g * w in all."""

    def effective_weight(self, mask: Tensor) -> Tensor:
        kept = mask.detach()
        alpha = (self.weight.abs() * kept).sum() / kept.sum().clamp_min(1)
        # value sign(w) * alpha * mask; gradient to the mask w (not sign(w) * alpha): biprop's GetQuantnet_binary
        return torch.sign(self.weight) * alpha * kept + self.weight * (mask - kept)


class BinarisedConv2d(BinarisedMixin, SupermaskConv2d):
    pass


class BinarisedLinear(BinarisedMixin, SupermaskLinear):
    pass


def build_biprop(config: "SearchConfig", spec: InputSpec) -> nn.Module:
    return build_edge_popup(config, spec, BinarisedConv2d, BinarisedLinear)


METHODS.add("biprop", Method.builtin("biprop", build_biprop))
