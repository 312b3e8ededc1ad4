"""Strong-ticket methods, each registered by name and selectable with ``--method``.

A method turns the resolved search config and the input shape into the model whose
trainable parameters the one training loop optimises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from torch import nn

from ..models import InputSpec, create_model, supermask_layer_types
from ..nn import attach_global_scope, init_model
from ..registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from ..search import SearchConfig


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    build: Callable[["SearchConfig", InputSpec], nn.Module]


METHODS: Registry[Method] = Registry("method")


def build_edge_popup(config: "SearchConfig", spec: InputSpec) -> nn.Module:
    """Frozen random weights from ``config.init``/``config.seed``; scores trained; top-k mask per forward."""
    layers = supermask_layer_types(config.density, learned_bn=config.learned_bn)
    model = create_model(config.arch, spec, layers, **config.model_kwargs())
    init_model(model, config.init, config.seed, scaled_fan=config.scaled_fan, score_init=config.score_init)
    if config.scope == "global":
        attach_global_scope(model, config.density)
    return model


METHODS.add("edge-popup", Method(
    "edge-popup",
    "Ramanujan et al. 2020: learned scores, top-k mask, straight-through gradient",
    build_edge_popup,
))
