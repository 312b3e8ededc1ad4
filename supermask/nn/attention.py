"""Multi-head attention out of plain ``Linear`` layers, so its projections can be masked.

``nn.MultiheadAttention`` keeps its q/k/v projection as a bare ``in_proj_weight`` parameter and
calls its output projection's weight directly, bypassing the modules: masking layers swapped in
for them would never be used. :class:`LinearAttention` computes the same function with four
``Linear`` modules (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) called as modules, and
:func:`split_attention` replaces every ``nn.MultiheadAttention`` of a model by one holding the
same weights. ``convert`` and IMP's masked conversion call it first, so every Linear of the
attention blocks of, e.g., torchvision's ``vit_b_16`` becomes a supermask (or masked) layer.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LinearAttention(nn.Module):
    """Drop-in for ``nn.MultiheadAttention`` (``batch_first`` or not) built from ``linear`` layers."""

    def __init__(self, embed_dim: int, num_heads: int, *, bias: bool = True, dropout: float = 0.0,
                 batch_first: bool = True, linear: Callable[..., nn.Module] = nn.Linear):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.q_proj = linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = linear(embed_dim, embed_dim, bias=bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = False, attn_mask: Optional[Tensor] = None, **_) -> tuple[Tensor, None]:
        if not self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        b, n, _ = query.shape
        heads = lambda x: x.view(b, -1, self.num_heads, self.embed_dim // self.num_heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q_proj(query)), heads(self.k_proj(key)), heads(self.v_proj(value))
        mask = sdpa_mask(attn_mask, key_padding_mask, b, self.num_heads, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, self.embed_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``nn.MultiheadAttention``'s mask as a float to add: a boolean True (blocked) becomes -inf."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def sdpa_mask(attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], batch: int, heads: int,
              dtype: torch.dtype) -> Optional[Tensor]:
    """``nn.MultiheadAttention``'s masks in ``scaled_dot_product_attention``'s convention.

    MultiheadAttention reads a boolean True as "may not attend" (for ``attn_mask`` and
    ``key_padding_mask`` alike); SDPA reads True as "may attend". Boolean masks are inverted,
    float masks are added; a 3-d ``attn_mask`` of shape (batch * heads, L, S) becomes
    (batch, heads, L, S), a ``key_padding_mask`` (batch, S) is broadcast over heads and queries."""
    masks = []
    if attn_mask is not None:
        if attn_mask.dim() == 3:
            attn_mask = attn_mask.view(batch, heads, *attn_mask.shape[-2:])
        masks.append(attn_mask)
    if key_padding_mask is not None:
        masks.append(key_padding_mask.view(batch, 1, 1, -1))
    if not masks:
        return None
    if all(m.dtype == torch.bool for m in masks):
        blocked = masks[0] if len(masks) == 1 else masks[0] | masks[1]
        return ~blocked
    total = _additive(masks[0], dtype)
    return total if len(masks) == 1 else total + _additive(masks[1], dtype)


@torch.no_grad()
def from_multihead(mha: nn.MultiheadAttention) -> LinearAttention:
    if not mha._qkv_same_embed_dim:
        raise ValueError("attention with different key/value dimensions is not supported")
    new = LinearAttention(mha.embed_dim, mha.num_heads, bias=mha.in_proj_bias is not None, dropout=mha.dropout,
                          batch_first=mha.batch_first)
    new.to(mha.in_proj_weight.device, mha.in_proj_weight.dtype)
    for i, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
        rows = slice(i * mha.embed_dim, (i + 1) * mha.embed_dim)
        proj.weight.copy_(mha.in_proj_weight[rows])
        if mha.in_proj_bias is not None:
            proj.bias.copy_(mha.in_proj_bias[rows])
    new.out_proj.weight.copy_(mha.out_proj.weight)
    if mha.out_proj.bias is not None:
        new.out_proj.bias.copy_(mha.out_proj.bias)
    return new


def split_attention(model: nn.Module) -> nn.Module:
    """Replace (in place) every ``nn.MultiheadAttention`` of ``model`` by an equal :class:`LinearAttention`."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MultiheadAttention):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, from_multihead(module))
    return model
