"""Ticket transfer: a ticket found on data set A, trained (weak) or re-searched (strong) on data set B.

Morcos, Yu, Paganini & Tian 2019 ("One ticket to win them all") ask whether a winning ticket found
on one data set is a good initialisation on another: the mask and the rewind weights of an IMP
level found on A, trained on B, against a random mask of the same layerwise densities and against
the ticket IMP finds on B itself (the ceiling). ``run_transfer`` asks it of any finished IMP run
(weak tickets) and, new here (no paper has done it), of any finished search run (strong tickets).

The source is a finished run on A (``source``: its seed folder); B is this config's ``dataset`` and
``classes`` (``--classes 5-9`` makes digits 5-9 a task of its own). Architecture, width, dropout
and init are the source's; B's training recipe may differ from A's (Morcos et al. also transfer
across optimisers): it is this config's ``train``, the source's recipe by default.

**Weak** (an IMP source), for each transferred level L (every level of the source by default):

- ``level-<L>/transferred/``: A's level-L mask and starting weights (θ0, or θk with late rewinding)
  in every layer but the output layer, trained on B from step 0 of B's schedule (pruned weights held
  at zero after every step, as in IMP);
- ``level-<L>/random-mask/`` (control ``random-mask``, levels > 0): the same starting weights under
  a random mask with as many kept weights per layer;
- ``target`` (control): IMP on B itself, with the source's pruning plan and B's recipe (an ordinary
  IMP run in its own run directory, reused when it has finished): its level L is the ceiling.

The output layer is replaced by a fresh one for B's classes, drawn by the source's init from a
seed of this run: dense (``output_layer="dense"``, the default: a new classifier, unpruned) or
pruned to A's level-L output density by a random mask (``"pruned"``). Morcos et al. re-initialise
the output layer of a transferred ticket; we could not check here whether their new layer is
pruned, so the default is stated as ours, and the other is an option.

**Strong** (a search source): the mask A's search found over the frozen random weights, kept in
every hidden layer over the same random weights; the output layer (fresh random weights and
scores for B's classes) is searched on B with the source's method (``rescore="output"``: the
hidden scores frozen, so their masks stay A's bit for bit), or every layer's scores are
fine-searched from A's (``rescore="all"``). Beside it: ``random-mask`` (random hidden masks of the
same layerwise densities over the same weights, frozen; the output layer searched the same way) and
``target`` (a search on B from scratch: an ordinary search run, reused when finished).

Every stage of the run is an ordinary run stage (resuming exactly, skipped when finished). The
run's config names its source by the source's config hash and a checksum of what is transferred
(``source_config_hash``, ``source_checksum``: in the hash; the path ``source`` is not), and the
result has one row per (level, branch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from supermask.configs import ExperimentConfig, config_from_record
from supermask.engines import ENGINES, Engine, engine, engine_of_run
from supermask.errors import RunError, SupermaskError
from supermask.io import read_json, read_tensors
from supermask.layout import META_FILE, REWIND_FILE, TICKET, WEIGHTS_FILE, level_dir_name
from supermask.resolved import resolve
from supermask.runs import RunDir, config_dict, config_hash
from supermask.seeding import derived_seed
from supermask.stage import Stage, check_input_shape, composite, data_fields, finished_rows, open_run, run_stage
from supermask.ticket_files import read_ticket, rebuild_plain, ticket_state
from supermask.training import MaskAfterStep, TrainConfig, resolve_device

from .levels import build_masked
from .rewind import rewind

log = logging.getLogger(__name__)

OUTPUT_LAYERS = ("dense", "pruned")
RESCORES = ("output", "all")
CONTROLS = ("random-mask", "target")
TRANSFERRED, RANDOM_MASK, TARGET = "transferred", "random-mask", "target"
#: The fields a transfer takes from its source: another value is a different network.
SOURCE_FIELDS = ("arch", "width", "dropout")


@dataclass
class TransferResult:
    run_dir: Path
    rows: list[dict]  # one per (level, branch): density, test accuracy, the source's accuracy on A
    skipped: bool = False


@dataclass
class TransferConfig(ExperimentConfig):
    """A ticket transfer (see the module docstring). ``dataset``/``classes`` are B; ``train`` is B's
    recipe (None: the source's; :func:`source_config` gives it, to change a field of it)."""

    source: Optional[str] = None  # the finished run on A (its seed folder); not hashed
    source_engine: Optional[str] = None  # "imp" or "search" (set from the source)
    source_config_hash: Optional[str] = None  # the source's config hash (set from the source)
    source_checksum: Optional[str] = None  # what is transferred, bit for bit (set from the source)
    source_dataset: Optional[str] = None  # A, as its result names it (set from the source)
    levels: Optional[tuple[int, ...]] = None  # weak: the source's levels transferred (None: all)
    output_layer: str = "dense"  # weak: B's new output layer dense, or randomly pruned to A's density
    rescore: str = "output"  # strong: search the output layer's scores only, or every layer's from A's
    controls: tuple[str, ...] = CONTROLS
    init: Optional[str] = None  # the source's (set from it)
    train: Optional[TrainConfig] = None  # B's recipe; None: the source's

    ENGINE = "transfer"

    def __post_init__(self) -> None:
        if self.train is not None:  # None: the source's recipe, read when the config resolves
            super().__post_init__()

    def _resolve_fields(self) -> None:
        if self.source is None:
            raise SupermaskError("a transfer needs --source: a finished IMP or search run on the source data")
        source = source_config(self.source)
        kind = engine(source.ENGINE).kind
        for name in SOURCE_FIELDS:
            if getattr(self, name) != getattr(source, name):
                raise SupermaskError(f"--source {self.source} is a {name} {getattr(source, name)!r} run, not "
                                     f"{getattr(self, name)!r}: a transferred ticket keeps its network")
        if self.init is not None and self.init != source.init:
            raise SupermaskError(f"--init {self.init}: a transferred ticket keeps its source's weights, drawn by "
                                 f"{source.init}")
        self.init, self.source_engine = source.init, source.ENGINE
        self.source_dataset = source.dataset + (f"[{source.classes}]" if source.classes else "")
        if self.output_layer not in OUTPUT_LAYERS:
            raise SupermaskError(f"output layer must be one of {', '.join(OUTPUT_LAYERS)}, got {self.output_layer!r}")
        if self.rescore not in RESCORES:
            raise SupermaskError(f"rescore must be one of {', '.join(RESCORES)}, got {self.rescore!r}")
        self.controls = tuple(dict.fromkeys(self.controls))
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown:
            raise SupermaskError(f"control {unknown[0]!r}: the controls are {', '.join(CONTROLS)}")
        available = [row["level"] for row in _source_result(self.source).get("levels", [])]
        if kind == "weak":
            if self.rescore != "output":
                raise SupermaskError("--rescore applies to a strong ticket (a search source)")
            self.levels = tuple(available) if self.levels is None else tuple(self.levels)
            missing = [level for level in self.levels if level not in available]
            if not self.levels or missing:
                raise SupermaskError(f"--levels: the source ran levels {','.join(map(str, available))}, not "
                                     f"{missing[0] if missing else 'none'}")
        else:
            if self.levels is not None:
                raise SupermaskError("--levels applies to a weak ticket (an IMP source); a strong ticket has none")
            if self.output_layer != "dense":
                raise SupermaskError("--output-layer applies to a weak ticket: a strong ticket's output layer is "
                                     "searched on the target")
            if self.rescore == "output" and source.scope == "global":
                raise SupermaskError("--rescore output keeps the hidden masks fixed, which a global top-k over "
                                     "every layer cannot: use --rescore all")
            if self.rescore == "output" and _method(source).density_is_outcome:
                raise SupermaskError(f"--rescore output: {source.method}'s masks are sampled, not fixed by frozen "
                                     f"scores: use --rescore all")
        if self.train is None:
            self.train = source.train
        self.source_config_hash = config_hash(source)
        found = source_checksum(self.source, self.levels)
        if self.source_checksum is not None and self.source_checksum != found:
            raise SupermaskError(f"--source {self.source}: not the ticket this config transfers (checksum differs)")
        self.source_checksum = found
        super()._resolve_fields()


# -- the source -------------------------------------------------------------------------------------

def _source_result(path: str) -> dict:
    run = RunDir(Path(path))
    if not run.is_finished():
        raise SupermaskError(f"--source {path}: not a finished run (its seed folder, holding result.json)")
    return run.read_result()


def source_config(path: str):
    """The resolved config of the finished IMP or search run ``path``."""
    result = _source_result(path)
    found = engine_of_run(Path(path), result)
    if found.name not in ("imp", "search"):
        raise SupermaskError(f"--source {path}: a {found.name} run; give a finished IMP run (a weak ticket) or "
                             f"search run (a strong ticket)")
    config = config_from_record(found.config_type, read_json(RunDir(Path(path)).config_path),
                                f"a {found.name} run's config")
    if found.name == "imp" and (config.control != "none" or config.early_bird == "channel"):
        raise SupermaskError(f"--source {path}: an IMP {config.control} control or channel early-bird run; give "
                             f"the IMP run")
    if found.name == "search" and config.structure != "unstructured":
        raise SupermaskError(f"--source {path}: a {config.structure} search; transfer takes unstructured tickets")
    return config


def _method(source):
    from supermask.methods import METHODS

    return METHODS.get(source.method)


def _ticket_folder(source: str, level: Optional[int]) -> Path:
    root = Path(source)
    return (root / level_dir_name(level) if level is not None else root) / TICKET


def source_checksum(source: str, levels: Optional[Sequence[int]]) -> str:
    """SHA-256 over what the transfer takes from the source: each transferred ticket's state
    checksum (IMP: each level's, and the rewind point's weights)."""
    digest = hashlib.sha256()
    for level in (levels or (None,)):
        folder = _ticket_folder(source, level)
        meta = read_json(folder / META_FILE)
        if not isinstance(meta, dict) or not meta.get("state_checksum"):
            raise SupermaskError(f"{folder}: a ticket without a checksum (supermask < 0.2): rerun the source")
        digest.update(f"{level}|{meta['state_checksum']}|".encode())
    if levels:  # the rewind point every level's weights come from
        from supermask.ticket_files import weights_checksum

        digest.update(weights_checksum(read_tensors(Path(source) / REWIND_FILE)).encode())
    return digest.hexdigest()


def output_weight(masks: dict, num_classes: int) -> str:
    """The output layer's weight among ``masks``' names: the last prunable weight (the zoo's and a
    converted model's classifier), which must have ``num_classes`` rows."""
    name = list(masks)[-1]
    if masks[name].shape[0] != num_classes:
        raise SupermaskError(f"the last prunable layer ({name}, {masks[name].shape[0]} outputs) is not an output "
                             f"layer of {num_classes} classes: this network cannot be transferred")
    return name


def _layer(name: str) -> str:
    return name.rsplit(".", 1)[0]


def _target_keys(state: dict, output: str) -> set[str]:
    """The keys of B's own output layer (weight, bias, mask, scores): not taken from A."""
    prefix = _layer(output) + "."
    return {k for k in state if k.startswith(prefix)}


def _check_input(source_meta: dict, spec, source: str) -> None:
    shape = [spec.in_channels, spec.image_size, spec.image_size]
    if list(source_meta.get("input_shape", shape)) != shape:
        wanted = 'x'.join(map(str, source_meta['input_shape']))
        raise SupermaskError(f"--source {source} takes {wanted} inputs, the target data {'x'.join(map(str, shape))}: "
                             f"convert the target's images with --input-shape {wanted}")


# -- weak tickets -----------------------------------------------------------------------------------

def _imp_source(config: TransferConfig):
    return source_config(config.source)


def _weak_build(config, spec, level: int, branch: str):
    source = _imp_source(config)
    folder = _ticket_folder(config.source, level)
    masks_a, meta = read_ticket(folder)
    _check_input(meta, spec, config.source)
    rewind_a = read_tensors(Path(config.source) / REWIND_FILE)  # θ0 or θk, dense: a random mask needs all of it

    def build() -> nn.Module:
        from supermask.nn.masked import get_masks

        model = build_masked(source, spec, derived_seed(config.seed, "transfer-output"))
        check_input_shape(model, spec, config.arch)
        own = model.state_dict()
        output = output_weight(get_masks(model), spec.num_classes)
        mine = _target_keys(own, output)
        shared = {k: v for k, v in rewind_a.items() if k not in mine and not k.endswith("weight_mask")}
        mismatched = [k for k, v in shared.items() if k not in own or own[k].shape != v.shape]
        if mismatched:
            raise RunError(f"{folder}: its weights do not fit {config.arch} ({mismatched[0]})")
        masks = {k: (masks_a[k] if k != output else torch.ones_like(own[_layer(output) + ".weight_mask"]))
                 for k in masks_a}
        if config.output_layer == "pruned":
            from supermask.nn.topk import kept_count

            kept = kept_count(masks[output].numel(), float(masks_a[output].float().mean()))
            masks[output] = _random_mask(masks[output].shape, kept, derived_seed(config.seed, f"output-{level}"))
        if branch == RANDOM_MASK:
            from .strategies import random_masks_like

            masks = random_masks_like(masks, derived_seed(config.seed, f"transfer-random-mask-{level}"))
        rewind(model, {**own, **shared}, masks)  # B's fresh output layer, A's rewind weights elsewhere
        return model

    return build


def _random_mask(shape, kept: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    flat = torch.zeros(int(torch.Size(shape).numel()), dtype=torch.uint8)
    flat[torch.randperm(flat.numel(), generator=gen)[:kept]] = 1
    return flat.reshape(shape)


def on_target(config: TransferConfig):
    """The source's config run on B instead: B's data and recipe, this run's seed and execution
    options; everything else (the pruning plan, the method and its settings) the source's."""
    return resolve(dataclasses.replace(
        source_config(config.source), dataset=config.dataset, classes=config.classes,
        image_size=config.image_size, input_shape=config.input_shape, seed=config.seed, data_fingerprint=None,
        train=config.train, out=config.out, device=config.device, data_root=config.data_root,
        download=config.download, num_workers=config.num_workers, checkpoint_every=config.checkpoint_every,
        compile=config.compile, tensorboard=config.tensorboard))


#: The ceilings: IMP on B with the source's plan (weak), a search on B from scratch (strong).
target_imp_config = target_search_config = on_target


# -- strong tickets ---------------------------------------------------------------------------------

def _strong_build(config, spec, branch: str):
    search = target_search_config(config)
    method = _method(search)
    folder = _ticket_folder(config.source, None)
    masks_a, meta = read_ticket(folder)
    _check_input(meta, spec, config.source)
    state_a = ticket_state(Path(config.source))

    def build() -> nn.Module:
        torch.manual_seed(derived_seed(config.seed, "transfer-output"))
        model = method.build(search, spec)
        check_input_shape(model, spec, config.arch)
        own = model.state_dict()
        from supermask.nn import model_masks

        output = output_weight(model_masks(model), spec.num_classes)  # the model's order (a file's is sorted)
        mine = _target_keys(own, output)
        shared = {k: v for k, v in state_a.items() if k not in mine and k in own}
        mismatched = [k for k, v in shared.items() if own[k].shape != v.shape]
        if mismatched:
            raise RunError(f"{folder}: its state does not fit {config.arch} ({mismatched[0]})")
        model.load_state_dict(shared, strict=False)
        hidden = [m for n, m in model.named_modules() if hasattr(m, "scores") and f"{n}.weight" in masks_a
                  and f"{n}.weight" != output]
        if branch == RANDOM_MASK:  # random scores, frozen: a random mask of each layer's density
            gen = torch.Generator().manual_seed(derived_seed(config.seed, "transfer-random-mask"))
            with torch.no_grad():
                for module in hidden:
                    module.scores.copy_(torch.rand(module.scores.shape, generator=gen))
        if branch == RANDOM_MASK or config.rescore == "output":
            for module in hidden:
                module.scores.requires_grad_(False)
        return model

    return build, search


def _stage_config(config: TransferConfig, branch: str, level: Optional[int]):
    record = config_dict(config) | {"branch": branch, **({"level": level} if level is not None else {})}
    return record


def run_transfer(config: TransferConfig, callbacks: Sequence = ()) -> TransferResult:
    """Run (or resume, or skip) a ticket transfer (``config`` is resolved first)."""
    config, data, spec, root = open_run(config)
    rows = finished_rows(root, config, "rows")
    if rows is not None:
        return TransferResult(root.path, rows, skipped=True)
    device = resolve_device(config.device)
    source_rows = {row.get("level"): row for row in _source_result(config.source).get("levels", [])}
    weak = config.source_engine == "imp"
    target = None
    if TARGET in config.controls:  # an ordinary run of its own (reused when finished)
        target = (engine("imp").run(target_imp_config(config), callbacks) if weak else
                  engine("search").run(target_search_config(config), callbacks))
    rows = []
    with composite(root, config) as finish:
        if weak:
            target_rows = {row["level"]: row for row in target.levels} if target is not None else {}
            for level in config.levels:
                branches = [TRANSFERRED] + ([RANDOM_MASK] if RANDOM_MASK in config.controls and level > 0 else [])
                for branch in branches:
                    stage = Stage(RunDir(root.path / level_dir_name(level) / branch),
                                  _stage_config(config, branch, level), _weak_build(config, spec, level, branch),
                                  {"method": f"imp transferred{'' if branch == TRANSFERRED else ' ' + branch}",
                                   "level": level, "branch": branch, "source": config.source},
                                  ticket_fields={"kind": "weak", "level": level, "branch": branch,
                                                 **_source_fields(config)},
                                  callbacks=[MaskAfterStep()], lock=False, keep_start=WEIGHTS_FILE,
                                  label=f"level {level} {branch}")
                    done = run_stage(config, data, stage, device, callbacks)
                    rows.append(_row(done.result, level, branch, source_rows.get(level), done.run_dir, root))
                if level in target_rows:
                    rows.append(_row(target_rows[level], level, TARGET, source_rows.get(level),
                                     target.run_dir / level_dir_name(level), root))
        else:
            branches = [TRANSFERRED] + ([RANDOM_MASK] if RANDOM_MASK in config.controls else [])
            source_row = _source_result(config.source)
            for branch in branches:
                build, search = _strong_build(config, spec, branch)
                method = _method(search)
                from supermask.search import ticket_meta

                stage = Stage(RunDir(root.path / branch), _stage_config(config, branch, None) |
                              {"search": config_dict(search)}, build,
                              {"method": f"{search.method} transferred{'' if branch == TRANSFERRED else ' ' + branch}",
                               "branch": branch, "source": config.source, "init": search.init,
                               "requested_density": search.density},
                              ticket_fields={**ticket_meta(search, spec), "branch": branch,
                                             **_source_fields(config)},
                              callbacks=method.callbacks(search), lock=False, label=branch)
                done = run_stage(config, data, stage, device, callbacks)
                rows.append(_row(done.result, None, branch, source_row, done.run_dir, root))
            if target is not None:
                rows.append(_row(target.result, None, TARGET, source_row, target.run_dir, root))
        finish({"status": "finished", "engine": "transfer", "arch": config.arch, **data_fields(config),
                "seed": config.seed, "subject": "weak" if weak else "strong", "source": config.source,
                "source_dataset": config.source_dataset, "source_config": config_dict(source_config(config.source)),
                "rows": rows})
    return TransferResult(root.path, rows)


def _source_fields(config: TransferConfig) -> dict:
    return {"source": config.source, "source_engine": config.source_engine,
            "source_config_hash": config.source_config_hash, "source_checksum": config.source_checksum,
            "source_dataset": config.source_dataset}


def _row(result: dict, level, branch: str, source_row: Optional[dict], run_dir: Path, root: Path) -> dict:
    try:
        where = str(Path(run_dir).relative_to(root.path))
    except ValueError:
        where = str(run_dir)
    return {"level": level, "branch": branch, "density": result["density"],
            "test_accuracy": result["test_accuracy"], "val_accuracy": result["val_accuracy"],
            "source_test_accuracy": None if source_row is None else source_row.get("test_accuracy"),
            "run": where}


# -- the engine -------------------------------------------------------------------------------------

def _stage_record(run_dir: Path) -> dict:
    record = read_json(RunDir(Path(run_dir)).config_path)
    if not isinstance(record, dict) or "branch" not in record:
        raise SupermaskError(f"{run_dir}: a transfer run reports a table, not a network: export one of its "
                             f"stages (level-<L>/transferred, transferred/, ...)")
    return record


def rebuild(run_dir: Path) -> nn.Module:
    """The network a finished transfer stage reports (a weak stage: the plain network; a strong one:
    the supermask network of its search config, holding its ticket's state)."""
    record = _stage_record(run_dir)
    if "search" not in record:
        return rebuild_plain(run_dir)
    return _search_model(run_dir, record)


def _search_model(run_dir: Path, record: dict) -> nn.Module:
    """A strong stage's network: its search config's supermask network holding its ticket's state."""
    from supermask.methods import METHODS
    from supermask.models import InputSpec
    from supermask.search import config_from_dict

    search = config_from_dict(record["search"])
    meta = read_json(Path(run_dir) / TICKET / META_FILE)
    spec = InputSpec(meta["in_channels"], meta["image_size"], meta["num_classes"])
    model = METHODS.get(search.method).build(search, spec)
    model.load_state_dict(ticket_state(Path(run_dir)))
    return model.eval()


def effective_state(run_dir: Path, state: dict, masks: dict, meta: dict) -> dict:
    record = _stage_record(run_dir)
    if "search" not in record:
        return state
    from supermask.search import effective_weights

    return effective_weights(_search_model(run_dir, record), state, masks)


def label(config: TransferConfig) -> str:
    what = "weak" if config.source_engine == "imp" else "strong"
    data = config.dataset + (f"[{config.classes}]" if config.classes else "")
    return f"{config.arch} {what} ticket {config.source_dataset} -> {data} s={config.seed}"


def _report(roots, out):
    from supermask import transfer_report

    return transfer_report.write(roots, out)


ENGINES.add("transfer", Engine("transfer", TransferConfig, run_transfer, label, rebuild, kind="analysis",
                               effective_state=effective_state, in_comparisons=False, report=_report))
