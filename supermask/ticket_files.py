"""Ticket files: a mask plus what it needs to rebuild the network it applies to.

A finished run's ``ticket/`` folder holds the network the run *reports* (the evaluation
``TrainConfig.selection`` picks: by default the best validation epoch):

- ``mask.safetensors``: one uint8 {0, 1} tensor per prunable weight, keyed by the
  parameter's qualified name;
- ``model.safetensors``: the selected network's whole state dict (weights, scores, masks,
  BatchNorm statistics), which every export is made from;
- ``ticket.json``: provenance (supermask and torch versions, config hash, architecture, input
  shape, number of classes, normalisation, selected epoch) and, for a strong ticket, what
  regenerates the frozen random weights (initialiser, seed, ...) and a checksum of them.

The run stage (:mod:`supermask.stage`) writes them; the exports (:mod:`supermask.exports`) and the
engines' ``rebuild`` read them. This module knows no engine.
"""


from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import RunError
from .io import atomic_write_bytes, atomic_write_json, read_json, read_tensors
from .layout import MASK_FILE, META_FILE, MODEL_FILE, TICKET




def library_versions() -> dict:
    """The versions that decide what a seed regenerates: supermask's and torch's."""
    from . import __version__

    return {"supermask_version": __version__, "torch_version": torch.__version__}


def weights_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the named tensors (sorted by name; dtype, shape and bytes of each)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


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


def save_ticket(folder: Path, masks: dict[str, torch.Tensor], meta: dict,
                state: Optional[dict[str, torch.Tensor]] = None) -> None:
    """Write a ticket folder: masks, the network's state (if given) and ``ticket.json`` last."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_masks(folder / MASK_FILE, masks)
    if state is not None:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
        atomic_write_bytes(folder / MODEL_FILE, st_save(tensors))
    atomic_write_json(folder / META_FILE, meta)


def read_ticket(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = Path(folder)
    meta = read_json(folder / META_FILE)
    if not isinstance(meta, dict):
        raise RunError(f"{folder / META_FILE}: not a ticket description (a JSON {type(meta).__name__})")
    return load_masks(folder / MASK_FILE), meta


def ticket_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """The state dict of the network a finished run reports (``ticket/model.safetensors``)."""
    return read_tensors(Path(run_dir) / TICKET / MODEL_FILE,
                        missing=f"{run_dir}: the ticket has no {MODEL_FILE} (written by supermask < 0.2, whose "
                                f"tickets were the last epoch's, not the reported network): rerun it")


def layer_of(weight_name: str) -> str:
    return weight_name.rsplit(".", 1)[0]


def regenerated_keys(state: dict[str, torch.Tensor], masks) -> set[str]:
    """The frozen weights and biases of a strong ticket's masked layers: what the seed regenerates."""
    keys = set()
    for name in masks:
        layer = layer_of(name)
        keys |= {k for k in (f"{layer}.weight", f"{layer}.bias") if k in state}
    return keys


#: Tensors a supermask or masked layer holds that its plain counterpart has not: the scores, the
#: masks of masked layers, Gem-Miner's frozen-score flags.
SUPERMASK_ONLY = (".scores", ".weight_mask", ".frozen")

#: Normalisation layers a search may keep non-affine: their plain counterparts take the identity affine.
NORM_LAYERS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm, torch.nn.GroupNorm)


def folded_state_dict(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The plain architecture's state dict: weights × mask, no scores, mask buffers or other
    supermask-only tensors, and non-affine BatchNorm given the identity affine (weight 1, bias 0)
    that plain BN layers expect. :func:`plain_state` does the same against the plain model itself."""
    out = {}
    for key, value in state.items():
        if key.endswith(SUPERMASK_ONLY):
            continue
        out[key] = value * masks[key].to(value.dtype) if key in masks else value
    for key, value in state.items():
        if key.endswith(".running_mean"):
            layer = key[: -len(".running_mean")]
            if f"{layer}.weight" not in state:
                out[f"{layer}.weight"] = torch.ones_like(value)
                out[f"{layer}.bias"] = torch.zeros_like(value)
    return out


def plain_state(plain: torch.nn.Module, state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                path) -> dict[str, torch.Tensor]:
    """Exactly ``plain``'s state-dict keys, computing what ``state`` computes: weights × mask,
    supermask-only tensors dropped, and every normalisation layer the ticket holds without an affine
    (a search's non-affine BatchNorm or LayerNorm) given the identity one. A tensor that is neither
    (another architecture, a damaged state) is a ``RunError`` naming ``path``."""
    from .io import check_shapes

    expected = plain.state_dict()
    folded = folded_state_dict(state, masks)
    out = {}
    for key, want in expected.items():
        if key in folded:
            out[key] = folded[key]
            continue
        layer, _, leaf = key.rpartition(".")
        if leaf in ("weight", "bias") and isinstance(plain.get_submodule(layer), NORM_LAYERS):
            out[key] = torch.ones_like(want) if leaf == "weight" else torch.zeros_like(want)
    check_shapes(folded, expected, path)
    check_shapes(out, expected, path, complete=True)
    return out


def plain_model(provenance: dict, path) -> torch.nn.Module:
    """The plain (dense) architecture a ticket's provenance describes, as built for its data."""
    from .file_checks import check_model_description
    from .models import DENSE, create_model
    from .models.spec import model_kwargs_record, spec_from_record

    check_model_description(provenance, path)
    try:
        spec = spec_from_record(provenance)
        layers = DENSE.with_dropout(provenance.get("dropout", 0.0))
        kwargs = {**model_kwargs_record(provenance), **provenance.get("model_kwargs", {})}
        return create_model(provenance["arch"], spec, layers, **kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{path}: its provenance does not describe a loadable model ({type(exc).__name__}: {exc})") from None


def rebuild_plain(run_dir: Path) -> torch.nn.Module:
    """The network a finished run of trained weights reports: the plain architecture its ticket's
    provenance describes, holding the ticket's weights x mask, in eval mode."""
    run_dir = Path(run_dir)
    masks, meta = read_ticket(run_dir / TICKET)
    model = plain_model(meta, run_dir / TICKET / META_FILE)
    model.load_state_dict(plain_state(model, ticket_state(run_dir), masks, run_dir / TICKET / MODEL_FILE))
    return model.eval()
