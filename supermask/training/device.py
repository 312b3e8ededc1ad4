"""Device choice: ``auto`` is CUDA where available, else the CPU.

Under ``torchrun`` the first call also joins the process group, and ``cuda`` means
this process's GPU (``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import torch

from ..errors import SupermaskError
from . import distributed

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    return distributed.setup(_device(name))


def local_device(name: str) -> torch.device:
    """The device ``--device name`` means on this machine (``auto``: CUDA when there is one), for
    work that joins no process group (evaluating an export)."""
    return _device(name)


def device_type(name: str) -> str:
    """``cpu`` or ``cuda``: where a run of ``--device name`` trains (no process group is joined)."""
    return _device(name).type


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise SupermaskError(f"device {name!r} requested but CUDA is not available")
        try:
            return torch.device(name)
        except RuntimeError:
            raise SupermaskError(f"device must be auto, cpu or cuda[:N], got {name!r}") from None
    raise SupermaskError(f"device must be auto, cpu or cuda[:N], got {name!r}")
