"""Attention-head masks: whole heads kept or removed, in both engines.

A head of a multi-head attention block is a slice of its four projections: rows
``h*d : (h+1)*d`` of the query, key and value weights (``d`` = the head's width) and the same
columns of the output projection. Removing a head zeroes all of them (its biases stay: a
head whose output-projection columns are zero contributes nothing, whatever its query, key and
value compute), as Michel et al. 2019 ("Are Sixteen Heads Really Better than One?") mask heads.

An attention block here is any module with an integer ``num_heads`` and four ``Linear``
children ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj``: the zoo's GPT and ViT, and any
``nn.MultiheadAttention`` once :func:`supermask.nn.attention.split_attention` has replaced it.
Every other layer of the network is kept whole under a head structure.

- :func:`attention_heads` finds the blocks (:class:`HeadBlock`: names and sizes only);
- :func:`head_weight_masks` turns one {0, 1} entry per head into the four weight masks;
- :func:`kept_heads` reads the heads back from weight masks (a head is kept if its
  output-projection columns keep anything);
- :func:`head_norms` is the weak-ticket engines' criterion: the L1 norm of each head's surviving
  weights over all four projections (Li et al. 2017's filter norm, applied to heads);

:func:`supermask.nn.layers.link_heads` gives a supermask network one learned score per head (held
by the block's ``q_proj``; the other three projections follow it) and keeps every other layer whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import SupermaskError

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
ROW_PROJECTIONS = PROJECTIONS[:3]  # a head is rows of these ...
COLUMN_PROJECTION = PROJECTIONS[3]  # ... and columns of this one


@dataclass(frozen=True)
class HeadBlock:
    """One attention block: where it is, and how its projections split into heads."""

    name: str  # the attention module's qualified name ("" for a model that is one)
    heads: int
    head_dim: int

    def weight(self, projection: str) -> str:
        """The qualified name of one projection's weight (``blocks.0.attn.q_proj.weight``)."""
        return f"{self.name}.{projection}.weight" if self.name else f"{projection}.weight"

    @property
    def weights(self) -> tuple[str, ...]:
        return tuple(self.weight(p) for p in PROJECTIONS)


def _projections(module: nn.Module):
    layers = [getattr(module, p, None) for p in PROJECTIONS]
    return layers if all(isinstance(layer, nn.Linear) for layer in layers) else None


def attention_heads(model: nn.Module, what: str = "the model") -> list[HeadBlock]:
    """Every attention block of ``model`` (see the module docstring), in module order; a model
    without any, or a block whose projections do not split into its heads, is a ``SupermaskError``."""
    blocks = []
    for name, module in model.named_modules():
        heads = getattr(module, "num_heads", None)
        layers = _projections(module)
        if layers is None or not isinstance(heads, int) or isinstance(heads, bool):
            continue
        q, k, v, out = layers
        width = q.out_features
        if heads < 1 or width % heads or k.out_features != width or v.out_features != width \
                or out.in_features != width:
            raise SupermaskError(f"--structure head: {name or 'the model'} has {heads} heads over projections of "
                                 f"{q.out_features}, {k.out_features}, {v.out_features} outputs and "
                                 f"{out.in_features} inputs: they do not split into heads")
        blocks.append(HeadBlock(name, heads, width // heads))
    if not blocks:
        raise SupermaskError(f"--structure head needs attention blocks (q_proj, k_proj, v_proj and out_proj Linear "
                             f"layers with num_heads: gpt_tiny, vit_tiny, supermask.nn.LinearAttention built with "
                             f"linear=layers.linear, or nn.MultiheadAttention passed through supermask.convert); "
                             f"{what} has none")
    return blocks


def _per_feature(head_mask: Tensor, block: HeadBlock) -> Tensor:
    return head_mask.reshape(-1).repeat_interleave(block.head_dim)


def expand_rows(head_mask: Tensor, block: HeadBlock, weight: Tensor) -> Tensor:
    """A query/key/value weight's mask from one entry per head (differentiable)."""
    return _per_feature(head_mask, block).to(weight.dtype).view(-1, 1).expand_as(weight)


def expand_columns(head_mask: Tensor, block: HeadBlock, weight: Tensor) -> Tensor:
    """The output projection's mask from one entry per head (differentiable)."""
    return _per_feature(head_mask, block).to(weight.dtype).view(1, -1).expand_as(weight)


def head_weight_masks(blocks: list[HeadBlock], chosen: Mapping[str, Tensor],
                      like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The four weight masks of every block from its heads' {0, 1} entries (``chosen``, keyed by
    block name), shaped and typed as the weights in ``like`` (keyed by weight name)."""
    out = {}
    for block in blocks:
        heads = chosen[block.name]
        for projection in ROW_PROJECTIONS:
            key = block.weight(projection)
            out[key] = expand_rows(heads.to(like[key].device), block, like[key]).contiguous()
        key = block.weight(COLUMN_PROJECTION)
        out[key] = expand_columns(heads.to(like[key].device), block, like[key]).contiguous()
    return out


def kept_heads(blocks: list[HeadBlock], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The heads each block keeps, as {0, 1} float tensors of ``heads`` entries: those whose
    output-projection columns keep any weight."""
    out = {}
    for block in blocks:
        columns = masks[block.weight(COLUMN_PROJECTION)].detach()
        out[block.name] = columns.ne(0).any(dim=0).view(block.heads, block.head_dim).any(dim=1).float().cpu()
    return out


def head_scores(block: HeadBlock, scores: Mapping[str, Tensor]) -> Tensor:
    """Each head's score from per-weight scores (a pruner's, or |w|): the sum over the head's
    rows of the query, key and value weights and its columns of the output projection (float64,
    ``heads`` entries)."""
    total = torch.zeros(block.heads, dtype=torch.float64)
    for projection in PROJECTIONS:
        s = scores[block.weight(projection)].detach().double().cpu()
        per_feature = s.sum(dim=1) if projection in ROW_PROJECTIONS else s.sum(dim=0)
        total += per_feature.view(block.heads, block.head_dim).sum(dim=1)
    return total


def head_norms(block: HeadBlock, weights: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> Tensor:
    """The L1 norm of each head's surviving weights over all four projections."""
    return head_scores(block, {key: (weights[key] * masks[key]).abs() for key in block.weights})
