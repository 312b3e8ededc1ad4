"""IteRand (Chijiwa, Yamaguchi, Ida, Umakoshi & Inoue 2021, "Pruning Randomly Initialized Neural
Networks with Iterative Randomization").

edge-popup, and every ``K`` steps each currently *pruned* weight is re-drawn from the network's
weight initialiser with probability ``r`` (partial re-randomisation): after steps K-1, 2K-1, ...
(before steps K, 2K, ...), as the reference's ``before_callback`` with ``(it + 1) % K == 0``. Kept weights never change.
The re-draws come from generators seeded by (seed, step, layer), so a run and its resume draw the
same weights, and the new weights are part of every checkpoint.

Defaults, the reference's (dchiji-ntt/iterand, ``config.yaml``): ``r = 0.1``
(``--rerandomize-rate``, its ``rerand_lambda``) and ``K = 300`` steps (``--rerandomize-every``,
its ``rerand_freq`` in iterations); weights ``kaiming-uniform`` (its ``init_mode``; the paper's
signed-constant runs: ``--init signed-constant``) and scores ``kaiming-uniform-relu``, U(±√6/√fan_in)
(its ``init_mode_mask``: ``kaiming_uniform_`` with the ReLU gain, 2.45 times edge-popup's). One difference, documented: the mask here is edge-popup's,
the top |scores|; IteRand's code ranks the signed scores ``s`` (its own edge-popup variant).
"""

from __future__ import annotations



import torch
from torch import nn

from ..nn.init import WEIGHT_INITS, _fans, canonical, fan_scale
from ..seeding import derived_seed
from ..nn.layers import supermask_layers
from ..training import Callback
from .registry import METHODS, Method
from .edge_popup import build_edge_popup


@torch.no_grad()
def rerandomize_pruned(model: nn.Module, init: str, seed: int, step: int, rate: float, scaled_fan: bool) -> int:
    """Re-draw each pruned weight of ``model``'s supermask layers with probability ``rate``; returns how many."""
    weight_fn = WEIGHT_INITS.get(canonical(init))
    changed = 0
    for name, layer in supermask_layers(model):
        gen = torch.Generator().manual_seed(derived_seed(seed, f"iterand-{step}-{name}"))
        shape = tuple(layer.weight.shape)
        fan_in, fan_out = _fans(layer.weight)
        pick = torch.rand(shape, generator=gen) < rate
        fresh = weight_fn(shape, fan_in, fan_out, fan_scale(scaled_fan, layer.density), gen)
        redraw = pick.to(layer.weight.device) & (layer.mask() == 0)
        layer.weight.copy_(torch.where(redraw, fresh.to(layer.weight), layer.weight))
        changed += int(redraw.sum())
    return changed


class Rerandomize(Callback):
    def __init__(self, config: "SearchConfig"):
        self.config = config
        self.every, self.rate = config.rerandomize_every, config.rerandomize_rate  # resolved by SearchConfig.validate

    def after_step(self, state, loss, correct, count):
        if (state.step + 1) % self.every == 0:  # before steps K, 2K, ...: the reference's (it + 1) % K
            rerandomize_pruned(state.model, self.config.init, self.config.seed, state.step, self.rate,
                               self.config.scaled_fan)


METHODS.add("iterand", Method.builtin("iterand", build_edge_popup, callbacks=lambda config: [Rerandomize(config)]))
