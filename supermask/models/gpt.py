"""A small decoder-only transformer for character-level language modelling (``gpt_tiny``).

Token embeddings and learned position embeddings (``layers.embedding``, ``layers.parameter``:
unpruned, as the BERT-ticket papers leave the embeddings; trained in dense and IMP networks,
frozen random in a search), ``depth`` pre-LayerNorm blocks (LayerNorm -> causal multi-head
self-attention -> residual; LayerNorm -> MLP with GELU -> residual), a final LayerNorm, and the
output layer tied to the token embedding (GPT-2's weight tying: logits = h · Eᵀ).

``gpt_tiny_untied`` is the same network with its own output layer (the zoo's ``linear``, no bias):
prunable like the blocks' linears, so a search masks it. In a search the tied output is the
frozen random embedding, whose N(0, 0.02²) logits barely differ whatever the mask; the untied
one is a random layer the search selects from, as edge-popup selects every other layer. The attention's
query, key, value and output projections and the MLP's two layers are the zoo's ``linear``
layers, so a search masks them and IMP prunes them; the attention runs through
``scaled_dot_product_attention`` with ``is_causal=True``: position t sees positions <= t only.

Its input is a batch of windows of vocabulary indices ``(batch, context)``; its output the
next-character logits at every position, ``(batch, context, vocabulary)``.

Size (defaults): dim 128, depth 4, 4 heads, MLP ratio 4: 786K prunable weights (``--width``
scales the dim, in steps of the head count).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import InputSpec, Layers, register_model

#: GPT-2's initialisation of the embeddings (and of the dense network's linears): N(0, 0.02²).
EMBEDDING_STD = 0.02


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions <= t."""

    def __init__(self, dim: int, heads: int, linear):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.dim, self.num_heads = dim, heads
        self.q_proj, self.k_proj, self.v_proj = linear(dim, dim), linear(dim, dim), linear(dim, dim)
        self.out_proj = linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.num_heads, self.dim // self.num_heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                             is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, layers: Layers):
        super().__init__()
        self.norm1 = layers.layer_norm(dim)
        self.attn = CausalSelfAttention(dim, heads, layers.linear)
        self.norm2 = layers.layer_norm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(layers.linear(dim, hidden), nn.GELU(), layers.linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, spec: InputSpec, layers: Layers, dim: int, depth: int, heads: int, mlp_ratio: float,
                 tied: bool = True):
        super().__init__()
        if not spec.is_language_model or spec.context < 1:
            raise ValueError("a GPT models text: give it a text data set (tinyshakespeare, text:PATH)")
        self.context = spec.context
        self.token_embed = layers.embedding(spec.num_classes, dim)
        with torch.no_grad():
            self.token_embed.weight.normal_(0.0, EMBEDDING_STD)
        self.pos_embed = layers.parameter(torch.randn(1, spec.context, dim) * EMBEDDING_STD)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, layers) for _ in range(depth)])
        self.norm = layers.layer_norm(dim)
        self.head = None if tied else layers.linear(dim, spec.num_classes, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        t = tokens.shape[1]
        if t > self.context:
            raise ValueError(f"a window of {t} characters is longer than the context ({self.context})")
        x = self.token_embed(tokens) + self.pos_embed[:, :t]
        x = self.norm(self.blocks(x))
        if self.head is not None:
            return self.head(x)
        return x @ self.token_embed.weight.t()  # the output layer tied to the token embedding


@register_model("gpt_tiny", task="language-model")
def gpt_tiny(spec: InputSpec, layers: Layers, width: float = 1.0, depth: int = 4, heads: int = 4,
             mlp_ratio: float = 4.0) -> nn.Module:
    dim = max(heads, round(128 * width / heads) * heads)
    return GPT(spec, layers, dim, depth, heads, mlp_ratio)


@register_model("gpt_tiny_untied", task="language-model")
def gpt_tiny_untied(spec: InputSpec, layers: Layers, width: float = 1.0, depth: int = 4, heads: int = 4,
                    mlp_ratio: float = 4.0) -> nn.Module:
    dim = max(heads, round(128 * width / heads) * heads)
    return GPT(spec, layers, dim, depth, heads, mlp_ratio, tied=False)
