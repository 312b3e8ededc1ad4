"""Gem-Miner (Sreenivasan, Sohn, Yang, Grinde, Nagle, Wang, Xing, Lee & Papailiopoulos 2022,
"Rare Gems: Finding Lottery Tickets at Initialization").

Scores live in [0, 1] and the forward mask is ``round(score)`` (gradient straight through to
the score). After every optimiser step the scores are shrunk by an L2 penalty
(``--score-l2``, lambda: ``s <- s - lr * 2 * lambda * s``), clipped to [0, 1], and frozen ones held
at 0. Iterative freezing drives the density to the target: at the end of epoch ``e`` of ``E``
every score outside the top ``density**(e/E)`` fraction (per layer, or over all layers with
``--scope global``) is frozen at 0, so the last epoch ends at most at ``--density`` (below it if
the rounding has already dropped more: with the default lr 3 the scores move far, and on
LeNet-300-100 at target 0.2 the mask ended at 0.04 (86.0%, lambda 0); with lr 0.3 or 1 it ends at
0.2 exactly but at 67-69%, one seed, 20 epochs each).

Defaults: scores drawn U(0, 1) (``--score-init`` does not apply); lambda = 1e-5 (ours: the paper
tunes it per target; at 1e-3 with lr 3 the penalty alone shrinks every score ~50x over 20 LeNet
epochs, and the masks ended near density 0.017 whatever the target); SGD with momentum and cosine decay, lr 3 (the CLI's default for this
method: scores on [0, 1] are ~30x larger than edge-popup's, so the step must be too; measured
on LeNet-300-100 / mnist-5k at density 0.2, 5 epochs: lr 0.1 48.6%, lr 3 87.4%, lr 30 83.8%).
Gem-Miner's optional fine-tuning of the found ticket (the weak-ticket variant) is
``supermask train --ticket RUN_DIR``, which trains the kept weights of any finished search. Gem-Miner's optional fine-tuning of the found
ticket (training its kept weights) is not built in yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..models import InputSpec
from ..nn.init import derived_seed
from ..nn.layers import SupermaskConv2d, SupermaskLinear, supermask_layers
from ..nn.topk import global_topk_masks, kept_count, topk_mask
from ..training import Callback
from . import METHODS, Method
from .edge_popup import build_edge_popup, retype

if TYPE_CHECKING:  # pragma: no cover
    from ..search import SearchConfig

DEFAULT_L2 = 1e-5


class RoundedMaskMixin:
    """mask = round(score) for scores in [0, 1] (frozen scores are held at 0 by :class:`GemMiner`)."""

    @torch.compiler.disable
    def forward_mask(self) -> Tensor:
        s = self.scores
        hard = (s.detach() >= 0.5).to(s.dtype)
        return hard + (s - s.detach())  # exactly the rounded score; the gradient reaches s

    @torch.no_grad()
    def mask(self) -> Tensor:
        return (self.scores >= 0.5).to(self.scores.dtype)


class RoundedConv2d(RoundedMaskMixin, SupermaskConv2d):
    pass


class RoundedLinear(RoundedMaskMixin, SupermaskLinear):
    pass


def build_gem_miner(config: "SearchConfig", spec: InputSpec) -> nn.Module:
    model = build_edge_popup(config, spec)
    for _, layer in supermask_layers(model):
        object.__setattr__(layer, "global_scope", None)  # freezing does the global part
    model = retype(model, RoundedConv2d, RoundedLinear)
    gen = torch.Generator().manual_seed(derived_seed(config.seed, "gem-miner-scores"))
    with torch.no_grad():
        for _, layer in supermask_layers(model):
            layer.scores.copy_(torch.rand(layer.scores.shape, generator=gen))
            layer.register_buffer("frozen", torch.zeros_like(layer.scores, dtype=torch.bool))
    return model


class GemMiner(Callback):
    def __init__(self, config: "SearchConfig"):
        self.density, self.scope = config.density, config.scope
        self.l2 = DEFAULT_L2 if config.score_l2 is None else config.score_l2
        self.layers = None

    def after_step(self, state, loss, correct, count):
        lr = state.optimizer.param_groups[0]["lr"]
        if self.layers is None:
            self.layers = [layer for _, layer in supermask_layers(state.model)]
        layers = self.layers
        with torch.no_grad():
            for layer in layers:
                layer.scores.mul_(1 - 2 * lr * self.l2).clamp_(0, 1).masked_fill_(layer.frozen, 0)
            if state.batch_in_epoch == state.steps_per_epoch or state.step == state.total_steps:
                epochs = -(-state.total_steps // state.steps_per_epoch)
                self.freeze(layers, self.density ** ((state.epoch + 1) / epochs))

    def freeze(self, layers, density: float) -> None:
        """Freeze at 0 every score outside the top ``density`` fraction (layerwise or global)."""
        ranks = [(layer.scores + 1.0).masked_fill(layer.frozen, 0.0) for layer in layers]  # frozen ones last
        if self.scope == "global":
            keep = global_topk_masks(ranks, density)
        else:
            keep = [topk_mask(r, kept_count(r.numel(), density)) for r in ranks]
        for layer, kept in zip(layers, keep):
            layer.frozen |= kept == 0
            layer.scores.masked_fill_(layer.frozen, 0)


METHODS.add("gem-miner", Method(
    "gem-miner",
    "Sreenivasan et al. 2022: rounded [0, 1] scores, L2 penalty, iterative freezing to the density",
    build_gem_miner,
    callbacks=lambda config: [GemMiner(config)],
    train_defaults={"lr": 3.0},
))
