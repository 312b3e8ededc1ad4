"""Turn any ``nn.Module`` into its supermask version.

``convert`` swaps every ``nn.Conv2d`` / ``nn.Linear`` for a :class:`SupermaskConv2d` /
:class:`SupermaskLinear` holding the same (or freshly drawn) weights and freezes every
other parameter. BatchNorm (and LayerNorm) is, by ``bn``:

- ``"non-affine"``: γ/β removed, normalisation with running statistics only (the edge-popup
  setting for random networks; the default when the weights are re-drawn);
- ``"frozen"``: γ/β kept as they are and frozen (the default with ``init=None``: a pretrained
  model keeps the function it computes, so the search looks for a strong ticket inside it);
- ``"learned"``: γ/β kept and trained with the scores (``learned_bn=True``).

After conversion the only parameters that require grad are the scores (and γ/β with
``"learned"``), so ``[p for p in model.parameters() if p.requires_grad]`` is exactly what to
optimise. Every weight, bias and BatchNorm buffer keeps the plain model's name; each masked layer
adds ``scores``; with ``"frozen"`` or ``"learned"`` the plain model's state dict loads into the
converted one with only the scores missing, and the converted one's, less its scores, loads
strictly into the plain model.
"""

from __future__ import annotations

import copy
from typing import Iterable

from torch import nn

from ..errors import SupermaskError
from .attention import split_attention
from .init import init_model
from .layers import SupermaskConv2d, SupermaskLinear, SupermaskMixin, attach_global_scope, link_channels, link_heads
from .nm import CHANNEL, HEAD
from .topk import check_density

SCOPES = ("layerwise", "global")
BN_MODES = ("non-affine", "frozen", "learned")


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise SupermaskError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    return scope


def prunable_names(model: nn.Module) -> list[str]:
    """Qualified names of the Conv2d/Linear modules of ``model``, in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _resolve_keep_dense(model: nn.Module, keep_dense: Iterable[str]) -> set[str]:
    names = prunable_names(model)
    resolved = set()
    for item in keep_dense:
        if item == "first" and names:
            resolved.add(names[0])
        elif item == "last" and names:
            resolved.add(names[-1])
        elif item in names:
            resolved.add(item)
        else:
            raise SupermaskError(f"keep_dense: {item!r} is not a Conv2d/Linear of the model (nor 'first'/'last')")
    return resolved


def _non_affine_copy(bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    new = type(bn)(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=False,
                   track_running_stats=bn.track_running_stats,
                   device=bn.running_mean.device if bn.running_mean is not None else None)
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean)
        new.running_var.copy_(bn.running_var)
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _bn_mode(bn: str | None, learned_bn: bool, init: str | None) -> str:
    if bn is None:
        return "learned" if learned_bn else "frozen" if init is None else "non-affine"
    if bn not in BN_MODES:
        raise SupermaskError(f"bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
    if learned_bn and bn != "learned":
        raise SupermaskError(f"learned_bn=True contradicts bn={bn!r}")
    return bn


def _replace(model: nn.Module, qualified: str, new: nn.Module) -> None:
    parent_name, _, child = qualified.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def convert(
    model: nn.Module,
    density: float = 0.5,
    *,
    scope: str = "layerwise",
    init: str | None = "signed-constant",
    seed: int = 0,
    keep_dense: Iterable[str] = (),
    learned_bn: bool = False,
    bn: str | None = None,
    structure: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    scaled_fan: bool = False,
    score_init: str = "kaiming-uniform",
    inplace: bool = False,
    layer_types: tuple[type, type] = (SupermaskConv2d, SupermaskLinear),
) -> nn.Module:
    """Return the supermask version of ``model``.

    - ``density`` in (0, 1]: kept fraction of each layer (``layerwise``) or of all
      supermask layers together (``global``).
    - ``init``: re-draw the frozen weights with this initialiser from ``seed``
      (``None`` keeps the model's own weights, e.g. pretrained ones).
    - ``keep_dense``: qualified module names, or ``"first"``/``"last"``, left as plain
      layers (frozen, all edges kept).
    - ``structure``: ``"nm:N:M"`` for N:M masks (see :mod:`supermask.nn.nm`; the density is then N/M),
      or ``"channel"`` for channel masks (:mod:`supermask.nn.channels`: ``density`` of each layer's
      output channels, the next layer's inputs with them), which needs ``input_shape`` ``(C, H, W)``
      to find and check the model's chain of layers, or ``"head"`` for attention-head masks
      (:mod:`supermask.nn.heads`: ``density`` of each block's heads; every other layer kept whole).
    - ``bn``: ``"non-affine"``, ``"frozen"`` or ``"learned"`` (see the module docstring); by
      default ``"learned"`` with ``learned_bn``, else ``"frozen"`` with ``init=None``, else
      ``"non-affine"``.
    - ``layer_types``: the (conv, linear) supermask classes to convert to (a method's mask rule).
    """
    density = check_density(density)
    check_scope(scope)
    if structure == CHANNEL and input_shape is None:
        raise SupermaskError("structure='channel' needs input_shape=(C, H, W): each layer's inputs follow the "
                             "previous layer's channels along the model's chain, found by running it once")
    bn = _bn_mode(bn, learned_bn, init)
    if not inplace:
        model = copy.deepcopy(model)
    split_attention(model)  # attention projections as Linear modules, so they can be masked
    dense = _resolve_keep_dense(model, keep_dense)
    for name, module in list(model.named_modules()):
        if isinstance(module, SupermaskMixin) or name in dense:
            continue
        if isinstance(module, nn.Conv2d):
            _replace(model, name, layer_types[0].from_dense(module, density, structure))
        elif isinstance(module, nn.Linear):
            _replace(model, name, layer_types[1].from_dense(module, density, structure))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine and bn == "non-affine":
            _replace(model, name, _non_affine_copy(module))
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine and bn == "non-affine":
            _replace(model, name, nn.LayerNorm(module.normalized_shape, eps=module.eps, elementwise_affine=False))
    for name, param in model.named_parameters():
        trainable = name.endswith("scores") or (
            bn == "learned" and isinstance(model.get_submodule(name.rpartition(".")[0]),
                                           (nn.modules.batchnorm._BatchNorm, nn.LayerNorm))
        )
        param.requires_grad_(trainable)
    if structure == HEAD:  # before the draw: one score per head
        link_heads(model)
    init_model(model, init, seed, scaled_fan=scaled_fan, score_init=score_init)
    if structure == CHANNEL:
        link_channels(model, tuple(input_shape))
    if scope == "global":
        attach_global_scope(model, density)
    return model
