"""Score-based masking layers (edge-popup) and the global-scope coordinator.

A supermask layer holds a frozen ``weight`` (and ``bias``), a learned ``scores``
tensor of the weight's shape and a ``density``. Its forward pass uses
``weight * mask`` where the mask keeps the top ``density`` fraction of
``|scores|`` (see :mod:`supermask.nn.topk` for the exact rule); gradients reach
the scores straight through the mask. ``weight`` keeps its name, so the
state-dict keys of the plain architecture (``features.0.weight``) stay valid.
"""

from __future__ import annotations

import logging
import math
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SupermaskError

from .channels import CHANNEL, channel_chain, input_mask
from .heads import PROJECTIONS, ROW_PROJECTIONS, attention_heads, expand_columns, expand_rows
from .nm import nm_applies, nm_mask, parse_structure, straight_through_nm
from .topk import (check_density, global_threshold, kept_count, straight_through_threshold,
                   straight_through_topk, threshold_mask, topk_mask)

log = logging.getLogger(__name__)


class SupermaskMixin:
    """Shared behaviour of :class:`SupermaskConv2d` and :class:`SupermaskLinear`."""

    weight: nn.Parameter
    bias: Optional[nn.Parameter]
    scores: nn.Parameter
    density: float

    def _setup_supermask(self, density: float, structure: Optional[str] = None) -> None:
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        # channel (supermask.nn.channels): one score per output channel, shaped to broadcast over the weight.
        self.channel = structure == CHANNEL
        shape = (self.weight.shape[0], *([1] * (self.weight.dim() - 1))) if self.channel else self.weight.shape
        self.scores = nn.Parameter(torch.empty(shape, dtype=self.weight.dtype, device=self.weight.device))
        # PyTorch's default layer init: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        nn.init.kaiming_uniform_(self.scores, a=math.sqrt(5))
        self.density = check_density(density)
        # Set by link_channels: the previous layer of the chain and the inputs each of its channels
        # feeds (plain attributes, not submodules); the last layer keeps all its outputs.
        object.__setattr__(self, "channel_input", None)
        self.keeps_outputs = False
        self._channel_cache: Optional[tuple] = None
        # Set by link_heads: (the block's q_proj, which holds one score per head;
        # whether this layer's rows (q, k, v) or columns (out) are the heads; the HeadBlock), and
        # keeps_all for every other layer of a head-structured network (all its weights kept).
        object.__setattr__(self, "head_source", None)
        self.keeps_all = False
        self._head_cache: Optional[tuple] = None
        # N:M (see supermask.nn.nm): the density is N/M; None: unstructured top-k.
        self.nm = parse_structure(structure)
        if self.nm is not None:
            self.density = self.nm.density
            if self.nm.skips(self.weight.shape):
                log.info("a %s of weight shape %s stays dense: ASP's rule skips a weight whose outputs are not a "
                         "multiple of 8 or inputs not of 16", type(self).__name__, list(self.weight.shape))
                self.nm, self.density = None, 1.0
            elif not nm_applies(self.weight.shape, self.nm.m):
                log.warning("a %s of weight shape %s: its %d inputs do not split into groups of %d; masked "
                            "unstructured at density %g instead", type(self).__name__, list(self.weight.shape),
                            self.weight.shape[1], self.nm.m, self.density)
                self.nm = None
        # Not a submodule: a plain attribute, so it is not in state_dict or children().
        object.__setattr__(self, "global_scope", None)
        self._mask_cache: Optional[Tensor] = None
        self._mask_cache_key: Optional[tuple] = None
        self._weight_cache: Optional[Tensor] = None  # weight * mask in eval mode
        self._weight_cache_key: Optional[tuple] = None
        self._weight_cache_mask: Optional[Tensor] = None

    # -- masks -------------------------------------------------------------------------------
    def _use_cached_mask(self) -> bool:
        scores = self.head_source[0].scores if self.head_source is not None else self.scores
        return not self.training and not (torch.is_grad_enabled() and scores.requires_grad)

    @torch.compiler.disable  # data-dependent selection: run eagerly, compile what surrounds it
    def forward_mask(self) -> Tensor:
        """The mask the forward pass applies (differentiable w.r.t. ``scores`` in training)."""
        if self.head_source is not None:
            return self._head_mask()
        if self.keeps_all:
            return torch.ones((1,) * self.weight.dim(), dtype=self.weight.dtype, device=self.weight.device)
        return self._channel_mask() if self.channel else self.selected_mask()

    def _head_mask(self) -> Tensor:
        """This projection's rows (query, key, value) or columns (output) of the heads its block's
        ``q_proj`` selects over its head scores."""
        owner, rows, block = self.head_source
        heads = owner.selected_mask()
        cached = self._use_cached_mask()
        if cached and self._head_cache is not None and self._head_cache[0] is heads:
            return self._head_cache[1]
        mask = (expand_rows if rows else expand_columns)(heads, block, self.weight)
        if cached:
            self._head_cache = (heads, mask)
        return mask

    @property
    def selects(self) -> bool:
        """Whether this layer's own scores choose anything (not: the last layer of a channel chain,
        a projection following its block's head scores, a layer a head structure keeps whole)."""
        following = self.head_source is not None and self.head_source[0] is not self
        return not (self.keeps_outputs or self.keeps_all or following)

    def selected_mask(self) -> Tensor:
        """The top-k (or N:M) selection over this layer's own scores: the weight's mask, or with a
        channel structure the mask of its output channels, shaped ``(out, 1, ...)``."""
        if self.global_scope is not None:
            return self.global_scope.mask_for(self)
        nm = self.nm
        if self._use_cached_mask():
            key = (self.scores._version, self.scores.data_ptr(), self.density)
            if self._mask_cache is None or self._mask_cache_key != key:
                self._mask_cache = (nm_mask(self.scores.abs(), nm.n, nm.m) if nm is not None else
                                    topk_mask(self.scores.abs(), kept_count(self.scores.numel(), self.density)))
                self._mask_cache_key = key
            return self._mask_cache
        if nm is not None:
            return straight_through_nm(self.scores.abs(), nm.n, nm.m)
        return straight_through_topk(self.scores.abs(), kept_count(self.scores.numel(), self.density))

    def _channel_mask(self) -> Tensor:
        """``out[c] * in[j]``: this layer's output-channel selection times the previous layer's."""
        own = None if self.keeps_outputs else self.selected_mask()
        producer, repeat = self.channel_input if self.channel_input is not None else (None, 1)
        previous = producer.selected_mask() if producer is not None else None
        cached = self._use_cached_mask()
        if cached and self._channel_cache is not None:
            (own_was, previous_was), mask = self._channel_cache
            if own_was is own and previous_was is previous:
                return mask
        mask = torch.ones_like(self.weight) if own is None else own.expand_as(self.weight)
        if previous is not None:
            mask = mask * input_mask(previous, repeat, self.weight.dim())
        if cached:
            self._channel_cache = ((own, previous), mask)
        return mask

    @torch.no_grad()
    def mask(self) -> Tensor:
        """The current mask as a detached {0, 1} tensor of the weight's shape."""
        return self.forward_mask().detach().expand_as(self.weight).clone()

    def masked_weight(self) -> Tensor:
        """``weight * mask``; in eval mode computed once per change of the mask or the weight."""
        if self.keeps_all:
            return self.weight
        mask = self.forward_mask()
        if not self._use_cached_mask():
            return self.effective_weight(mask)
        key = (self.weight._version, self.weight.data_ptr())
        if self._weight_cache is None or self._weight_cache_key != key or self._weight_cache_mask is not mask:
            self._weight_cache = self.effective_weight(mask)
            self._weight_cache_key, self._weight_cache_mask = key, mask
        return self._weight_cache

    def effective_weight(self, mask: Tensor) -> Tensor:
        """The weight the layer computes with, given its mask (methods such as biprop override this)."""
        return self.weight * mask

    def extra_repr(self) -> str:  # type: ignore[override]
        scope = "global" if self.global_scope is not None else "layerwise"
        structure = (f", structure={self.nm}" if self.nm is not None else ", structure=channel" if self.channel
                     else ", structure=head" if self.head_source is not None else ", kept whole" if self.keeps_all
                     else "")
        return f"{super().extra_repr()}, density={self.density}, scope={scope}{structure}"  # type: ignore[misc]


