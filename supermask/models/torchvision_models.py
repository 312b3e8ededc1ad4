"""Any torchvision classification model by name, with random weights (nothing is downloaded)."""

from __future__ import annotations

import torchvision
from torch import nn

from ..errors import UnknownNameError
from .registry import InputSpec


def check_torchvision_name(name: str) -> str:
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise UnknownNameError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()")
    return name


def torchvision_model(name: str, spec: InputSpec, **kwargs) -> nn.Module:
    check_torchvision_name(name)
    model = torchvision.models.get_model(name, weights=None, num_classes=spec.num_classes, **kwargs)
    if spec.in_channels != 3:
        _adapt_first_conv(model, spec.in_channels)
    return model


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Rebuild the first Conv2d for ``in_channels`` inputs (e.g. grey-scale MNIST)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride,
                            module.padding, module.dilation, module.groups, module.bias is not None)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
            return
