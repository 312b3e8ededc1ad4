"""Tickets: a mask plus what it needs to rebuild the network it applies to.

A strong ticket's ``ticket/`` folder holds ``mask.safetensors`` (one uint8 {0, 1}
tensor per prunable weight, keyed by the parameter's qualified name) and
``ticket.json`` (architecture, data shape, initialiser, seed and the other fields
that regenerate the frozen random weights).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import RunError
from .io import atomic_write_bytes, atomic_write_json, read_json

MASK_FILE = "mask.safetensors"
META_FILE = "ticket.json"


def save_masks(path: Path, masks: dict[str, torch.Tensor]) -> None:
    tensors = {name: m.detach().to("cpu", torch.uint8).contiguous() for name, m in masks.items()}
    atomic_write_bytes(Path(path), st_save(tensors))


def load_masks(path: Path) -> dict[str, torch.Tensor]:
    """Masks from a safetensors file; refuses anything that is not a {0, 1} mask file."""
    try:
        masks = st_load(Path(path).read_bytes())
    except FileNotFoundError:
        raise RunError(f"{path}: mask file not found") from None
    except Exception as exc:
        raise RunError(f"{path}: not a safetensors mask file ({exc})") from None
    for name, m in masks.items():
        if m.dtype != torch.uint8 or bool((m > 1).any()):
            raise RunError(f"{path}: tensor {name!r} is not a {{0, 1}} uint8 mask")
    return masks


def save_ticket(folder: Path, masks: dict[str, torch.Tensor], meta: dict) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_masks(folder / MASK_FILE, masks)
    atomic_write_json(folder / META_FILE, meta)


def read_ticket(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = Path(folder)
    return load_masks(folder / MASK_FILE), read_json(folder / META_FILE)
