"""The model registry, the layer types the builders take, and ``create_model``."""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Optional

from torch import Tensor, nn

from ..catalog import TORCHVISION_PREFIX, torchvision_name
from ..errors import SupermaskError
from ..registry import Registry
from .spec import InputSpec

MODELS: Registry[Callable[..., nn.Module]] = Registry("architecture")


def register_model(name: str, task: str = "image-classification") -> Callable:
    """Register a builder ``(spec, layers, width=1.0, ...) -> nn.Module`` under ``name``; ``task``
    says what data it models: "image-classification" (images in, a score per class out) or
    "language-model" (windows of characters in, next-character scores at each position out)."""

    def decorate(builder: Callable) -> Callable:
        builder.supermask_task = task
        return MODELS.add(name, builder)

    return decorate


def model_task(arch: str) -> str:
    """The task architecture ``arch`` models (a torchvision model classifies images)."""
    if torchvision_name(arch) is not None:
        return "image-classification"
    return getattr(MODELS.get(arch), "supermask_task", "image-classification")



@dataclass(frozen=True)
class Layers:
    """The layer types a builder uses. One architecture definition serves every variant.

    ``conv`` and ``linear`` are called like ``nn.Conv2d`` / ``nn.Linear``; ``norm`` like
    ``nn.BatchNorm2d`` (``None``: no normalisation); ``layer_norm`` like ``nn.LayerNorm``. ``adapt`` turns a model built
    elsewhere (a torchvision model) into this variant.
    """

    conv: Callable[..., nn.Module] = nn.Conv2d
    linear: Callable[..., nn.Module] = nn.Linear
    norm: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d
    layer_norm: Callable[..., nn.Module] = nn.LayerNorm
    adapt: Callable[[nn.Module], nn.Module] = field(default=lambda model: model)
    # Tensors a builder draws itself (a ViT's class token and position embeddings, token
    # embeddings): trained in dense and IMP networks, frozen with the random weights in a search.
    parameter: Callable[[Tensor], nn.Parameter] = nn.Parameter
    embedding: Callable[..., nn.Module] = nn.Embedding
    # Dropout before the fully connected layers of the builders that have them (LeNet, Conv-N,
    # VGG's classifier), as Frankle & Carbin 2019 Sec. 4; None: no dropout (and no extra modules).
    dropout: Optional[Callable[[], nn.Module]] = None

    def with_dropout(self, rate: float) -> "Layers":
        """These layer types with dropout of ``rate`` (0: unchanged)."""
        return dataclasses.replace(self, dropout=partial(nn.Dropout, rate)) if rate > 0 else self

    def then_dropout(self, module: nn.Module) -> nn.Module:
        """``module`` followed by this variant's dropout, if it has one. The pair holds no parameters,
        so the state dict's names do not move when dropout is switched on."""
        return nn.Sequential(module, self.dropout()) if self.dropout is not None else module


DENSE = Layers()


def supermask_layer_types(density: float, learned_bn: bool = False, structure: Optional[str] = None,
                          conv: Optional[type] = None, linear: Optional[type] = None) -> Layers:
    """Layer types for the strong-ticket variant: supermask conv/linear (``conv``/``linear``: a
    method's subclasses of them, with its own mask rule), non-affine BN by default."""
    from ..nn import SupermaskConv2d, SupermaskLinear, check_density, convert

    density = check_density(density)
    conv, linear = conv or SupermaskConv2d, linear or SupermaskLinear
    return Layers(
        conv=partial(conv, density=density, structure=structure),
        linear=partial(linear, density=density, structure=structure),
        norm=nn.BatchNorm2d if learned_bn else partial(nn.BatchNorm2d, affine=False),
        layer_norm=nn.LayerNorm if learned_bn else partial(nn.LayerNorm, elementwise_affine=False),
        parameter=partial(nn.Parameter, requires_grad=False),
        embedding=_frozen_embedding,
        # init=None: the builder's caller draws the weights (init_model) after adapting.
        adapt=(_no_channel_adapt if structure == "channel" else
               partial(convert, density=density, init=None, bn="learned" if learned_bn else "non-affine",
                       structure=structure, inplace=True, layer_types=(conv, linear))),
    )


def _frozen_embedding(*args, **kwargs) -> nn.Embedding:
    """``nn.Embedding`` whose table is a frozen random weight (a search trains scores only)."""
    embedding = nn.Embedding(*args, **kwargs)
    embedding.weight.requires_grad_(False)
    return embedding


def _no_channel_adapt(model: nn.Module) -> nn.Module:
    raise SupermaskError("--structure channel applies to the zoo's chain networks (conv2-8, lenet_300_100, "
                         "vgg11/16/19), not to torchvision models")


