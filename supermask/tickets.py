"""Tickets: a mask plus what it needs to rebuild the network it applies to.

A run's ``ticket/`` folder holds ``mask.safetensors`` (one uint8 {0, 1} tensor per
prunable weight, keyed by the parameter's qualified name) and ``ticket.json`` (for a
strong ticket: architecture, data shape, initialiser, seed and the other fields that
regenerate the frozen random weights).

Exports (``supermask export RUN_DIR --format ...``), all safetensors, none unpickled:

- ``mask``: the masks alone;
- ``state-dict``: the plain architecture's state dict with the mask folded into the weights;
- ``torch-prune``: ``weight_orig`` / ``weight_mask`` as ``torch.nn.utils.prune`` keeps them;
- ``ticket``: a compact strong ticket (mask at one bit per weight + the recipe), which
  :func:`load_ticket` turns back into the exact network.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import RunError, SupermaskError
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


# -- export ------------------------------------------------------------------------------------
#
# Every export works from a finished run directory's checkpoint (the final state dict) and its
# ticket mask, so it serves strong (search) and weak (IMP level) runs alike.

EXPORT_FORMATS = ("mask", "state-dict", "torch-prune", "ticket")
PACKED_SUFFIX = ".mask_bits"


def _run_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(final state dict, masks, result) of a finished run directory."""
    from .io import load_checkpoint
    from .runs import RunDir

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise RunError(f"{run.path}: not a directory")
    if not run.is_finished():
        raise RunError(f"{run.path}: not a finished run (no result.json); for IMP give a level-<L> directory")
    result = run.read_result()
    masks = load_masks(run.ticket_dir / MASK_FILE)
    state = load_checkpoint(run.checkpoint_path)["model"]
    missing = [name for name in masks if name not in state]
    if missing:
        raise RunError(f"{run.path}: masks for weights the checkpoint lacks: {missing[:3]}")
    return state, masks, result


def _layer_of(weight_name: str) -> str:
    return weight_name.rsplit(".", 1)[0]


