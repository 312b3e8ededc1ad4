"""The ``compact-dense`` export: a channel ticket as the physically smaller plain network.

``export --format compact-dense`` folds the mask into the weights (as ``state-dict``), then removes
every channel that feeds nothing (:func:`supermask.nn.channels.compact_dense`: the layer's rows,
bias and BatchNorm entries and the next layer's inputs), so the file holds an ordinary state dict
of smaller ``nn.Conv2d`` / ``nn.Linear`` / BatchNorm layers whose outputs equal the masked
network's. The export's provenance records the kept channels of every layer, the parameters and
the multiply-accumulates per input of the small network beside the full one's. It applies to
chains (:data:`supermask.nn.channels.CHAIN_ARCHS`); a ticket that is not channel-structured loses
only the channels that happen to feed nothing (often none).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .models.cost import count_macs, count_parameters
from .nn.channels import compact_dense, resize_to


def compact_dense_state(plain: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict[str, Tensor], dict]:
    """(the small network's state dict, what it costs) for ``plain``, the plain architecture holding
    the folded weights (weights x mask)."""
    small = compact_dense(plain, input_shape)
    prunable = lambda m: [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]  # noqa: E731
    cost = {
        "channels": {name: list(module.weight.shape[:2]) for name, module in small.named_modules()
                     if isinstance(module, (nn.Conv2d, nn.Linear))},
        "parameters": count_parameters(small), "dense_parameters": count_parameters(plain),
        "weights": sum(x.weight.numel() for x in prunable(small)),
        "dense_weights": sum(x.weight.numel() for x in prunable(plain)),
        "macs": count_macs(small, input_shape), "dense_macs": count_macs(plain, input_shape),
    }
    return {k: v.contiguous() for k, v in small.state_dict().items()}, cost


def load_compact_dense(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """``model`` (the plain architecture) resized to a ``compact-dense`` export's shapes and loaded."""
    resize_to(model, state)
    with torch.no_grad():
        model.load_state_dict(state, assign=True)
    return model
