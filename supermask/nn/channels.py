"""Channel masks: whole output channels (a convolution's filters, a Linear layer's rows) kept or
removed, with the next layer's input channels removed with them.

A channel structure applies to a *chain*: a network whose Conv2d/Linear layers run one after
another, with only per-channel operations between them (ReLU, BatchNorm, pooling, dropout,
flatten): Conv-2/4/6/8, LeNet-300-100, the VGGs. :func:`channel_chain` finds the chain and
proves it, by running the network's leaf modules one after another on a random input and
comparing with the network's own output. Each link names a layer, the BatchNorm layers that
follow it, and how many inputs of the next layer each of its output channels feeds (1, or
``h * w`` where a convolution's map is flattened into a Linear layer).

The rule, in both engines: a layer's weight mask is ``out[c] * in[j]``, ``out`` its own channel
mask and ``in`` the previous layer's (repeated over the flattened map). The last layer keeps
all its outputs (the classes). A removed channel feeds nothing downstream, so what the layer,
its bias and its BatchNorm compute for it does not matter, and :func:`compact_dense` can remove
it physically (the channel, its BatchNorm entries and the next layer's inputs) without changing
any output.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ..errors import SupermaskError

from .nm import CHANNEL  # noqa: F401  (the structure's name)

#: Leaf modules that act on every channel separately: a chain may hold them between its layers.
PER_CHANNEL = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity,
               nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
               nn.AdaptiveMaxPool2d, nn.Dropout, nn.Flatten)
CHAIN_ARCHS = ("conv2", "conv4", "conv6", "conv8", "lenet_300_100", "vgg11", "vgg16", "vgg19")


@dataclass
class Link:
    """One layer of a chain."""

    name: str  # the layer's qualified name (its weight is ``<name>.weight``)
    layer: nn.Module
    norms: list[str]  # the BatchNorm layers between it and the next layer
    repeat: int = 1  # inputs of the next layer per output channel (h*w after a flatten; 1 otherwise)

    @property
    def out_channels(self) -> int:
        return self.layer.weight.shape[0]


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]


class NotAChain(SupermaskError):
    """A network that is no chain of layers with only per-channel operations between them; ``what``
    says where it stops being one."""

    def __init__(self, what: str):
        self.what = what
        super().__init__(f"--structure channel needs a chain of layers with only per-channel operations between "
                         f"them ({', '.join(CHAIN_ARCHS)}): {what}")


def _refuse(what: str) -> SupermaskError:
    return NotAChain(what)


@torch.no_grad()
def channel_chain(model: nn.Module, input_shape: tuple[int, ...]) -> list[Link]:
    """The chain of ``model``'s Conv2d/Linear layers, in the order they run, proven on one random
    input of ``input_shape`` (C, H, W); a network that is no chain is a ``SupermaskError``."""
    leaves = _leaves(model)
    links: list[Link] = []
    for name, module in leaves:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if isinstance(module, nn.Conv2d) and module.groups != 1:
                raise _refuse(f"{name} is a grouped convolution")
            links.append(Link(name, module, []))
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not links:
                raise _refuse(f"{name} normalises the input before any layer")
            links[-1].norms.append(name)
        elif not isinstance(module, PER_CHANNEL):
            raise _refuse(f"{name} is a {type(module).__name__}")
    if len(links) < 2:
        raise _refuse("it has fewer than two layers")
    device = next(model.parameters()).device
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = model.training
    model.eval()
    try:
        expected = model(x)
        y, feeding = x, {}
        for name, module in leaves:
            if isinstance(module, nn.Linear) and y.dim() > 2:
                y = y.flatten(1)
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                feeding[name] = y.shape[1]
            y = module(y)
        same = y.shape == expected.shape and torch.allclose(y, expected, rtol=1e-4, atol=1e-5)
    except RuntimeError:
        same = False
    finally:
        model.train(was_training)
    if not same:
        raise _refuse(f"{type(model).__name__} does not run its layers one after another (residual connections?)")
    for link, consumer in zip(links, links[1:]):
        fed = feeding[consumer.name]
        if fed % link.out_channels:
            raise _refuse(f"{consumer.name} takes {fed} inputs from {link.out_channels} channels of {link.name}")
        link.repeat = fed // link.out_channels
    return links


def input_mask(out_mask: Tensor, repeat: int, weight_dim: int) -> Tensor:
    """The previous layer's channel mask (any shape, ``out`` entries) as a mask over this layer's
    inputs, shaped to broadcast against its weight: ``(1, in)`` or ``(1, in, 1, 1)``."""
    flat = out_mask.reshape(-1)
    if repeat > 1:
        flat = flat.repeat_interleave(repeat)
    return flat.view(1, -1, *([1] * (weight_dim - 2)))


def weight_masks(links: list[Link], channel_masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each chain layer's weight mask (keyed ``<name>.weight``) from the channel masks of its outputs
    (keyed by layer name; the last layer's outputs are all kept and need none)."""
    out = {}
    previous: Optional[Tensor] = None
    for i, link in enumerate(links):
        weight = link.layer.weight
        rows = channel_masks[link.name] if i < len(links) - 1 else torch.ones(weight.shape[0])
        mask = rows.to(weight.device, weight.dtype).view(-1, *([1] * (weight.dim() - 1))).expand_as(weight)
        if previous is not None:
            mask = mask * input_mask(previous.to(weight.device, weight.dtype), links[i - 1].repeat, weight.dim())
        out[f"{link.name}.weight"] = mask.contiguous()
        previous = rows
    return out


