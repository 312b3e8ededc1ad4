"""edge-popup (Ramanujan et al. 2020): frozen random weights, a learned score per weight, the
top-k |scores| kept in every forward pass, gradients to the scores straight through the mask."""

from __future__ import annotations

import logging
from typing import Optional

from torch import nn

from ..models import InputSpec, create_model, supermask_layer_types
from ..nn import attach_global_scope, init_model
from ..nn.channels import CHANNEL
from ..nn.layers import link_channels, link_heads
from ..structure import HEAD
from .registry import METHODS, Method

log = logging.getLogger(__name__)


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
    freeze_weights(model, config.learned_bn)
    return model


def freeze_weights(model: nn.Module, learned_bn: bool) -> None:
    """A search trains scores only (and, with ``learned_bn``, the normalisation layers' affine
    parameters): whatever else a builder left trainable (a user's ``nn.MultiheadAttention`` or plain
    ``nn.Linear`` beside the layer types it was given) stays frozen at its random values, unmasked,
    as a ``--keep-dense`` layer does; said once in the log."""
    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    frozen = []
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or name == "scores" or (learned_bn and isinstance(module, norms)):
                continue
            param.requires_grad_(False)
            if not isinstance(module, norms):
                frozen.append(f"{module_name}.{name}" if module_name else name)
    if frozen:
        log.warning("%d tensors of the network are no layer this search masks (%s%s): they stay frozen at their "
                    "random values, unmasked", len(frozen), ", ".join(frozen[:3]), ", ..." if len(frozen) > 3 else "")


METHODS.add("edge-popup", Method.builtin("edge-popup", build_edge_popup))
