"""What a model would take before it is allocated: built on PyTorch's ``meta`` device (shapes, no
storage), its parameters and buffers are counted and compared with this machine's memory.

:func:`supermask.models.create_model` checks every build this way, so ``--width 1e9`` or a file
claiming a network of 94 TB is one line, not an allocation error (or a machine swapping to death).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import SupermaskError


def state_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers (on any device, ``meta`` included)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def memory_bytes() -> int:
    """This machine's physical memory (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def building_on_meta() -> bool:
    return torch.get_default_device().type == "meta"


def check_fits(model: nn.Module, what: str) -> None:
    """Refuse ``model`` (built on ``meta``) when its parameters and buffers alone exceed this
    machine's memory: training needs several times more (gradients, optimiser state, activations)."""
    need, have = state_bytes(model), memory_bytes()
    if have and need > have:
        count = sum(p.numel() for p in model.parameters())
        raise SupermaskError(f"{what} holds {count:.3g} parameters ({human_bytes(need)}), more than this machine's "
                             f"{human_bytes(have)} of memory: refused before allocating it (a smaller --width?)")
