"""Structured selections for the weak-ticket engines (IMP and pruning at initialisation):
N:M groups and whole channels, beside the unstructured top-k of :mod:`.pruning`.

- ``nm:N:M``: in every group of M weights along the input dimension (as :mod:`supermask.nn.nm`
  lays them out, NVIDIA ASP's layout) the N of largest score are kept: IMP's score is |w|, a
  pruner's its own. A tensor whose inputs do not split into groups of M keeps the top N/M of it.
- ``channel``: a layer's output channel scores the sum of its weights' scores (IMP: the L1 norm
  of the surviving filter, Li et al. 2017, "Pruning Filters for Efficient ConvNets"); the top
  channels of each layer are kept, the last layer keeps all its outputs, and each weight mask is
  the layer's channels times the previous layer's (:func:`supermask.nn.channels.weight_masks`).
  Channel scores of layers with other fan-ins are not comparable, so channels are chosen layer
  by layer.
- ``head``: a head scores the sum of its weights' scores over its query, key and value rows and
  its output-projection columns (IMP: the L1 norm of the head's surviving weights, Li et al.
  2017's filter criterion applied to heads, the unit Michel et al. 2019 prune); each level
  removes ``prune_fraction`` of every block's surviving heads, rounded, at least one, never the
  last (:func:`head_prune`); every layer that is no attention projection keeps all its weights
  (:mod:`supermask.nn.heads`).

A :class:`Selection` stands where a pruner takes its ``scope``; :func:`supermask_imp.pai.keep_top`
reads it, so every pruner that selects through ``keep_top`` supports every structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from supermask.errors import SupermaskError
from supermask.nn.channels import CHANNEL, Link, channel_chain, weight_masks
from supermask.nn.heads import HeadBlock, attention_heads, head_norms, head_scores, head_weight_masks, kept_heads
from supermask.nn.nm import NM, nm_applies, nm_mask
from supermask.structure import Structure
from supermask.nn.topk import kept_count, topk_mask

from .pruning import removed_count


@dataclass(frozen=True)
class Selection:
    """How masks are drawn from scores: a scope and a structure (with a channel structure, the
    model's chain; with a head structure, its attention blocks)."""

    scope: str
    structure: str = "unstructured"
    links: Optional[tuple[Link, ...]] = None
    blocks: Optional[tuple[HeadBlock, ...]] = None

    @property
    def nm(self) -> Optional[NM]:
        return Structure.parse(self.structure).nm


def selection_for(model: nn.Module, scope: str, structure: str, input_shape: tuple[int, ...]):
    """The plain scope string for an unstructured selection (what pruners took before structures),
    else a :class:`Selection`; a channel structure on a network that is no chain is refused."""
    parsed = Structure.parse(structure)
    if not parsed.structured:
        return scope
    links = tuple(channel_chain(model, input_shape)) if parsed.channel else None
    blocks = tuple(attention_heads(model)) if parsed.head else None
    return Selection(scope, str(parsed), links, blocks)


def _non_negative(score: Tensor) -> Tensor:
    score = score.detach().double()
    return score - score.min()


def nm_keep(scores: Mapping[str, Tensor], nm: NM) -> dict[str, Tensor]:
    """N:M masks over ``scores`` (higher is kept), one tensor at a time."""
    out = {}
    for name, score in scores.items():
        s = _non_negative(score)
        if nm.skips(s.shape):  # nm:N:M:asp: a weight ASP skips stays dense
            out[name] = torch.ones_like(s, dtype=torch.float32)
        elif nm_applies(s.shape, nm.m):
            out[name] = nm_mask(s, nm.n, nm.m).float()
        else:
            out[name] = topk_mask(s, kept_count(s.numel(), nm.density)).float()
    return out


def channel_scores(score: Tensor) -> Tensor:
    """A layer's output-channel scores: the sum of its weights' scores over each output channel."""
    return score.detach().double().reshape(score.shape[0], -1).sum(dim=1)


def channel_keep(scores: Mapping[str, Tensor], links: tuple[Link, ...], density: float) -> dict[str, Tensor]:
    """Channel masks keeping the top ``density`` of each layer's output channels by their summed
    score (every layer but the last), as weight masks."""
    chosen = {}
    for link in links[:-1]:
        s = channel_scores(scores[f"{link.name}.weight"])
        chosen[link.name] = topk_mask(s - s.min(), kept_count(s.numel(), density)).float()
    return weight_masks(list(links), chosen)


def channels_of(links: tuple[Link, ...], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The kept output channels of every layer but the last: those whose weight rows keep anything."""
    return {link.name: masks[f"{link.name}.weight"].reshape(link.out_channels, -1).any(dim=1).float()
            for link in links[:-1]}


def channel_prune(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], links: tuple[Link, ...],
                  fractions: Mapping[str, float]) -> dict[str, Tensor]:
    """IMP's channel level: each layer (but the last) loses ``fractions[<weight>]`` of its surviving
    output channels, those of smallest L1 norm of the surviving filter (ties: the lowest index)."""
    alive = channels_of(links, masks)
    chosen = {}
    for link in links[:-1]:
        key = f"{link.name}.weight"
        norms = (weights[key] * masks[key]).detach().abs().double().reshape(link.out_channels, -1).sum(dim=1)
        survivors = int(alive[link.name].sum())
        rate = fractions.get(key, 0.0)
        keep = max(1, survivors - removed_count(survivors, rate))
        ranked = torch.where(alive[link.name].bool(), norms, torch.tensor(-1.0, dtype=norms.dtype))
        chosen[link.name] = topk_mask(ranked, keep).float()
    return weight_masks(list(links), chosen)


def head_keep(scores: Mapping[str, Tensor], blocks: tuple[HeadBlock, ...], density: float) -> dict[str, Tensor]:
    """Head masks keeping the top ``density`` of each block's heads by their summed score (ties: the
    lowest index); every other tensor is kept whole."""
    chosen = {}
    for block in blocks:
        s = head_scores(block, scores)
        chosen[block.name] = topk_mask(s - s.min(), kept_count(block.heads, density)).float()
    masks = head_weight_masks(list(blocks), chosen, scores)
    return {name: masks.get(name, torch.ones_like(score, dtype=torch.float32)) for name, score in scores.items()}


def heads_removed(survivors: int, fraction: float) -> int:
    """How many of a block's ``survivors`` heads one level removes: the rounded ``fraction`` of them,
    at least one while ``fraction`` > 0, never the last one."""
    if survivors <= 1 or fraction <= 0:
        return 0
    return min(survivors - 1, max(1, removed_count(survivors, fraction)))


def head_levels(heads: int, fraction: float) -> int:
    """The levels after which a block of ``heads`` heads is down to one under :func:`heads_removed`."""
    levels = 0
    while heads_removed(heads, fraction):
        heads -= heads_removed(heads, fraction)
        levels += 1
    return levels


def head_prune(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], blocks: tuple[HeadBlock, ...],
               fractions: Mapping[str, float]) -> dict[str, Tensor]:
    """IMP's head level: each block loses :func:`heads_removed` of its surviving heads (its rate:
    ``fractions`` of its query projection's weight), those of smallest L1 norm over their
    surviving weights in all four projections (ties: the lowest index). Only the blocks' weights
    are in the result."""
    alive = kept_heads(list(blocks), masks)
    chosen = {}
    for block in blocks:
        survivors = int(alive[block.name].sum())
        keep = survivors - heads_removed(survivors, fractions.get(block.weight("q_proj"), 0.0))
        norms = head_norms(block, weights, masks)
        ranked = torch.where(alive[block.name].bool(), norms, torch.tensor(-1.0, dtype=norms.dtype))
        chosen[block.name] = topk_mask(ranked, keep).float()
    return head_weight_masks(list(blocks), chosen, masks)


def random_structured(masks: Mapping[str, Tensor], selection: Selection, seed: int) -> dict[str, Tensor]:
    """The random-pruning control of a structured ticket: random scores, the same structure (N:M),
    the same number of channels in every layer (channel), of heads in every block (head)."""
    from supermask.seeding import derived_seed

    def noise(name: str, shape) -> Tensor:
        return torch.rand(shape, generator=torch.Generator().manual_seed(derived_seed(seed, name)))

    if selection.nm is not None:
        return nm_keep({name: noise(name, m.shape) for name, m in masks.items()}, selection.nm)
    if selection.structure == CHANNEL:
        counts = channels_of(selection.links, masks)
        chosen = {name: topk_mask(noise(name, c.shape), int(c.sum())).float() for name, c in counts.items()}
        return weight_masks(list(selection.links), chosen)
    if selection.blocks is not None:
        counts = kept_heads(list(selection.blocks), masks)
        chosen = {name: topk_mask(noise(name, c.shape), int(c.sum())).float() for name, c in counts.items()}
        return {**masks, **head_weight_masks(list(selection.blocks), chosen, masks)}
    raise SupermaskError(f"no random structured control for {selection.structure}")