def folded_state_dict(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The plain architecture's state dict: weights × mask, no scores or mask buffers, and
    non-affine BatchNorm given the identity affine (weight 1, bias 0) that plain BN layers expect."""
    out = {}
    for key, value in state.items():
        if key.endswith(".scores") or key.endswith(".weight_mask"):
            continue
        out[key] = value * masks[key].to(value.dtype) if key in masks else value
    for key, value in state.items():
        if key.endswith(".running_mean"):
            layer = key[: -len(".running_mean")]
            if f"{layer}.weight" not in state:
                out[f"{layer}.weight"] = torch.ones_like(value)
                out[f"{layer}.bias"] = torch.zeros_like(value)
    return out


def torch_prune_state_dict(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``torch.nn.utils.prune``'s form: ``<layer>.weight_orig`` (the unmasked weight) and
    ``<layer>.weight_mask`` for every masked layer; see :func:`load_torch_prune`."""
    plain = folded_state_dict(state, {})
    out = {}
    for key, value in plain.items():
        if key in masks:
            out[key[: -len("weight")] + "weight_orig"] = value
            out[key[: -len("weight")] + "weight_mask"] = masks[key].to(value.dtype)
        else:
            out[key] = value
    return out


def load_torch_prune(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Load a ``torch-prune`` export into a plain model: every layer with a ``weight_mask`` in
    ``state`` is put under ``prune.identity`` first, then the state dict is loaded."""
    from torch.nn.utils import prune

    for key in state:
        if key.endswith(".weight_mask"):
            prune.identity(model.get_submodule(key[: -len(".weight_mask")]), "weight")
    model.load_state_dict(state)
    return model


def pack_masks(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One bit per weight: each mask flattened and packed eight to a byte."""
    import numpy as np

    return {name + PACKED_SUFFIX: torch.from_numpy(np.packbits(m.to(torch.uint8).reshape(-1).numpy()))
            for name, m in masks.items()}


def unpack_mask(bits: torch.Tensor, shape: list[int]) -> torch.Tensor:
    import numpy as np

    n = int(np.prod(shape))
    return torch.from_numpy(np.unpackbits(bits.numpy(), count=n).copy()).view(*shape)


def compact_ticket(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], meta: dict) -> bytes:
    """A strong ticket in one small safetensors file: masks at one bit per weight, the state that
    the seed does not regenerate (BatchNorm statistics, learned BN), and the rebuild recipe."""
    import json

    regenerated = {k for k in state if k.endswith(".scores")}
    for name in masks:
        layer = _layer_of(name)
        regenerated |= {f"{layer}.weight", f"{layer}.bias"}
    extra = {k: v.contiguous() for k, v in state.items() if k not in regenerated}
    recipe = dict(meta, shapes={name: list(m.shape) for name, m in masks.items()})
    return st_save({**pack_masks(masks), **extra}, metadata={"supermask_ticket": json.dumps(recipe)})


def _effective_weights(run_dir: Path, state: dict, masks: dict) -> dict:
    """A search run's state with each masked weight replaced, where kept, by what the layer computes
    with (biprop's sign(w)*alpha; IteRand's re-drawn weights are in the checkpoint already)."""
    from .nn.layers import SupermaskMixin
    from .search import load_search_model

    model = load_search_model(run_dir)
    state = dict(state)
    with torch.no_grad():
        for name, module in model.named_modules():
            key = f"{name}.weight"
            if isinstance(module, SupermaskMixin) and key in masks:
                kept = masks[key].bool()
                state[key] = torch.where(kept, module.masked_weight(), state[key])
    return state


def export_run(run_dir: Path, fmt: str, out: Path) -> dict:
    """Write ``run_dir``'s ticket to ``out`` in ``fmt``; returns sizes for the report."""
    if fmt not in EXPORT_FORMATS:
        raise SupermaskError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    state, masks, result = _run_state(Path(run_dir))
    if result.get("engine") == "search":
        state = _effective_weights(Path(run_dir), state, masks)
    if fmt == "mask":
        data = st_save({n: m.contiguous() for n, m in masks.items()})
    elif fmt == "state-dict":
        data = st_save({k: v.contiguous() for k, v in folded_state_dict(state, masks).items()})
    elif fmt == "torch-prune":
        data = st_save({k: v.contiguous() for k, v in torch_prune_state_dict(state, masks).items()})
    else:
        meta = read_json(Path(run_dir) / "ticket" / META_FILE)
        if meta.get("kind") != "strong":
            raise SupermaskError("the compact ticket holds strong tickets only (weights regenerated from the seed); "
                                 "export a trained ticket as state-dict or torch-prune")
        if meta.get("method", "edge-popup") != "edge-popup":
            raise SupermaskError(f"the compact ticket rebuilds edge-popup networks (seeded weights x a top-k mask); "
                                 f"a {meta['method']} ticket computes with other weights: export it as state-dict")
        data = compact_ticket(state, masks, meta)
    out = Path(out)
    if out.is_dir():
        raise SupermaskError(f"{out} is a directory; give a file path for the export")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)
    float32_bytes = sum(v.numel() * 4 for k, v in folded_state_dict(state, masks).items() if v.is_floating_point())
    return {"path": str(out), "bytes": len(data), "float32_state_dict_bytes": float32_bytes}


def load_ticket(path: Path) -> torch.nn.Module:
    """Rebuild the exact supermask network of a compact ticket: weights regenerated from the seed,
    the stored mask reproduced bit for bit (scores are set to the mask, so the top-k keeps exactly it)."""
    import json

    from safetensors import safe_open

    from .models import InputSpec, create_model, supermask_layer_types
    from .nn import attach_global_scope, init_model, model_masks

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            recipe = json.loads((f.metadata() or {})["supermask_ticket"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise RunError(f"{path}: ticket not found") from None
    except Exception as exc:
        raise RunError(f"{path}: not a supermask ticket ({type(exc).__name__})") from None
    spec = InputSpec(recipe["in_channels"], recipe["image_size"], recipe["num_classes"])
    kwargs = {"width": recipe["width"]} if recipe.get("width", 1.0) != 1.0 else {}
    model = create_model(recipe["arch"], spec, supermask_layer_types(recipe["density"], recipe["learned_bn"]), **kwargs)
    init_model(model, recipe["init"], recipe["seed"], scaled_fan=recipe["scaled_fan"])
    masks = {name: unpack_mask(tensors[name + PACKED_SUFFIX], shape) for name, shape in recipe["shapes"].items()}
    extra = {k: v for k, v in tensors.items() if not k.endswith(PACKED_SUFFIX)}
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_submodule(_layer_of(name)).scores.copy_(mask.float())
    model.load_state_dict(extra, strict=False)
    if recipe["scope"] == "global":
        attach_global_scope(model, recipe["density"])
    rebuilt = model_masks(model)
    if any(not torch.equal(rebuilt[n].to(torch.uint8), masks[n]) for n in masks):
        raise RunError(f"{path}: the stored mask does not match its density (a damaged ticket?)")
    return model.eval()
