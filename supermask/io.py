"""Atomic file writes and safe checkpoint loading.

Every file a run writes goes to a temporary file in the same directory, is flushed
and fsynced, then renamed over the target: a reader sees the old file or the new
one, never half of one. The file gets the mode any other tool would give it
(0666 less the process umask), not ``mkstemp``'s private 0600: results on a shared
file system stay readable by collaborators.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import RunError


def current_umask() -> int:
    """The process umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_temporary(path: Path, data: bytes) -> Path:
    """``data`` in a new, fsynced temporary file beside ``path`` (to be renamed over it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = write_temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def checkpoint_bytes(state: dict) -> bytes:
    import torch  # here, not at the top: the CLI's help and lists import this module without torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()



def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint without executing code from it."""
    try:
        import torch

        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path}: checkpoint not found") from None
    except Exception as exc:
        raise RunError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None


def check_shapes(found: dict, expected: dict, path, complete: bool = False) -> None:
    """Each tensor of ``found`` (read from ``path``) has a name of ``expected`` and its shape; with
    ``complete``, every name of ``expected`` is there too. Else one ``RunError`` naming the first
    mismatch: a damaged file, or one written for another architecture or width."""
    for name, tensor in found.items():
        if name not in expected:
            raise RunError(f"{path}: {name!r} is not a tensor of this network (damaged, or another architecture)")
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            raise RunError(f"{path}: {name} has shape {list(tensor.shape)}, this network's has {list(want)} "
                           f"(damaged, or another architecture or width)")
    if complete:
        absent = [name for name in expected if name not in found]
        if absent:
            raise RunError(f"{path}: lacks {', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''}")


def read_tensors(path: Path, missing: str = "") -> dict:
    """The tensors of a safetensors file; a missing file is ``RunError(missing)`` (default: not
    found), a damaged one a ``RunError`` naming it. Nothing is unpickled."""
    from safetensors.torch import load as st_load

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise RunError(missing or f"{path}: not found") from None
    try:
        return st_load(data)
    except Exception as exc:
        raise RunError(f"{path}: not a safetensors file ({type(exc).__name__})") from None


def save_state(path: Path, state: dict) -> None:
    """Write a state dict as safetensors (on the CPU, contiguous), atomically."""
    from safetensors.torch import save as st_save

    atomic_write_bytes(Path(path), st_save({k: v.detach().cpu().contiguous() for k, v in state.items()}))
