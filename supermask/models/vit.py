"""A small vision transformer for 28x28 / 32x32 inputs (``vit_tiny``).

Patch embedding (a ``conv`` with kernel = stride = patch), a class token and learned position
embeddings, ``depth`` pre-norm blocks (LayerNorm -> multi-head self-attention -> residual;
LayerNorm -> MLP with GELU -> residual), a final LayerNorm and a ``linear`` head. The attention
is :class:`~supermask.nn.attention.LinearAttention`, so its q/k/v/out projections are the zoo's
``linear`` layers: supermask layers in a search, masked layers under IMP. LayerNorm comes from
``layers.layer_norm`` (non-affine and frozen in a search unless ``--learned-bn``). The class
token and position embeddings are drawn from the seed (N(0, 0.02²)) and, in a search, stay frozen.

Size (defaults): patch 4, dim 64, depth 4, 4 heads, MLP ratio 2: 133K prunable weights.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.attention import LinearAttention
from .registry import InputSpec, Layers, register_model


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, layers: Layers):
        super().__init__()
        self.norm1 = layers.layer_norm(dim)
        self.attn = LinearAttention(dim, heads, linear=layers.linear)
        self.norm2 = layers.layer_norm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(layers.linear(dim, hidden), nn.GELU(), layers.linear(hidden, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h)[0]
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, spec: InputSpec, layers: Layers, patch: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float):
        super().__init__()
        if spec.image_size % patch:
            raise ValueError(f"image size {spec.image_size} is not a multiple of the patch size {patch}")
        tokens = (spec.image_size // patch) ** 2
        self.patch_embed = layers.conv(spec.in_channels, dim, patch, stride=patch)
        self.cls_token = layers.parameter(torch.randn(1, 1, dim) * 0.02)  # frozen in a search
        self.pos_embed = layers.parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, layers) for _ in range(depth)])
        self.norm = layers.layer_norm(dim)
        self.head = layers.linear(dim, spec.num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, tokens, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@register_model("vit_tiny")
def vit_tiny(spec: InputSpec, layers: Layers, width: float = 1.0, patch: int = 4, depth: int = 4, heads: int = 4,
             mlp_ratio: float = 2.0) -> nn.Module:
    dim = max(heads, round(64 * width / heads) * heads)
    return VisionTransformer(spec, layers, patch, dim, depth, heads, mlp_ratio)
