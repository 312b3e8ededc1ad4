"""Exports: a finished run's reported network in the formats other code reads, as a registry.

``supermask export RUN_DIR --format ...``; every export is safetensors (none unpickled) and
carries the ticket's provenance in its metadata (``supermask_provenance``). Each format is an
:class:`ExportFormat` in :data:`EXPORTS` (writer, loader, summary), so a new format is one entry:

- ``mask``: the masks alone;
- ``state-dict``: the plain architecture's state dict with the mask folded into the weights;
- ``torch-prune``: ``weight_orig`` / ``weight_mask`` as ``torch.nn.utils.prune`` keeps them;
- ``ticket``: a compact strong ticket (the mask coded by its structure, :mod:`supermask.mask_codes`:
  one bit per weight, an N:M pattern index per group, or one bit per channel; and the recipe),
  which :func:`load_ticket` turns back into the exact network, refusing it when the weights it
  regenerates differ from the recorded checksum (another torch's random streams);
- ``sparse``: as ``state-dict``, masked Linear weights as CSR (:mod:`supermask.sparse`);
- ``compact-dense``: a channel ticket as the physically smaller plain network
  (:mod:`supermask.compact_dense`).

Every export works from a finished run directory's ticket (the selected network's state and its
mask), so it serves strong and weak runs alike; the weights a run computes with come from its
engine (:attr:`supermask.engines.Engine.effective_state`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .catalog import EXPORT_FORMATS as EXPORT_SUMMARIES
from .engines import engine_of_run
from .errors import RunError, SupermaskError
from .file_checks import check_data_description, check_ticket_recipe, json_object
from .io import check_shapes, read_json, read_tensors, write_temporary
from .layout import CONFIG, EXPORT_FOLDER, LEVEL_PREFIX, MASK_FILE, META_FILE, MODEL_FILE, TICKET
from .registry import Registry
from .runs import RunDir
from .ticket_files import (layer_of, library_versions, load_masks, plain_model, plain_state, regenerated_keys,
                           ticket_state, weights_checksum)

PROVENANCE_KEY = "supermask_provenance"


def _run_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict, dict]:
    """(the reported network's state dict, masks, result, ticket meta) of a finished run directory."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise RunError(f"{run.path}: not a directory")
    if not run.is_finished():
        levels = sorted(p.name for p in run.path.glob(f"{LEVEL_PREFIX}*") if p.is_dir())
        hint = f"; an IMP run: give one of its levels ({', '.join(levels)})" if levels else ""
        raise RunError(f"{run.path}: not a finished run (no result.json){hint}")
    result = run.read_result()
    if "levels" not in result:
        result = run.read_result(("test_accuracy", "engine"))
    if "levels" in result:
        levels = sorted(p.name for p in run.path.glob(f"{LEVEL_PREFIX}*") if p.is_dir())
        raise RunError(f"{run.path} is an IMP run: export one of its levels ({', '.join(levels)})")
    masks = load_masks(run.ticket_dir / MASK_FILE)
    meta = read_json(run.ticket_dir / META_FILE)
    if not isinstance(meta, dict):
        raise RunError(f"{run.ticket_dir / META_FILE}: not a ticket description")
    state = ticket_state(run.path)
    check_shapes(masks, state, run.ticket_dir / MASK_FILE)
    return state, masks, result, meta


def torch_prune_state_dict(unmasked: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``torch.nn.utils.prune``'s form of a plain state dict whose weights are not yet masked
    (``unmasked``): ``<layer>.weight_orig`` and ``<layer>.weight_mask`` for every masked layer; see
    :func:`load_torch_prune`."""
    out = {}
    for key, value in unmasked.items():
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
    model.load_state_dict(state, assign=True)
    return model


def compact_ticket(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], meta: dict,
                   metadata: Optional[dict[str, str]] = None,
                   selections: Optional[dict[str, torch.Tensor]] = None) -> bytes:
    """A strong ticket in one small safetensors file: masks coded by their structure
    (:mod:`supermask.mask_codes`: one bit per weight, an N:M pattern index per group, one bit per
    channel), the state that the seed does not regenerate (BatchNorm statistics, learned BN), the
    rebuild recipe and the checksum of the weights the recipe must regenerate. A channel or head
    ticket stores ``selections``, the channels each layer keeps or the heads each block keeps
    (:func:`structure_selections`)."""
    from .mask_codes import encode, stored_bits

    structure = meta.get("structure") or "unstructured"
    regenerated = regenerated_keys(state, masks)
    extra = {k: v.contiguous() for k, v in state.items() if k not in regenerated and not k.endswith(".scores")}
    codings, coded = {}, {}
    for name, mask in masks.items():
        codings[name], tensors = encode(name, mask, structure, (selections or {}).get(name))
        coded.update(tensors)
    bits = sum(stored_bits(codings[n], list(m.shape), structure, len((selections or {}).get(n, ())))
               for n, m in masks.items())
    recipe = dict(meta, shapes={name: list(m.shape) for name, m in masks.items()}, mask_codings=codings,
                  mask_bits_per_weight=bits / max(1, sum(m.numel() for m in masks.values())),
                  weights_checksum=weights_checksum({k: state[k] for k in regenerated}))
    return st_save({**coded, **extra}, metadata={**(metadata or {}), "supermask_ticket": json.dumps(recipe)})


def structure_selections(model: torch.nn.Module, structure: Optional[str]) -> dict[str, torch.Tensor]:
    """What a structured supermask network's compact ticket stores besides its weight masks: the
    channels each layer keeps (channel), the heads each block keeps (head); else nothing."""
    if structure == "channel":
        from .nn.layers import channel_selections

        return channel_selections(model)
    if structure == "head":
        from .nn.layers import head_selections

        return head_selections(model)
    return {}


def export_provenance(meta: dict, result: dict, fmt: str) -> dict:
    """What an export says about itself: the ticket's provenance, the format and what it scored."""
    fields = {k: v for k, v in meta.items() if k != "shapes"}
    fields.update(format=fmt, test_accuracy=result.get("test_accuracy"), density=result.get("density"),
                  selected_epoch=result.get("selected_epoch"),
                  **({"test_loss": result["test_loss"]} if "test_loss" in result else {}))
    return fields


def export_target(run_dir: Path, fmt: str, out) -> Path:
    """Where an export goes: ``out`` itself, or ``<out>/<fmt>.safetensors`` when ``out`` is a folder
    (an existing one, or a path given with a trailing slash)."""
    if out is None:
        return Path(run_dir) / EXPORT_FOLDER / f"{fmt}.safetensors"
    text = str(out)
    out = Path(out)
    if text.endswith(("/", "\\")) or out.is_dir():
        return out / f"{fmt}.safetensors"
    return out


def _check_replaceable(target: Path, run_dir: Path, force: bool) -> None:
    """:func:`supermask.writing.check_replaceable`: nothing inside a run directory but the exported
    run's ``export/`` folder, never a non-regular file, a file export did not write only with ``force``."""
    from .writing import check_replaceable

    def written_by_export(path: Path) -> bool:
        try:
            read_provenance(path)
        except RunError:
            return False
        return True

    check_replaceable(target, force, written_by_export, "--out", allowed_run=Path(run_dir))


#: How far (in accuracy) an export written may be from the run's reported test accuracy: float
#: differences between the supermask layers and the plain ones (or CSR products, or another device)
#: can flip an example. A broken export misses by far more.
ROUND_TRIP_TOLERANCE = 0.005


def export_run(run_dir: Path, fmt: str, out: Path, force: bool = False, data_root=None) -> dict:
    """Write ``run_dir``'s ticket (the network its result reports) to ``out`` in ``fmt``; returns sizes
    and the round trip's accuracy. ``out`` may be a folder; an existing file is replaced only if export
    wrote it (or ``force``), a non-regular file never, and nothing is written inside another run
    directory. The file is loaded back and re-evaluated on the test split before it takes its place
    (:func:`verify_export`); one that does not reproduce the run's accuracy is never left behind."""
    export_format = EXPORTS.get(fmt) if fmt in EXPORTS else None
    if export_format is None:
        raise SupermaskError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    out = export_target(run_dir, fmt, out)
    _check_replaceable(out, Path(run_dir), force)
    raw_state, masks, result, meta = _run_state(Path(run_dir))
    # the weights the run computes with (biprop's sign(w) * alpha); a compact ticket stores what the
    # seed does not regenerate, as the run holds it
    state = engine_of_run(Path(run_dir), result).effective_state(Path(run_dir), raw_state, masks, meta)
    provenance = export_provenance(meta, result, fmt)
    plain = plain_model(provenance, Path(run_dir) / TICKET / META_FILE)
    folded = plain_state(plain, state, masks, Path(run_dir) / TICKET / MODEL_FILE)
    source = ExportSource(state, raw_state, masks, meta, provenance, out, Path(run_dir), plain, folded)
    data = sealed(export_format.write(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_temporary(out, data)
    try:
        check = verify_export(tmp, export_format, source, result, data_root or _run_data_root(Path(run_dir)))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    float32_bytes = sum(v.numel() * 4 for v in folded.values() if v.is_floating_point())
    return {"path": str(out), "bytes": len(data), "float32_state_dict_bytes": float32_bytes, **check}


CHECKSUM_KEY = "supermask_checksum"


def _header_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of safetensors bytes (an 8-byte little-endian header length, then JSON)."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + length]).get("__metadata__") or {}


def sealed(data: bytes) -> bytes:
    """Safetensors bytes with the checksum of their tensors added to the metadata
    (:data:`CHECKSUM_KEY`), which :func:`read_export` verifies: a flipped byte is refused, not evaluated."""
    tensors = st_load(data)
    return st_save(tensors, metadata={**_header_metadata(data), CHECKSUM_KEY: weights_checksum(tensors)})


def read_export(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of an export file, its tensors checked against the checksum they were
    written with (an export of supermask < 0.4 has none: then only the structural checks hold)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    try:
        tensors, metadata = st_load(data), _header_metadata(data)
    except Exception as exc:
        raise RunError(f"{path}: not a safetensors file ({type(exc).__name__})") from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and weights_checksum(tensors) != expected:
        raise RunError(f"{path}: its tensors are not those it was written with (checksum differs): damaged or "
                       f"edited; export the run again")
    return tensors, metadata


def _run_data_root(run_dir: Path):
    """The data root the run was made with (its config.json), where its data set is found again."""
    try:
        config = read_json(run_dir / CONFIG)
    except RunError:
        return None
    return config.get("data_root") if isinstance(config, dict) else None


def verify_export(path: Path, export_format: "ExportFormat", source: "ExportSource", result: dict,
                  data_root=None) -> dict:
    """Load the export at ``path`` back as a user would and check it is the run's network: a ``mask``
    export must hold exactly the run's masks; every other format is re-evaluated on the data set's
    test split and must reach the run's reported test accuracy (within :data:`ROUND_TRIP_TOLERANCE`).
    Returns ``{"round_trip_accuracy": ...}`` (None for masks); a failure is a ``SupermaskError``."""
    if export_format.load is None:
        masks = load_masks(path)
        if set(masks) != set(source.masks) or any(not torch.equal(masks[n], source.masks[n].to(torch.uint8))
                                                  for n in masks):
            raise SupermaskError(f"the {export_format.name} export did not load back as the run's masks "
                                 f"(please report this); nothing was written")
        return {"round_trip_accuracy": None}
    reported = result.get("test_accuracy")
    try:
        measured = evaluate_export(path, data_root)["test_accuracy"]
    except SupermaskError as exc:
        said = str(exc).replace(str(path), str(source.out))
        raise SupermaskError(f"the {export_format.name} export could not be loaded back and re-evaluated "
                             f"({said}); nothing was written") from None
    if isinstance(reported, (int, float)) and abs(measured - reported) > ROUND_TRIP_TOLERANCE:
        raise SupermaskError(f"the {export_format.name} export reaches {measured:.4f} on the test split, not the "
                             f"run's {reported:.4f}: it is not the run's network (please report this); nothing "
                             f"was written")
    return {"round_trip_accuracy": measured}


def read_provenance(path: Path) -> dict:
    """The provenance an export carries (or a compact ticket's recipe)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except Exception as exc:
        raise RunError(f"{path}: not a safetensors file ({type(exc).__name__})") from None
    key = PROVENANCE_KEY if PROVENANCE_KEY in metadata else "supermask_ticket"
    if key not in metadata:
        raise RunError(f"{path}: not a supermask export (no provenance in its metadata)")
    return json_object(metadata[key], path, "provenance")


def load_ticket(path: Path) -> torch.nn.Module:
    """Rebuild the exact supermask network of a compact ticket: weights regenerated from the seed
    (checked against the ticket's checksum: another torch may draw other numbers from the same
    seed), the stored mask reproduced bit for bit (scores are set to the mask, so the top-k keeps
    exactly it)."""
    from .mask_codes import BITMAP, SUFFIXES, decode, encode
    from .models import create_model, supermask_layer_types
    from .models.spec import model_kwargs_record, spec_from_record
    from .nn import attach_global_scope, init_model, model_masks

    path = Path(path)
    try:
        tensors, metadata = read_export(path)
    except RunError as exc:
        raise RunError(str(exc).replace("not a safetensors file", "not a supermask ticket")) from None
    if "supermask_ticket" not in metadata:
        raise RunError(f"{path}: not a supermask ticket (no recipe in its metadata)")
    recipe = json_object(metadata["supermask_ticket"], path, "recipe")
    check_ticket_recipe(recipe, path)
    spec = spec_from_record(recipe)
    kwargs = model_kwargs_record(recipe)
    layers = supermask_layer_types(recipe["density"], bool(recipe.get("learned_bn")), structure=recipe.get("structure")
                                   ).with_dropout(recipe.get("dropout", 0.0))
    structure = recipe.get("structure") or "unstructured"
    codings = recipe.get("mask_codings") or {name: BITMAP for name in recipe["shapes"]}
    coded_keys = {name + suffix for name in recipe["shapes"] for suffix in SUFFIXES.values()}
    extra = {k: v for k, v in tensors.items() if k not in coded_keys}
    with torch.device("meta"):  # shapes first: what the file's tensors and recipe must agree with
        planned = create_model(recipe["arch"], spec, layers, **kwargs)
    heads = _head_counts(planned, structure)
    _check_ticket_tensors(path, recipe, planned, codings, tensors, extra, heads)
    model = create_model(recipe["arch"], spec, layers, **kwargs)
    if structure == "head":  # before the draw, as the search built it: one score per head
        from .nn.layers import link_heads

        link_heads(model)
    init_model(model, recipe["init"], recipe["seed"], scaled_fan=recipe.get("scaled_fan") or False)
    _check_regenerated(path, recipe, model.state_dict())
    try:
        selections = {name: decode(name, codings[name], tensors, shape, structure, heads.get(name))
                      for name, shape in recipe["shapes"].items()}
    except (KeyError, ValueError, RuntimeError) as exc:
        raise RunError(f"{path}: a damaged mask ({type(exc).__name__}: {exc})") from None
    if structure == "channel":
        from .nn.layers import link_channels

        link_channels(model, (spec.in_channels, spec.image_size, spec.image_size))
    with torch.no_grad():
        for name, selection in selections.items():
            model.get_submodule(layer_of(name)).scores.copy_(selection.float())
    model.load_state_dict(extra, strict=False)
    if recipe["scope"] == "global":
        attach_global_scope(model, recipe["density"])
    rebuilt, kept = model_masks(model), structure_selections(model, structure)
    for name in recipe["shapes"]:  # the rebuilt network selects exactly what the ticket stores
        _, again = encode(name, rebuilt[name], structure, kept.get(name))
        if any(not torch.equal(again[k], tensors.get(k, torch.empty(0))) for k in again):
            raise RunError(f"{path}: the stored mask does not match its density (a damaged ticket?)")
    return model.eval()


def _check_ticket_tensors(path: Path, recipe: dict, planned: torch.nn.Module, codings: dict,
                          tensors: dict, extra: dict, heads: dict[str, int]) -> None:
    """The ticket's weight shapes are the architecture's, each coded mask has exactly the bytes its
    coding takes (``heads``: each head-holding layer's head count), and every other tensor is one
    of the network's, in its shape and dtype."""
    from .mask_codes import CODINGS, FOLLOWS, SUFFIXES, stored_bits
    from .nn.layers import supermask_layers

    structure = recipe.get("structure") or "unstructured"
    shapes = {f"{name}.weight": list(layer.weight.shape) for name, layer in supermask_layers(planned)}
    if shapes != recipe["shapes"]:
        raise RunError(f"{path}: its recorded weight shapes are not those of {recipe['arch']} at its width "
                       f"(damaged, or another architecture)")
    for name, shape in shapes.items():
        coding = codings.get(name)
        if coding not in CODINGS or (coding == FOLLOWS) != (structure == "head" and name not in heads):
            raise RunError(f"{path}: {name}: unknown mask coding {coding!r}")
        if coding == FOLLOWS:  # nothing stored: the structure decides this layer's mask
            continue
        tensor = tensors.get(name + SUFFIXES[coding])
        want = -(-stored_bits(coding, shape, structure, heads.get(name)) // 8)
        if tensor is None or tensor.dtype != torch.uint8 or tensor.dim() != 1 or tensor.numel() != want:
            raise RunError(f"{path}: {name}: its coded mask is not {want} bytes of uint8 (damaged?)")
    own = planned.state_dict()
    check_shapes(extra, own, path)
    for name, tensor in extra.items():
        if tensor.dtype != own[name].dtype:
            raise RunError(f"{path}: {name} is {tensor.dtype}, the network's is {own[name].dtype} (damaged?)")


def _head_counts(model: torch.nn.Module, structure: str) -> dict[str, int]:
    """The head count of every block, keyed by its query projection's weight (head structure only)."""
    if structure != "head":
        return {}
    from .nn.heads import attention_heads

    return {block.weight("q_proj"): block.heads for block in attention_heads(model)}


def _check_regenerated(path: Path, recipe: dict, state: dict[str, torch.Tensor]) -> None:
    """Refuse a ticket whose seed regenerates other weights here than where it was made."""
    expected = recipe.get("weights_checksum")
    if expected is None:
        raise RunError(f"{path}: the ticket records no checksum of its weights (made by supermask < 0.2); "
                       f"export it again from its run directory")
    shapes = recipe["shapes"]
    regenerated = regenerated_keys(state, shapes)
    if weights_checksum({k: state[k] for k in regenerated}) != expected:
        made = f"torch {recipe.get('torch_version', '?')}, supermask {recipe.get('supermask_version', '?')}"
        here = f"torch {torch.__version__}, supermask {library_versions()['supermask_version']}"
        if made == here:  # the same versions regenerate the same weights: the recipe was changed
            raise RunError(f"{path}: its recipe (seed, init, architecture or shapes) does not regenerate the "
                           f"weights it was made with, with the same versions ({here}): the file was changed "
                           f"after it was written; export it again from its run directory")
        raise RunError(f"{path}: the seed regenerates other weights here ({here}) than where the ticket was "
                       f"made ({made}); load it with those versions, or export it as state-dict")


def load_export(path: Path) -> tuple[torch.nn.Module, dict]:
    """The network an export holds, in eval mode, and its provenance (its format's loader; a
    ``mask`` export holds no weights and is refused)."""
    path = Path(path)
    provenance = read_provenance(path)
    fmt = provenance.get("format", "ticket")
    export_format = EXPORTS.get(fmt) if isinstance(fmt, str) and fmt in EXPORTS else None
    if export_format is None:
        raise RunError(f"{path}: an export of unknown format {fmt!r}")
    if export_format.load is None:
        raise SupermaskError(f"{path}: a {fmt} export holds no weights; export the run as state-dict or ticket")
    return export_format.load(path, provenance), provenance


def _load_plain(path: Path, provenance: dict, fill) -> torch.nn.Module:
    """A plain-architecture export: the model its provenance describes, built on the ``meta`` device
    (shapes without storage) and filled by ``fill`` with the file's own tensors (``assign``), so
    nothing is allocated that the file's tensors do not hold; every tensor must arrive, in the
    architecture's dtype."""
    state, _ = read_export(path)
    with torch.device("meta"):
        model = plain_model(provenance, path)
    dtypes = {name: t.dtype for name, t in _named_tensors(model)}
    try:
        model = fill(model, state)
    except RunError:
        raise
    except SupermaskError as exc:
        raise RunError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RunError(f"{path}: its provenance does not describe a loadable model ({type(exc).__name__}: {exc})") from None
    except RuntimeError as exc:
        raise RunError(f"{path}: the weights do not fit {provenance.get('arch')!r} "
                       f"({str(exc).splitlines()[0]})") from None
    for name, tensor in _named_tensors(model):
        if tensor.is_meta:
            raise RunError(f"{path}: lacks {name} (damaged, or another architecture)")
        # the architecture's own tensors keep their dtypes; any other (torch-prune's weight_orig and
        # weight_mask) is float32, as the plain networks compute
        want = dtypes.get(name, torch.float32 if tensor.is_floating_point() else tensor.dtype)
        if tensor.dtype != want:
            raise RunError(f"{path}: {name} is {tensor.dtype}, the architecture's is {want} (damaged?)")
        if tensor.layout == torch.strided and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RunError(f"{path}: {name} holds NaN or infinite values (damaged?)")
    return model.eval()


def _named_tensors(model: torch.nn.Module):
    yield from model.named_parameters()
    yield from model.named_buffers()


def evaluate_export(path: Path, data_root: Optional[Path] = None, device: str = "cpu") -> dict:
    """Re-evaluate an export on the test split of the data set it was found on (the batch and
    loader of the run): the accuracy it reported, if the export is the reported network."""
    from .data import fingerprint, load_dataset, make_loader
    from .training import evaluate
    from .training.device import local_device

    device = str(local_device(device))  # one that exists here: else one line, before anything is loaded
    model, provenance = load_export(path)
    check_data_description(provenance, path)
    size = provenance.get("input_shape", [None, 224, 224])[-1]
    data = load_dataset(provenance["dataset"], data_root, False, size, classes=provenance.get("classes"),
                        input_shape=provenance.get("converted_to"), context=provenance.get("context"),
                        train_subset=provenance.get("train_subset"))
    expected = provenance.get("data_fingerprint")
    if expected is not None and fingerprint(data) != expected:
        raise SupermaskError(f"{provenance['dataset']}: not the data the ticket was found on (fingerprint "
                             f"{fingerprint(data)}, the ticket's {expected})")
    loader = make_loader(data.test, data.info, int(provenance.get("eval_batch_size", 256)), train=False,
                         device=device)
    loss, accuracy = evaluate(model.to(device), loader)
    dataset = provenance["dataset"] + (f" classes {provenance['classes']}" if provenance.get("classes") else "")
    return {"dataset": dataset, "examples": len(data.test), "test_loss": loss, "context": data.info.context,
            "test_accuracy": accuracy, "reported_test_accuracy": provenance.get("test_accuracy")}


# -- the formats ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSource:
    """What a format's writer is given: a finished run's reported network."""

    state: dict  # the state it computes with
    raw_state: dict  # the state as the run holds it
    masks: dict
    meta: dict  # ticket.json
    provenance: dict  # what the export says about itself
    out: Path
    run_dir: Path
    plain: torch.nn.Module  # the plain architecture
    folded: dict  # its state dict computing the ticket (weights x mask)

    @property
    def metadata(self) -> dict[str, str]:
        return {PROVENANCE_KEY: json.dumps(self.provenance, sort_keys=True)}


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its writer (the file's bytes), its loader (None: holds no network) and
    what it holds, for ``--help``."""

    name: str
    write: Callable[[ExportSource], bytes]
    load: Optional[Callable[[Path, dict], torch.nn.Module]]
    summary: str


EXPORTS: Registry[ExportFormat] = Registry("export format")


def _write_mask(src: ExportSource) -> bytes:
    return st_save({n: m.contiguous() for n, m in src.masks.items()}, metadata=src.metadata)


def _write_state_dict(src: ExportSource) -> bytes:
    return st_save({k: v.contiguous() for k, v in src.folded.items()}, metadata=src.metadata)


def _write_torch_prune(src: ExportSource) -> bytes:
    unmasked = plain_state(src.plain, src.state, {}, src.out)
    return st_save({k: v.contiguous() for k, v in torch_prune_state_dict(unmasked, src.masks).items()},
                   metadata=src.metadata)


def _write_sparse(src: ExportSource) -> bytes:
    from .sparse import sparse_state_dict

    return st_save(sparse_state_dict(src.folded, src.masks), metadata=src.metadata)


def _write_compact_dense(src: ExportSource) -> bytes:
    from .compact_dense import compact_dense_state

    from .nn.channels import CHAIN_ARCHS, NotAChain

    plain = src.plain
    plain.load_state_dict(src.folded)
    try:
        small, cost = compact_dense_state(plain, tuple(src.provenance["input_shape"]))
    except NotAChain as exc:
        raise SupermaskError(f"compact-dense removes the channels of chain networks ({', '.join(CHAIN_ARCHS)}); "
                             f"{src.provenance.get('arch')} is none ({exc.what}): export it as state-dict or "
                             f"sparse") from None
    return st_save(small, metadata={PROVENANCE_KEY: json.dumps({**src.provenance, **cost}, sort_keys=True)})


def _write_ticket(src: ExportSource) -> bytes:
    meta = src.meta
    if meta.get("kind") != "strong":
        raise SupermaskError("the compact ticket holds strong tickets only (weights regenerated from the seed); "
                             "export a trained ticket as state-dict or torch-prune")
    if meta.get("method", "edge-popup") != "edge-popup":
        raise SupermaskError(f"the compact ticket rebuilds edge-popup networks (seeded weights x a top-k mask); "
                             f"a {meta['method']} ticket computes with other weights: export it as state-dict")
    selections = {}
    if meta.get("structure") in ("channel", "head"):  # the channels kept (a layer with dead inputs hides them)
        selections = structure_selections(engine_of_run(src.run_dir).rebuild(src.run_dir), meta["structure"])
    return compact_ticket(src.raw_state, src.masks, meta, src.metadata, selections)


def _load_state_dict(path, provenance):
    return _load_plain(path, provenance, lambda model, state: (model.load_state_dict(state, assign=True), model)[1])


def _load_torch_prune(path, provenance):
    return _load_plain(path, provenance, load_torch_prune)


def _load_sparse(path, provenance):
    from .sparse import sparse_model

    return _load_plain(path, provenance, lambda model, state: sparse_model(model, state, path))


def _load_compact_dense(path, provenance):
    from .compact_dense import load_compact_dense

    return _load_plain(path, provenance, load_compact_dense)


def _add(name: str, write, load) -> None:
    EXPORTS.add(name, ExportFormat(name, write, load, EXPORT_SUMMARIES[name]))


_add("mask", _write_mask, None)
_add("state-dict", _write_state_dict, _load_state_dict)
_add("torch-prune", _write_torch_prune, _load_torch_prune)
_add("ticket", _write_ticket, lambda path, provenance: load_ticket(path))
_add("sparse", _write_sparse, _load_sparse)
_add("compact-dense", _write_compact_dense, _load_compact_dense)


#: The format names (``--format``'s choices), in the order of the catalog.
EXPORT_FORMATS = tuple(EXPORT_SUMMARIES)
