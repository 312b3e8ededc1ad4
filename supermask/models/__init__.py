"""One model zoo for every engine: builders take the layer types (dense, supermask, masked)."""

from . import convnets, gpt, lenet, resnet, vgg, vit  # noqa: F401  (registers the builders)
from .registry import (
    DENSE,
    MODELS,
    InputSpec,
    Layers,
    create_model,
    list_models,
    masked_layer_types,
    register_model,
    supermask_layer_types,
)

__all__ = ["DENSE", "MODELS", "InputSpec", "Layers", "create_model", "list_models", "masked_layer_types",
           "register_model", "supermask_layer_types"]
