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

Defaults, the reference's small-scale configs (``configs/smallscale/conv4/conv4_kn_unsigned.yml``)
as its code computes them: Kaiming-normal weights with a scaled fan, scaled as its
``utils/builder.py`` does, by one minus its rate argument, which there is the kept fraction, i.e. by one
minus the density (``--scaled-fan-rule reference-code``; the paper's text, the fan times the
density, is ``--scaled-fan-rule paper``; the two agree at 0.5; with signed constants every |w| is
equal and biprop's forward is edge-popup's), SGD lr 0.1, momentum 0.9, weight decay 1e-4, cosine.
With ``--scope global`` at a density of at most 0.5 the kept fraction starts at 0.5 and falls to
the density over the first ``--density-ramp-epochs`` (10) epochs, cubically, as its ``main.py``
("to avoid layer collapse"); a run of at most 10 epochs so ends a little above its density.
"""

from __future__ import annotations



import torch
from torch import Tensor, nn

from ..models import InputSpec
from ..nn.layers import SupermaskConv2d, SupermaskLinear, supermask_layers
from ..training import Callback
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
    model = build_edge_popup(config, spec, BinarisedConv2d, BinarisedLinear)
    if config.density_ramp_epochs:  # the untrained network is evaluated at epoch 0's kept fraction
        DensityRamp(config).set_for(model, epoch=0)
    return model


def ramped_density(target: float, epoch: int, ramp_epochs: int) -> float:
    """The kept fraction of epoch ``epoch`` (from 0): from 0.5 down to ``target`` over ``ramp_epochs``,
    cubic, as biprop's main.py (a decay ``(1 - epoch / 10) ** 3`` of the removed fraction); ``target``
    from epoch ``ramp_epochs`` on."""
    if epoch >= ramp_epochs:
        return target
    return target + (0.5 - target) * (1 - epoch / ramp_epochs) ** 3


class DensityRamp(Callback):
    """Sets the global threshold's density at the start of every epoch (it depends on the epoch only,
    so a resumed run continues it exactly)."""

    def __init__(self, config: "SearchConfig"):
        self.target, self.epochs = config.density, config.density_ramp_epochs

    def set_for(self, model: nn.Module, epoch: int) -> None:
        scope = next(layer.global_scope for _, layer in supermask_layers(model))
        scope.density = ramped_density(self.target, epoch, self.epochs)

    def on_epoch_start(self, state):
        self.set_for(state.model, state.epoch)


def biprop_callbacks(config: "SearchConfig") -> list[Callback]:
    return [DensityRamp(config)] if config.density_ramp_epochs else []


METHODS.add("biprop", Method.builtin("biprop", build_biprop, callbacks=biprop_callbacks))