class SupermaskConv2d(SupermaskMixin, nn.Conv2d):
    """``nn.Conv2d`` with frozen weights and a learned top-k mask over them."""

    def __init__(self, *args, density: float = 0.5, structure: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_supermask(density, structure)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, density: float, structure: Optional[str] = None) -> "SupermaskConv2d":
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
            bias=conv.bias is not None, padding_mode=conv.padding_mode, density=density, structure=structure,
            device=conv.weight.device, dtype=conv.weight.dtype,
        )
        _copy_frozen(new, conv)
        return new


class SupermaskLinear(SupermaskMixin, nn.Linear):
    """``nn.Linear`` with frozen weights and a learned top-k mask over them."""

    def __init__(self, *args, density: float = 0.5, structure: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_supermask(density, structure)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.masked_weight(), self.bias)

    @classmethod
    def from_dense(cls, linear: nn.Linear, density: float, structure: Optional[str] = None) -> "SupermaskLinear":
        new = cls(
            linear.in_features, linear.out_features, bias=linear.bias is not None, density=density, structure=structure,
            device=linear.weight.device, dtype=linear.weight.dtype,
        )
        _copy_frozen(new, linear)
        return new


SUPERMASK_LAYERS = (SupermaskConv2d, SupermaskLinear)


def _copy_frozen(new: nn.Module, old: nn.Module) -> None:
    with torch.no_grad():
        new.weight.copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)


