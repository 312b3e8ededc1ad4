"""Device choice: ``auto`` is CUDA where available, else the CPU."""

from __future__ import annotations

import torch

from ..errors import SupermaskError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise SupermaskError(f"device {name!r} requested but CUDA is not available")
        return torch.device(name)
    raise SupermaskError(f"device must be auto, cpu or cuda[:N], got {name!r}")
