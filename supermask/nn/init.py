"""Seeded initialisers for the frozen random weights and for the scores.

Every random draw goes through an explicit ``torch.Generator`` on the CPU, so a
seed gives the same random network and the same scores on any machine and
device. Weights and scores use two generators derived from the one seed, so
changing the score initialiser never changes the network.

Weight initialisers (``fan`` is the layer's fan-in; with ``scaled_fan`` it is
multiplied by the layer's density, as in Ramanujan et al. 2020, Sec. 4 (``True`` or ``"paper"``),
or by one minus it, as hidden-networks' and biprop's code do (``"reference-code"``: their
rate argument is the kept fraction, and ``builder.py`` scales by one minus it; the two agree
at density 0.5); ``gain`` is sqrt(2), the ReLU gain):

- ``kaiming-normal``:   N(0, std²), std = gain / sqrt(fan)
- ``kaiming-uniform``:  U(-sqrt(3)·std, sqrt(3)·std)
- ``signed-constant``:  sign(N(0, 1)) · std  (each weight ±std, the edge-popup paper's best)
- ``signed-constant-glorot``: sign(N(0, 1)) · sqrt(2 / (fan_in + fan_out)) (Zhou et al. 2019: the
  std of the Glorot-normal init their signed constants take)
- ``unsigned-constant``: +std everywhere
- ``xavier-normal``:    N(0, 2 / (fan_in + fan_out)) (gain 1; both fans scaled with ``scaled_fan``)

Biases, where a layer has them, are drawn U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's default).

Score initialisers: ``kaiming-uniform`` (default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e.
PyTorch's kaiming_uniform with a = sqrt(5), as the edge-popup reference), ``kaiming-normal``
(N(0, 2/fan_in)) and ``uniform`` (U(0, 1)).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ..registry import Registry
from ..seeding import derived_seed

WeightInit = Callable[[tuple, int, int, float, torch.Generator], Tensor]
WEIGHT_INITS: Registry[WeightInit] = Registry("init")
SCORE_INITS: Registry[Callable[[tuple, int, torch.Generator], Tensor]] = Registry("score init")

RELU_GAIN = math.sqrt(2.0)


def canonical(name: str) -> str:
    """``signed_constant`` and ``signed-constant`` name the same initialiser."""
    return name.replace("_", "-").lower()


@WEIGHT_INITS.register("kaiming-normal")
def _kaiming_normal(shape, fan_in, fan_out, scale, gen):
    std = RELU_GAIN / math.sqrt(fan_in * scale)
    return torch.randn(shape, generator=gen) * std


@WEIGHT_INITS.register("kaiming-uniform")
def _kaiming_uniform(shape, fan_in, fan_out, scale, gen):
    bound = math.sqrt(3.0) * RELU_GAIN / math.sqrt(fan_in * scale)
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


@WEIGHT_INITS.register("signed-constant")
def _signed_constant(shape, fan_in, fan_out, scale, gen):
    std = RELU_GAIN / math.sqrt(fan_in * scale)
    signs = torch.where(torch.randn(shape, generator=gen) >= 0, 1.0, -1.0)
    return signs * std


@WEIGHT_INITS.register("signed-constant-glorot")
def _signed_constant_glorot(shape, fan_in, fan_out, scale, gen):
    std = math.sqrt(2.0 / ((fan_in + fan_out) * scale))
    signs = torch.where(torch.randn(shape, generator=gen) >= 0, 1.0, -1.0)
    return signs * std


@WEIGHT_INITS.register("unsigned-constant")
def _unsigned_constant(shape, fan_in, fan_out, scale, gen):
    return torch.full(shape, RELU_GAIN / math.sqrt(fan_in * scale))


@WEIGHT_INITS.register("xavier-normal")
def _xavier_normal(shape, fan_in, fan_out, scale, gen):
    std = math.sqrt(2.0 / ((fan_in + fan_out) * scale))
    return torch.randn(shape, generator=gen) * std


@SCORE_INITS.register("kaiming-uniform")
def _score_kaiming_uniform(shape, fan_in, gen):
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


@SCORE_INITS.register("kaiming-uniform-relu")
def _score_kaiming_uniform_relu(shape, fan_in, gen):
    """``nn.init.kaiming_uniform_(mode="fan_in", nonlinearity="relu")``: U(±sqrt(6 / fan_in)), IteRand's
    (2.45 times hidden-networks' ``kaiming-uniform``, whose a = sqrt(5) gives U(±1 / sqrt(fan_in)))."""
    bound = math.sqrt(3.0) * RELU_GAIN / math.sqrt(fan_in)
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


@SCORE_INITS.register("kaiming-normal")
def _score_kaiming_normal(shape, fan_in, gen):
    return torch.randn(shape, generator=gen) * (RELU_GAIN / math.sqrt(fan_in))


@SCORE_INITS.register("uniform")
def _score_uniform(shape, fan_in, gen):
    return torch.rand(shape, generator=gen)


def _fans(weight: Tensor) -> tuple[int, int]:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return int(fan_in), int(fan_out)


SCALED_FAN_RULES = ("paper", "reference-code")


def fan_scale(scaled_fan, density: float) -> float:
    """What a layer's fan is multiplied by: 1 (``scaled_fan`` False), its density (True, "paper") or
    one minus its density ("reference-code")."""
    if not scaled_fan:
        return 1.0
    return 1.0 - density if scaled_fan == "reference-code" else density


@torch.no_grad()
def init_model(
    model: nn.Module,
    weight_init: str | None = "signed-constant",
    seed: int = 0,
    *,
    scaled_fan: "bool | str" = False,
    score_init: str = "kaiming-uniform",
) -> nn.Module:
    """Re-draw the weights (and scores) of every Conv2d/Linear of ``model`` from ``seed``.

    ``weight_init=None`` keeps the weights as they are and only re-draws the scores.
    Layers are visited in module order; the draws are made on the CPU and copied to
    each tensor's device.
    """
    from .layers import SupermaskMixin  # local: layers imports topk only

    weight_fn = WEIGHT_INITS.get(canonical(weight_init)) if weight_init is not None else None
    score_fn = SCORE_INITS.get(canonical(score_init))
    weight_gen = torch.Generator().manual_seed(derived_seed(seed, "weights"))
    score_gen = torch.Generator().manual_seed(derived_seed(seed, "scores"))
    for module in model.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        shape = tuple(module.weight.shape)
        fan_in, fan_out = _fans(module.weight)
        if weight_fn is not None:
            scale = fan_scale(scaled_fan, module.density) if isinstance(module, SupermaskMixin) else 1.0
            module.weight.copy_(weight_fn(shape, fan_in, fan_out, scale, weight_gen))
            if module.bias is not None:
                bound = 1.0 / math.sqrt(fan_in)
                module.bias.copy_((torch.rand(module.bias.shape, generator=weight_gen) * 2 - 1) * bound)
        if isinstance(module, SupermaskMixin):
            module.scores.copy_(score_fn(tuple(module.scores.shape), fan_in, score_gen))  # channel: (out, 1, ...)
    return model
