"""Pruning strategies (open_lth's ``pruning/``): a level's mask from a trained state.

A strategy maps ``(config, weights, current masks, context)`` to the next level's masks; which
one runs is decided by the config's structure, looked up in :data:`STRATEGIES` (one entry per
structure kind), so a new structure is one entry:

- ``unstructured``: magnitude pruning (Frankle & Carbin 2019): the level's fraction of the
  surviving weights with the smallest |w|, globally or layer by layer;
- ``nm``: the N largest |w| of every group of M (one level);
- ``channel``: the surviving filters of smallest L1 norm, the next layer's inputs with them;
- ``head``: the surviving attention heads of smallest L1 norm (rows and columns of all four
  projections); every other layer keeps its weights.

:func:`random_like` is the strategy of the random-prune control: a random mask with as many
weights in every layer as a given one (structured: a random N:M mask, or as many random channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import Tensor

from supermask.registry import Registry

from .pruning import magnitude_prune, random_masks_like
from .structured import Selection, channel_prune, head_prune, nm_keep, random_structured

Masks = dict[str, Tensor]


@dataclass(frozen=True)
class Context:
    """What a strategy needs to know of the network besides its weights."""

    names: tuple[str, ...]  # the prunable weights, in the model's order
    conv_names: frozenset[str]  # those of convolutions (layerwise fractions differ)
    selection: object  # the scope string, or a structured Selection (supermask_imp.structured)


Strategy = Callable[..., Masks]
STRATEGIES: Registry[Strategy] = Registry("pruning strategy")


@STRATEGIES.register("unstructured")
def magnitude(config, weights: Masks, current: Masks, context: Context) -> Masks:
    return magnitude_prune(weights, current, config.level_fractions(list(context.names), set(context.conv_names)),
                           scope=config.scope, keep=config.keep_unpruned)


@STRATEGIES.register("nm")
def nm_magnitude(config, weights: Masks, current: Masks, context: Context) -> Masks:
    """N:M over |w| of the surviving weights; tensors in ``keep_unpruned`` stay whole."""
    keep = set(config.keep_unpruned)
    pruned = nm_keep({n: weights[n].abs() * current[n] for n in context.names if n not in keep},
                     context.selection.nm)
    return {n: pruned.get(n, current[n]).to(current[n].dtype) for n in context.names}


def _layer_rates(config, context: Context) -> dict[str, float]:
    """A structured level's rate per weight (layerwise): the config's, 0 for ``keep_unpruned`` ones."""
    keep = set(config.keep_unpruned)
    return {n: (0.0 if n in keep else rate)
            for n, rate in config.level_fractions(list(context.names), set(context.conv_names)).items()}


@STRATEGIES.register("channel")
def channel_l1(config, weights: Masks, current: Masks, context: Context) -> Masks:
    """The channels of smallest L1 norm (``keep_unpruned`` layers keep their output channels)."""
    new = channel_prune(weights, current, context.selection.links, _layer_rates(config, context))
    return {n: new[n].to(current[n].dtype) for n in context.names}


@STRATEGIES.register("head")
def head_l1(config, weights: Masks, current: Masks, context: Context) -> Masks:
    """The heads of smallest L1 norm (a block whose ``q_proj`` is in ``keep_unpruned`` keeps its heads)."""
    new = head_prune(weights, current, context.selection.blocks, _layer_rates(config, context))
    return {n: new.get(n, current[n]).to(current[n].dtype) for n in context.names}


def strategy_for(selection) -> Strategy:
    """The strategy of a selection: by its structure's kind."""
    if not isinstance(selection, Selection):
        return STRATEGIES.get("unstructured")
    return STRATEGIES.get("nm" if selection.nm is not None else selection.structure)


def random_like(masks: Masks, selection, seed: int) -> Masks:
    """A random mask with as many kept weights per layer as ``masks`` (of the selection's structure)."""
    if isinstance(selection, Selection):
        return random_structured(masks, selection, seed)
    return random_masks_like(masks, seed)


def target_pruner(config, context: Context) -> Callable[[Masks, Masks], Masks]:
    """Magnitude pruning that takes a dense model straight to the final density (early-bird's mask)."""
    import dataclasses

    fractions = dataclasses.replace(config, one_shot=True).level_fractions(list(context.names),
                                                                           set(context.conv_names))

    def prune(weights: Masks, masks: Masks, _unused: Optional[object] = None) -> Masks:
        return magnitude_prune(weights, masks, fractions, scope=config.scope, keep=config.keep_unpruned)

    return prune