def supermask_layers(model: nn.Module) -> list[tuple[str, SupermaskMixin]]:
    """``(qualified name, layer)`` of every supermask layer, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SupermaskMixin)]


class GlobalScope:
    """One threshold over the scores of all given layers.

    The threshold (and how many entries tied at it each layer keeps) is computed without
    gradients once per change of the scores, i.e. once per training step however many
    layers use it; each layer then builds its own mask from its own scores with its own
    straight-through graph, so layers may run and backpropagate independently. In eval
    mode without gradients each layer's mask is cached until any score changes.
    """

    def __init__(self, layers: Iterable[SupermaskMixin], density: float):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("global scope needs at least one supermask layer")
        self.density = check_density(density)
        self._index = {id(layer): i for i, layer in enumerate(self.layers)}
        self._key: Optional[tuple] = None
        self._threshold = None
        self._quotas: list = []
        self._cached: dict[int, tuple[tuple, Tensor]] = {}

    def _scores_key(self) -> tuple:
        return (self.density,) + tuple((l.scores._version, l.scores.data_ptr()) for l in self.layers)

    def thresholds(self) -> tuple:
        key = self._scores_key()
        if key != self._key:
            k = kept_count(sum(l.scores.numel() for l in self.layers), self.density)
            self._threshold, self._quotas = global_threshold([l.scores.abs() for l in self.layers], k)
            self._key = key
        return self._threshold, self._quotas

    def mask_for(self, layer: SupermaskMixin) -> Tensor:
        i = self._index[id(layer)]
        threshold, quotas = self.thresholds()
        quota, tied = quotas[i]
        if layer._use_cached_mask():
            cached = self._cached.get(i)
            if cached is None or cached[0] != self._key:
                cached = (self._key, threshold_mask(layer.scores.abs(), threshold, quota, tied))
                self._cached[i] = cached
            return cached[1]
        return straight_through_threshold(layer.scores.abs(), threshold, quota, tied)


def attach_global_scope(model: nn.Module, density: float) -> GlobalScope:
    """Make every supermask layer of ``model`` share one global top-k threshold at ``density`` (with
    channel masks: over the output channels of every layer but the last, which keeps them all; with
    head masks: over the heads of every block)."""
    layers = [layer for _, layer in supermask_layers(model) if layer.selects]
    scope = GlobalScope(layers, density)
    for layer in layers:
        object.__setattr__(layer, "global_scope", scope)
        layer.density = scope.density
    return scope


def link_channels(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Tie the channel masks of ``model``'s supermask layers (built with ``structure="channel"``)
    along its chain (:func:`supermask.nn.channels.channel_chain`): each layer's inputs follow the
    previous layer's kept channels, and the last layer keeps all its outputs (the classes)."""
    links = channel_chain(model, input_shape)
    if not all(isinstance(link.layer, SupermaskMixin) and link.layer.channel for link in links):
        plain = next(link.name for link in links if not getattr(link.layer, "channel", False))
        raise SupermaskError(f"--structure channel: {plain} is not a supermask layer with channel scores")
    for previous, link in zip([None, *links], links):
        object.__setattr__(link.layer, "channel_input", None if previous is None else (previous.layer, previous.repeat))
    last = links[-1].layer
    last.keeps_outputs = True
    last.scores.requires_grad_(False)  # no selection: its scores never reach the loss


