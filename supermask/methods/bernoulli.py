"""Bernoulli supermasks (Zhou, Lan, Liu & Yosinski 2019, "Deconstructing Lottery Tickets"), as
the reference code computes them (uber-research/deconstructing-lottery-tickets,
``masked_networks.py``: ``get_effective_mask``, ``make_signed_consts``, ``MaskedDense``).

Each weight's score ``s`` gives a keep probability ``sigmoid(s)``. Every training forward pass
samples the mask ``m ~ Bernoulli(sigmoid(s))`` and the gradient reaches ``s`` straight through
the sample (``m + p - p.detach()``). Nothing imposes a density: it is an outcome, reported per
layer like every method's. ``--density`` sets where the search starts: every score begins at
``logit(density)`` exactly (the reference's ``sigmoid_bias``, 0 by default: density 0.5).

Evaluation samples too, as the reference's does. A ticket must be one network, so the sample
evaluated and kept is a *seeded* one: ``m = (u < sigmoid(s))`` with ``u`` uniform noise drawn
once per layer from (seed, layer name). It is a sample of the learned distribution (its density is
the learned expectation, within sampling noise), the same every time for the same scores, and it
is exactly the mask of the saved ticket and of every export, so the reported accuracy is the
ticket's. (The reference draws fresh noise for every test batch: its accuracy is an average over
masks, none of which it can save.) ``--bernoulli-eval threshold`` evaluates and keeps
``sigmoid(s) > 0.5`` instead.

Weights: Glorot-normal, std sqrt(2 / (fan_in + fan_out)) (``xavier-normal``: the reference's
``kernel_initializer=glorot_normal``, which TF truncates at two standard deviations with the same
variance); ``--init signed-constant-glorot`` is its ``--signed_constant`` (``make_signed_consts``:
sign(w) times the kernel's std). ``--rescale-weights`` is the reference's optional dynamic weight
rescaling: each layer's effective weights are multiplied by n / (kept weights of the current mask),
the gradient reaching the scores through that count too (the reference's multiplier is computed
from the straight-through mask). Off by default, as there.

Optimiser: lr 100 (the reference README's command for the FC network; scores move through a
sigmoid), SGD momentum 0.9, weight decay 0 (the reference regularises only the weights, which are
frozen here); cosine decay and batch 128 as every search, where that command keeps lr constant
with batch 250 (``--schedule constant --batch-size 250``: one training budget for every method). The mask samples use the torch RNG, whose state every
checkpoint holds: resume stays exact.
"""

from __future__ import annotations

import math


import torch
from torch import Tensor, nn

from ..models import InputSpec
from ..seeding import derived_seed
from ..nn.layers import SupermaskConv2d, SupermaskLinear, supermask_layers
from .registry import METHODS, Method
from .edge_popup import build_edge_popup


class BernoulliMaskMixin:
    """A supermask layer whose mask is sampled from sigmoid(scores): freshly at every training
    forward pass, from the layer's fixed noise (or by threshold) at evaluation and for the ticket."""

    bernoulli_eval = "sample"
    rescale_weights = False

    @torch.compiler.disable
    def forward_mask(self) -> Tensor:
        if self._use_cached_mask():
            key = ("bernoulli", self.scores._version, self.scores.data_ptr())
            if self._mask_cache is None or self._mask_cache_key != key:
                self._mask_cache = self.mask()
                self._mask_cache_key = key
            return self._mask_cache
        p = torch.sigmoid(self.scores)
        sample = torch.bernoulli(p.detach()) if self.training else self.mask()
        return sample + (p - p.detach())  # exactly the sample; the gradient reaches p

    @torch.no_grad()
    def mask(self) -> Tensor:
        """The evaluated (and saved) mask: the seeded sample, or sigmoid(s) > 0.5."""
        if self.bernoulli_eval == "threshold":
            return (self.scores > 0).to(self.scores.dtype)
        return (self.eval_noise < torch.sigmoid(self.scores)).to(self.scores.dtype)

    def effective_weight(self, mask: Tensor) -> Tensor:
        weight = self.weight * mask
        if self.rescale_weights:  # Zhou et al.'s dynamic weight rescaling, its gradient through the sum too
            weight = weight * (mask.numel() / mask.sum().clamp_min(1))
        return weight


class BernoulliConv2d(BernoulliMaskMixin, SupermaskConv2d):
    pass


class BernoulliLinear(BernoulliMaskMixin, SupermaskLinear):
    pass


def build_bernoulli(config: "SearchConfig", spec: InputSpec) -> nn.Module:
    model = build_edge_popup(config, spec, BernoulliConv2d, BernoulliLinear, global_scope=False)  # sampled per layer
    start = math.log(config.density / (1 - config.density)) if config.density < 1 else 6.0
    with torch.no_grad():
        for name, layer in supermask_layers(model):
            layer.scores.fill_(start)
            gen = torch.Generator().manual_seed(derived_seed(config.seed, f"bernoulli-eval-{name}"))
            layer.register_buffer("eval_noise", torch.rand(layer.scores.shape, generator=gen).to(layer.scores.device),
                                  persistent=False)
            layer.bernoulli_eval = config.bernoulli_eval or "sample"
            layer.rescale_weights = bool(config.rescale_weights)
    return model


METHODS.add("bernoulli", Method.builtin("bernoulli", build_bernoulli))
