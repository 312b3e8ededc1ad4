"""Gem-Miner (Sreenivasan, Sohn, Yang, Grinde, Nagle, Wang, Xing, Lee & Papailiopoulos 2022,
"Rare Gems: Finding Lottery Tickets at Initialization"), as its reference code computes it
(ksreenivasan/pruning_is_enough: ``--algo hc_iter --prune-type BottomK``, ``utils/net_utils.py``,
``utils/conv_type.py``, ``main.py``).

Scores live in [0, 1] (drawn U(0, 1)) and the forward mask is ``score > 0.5`` times the layer's
``flag`` of weights not yet frozen out (the gradient goes straight through to the score). The
loss carries ``lambda * sum(s^2)`` over every score (``--score-l2``, the reference's
``--regularization L2 --lmbda``), the optimiser has no weight decay, and the scores are clipped
to [0, 1] after every step. Every ``--freeze-every`` epochs (5, the reference's ``iter_period``:
after epochs P+1, 2P+1, ... counted from 1, as its ``epoch % P == 0 and epoch != 0`` over epochs
counted from 0) the lowest-|score| fraction ``1 - target**(1/n)`` of the still-flagged weights is
frozen out, over all layers at once (``--scope global``, the reference's) or per layer, with ``n =
floor((E - 1) / P)`` rounds, so the last round reaches ``--density`` and training goes on after it.
The density reached is at most the target: rounding can drop more weights.

One addition, off the reference's path: a run too short for one round (``E <= P``) freezes once,
at its last step, straight to the target (the reference would divide by zero rounds).

Defaults: lambda = 1e-4 (the reference's per-experiment configs range from 1e-6 to 1e-3), SGD
momentum 0.9, weight decay 0, cosine, global scope, as the reference; the lr is ours: 1.0 up to 10
epochs, 1.0 x 10 / epochs beyond (lr times epochs held, :func:`supermask.catalog.scaled_lr`). The
reference's 0.01-0.1 are for 150-300 epochs of CIFAR-10 (~60,000+ steps); on the bundled data's 10
epochs (320 steps) scores on [0, 1] barely move at lr 0.1 (41.2% at target 0.2, LeNet-300-100 with
biases, seed 0), and a fixed lr 1.0 over more epochs lets the penalty take kept scores below 0.5
after the last freezing round: the density falls under the target (0.086 at 20 epochs, 0.024 at
40). Measured on LeNet-300-100 (no biases) / mnist-5k, target 0.2, seed 0, at these defaults:
10 epochs 86.8% at density 0.200, 20 epochs (lr 0.5) 86.6% at 0.200, 40 epochs (lr 0.25) 78.4% at
0.200 (docs/fidelity.md has the three-seed numbers).
Fine-tune the found ticket's kept weights (the paper's weak-ticket variant) with
``supermask train --ticket RUN_DIR``.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from ..models import InputSpec
from ..seeding import derived_seed
from ..nn.layers import SupermaskConv2d, SupermaskLinear, supermask_layers
from ..nn.topk import global_topk_masks, kept_count, topk_mask
from ..training import Callback
from .registry import METHODS, Method
from .edge_popup import build_edge_popup

log = logging.getLogger(__name__)
#: How far the density a run ends at may be from its target before it is said.
TARGET_TOLERANCE = 0.01


class RoundedMaskMixin:
    """mask = (score > 0.5) for scores in [0, 1] (frozen-out scores are held at 0 by :class:`GemMiner`)."""

    @torch.compiler.disable
    def forward_mask(self) -> Tensor:
        s = self.scores
        hard = (s.detach() > 0.5).to(s.dtype)
        return hard + (s - s.detach())  # exactly the rounded score; the gradient reaches s

    @torch.no_grad()
    def mask(self) -> Tensor:
        return (self.scores > 0.5).to(self.scores.dtype)


class RoundedConv2d(RoundedMaskMixin, SupermaskConv2d):
    pass


class RoundedLinear(RoundedMaskMixin, SupermaskLinear):
    pass


def build_gem_miner(config: "SearchConfig", spec: InputSpec) -> nn.Module:
    # the layers round their own scores; the global part is the freezing (GemMiner below)
    model = build_edge_popup(config, spec, RoundedConv2d, RoundedLinear, global_scope=False)
    gen = torch.Generator().manual_seed(derived_seed(config.seed, "gem-miner-scores"))
    with torch.no_grad():
        for _, layer in supermask_layers(model):
            layer.scores.copy_(torch.rand(layer.scores.shape, generator=gen))
            layer.register_buffer("frozen", torch.zeros_like(layer.scores, dtype=torch.bool))
    return model


def freeze_schedule(epochs: int, every: int) -> list[int]:
    """The epochs (counted from 1) after which a freezing round runs: P+1, 2P+1, ... below E."""
    return [1 + every * i for i in range(1, (epochs - 1) // every + 1)]


def round_fraction(target: float, rounds: int) -> float:
    """The fraction of the still-flagged weights each of ``rounds`` rounds freezes out."""
    return 1.0 - target ** (1.0 / rounds)


class GemMiner(Callback):
    def __init__(self, config: "SearchConfig"):
        self.density, self.scope = config.density, config.scope
        self.l2, self.every = config.score_l2, config.freeze_every  # resolved by SearchConfig.validate
        self.layers = None

    def _layers(self, model):
        if self.layers is None:
            self.layers = [layer for _, layer in supermask_layers(model)]
        return self.layers

    def loss_penalty(self, state):
        if self.l2 == 0:
            return None
        return self.l2 * sum((layer.scores ** 2).sum() for layer in self._layers(state.model))

    def after_step(self, state, loss, correct, count):
        layers = self._layers(state.model)
        with torch.no_grad():
            for layer in layers:
                layer.scores.clamp_(0, 1).masked_fill_(layer.frozen, 0)
        end_of_epoch = state.batch_in_epoch == state.steps_per_epoch or state.step == state.total_steps
        if not end_of_epoch:
            return
        epochs = -(-state.total_steps // state.steps_per_epoch)
        rounds = freeze_schedule(epochs, self.every)
        completed = state.epoch + 1  # the loop counts this epoch after the callbacks
        if rounds and completed in rounds:
            self.freeze(layers, round_fraction(self.density, len(rounds)))
        elif not rounds and state.step == state.total_steps:
            self.freeze(layers, 1.0 - self.density)  # too short for a round: straight to the target

    @torch.no_grad()
    def on_train_end(self, state):
        """Say in one line when the run ends away from its target density (after the last freezing
        round the L2 penalty can drive kept scores below 0.5: lr 1.0 is tuned for 10 epochs)."""
        layers = self._layers(state.model)
        kept = sum(int(layer.mask().sum()) for layer in layers)
        density = kept / max(1, sum(layer.scores.numel() for layer in layers))
        if abs(density - self.density) > TARGET_TOLERANCE:
            log.warning("gem-miner ended at density %.3f, not its target %g: the score penalty took kept scores "
                        "below 0.5 after the freezing rounds; a lower --lr or --score-l2 keeps it (the default lr "
                        "holds lr x epochs at 10, the length it is tuned for)", density, self.density)

    @torch.no_grad()
    def freeze(self, layers, fraction: float) -> None:
        """Freeze out the lowest-|score| ``fraction`` of the still-flagged weights (global or per layer)."""
        active = [(~layer.frozen).sum().item() for layer in layers]
        ranks = [(layer.scores.abs() + 1.0).masked_fill(layer.frozen, 0.0) for layer in layers]  # frozen ones last
        if self.scope == "global":
            keep_fraction = (1.0 - fraction) * sum(active) / sum(r.numel() for r in ranks)
            keep = global_topk_masks(ranks, keep_fraction)
        else:
            keep = [topk_mask(r, kept_count(n, 1.0 - fraction)) for r, n in zip(ranks, active)]
        for layer, kept in zip(layers, keep):
            layer.frozen |= kept == 0
            layer.scores.masked_fill_(layer.frozen, 0)


METHODS.add("gem-miner", Method.builtin("gem-miner", build_gem_miner, callbacks=lambda config: [GemMiner(config)]))
