"""Bernoulli supermasks (Zhou, Lan, Liu & Yosinski 2019, "Deconstructing Lottery Tickets").

Each weight's score ``s`` gives a keep probability ``sigmoid(s)``. Every training forward pass
samples the mask ``m ~ Bernoulli(sigmoid(s))`` and the gradient reaches ``s`` straight through
the sample (``m + p - p.detach()``). Evaluation and the saved ticket use the thresholded mask
``sigmoid(s) > 0.5`` (i.e. ``s > 0``). Nothing imposes a density: it is an outcome, reported per
layer like every method's. ``--density`` sets where the search starts: scores begin at
``logit(density)`` plus the score initialiser's small noise, so the first sampled masks have
that density in expectation.

Defaults: the frozen weights are signed constants (the paper's best "signed Kaiming constant"
init); SGD with momentum and cosine decay as every search, but lr 30 (the CLI's default for this
method): the scores move through a sigmoid, and Zhou et al. train them with learning rates of
this order (lr 100 in their code). Measured on LeNet-300-100 / mnist-5k at density 0.2, 5 epochs:
lr 0.1 never lifts a score past 0 (an empty thresholded mask), lr 30 gives 70.6% at density
0.153, lr 100 67.0% at density 0.485.
The mask samples use the torch RNG, whose state every checkpoint holds: resume stays exact.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..models import InputSpec
from ..nn.layers import SupermaskConv2d, SupermaskLinear, supermask_layers
from . import METHODS, Method
from .edge_popup import build_edge_popup, retype

if TYPE_CHECKING:  # pragma: no cover
    from ..search import SearchConfig


class BernoulliMaskMixin:
    """A supermask layer whose mask is sampled from sigmoid(scores) while training."""

    @torch.compiler.disable
    def forward_mask(self) -> Tensor:
        if self._use_cached_mask():
            key = ("bernoulli", self.scores._version, self.scores.data_ptr())
            if self._mask_cache is None or self._mask_cache_key != key:
                self._mask_cache = (self.scores > 0).to(self.scores.dtype)
                self._mask_cache_key = key
            return self._mask_cache
        p = torch.sigmoid(self.scores)
        if self.training:
            sample = torch.bernoulli(p.detach())
        else:
            sample = (self.scores > 0).to(p.dtype)
        return sample + (p - p.detach())  # exactly the sample; the gradient reaches p

    @torch.no_grad()
    def mask(self) -> Tensor:
        """The deterministic mask: keep where the keep probability exceeds 0.5."""
        return (self.scores > 0).to(self.scores.dtype)


class BernoulliConv2d(BernoulliMaskMixin, SupermaskConv2d):
    pass


class BernoulliLinear(BernoulliMaskMixin, SupermaskLinear):
    pass


def build_bernoulli(config: "SearchConfig", spec: InputSpec) -> nn.Module:
    model = retype(build_edge_popup(dataclasses.replace(config, scope="layerwise"), spec), BernoulliConv2d, BernoulliLinear)
    start = math.log(config.density / (1 - config.density)) if config.density < 1 else 6.0
    with torch.no_grad():
        for _, layer in supermask_layers(model):
            layer.scores.add_(start)
    return model


METHODS.add("bernoulli", Method(
    "bernoulli",
    "Zhou et al. 2019: Bernoulli(sigmoid(scores)) masks sampled each step; the density is an outcome",
    build_bernoulli,
    density_is_outcome=True,
    train_defaults={"lr": 30.0},
))
