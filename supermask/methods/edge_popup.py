"""edge-popup (Ramanujan et al. 2020): frozen random weights, a learned score per weight, the
top-k |scores| kept in every forward pass, gradients to the scores straight through the mask."""

from __future__ import annotations

from typing import Optional

from torch import nn

from ..models import InputSpec, create_model, supermask_layer_types
from ..nn import attach_global_scope, init_model
from ..nn.channels import CHANNEL
from ..nn.layers import link_channels, link_heads
from ..structure import HEAD
from .registry import METHODS, Method


def build_edge_popup(config: "SearchConfig", spec: InputSpec, conv: Optional[type] = None,
                     linear: Optional[type] = None, global_scope: Optional[bool] = None) -> nn.Module:
    """Frozen random weights from ``config.init``/``config.seed``; scores trained; top-k mask per forward.

    ``conv``/``linear``: a method's supermask layer types (its mask rule), built in place of
    edge-popup's; ``global_scope``: whether the layers share one top-k threshold (default: the
    config's scope is global; a method that selects globally otherwise passes False)."""
    layers = config.layer_types(supermask_layer_types(config.density, learned_bn=config.learned_bn,
                                                      structure=config.structure, conv=conv, linear=linear))
    model = create_model(config.arch, spec, layers, **config.model_kwargs())
    if config.structure == HEAD:  # before the draw: one score per head
        link_heads(model)
    init_model(model, config.init, config.seed, scaled_fan=config.scaled_fan, score_init=config.score_init)
    if config.structure == CHANNEL:
        link_channels(model, (spec.in_channels, spec.image_size, spec.image_size))
    if config.scope == "global" if global_scope is None else global_scope:
        attach_global_scope(model, config.density)
    return model


METHODS.add("edge-popup", Method.builtin("edge-popup", build_edge_popup))
