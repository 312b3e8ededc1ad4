"""edge-popup (Ramanujan et al. 2020): frozen random weights, a learned score per weight, the
top-k |scores| kept in every forward pass, gradients to the scores straight through the mask."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ..models import InputSpec, create_model, supermask_layer_types
from ..nn import attach_global_scope, init_model
from ..nn.channels import CHANNEL
from ..nn.layers import SupermaskConv2d, SupermaskLinear, link_channels
from . import METHODS, Method

if TYPE_CHECKING:  # pragma: no cover
    from ..search import SearchConfig


def build_edge_popup(config: "SearchConfig", spec: InputSpec) -> nn.Module:
    """Frozen random weights from ``config.init``/``config.seed``; scores trained; top-k mask per forward."""
    layers = config.layer_types(supermask_layer_types(config.density, learned_bn=config.learned_bn,
                                                      structure=config.structure))
    model = create_model(config.arch, spec, layers, **config.model_kwargs())
    init_model(model, config.init, config.seed, scaled_fan=config.scaled_fan, score_init=config.score_init)
    if config.structure == CHANNEL:
        link_channels(model, (spec.in_channels, spec.image_size, spec.image_size))
    if config.scope == "global":
        attach_global_scope(model, config.density)
    return model


def retype(model: nn.Module, conv: type, linear: type) -> nn.Module:
    """Give every supermask layer of ``model`` another mask rule: a subclass adding no parameters."""
    for module in model.modules():
        if isinstance(module, SupermaskConv2d):
            module.__class__ = conv
        elif isinstance(module, SupermaskLinear):
            module.__class__ = linear
    return model


METHODS.add("edge-popup", Method.builtin("edge-popup", build_edge_popup))