def _frozen_empty(like: Tensor) -> nn.Parameter:
    return nn.Parameter(torch.empty(0, dtype=like.dtype, device=like.device), requires_grad=False)


def link_heads(model: nn.Module) -> list[HeadBlock]:
    """Give ``model``'s supermask network one learned score per head: each block's ``q_proj``
    holds them (``scores`` of shape ``(heads, 1)``, drawn by :func:`supermask.nn.init.init_model`
    afterwards) and selects the heads; its ``k_proj``, ``v_proj`` and ``out_proj`` follow that
    selection; every other supermask layer keeps all its weights. Those layers' own ``scores``
    become empty frozen tensors (they select nothing). Linking twice changes nothing."""
    blocks = attention_heads(model)
    projections = set()
    for block in blocks:
        attention = model.get_submodule(block.name) if block.name else model
        layers = [getattr(attention, p) for p in PROJECTIONS]
        plain = [p for p, layer in zip(PROJECTIONS, layers) if not isinstance(layer, SupermaskMixin)]
        if plain:
            raise SupermaskError(f"--structure head: {block.weight(plain[0])[:-len('.weight')]} is not a supermask "
                                 f"layer (kept dense?): a head's four projections are selected together")
        owner = layers[0]
        projections.update(id(layer) for layer in layers)
        if owner.head_source is not None:
            continue
        owner.scores = nn.Parameter(torch.empty(block.heads, 1, dtype=owner.weight.dtype, device=owner.weight.device))
        for projection, layer in zip(PROJECTIONS, layers):
            object.__setattr__(layer, "head_source", (owner, projection in ROW_PROJECTIONS, block))
            if layer is not owner:
                layer.scores = _frozen_empty(layer.weight)
                layer.density = owner.density
    for _, layer in supermask_layers(model):
        if id(layer) not in projections and not layer.keeps_all:
            layer.keeps_all = True
            layer.density = 1.0
            layer.scores = _frozen_empty(layer.weight)
    return blocks


@torch.no_grad()
def head_selections(model: nn.Module) -> dict[str, Tensor]:
    """The heads each head-structured block of a supermask ``model`` keeps, as {0, 1} uint8 tensors
    of ``heads`` entries, keyed by the name of the block's ``q_proj`` weight (the layer holding
    the head scores)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, SupermaskMixin) and module.head_source is not None and module.head_source[0] is module:
            out[f"{name}.weight"] = module.selected_mask().detach().reshape(-1).to("cpu", torch.uint8)
    return out


@torch.no_grad()
def channel_selections(model: nn.Module) -> dict[str, Tensor]:
    """The output channels each channel-structured supermask layer of ``model`` keeps, as {0, 1}
    tensors shaped ``(out, 1, ...)`` keyed by the weight's name (the last layer of a chain: all).
    Not always readable from the weight mask: a layer whose inputs are all dropped has an all-zero
    mask, yet the channels it keeps still pass their biases on."""
    selections = {}
    for name, module in model.named_modules():
        if isinstance(module, SupermaskMixin) and module.channel:
            key = f"{name}.weight" if name else "weight"
            shape = (module.weight.shape[0], *([1] * (module.weight.dim() - 1)))
            selections[key] = (torch.ones(shape, dtype=torch.uint8) if module.keeps_outputs
                               else module.selected_mask().detach().reshape(shape).to("cpu", torch.uint8))
    return selections


@torch.no_grad()
def model_masks(model: nn.Module) -> dict[str, Tensor]:
    """The current mask of every supermask or masked layer, keyed by its weight's name (``features.0.weight``)."""
    from .masked import MaskedMixin

    masks = {}
    for name, module in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        if isinstance(module, SupermaskMixin):
            masks[key] = module.mask()
        elif isinstance(module, MaskedMixin):
            masks[key] = module.weight_mask.detach().clone()
    return masks


def density_report(masks: dict[str, Tensor]) -> tuple[float, dict[str, float]]:
    """Overall density and density per tensor of a dict of masks."""
    kept = sum(int(m.sum().item()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    per_layer = {name: float(m.sum().item()) / m.numel() for name, m in masks.items()}
    return (kept / total if total else 1.0), per_layer