def kept_channels(links: list[Link], weights: dict[str, Tensor]) -> list[Tensor]:
    """For every layer but the last, the indices of its output channels that feed the next layer:
    those whose inputs of the next layer hold any nonzero weight (``weights``: weights x mask, by
    weight name). Removing the others changes no output."""
    kept = []
    for link, consumer in zip(links, links[1:]):
        w = weights[f"{consumer.name}.weight"]
        per_input = w.detach().ne(0).transpose(0, 1).reshape(w.shape[1], -1).any(dim=1)
        per_channel = per_input.view(link.out_channels, link.repeat).any(dim=1)
        kept.append(per_channel.nonzero().flatten().cpu())
    return kept


def _smaller_conv(conv: nn.Conv2d, weight: Tensor, bias: Optional[Tensor]) -> nn.Conv2d:
    new = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, bias=bias is not None, padding_mode=conv.padding_mode,
                    device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias)
    return new


def _smaller_linear(weight: Tensor, bias: Optional[Tensor]) -> nn.Linear:
    with warnings.catch_warnings():  # a layer left with no channels: "Initializing zero-element tensors"
        warnings.simplefilter("ignore", UserWarning)
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                        dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias)
    return new


def _smaller_norm(norm: nn.modules.batchnorm._BatchNorm, kept: Tensor) -> nn.Module:
    new = type(norm)(len(kept), eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                     track_running_stats=norm.track_running_stats)
    tensors = list(norm.state_dict().values())
    if tensors:
        new.to(tensors[0].device)
    state = {k: (v[kept.to(v.device)] if v.dim() == 1 else v) for k, v in norm.state_dict().items()}
    new.load_state_dict(state)
    return new


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    module.train(model.get_submodule(name).training)  # a new module is in training mode: keep the old one's
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@torch.no_grad()
def compact_dense(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """A plain copy of ``model`` (a chain of plain Conv2d/Linear layers whose weights already hold
    the mask: weights x mask) with every channel that feeds nothing removed: the layer's rows,
    its bias and BatchNorm entries, and the next layer's inputs. Its outputs equal ``model``'s."""
    small = copy.deepcopy(model)
    links = channel_chain(small, input_shape)
    weights = {f"{link.name}.weight": link.layer.weight for link in links}
    kept = kept_channels(links, weights)
    previous: Optional[Tensor] = None
    for i, link in enumerate(links):
        layer = link.layer
        weight, bias = layer.weight, layer.bias
        rows = kept[i] if i < len(kept) else None
        if rows is not None:
            rows = rows.to(weight.device)
            weight = weight[rows]
            bias = bias[rows] if bias is not None else None
        if previous is not None:
            repeat = links[i - 1].repeat
            columns = (previous[:, None] * repeat + torch.arange(repeat, device=previous.device)).reshape(-1)
            weight = weight[:, columns]
        if isinstance(layer, nn.Conv2d):
            _replace(small, link.name, _smaller_conv(layer, weight, bias))
        else:
            _replace(small, link.name, _smaller_linear(weight, bias))
        if rows is not None:
            for norm in link.norms:
                _replace(small, norm, _smaller_norm(small.get_submodule(norm), rows))
        previous = rows
    return small


def _check_smaller(name: str, full, small) -> None:
    """A compact layer's weight shape is the full layer's with at most as many outputs and inputs."""
    full, small = tuple(full), tuple(small)
    if len(small) != len(full) or small[2:] != full[2:] or small[0] > full[0] or small[1] > full[1]:
        raise SupermaskError(f"{name}.weight has shape {list(small)}, not a part of the layer's {list(full)}")


def resize_to(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """``model`` (the plain architecture) with every Conv2d, Linear and BatchNorm layer resized to
    the shapes in ``state`` (a ``compact-dense`` export's), ready for ``load_state_dict``."""
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight")
        if isinstance(module, (nn.Conv2d, nn.Linear)) and weight is not None:
            _check_smaller(name, module.weight.shape, weight.shape)
            bias = state.get(f"{name}.bias")
            if bias is not None and tuple(bias.shape) != (weight.shape[0],):
                raise SupermaskError(f"{name}.bias has shape {list(bias.shape)} for {weight.shape[0]} channels")
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            mean = state.get(f"{name}.running_mean")
            if mean is not None and (mean.dim() != 1 or mean.shape[0] > module.num_features):
                raise SupermaskError(f"{name}.running_mean has shape {list(mean.shape)}, not at most "
                                     f"[{module.num_features}]")
        if isinstance(module, (nn.Conv2d, nn.Linear)) and weight is not None and weight.shape != module.weight.shape:
            bias = state.get(f"{name}.bias") if module.bias is not None else None
            empty = torch.empty(weight.shape, dtype=module.weight.dtype)
            small_bias = torch.empty(bias.shape, dtype=module.weight.dtype) if bias is not None else None
            _replace(model, name, _smaller_conv(module, empty, small_bias) if isinstance(module, nn.Conv2d)
                     else _smaller_linear(empty, small_bias))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            mean = state.get(f"{name}.running_mean")
            if mean is not None and mean.shape[0] != module.num_features:
                _replace(model, name, _smaller_norm(module, torch.arange(mean.shape[0])))
    return model
