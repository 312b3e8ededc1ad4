"""What a user imports into their own model: supermask layers, top-k masks, inits, convert."""

from .attention import LinearAttention
from .convert import SCOPES, check_scope, convert, prunable_names
from .init import SCORE_INITS, WEIGHT_INITS, derived_seed, init_model
from .layers import (
    SUPERMASK_LAYERS,
    GlobalScope,
    SupermaskConv2d,
    SupermaskLinear,
    SupermaskMixin,
    attach_global_scope,
    density_report,
    model_masks,
    supermask_layers,
)
from .topk import check_density, global_topk_masks, kept_count, straight_through_topk, topk_mask

__all__ = [
    "SCOPES", "SCORE_INITS", "SUPERMASK_LAYERS", "WEIGHT_INITS", "GlobalScope", "LinearAttention", "SupermaskConv2d",
    "SupermaskLinear", "SupermaskMixin", "attach_global_scope", "check_density", "check_scope", "convert",
    "density_report", "derived_seed", "global_topk_masks", "init_model", "kept_count", "model_masks",
    "prunable_names", "straight_through_topk", "supermask_layers", "topk_mask",
]
