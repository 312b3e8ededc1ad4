"""How a compact strong ticket stores its masks, by structure, with the bits per weight each costs.

- ``bitmap`` (unstructured): one bit per weight, eight to a byte (``<weight>.mask_bits``);
- ``nm-index`` (N:M): each group of M holds one of C(M, N) patterns; its index takes
  ``ceil(log2 C(M, N))`` bits (2:4: 3 bits per 4 weights, 0.75 bits per weight; 1:4: 0.5), packed
  into one bit stream (``<weight>.mask_nm``); the groups run as :mod:`supermask.nn.nm` lays them out;
- ``channel``: one bit per output channel (``<weight>.mask_channels``); the weight mask follows
  from the chain (a layer's channels times the previous layer's; the last layer keeps all its outputs);
- ``head``: one bit per attention head, stored with the block's query projection
  (``<q_proj weight>.mask_heads``); the key, value and output projections' masks and those of the
  layers a head structure keeps whole follow from the structure and store nothing (``follows``).

A layer whose mask is not of its structure's form (an N:M layer that fell back to unstructured)
is stored as a bitmap.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .nn.nm import from_groups, to_groups
from .structure import Structure

BITMAP, NM_INDEX, CHANNEL_BITS, HEAD_BITS, FOLLOWS = "bitmap", "nm-index", "channel", "head", "follows"
SUFFIXES = {BITMAP: ".mask_bits", NM_INDEX: ".mask_nm", CHANNEL_BITS: ".mask_channels", HEAD_BITS: ".mask_heads"}
CODINGS = (*SUFFIXES, FOLLOWS)  # FOLLOWS stores no tensor
MAX_PATTERNS = 1 << 16  # beyond this an N:M pattern table is not worth building: bitmap


def _pack(bits: np.ndarray) -> Tensor:
    return torch.from_numpy(np.packbits(bits.astype(np.uint8).reshape(-1)))


def _unpack(packed: Tensor, count: int) -> np.ndarray:
    return np.unpackbits(packed.numpy(), count=count)


def _patterns(n: int, m: int) -> np.ndarray:
    """Every group pattern with ``n`` of ``m`` bits set, as integers (bit j: the j-th weight), ascending
    (unsigned: a group of 64 sets bit 63)."""
    return np.array(sorted(sum(1 << j for j in kept) for kept in combinations(range(m), n)), dtype=np.uint64)


def index_bits(n: int, m: int) -> int:
    return max(1, math.ceil(math.log2(math.comb(m, n))))


def encode(name: str, mask: Tensor, structure: str, channels: Optional[Tensor] = None) -> tuple[str, dict[str, Tensor]]:
    """(the coding, the tensors it stores) of one layer's {0, 1} mask; a channel structure stores the
    output channels the layer keeps, ``channels`` (:func:`supermask.nn.layers.channel_selections`),
    else those of the mask's nonzero rows; a head structure stores the heads a block's query
    projection keeps (``channels``: :func:`supermask.nn.layers.head_selections`), and nothing for
    every other layer."""
    mask = mask.detach().cpu().to(torch.uint8)
    parsed = Structure.parse(structure)
    if parsed.head:
        if channels is None:
            return FOLLOWS, {}
        return HEAD_BITS, {name + SUFFIXES[HEAD_BITS]: _pack(channels.detach().cpu().reshape(-1).bool().numpy())}
    if parsed.nm is not None:
        n, m = parsed.nm.n, parsed.nm.m
        if mask.dim() in (2, 4) and mask.shape[1] % m == 0 and math.comb(m, n) <= MAX_PATTERNS:
            groups = to_groups(mask, m).numpy()
            values = (groups.astype(np.uint64) << np.arange(m, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
            table = _patterns(n, m)
            index = np.searchsorted(table, values)
            if np.all(index < len(table)) and np.array_equal(table[np.minimum(index, len(table) - 1)], values):
                b = index_bits(n, m)
                bits = (index[:, None] >> np.arange(b)) & 1
                return NM_INDEX, {name + SUFFIXES[NM_INDEX]: _pack(bits)}
    if parsed.channel:
        rows = (mask.reshape(mask.shape[0], -1).any(dim=1) if channels is None
                else channels.detach().cpu().reshape(-1).bool())
        return CHANNEL_BITS, {name + SUFFIXES[CHANNEL_BITS]: _pack(rows.numpy())}
    return BITMAP, {name + SUFFIXES[BITMAP]: _pack(mask.numpy())}


def decode(name: str, coding: str, tensors: dict[str, Tensor], shape: list[int], structure: str,
           heads: Optional[int] = None) -> Tensor:
    """The scores that make a layer select exactly the stored mask: the {0, 1} weight mask (bitmap,
    N:M), the {0, 1} channel mask shaped ``(out, 1, ...)`` (channel), the {0, 1} head mask shaped
    ``(heads, 1)`` (head: ``heads`` entries) or nothing (follows: the layer selects nothing itself)."""
    if coding == BITMAP:
        count = int(np.prod(shape))
        return torch.from_numpy(_unpack(tensors[name + SUFFIXES[BITMAP]], count).copy()).view(*shape)
    if coding == NM_INDEX:
        nm = Structure.parse(structure).nm
        if nm is None:
            raise ValueError(f"{name}: an N:M coding in a ticket of structure {structure!r}")
        n, m = nm.n, nm.m
        b, groups = index_bits(n, m), int(np.prod(shape)) // m
        bits = _unpack(tensors[name + SUFFIXES[NM_INDEX]], groups * b).reshape(groups, b).astype(np.int64)
        index = (bits << np.arange(b)).sum(axis=1)
        table = _patterns(n, m)
        if np.any(index >= len(table)):
            raise ValueError(f"{name}: an N:M pattern index beyond the {len(table)} patterns")
        bits = torch.from_numpy(((table[index][:, None] >> np.arange(m, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8))
        return from_groups(bits, shape)
    if coding == CHANNEL_BITS:
        view = (shape[0], *([1] * (len(shape) - 1)))
        return torch.from_numpy(_unpack(tensors[name + SUFFIXES[CHANNEL_BITS]], shape[0]).copy()).view(view)
    if coding == HEAD_BITS:
        if heads is None:
            raise ValueError(f"{name}: a head coding for a layer that holds no head scores")
        return torch.from_numpy(_unpack(tensors[name + SUFFIXES[HEAD_BITS]], heads).copy()).view(heads, 1)
    if coding == FOLLOWS:
        return torch.empty(0)
    raise ValueError(f"{name}: unknown mask coding {coding!r}")


def stored_bits(coding: str, shape: list[int], structure: str, heads: Optional[int] = None) -> int:
    """The bits a layer's mask takes in the ticket, before byte padding (``heads``: the head count
    of the block whose query projection the layer is)."""
    count = int(np.prod(shape))
    if coding == HEAD_BITS:
        return int(heads or 0)
    if coding == FOLLOWS:
        return 0
    if coding == NM_INDEX:
        nm = Structure.parse(structure).nm
        return count // nm.m * index_bits(nm.n, nm.m)
    if coding == CHANNEL_BITS:
        return shape[0]
    return count
