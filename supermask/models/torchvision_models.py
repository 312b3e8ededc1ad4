"""Any torchvision classification model by name, with random weights (nothing is downloaded)."""

from __future__ import annotations

import torchvision
from torch import nn

from ..errors import SupermaskError, UnknownNameError
from .spec import InputSpec


def check_torchvision_name(name: str) -> str:
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise UnknownNameError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()")
    return name


def torchvision_model(name: str, spec: InputSpec, **kwargs) -> nn.Module:
    """``name`` built for ``spec``: its classes, its input channels, and (vision transformers,
    whose position embedding fixes the image size) the data's image size."""
    check_torchvision_name(name)
    if name.startswith("vit_"):
        kwargs.setdefault("image_size", spec.image_size)
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=spec.num_classes, **kwargs)
    except (AssertionError, ValueError, TypeError) as exc:  # e.g. a patch size that does not divide the image
        raise SupermaskError(f"torchvision/{name} cannot be built for {spec.image_size}-pixel images: "
                             f"{str(exc).strip() or type(exc).__name__}") from None
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