def masked_layer_types() -> Layers:
    """Layer types for weak tickets (IMP): dense layers with a ``weight_mask`` buffer."""
    from ..nn.masked import MaskedConv2d, MaskedLinear

    return Layers(conv=MaskedConv2d, linear=MaskedLinear, norm=nn.BatchNorm2d, adapt=_to_masked)


def _to_masked(model: nn.Module) -> nn.Module:
    """Swap the Conv2d/Linear of a model built elsewhere for masked versions holding the same weights."""
    from ..nn.attention import split_attention
    from ..nn.masked import MaskedConv2d, MaskedLinear, MaskedMixin

    split_attention(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, MaskedMixin) or not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if isinstance(module, nn.Conv2d):
            new = MaskedConv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                               padding=module.padding, dilation=module.dilation, groups=module.groups,
                               bias=module.bias is not None, padding_mode=module.padding_mode)
        else:
            new = MaskedLinear(module.in_features, module.out_features, bias=module.bias is not None)
        new.load_state_dict(module.state_dict(), strict=False)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def create_model(
    name: str,
    spec: InputSpec = InputSpec(),
    layers: Layers = DENSE,
    **kwargs,
) -> nn.Module:
    """Build architecture ``name`` for inputs ``spec`` with ``layers``.

    ``torchvision/<model>`` builds any torchvision classification model (random weights)
    and adapts it to ``layers`` through :func:`supermask.nn.convert`.
    """
    import torch

    from .budget import building_on_meta, check_fits

    what = f"{name} at {_options_text(kwargs)}"
    if not building_on_meta():  # shapes first, on the meta device: refuse what cannot be allocated
        with torch.device("meta"):
            check_fits(create_model(name, spec, layers, **kwargs), what)
    try:
        if torchvision_name(name) is not None:
            from .torchvision_models import torchvision_model

            return layers.adapt(torchvision_model(torchvision_name(name), spec, **kwargs))
        builder = MODELS.get(name)
        model = _user_build(builder, name, spec, layers, kwargs) if _is_user_code(builder) else builder(
            spec, layers, **kwargs)
        return model
    except TypeError as exc:  # torch's argument errors may carry a C++ trace: the first line says it
        raise SupermaskError(f"architecture {name!r}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
                             ) from None
    except SupermaskError:
        raise
    except ValueError as exc:  # a builder refusing the input or its options (a patch size, a head count)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SupermaskError(f"{name} cannot take {spec.describe()} at {_options_text(kwargs)}: {first}") from None
    except (OverflowError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "overflow" not in str(exc).lower():
            raise
        raise SupermaskError(f"{what}: its tensors' sizes overflow ({str(exc).splitlines()[0]}): "
                             f"refused before allocating (a smaller --width?)") from None


def _is_user_code(builder) -> bool:
    package = str(getattr(builder, "__module__", "")).partition(".")[0]
    return package not in ("supermask", "supermask_imp")


def _user_build(builder, name: str, spec: InputSpec, layers: Layers, kwargs: dict) -> nn.Module:
    """A builder registered by ``--import`` code: what it raises or returns wrongly is one line."""
    try:
        model = builder(spec, layers, **kwargs)
    except SupermaskError:
        raise
    except Exception as exc:
        if isinstance(exc, RuntimeError) and "overflow" in str(exc).lower():
            raise
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise SupermaskError(f"architecture {name!r}: its builder ({getattr(builder, '__module__', '?')}."
                             f"{getattr(builder, '__name__', '?')}) raised {type(exc).__name__}"
                             f"{': ' + text if text else ''}") from None
    if not isinstance(model, nn.Module):
        raise SupermaskError(f"architecture {name!r}: its builder returned {type(model).__name__}, not an nn.Module")
    _check_maskable(model, name, layers)
    return model


def _check_maskable(model: nn.Module, name: str, layers: Layers) -> None:
    """A builder given mask-bearing layer types that used none of them (plain ``nn.Linear``
    throughout) would be "searched" by training its dense weights, or pruned of nothing: refused,
    naming the remedy."""
    from ..nn.layers import SupermaskMixin
    from ..nn.masked import MaskedMixin

    if layers.linear is nn.Linear and layers.conv is nn.Conv2d:
        return  # dense layer types: nothing to mask
    if not any(isinstance(m, (SupermaskMixin, MaskedMixin)) for m in model.modules()):
        raise SupermaskError(f"architecture {name!r} has no layer this engine can mask (its builder made its layers "
                             f"with plain torch.nn): build them with the layer types it is given (layers.linear, "
                             f"layers.conv), or build a plain model and pass it through supermask.convert")


def _options_text(kwargs: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in kwargs.items()) or "its default size"


def list_models() -> list[str]:
    return MODELS.names() + [TORCHVISION_PREFIX + "<name>"]
