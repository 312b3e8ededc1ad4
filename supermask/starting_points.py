"""Pretrained starting points (``--init-from FILE``): IMP and dense training start from given weights.

The BERT-ticket setting (Chen et al. 2020) for any architecture: the network starts from a state
dict of the same architecture (a safetensors file, e.g. a ``state-dict`` export, or a PyTorch
state dict saved with ``torch.save``, read with ``weights_only=True``), and IMP rewinds to it: it
is θ0. The file's path is not part of a run's identity, its content is: the config records the
SHA-256 of its tensors (``init_from_checksum``), which enters the config hash and the ticket's
provenance, and a run whose file has changed since is refused.

Every parameter and buffer of the plain architecture must be in the file, in its shape (masks and
scores are the engine's, not the file's); a key the architecture lacks is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .errors import RunError, SupermaskError
from .io import check_shapes, load_checkpoint, read_tensors
from .ticket_files import SUPERMASK_ONLY, weights_checksum


def read_starting_point(path) -> dict[str, torch.Tensor]:
    """The tensors of ``path``: safetensors, or a state dict saved by ``torch.save`` (nothing executes)."""
    path = Path(path)
    if not path.is_file():
        raise SupermaskError(f"--init-from {path}: no such file")
    with open(path, "rb") as f:
        head = f.read(2)
    pickled = head.startswith(b"PK") or head.startswith(b"\x80")  # torch.save: a zip archive, or a legacy pickle
    try:
        state = load_checkpoint(path) if pickled else read_tensors(path)
    except RunError as exc:
        raise SupermaskError(f"--init-from {exc}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a supermask checkpoint: its model's state
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in state.items())):
        raise SupermaskError(f"--init-from {path}: not a state dict (a mapping of names to tensors)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise SupermaskError(f"--init-from {path}: {bad[0]} holds non-finite values")
    return state


def starting_point_checksum(path) -> str:
    return weights_checksum(read_starting_point(path))


def resolve_starting_point(path: Optional[str], checksum: Optional[str]) -> Optional[str]:
    """The checksum a config records for ``--init-from path``: the file's, or the one a config read
    back from a run already records (:func:`load_starting_point` refuses a file that changed)."""
    if path is None:
        if checksum is not None:
            raise SupermaskError("init_from_checksum without init_from: name the file it is the checksum of")
        return None
    if checksum is not None:  # a config read back from a run: the file is checked when it is loaded
        return checksum
    return starting_point_checksum(path)


def load_starting_point(model: nn.Module, path, checksum: str) -> None:
    """Put the weights of ``path`` into ``model`` (its masks and scores are left as they are)."""
    state = read_starting_point(path)
    if weights_checksum(state) != checksum:
        raise SupermaskError(f"--init-from {path}: its tensors changed since the run's config was made")
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(SUPERMASK_ONLY)}
    try:
        check_shapes(state, own, f"--init-from {path}", complete=True)
    except RunError as exc:
        raise SupermaskError(str(exc)) from None
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in state:
                if tensor.dtype != state[name].dtype and not (tensor.is_floating_point() and state[name].is_floating_point()):
                    raise SupermaskError(f"--init-from {path}: {name} is {state[name].dtype}, the network's {tensor.dtype}")
                tensor.copy_(state[name])
