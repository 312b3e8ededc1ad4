"""Instability analysis and linear mode connectivity, for weak and strong tickets.

Frankle, Dziugaite, Roy & Carbin 2020 ("Linear Mode Connectivity and the Lottery Ticket
Hypothesis"): from the state θk at step k of training, train two copies to the end of the same
schedule, differing only in the SGD noise (data order and augmentation); interpolate their final
weights linearly; the network is *stable* at k when the error along the path rises less than a
threshold (2 points) above the mean of the endpoints' errors (:mod:`supermask.interpolation`).

``subject="imp"`` (the paper's analysis): an IMP run rewinding to k (the IMP engine's own run
directory, reused when it has finished) supplies θk (its rewind point) and each analysed level's
mask; level 0 is the dense network. Both copies keep the level's mask (pruned weights zero after
every step), so the whole path stays inside it. A level is *matching* when its test accuracy is
within ``matching_margin`` points (0.2, the paper's) of level 0's.

``subject="search"`` (strong tickets; new, no paper has looked): a search of the same random
weights and initial scores is trained to step k, then two copies finish it with different data
orders. Reported: how much the two tickets agree (Jaccard overlap of the kept weights, per layer
and overall, beside the overlap two random masks of the density have), and the error barrier along
the score path s(α) = (1−α)·sA + α·sB (the mask re-selected at each α) and along the mask path
w ⊙ ((1−α)·mA + α·mB).

Every copy is an ordinary run stage (``k-<k>/level-<L>/copy-<n>/``, resuming exactly, skipped when
finished), trained from θk with a fresh optimiser from step k to the end (as a rewound IMP level
is), its data order seeded by its noise seed; copies are compared at their final weights
(``selection="last"``). The interpolation of each pair is ``pair-<i>.json`` beside the copies, and
the run's ``result.json`` has one row per (k, level, pair).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from supermask.configs import ExperimentConfig
from supermask.data import make_loader
from supermask.engines import ENGINES, Engine, engine
from supermask.errors import RunError, SupermaskError
from supermask.interpolation import BN_MODES, alpha_grid, error_barrier, jaccard, path_errors, random_jaccard
from supermask.io import atomic_write_json, load_checkpoint, read_json, read_tensors, save_state
from supermask.layout import (MASK_FILE, REWIND_FILE, WEIGHTS_FILE, STABILITY_COPY_PREFIX, STABILITY_PAIR_GLOB, STABILITY_POINT_PREFIX,
                              TICKET, level_dir_name, stability_pair_name)
from supermask.resolved import resolve
from supermask.runs import RunDir, config_dict
from supermask.seeding import derived_seed
from supermask.stage import Stage, composite, data_fields, finished_rows, open_run, run_stage, steps_per_epoch
from supermask.ticket_files import folded_state_dict, load_masks, plain_model, read_ticket, ticket_state
from supermask.training import MaskAfterStep, TrainConfig, distributed, eval_batch_size, resolve_device

from .defaults import default_train_config
from .levels import build_masked
from .rewind import RewindPoint, SnapshotAt, rewind, snapshot

log = logging.getLogger(__name__)

SUBJECTS = ("imp", "search")
DEFAULT_THRESHOLD = 2.0  # points: the paper's stability threshold
DEFAULT_MARGIN = 0.2  # points: the paper's matching margin
DEFAULT_ALPHAS = 30
THETA_K_FILE = "theta-k.safetensors"  # search: the state at step k both copies start from


@dataclass
class StabilityResult:
    run_dir: Path
    rows: list[dict]  # one per (k, level, pair): barriers, stable, matching (imp), overlap (search)
    skipped: bool = False


@dataclass
class StabilityConfig(ExperimentConfig):
    """An instability analysis (see the module docstring). ``train`` is the subject's recipe: the
    IMP family's for ``imp`` (:meth:`for_arch`), the method's for ``search`` (fields left None)."""

    subject: str = "imp"
    points: tuple[str, ...] = ("0",)  # the steps k the copies start from: 0, <N>it, <N>ep
    levels: tuple[int, ...] = (0,)  # imp: the IMP levels analysed (0: the dense network)
    prune_levels: Optional[int] = None  # imp: the IMP run's --levels (default: the largest analysed level)
    noise_pairs: int = 1  # pairs of copies per k and level (each pair: two noise seeds)
    alphas: int = DEFAULT_ALPHAS  # points on the path, both ends included
    threshold: float = DEFAULT_THRESHOLD  # stable: barrier below this (points)
    matching_margin: float = DEFAULT_MARGIN  # matching: within this of the dense network's accuracy (points)
    bn: str = "interpolate"  # BatchNorm running statistics: interpolated, or recomputed at each α
    init: Optional[str] = None  # None: the subject's default (imp: kaiming-normal; search: the method's)
    # imp: a finished IMP run to analyse (its path; not hashed: its config is, through imp_config_hash);
    # its architecture, data, recipe and rewind point are the analysis's
    imp_run: Optional[str] = None
    imp_config_hash: Optional[str] = None
    method: str = "edge-popup"  # search: the ticket finder
    density: Optional[float] = None  # search: the density (None: the method's default)
    train: TrainConfig = field(default_factory=lambda: default_train_config("conv6"))

    ENGINE = "stability"

    @classmethod
    def for_arch(cls, arch: str, subject: str = "imp", epochs: Optional[int] = None, **overrides) -> "StabilityConfig":
        """The subject's recipe for ``arch`` (IMP's family defaults; a search's method fills what it
        sets), then ``overrides``."""
        if subject == "imp":
            train = default_train_config(arch, **({"epochs": epochs} if epochs else {}))
        else:
            train = TrainConfig(**({"epochs": epochs} if epochs else {}))
        return cls(arch=arch, subject=subject, train=train, **{k: v for k, v in overrides.items() if v is not None})

    def _resolve_fields(self) -> None:
        if self.subject not in SUBJECTS:
            raise SupermaskError(f"subject must be one of {', '.join(SUBJECTS)}, got {self.subject!r}")
        self.points = tuple(str(RewindPoint.parse(p)) for p in self.points)
        if not self.points or len(set(self.points)) != len(self.points):
            raise SupermaskError(f"points must be distinct steps, got {list(self.points)}")
        self.levels = tuple(self.levels)
        if self.subject == "search" and self.levels != (0,):
            raise SupermaskError("--levels applies to --subject imp (a strong ticket has no IMP levels)")
        if not self.levels or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in self.levels):
            raise SupermaskError(f"levels must be integers >= 0, got {list(self.levels)}")
        if self.imp_run is not None:
            self._take_imp_run()
        if self.subject == "imp":
            self.prune_levels = max(self.levels) if self.prune_levels is None else self.prune_levels
            if self.prune_levels < max(self.levels):
                raise SupermaskError(f"--prune-levels {self.prune_levels} stops before level {max(self.levels)}")
        elif self.prune_levels is not None:
            raise SupermaskError("--prune-levels applies to --subject imp")
        if self.subject == "imp" and (self.method != "edge-popup" or self.density is not None):
            raise SupermaskError("--method and --density apply to --subject search (IMP's density is its level's)")
        if not isinstance(self.noise_pairs, int) or isinstance(self.noise_pairs, bool) or self.noise_pairs < 1:
            raise SupermaskError(f"noise pairs must be a positive integer, got {self.noise_pairs!r}")
        alpha_grid(self.alphas)
        for name in ("threshold", "matching_margin"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise SupermaskError(f"{name.replace('_', ' ')} must be a number >= 0, got {value!r}")
        if self.bn not in BN_MODES:
            raise SupermaskError(f"bn must be one of {', '.join(BN_MODES)}, got {self.bn!r}")
        subject = subject_config(self, self.points[0], resolved=True)  # its checks, and its resolved recipe
        self.init = subject.init
        if self.subject == "search":
            self.density = subject.density
            self.bias = subject.bias  # a strong ticket's network: no biases unless asked for (SearchConfig)
        self.train = dataclasses.replace(subject.train, selection="last")  # copies end where they are compared
        super()._resolve_fields()


    def _take_imp_run(self) -> None:
        """Refuse what contradicts the IMP run; take its recipe, its rewind point and its level count."""
        if self.subject != "imp":
            raise SupermaskError("--imp-run applies to --subject imp")
        imp, _ = _read_imp_run(self.imp_run)
        for name in ("arch", "dataset", "classes", "input_shape", "train_subset", "width", "bias", "dropout", "seed"):
            if getattr(self, name) != getattr(imp, name):
                raise SupermaskError(f"--imp-run {self.imp_run} is a {name} {getattr(imp, name)!r} run, not "
                                     f"{getattr(self, name)!r}")
        if self.points not in ((imp.rewind,), ("0",)):
            raise SupermaskError(f"--imp-run {self.imp_run} rewinds to {imp.rewind}: --points {','.join(self.points)} "
                                 f"is not its rewind point")
        if self.prune_levels is not None and self.prune_levels != imp.pruning_levels():
            raise SupermaskError("--prune-levels is the IMP run's own with --imp-run")
        from supermask.runs import config_hash

        self.points, self.prune_levels, self.init = (imp.rewind,), imp.pruning_levels(), imp.init
        self.train = imp.train
        self.imp_config_hash = config_hash(imp)

def _read_imp_run(path: str):
    """The resolved config and the result of the finished IMP run ``path``."""
    from supermask.configs import config_from_record

    run = RunDir(Path(path))
    if not run.is_finished() or "levels" not in run.read_result():
        raise SupermaskError(f"--imp-run {path}: not a finished IMP run (its seed folder, holding level-<L>/)")
    config = config_from_record(engine("imp").config_type, read_json(run.config_path), "an IMP run's config")
    if config.control != "none" or config.early_bird is not None:
        raise SupermaskError(f"--imp-run {path}: a {config.control} control / early-bird run; give the IMP run")
    return config, run.read_result()


def imp_run_identity(path: str) -> dict:
    """What a stability analysis of the IMP run ``path`` takes from it: its architecture, data set,
    width, dropout and seed (as options; the recipe is read when the analysis resolves)."""
    imp, _ = _read_imp_run(path)
    return {"arch": imp.arch, "dataset": imp.dataset, "classes": imp.classes, "input_shape": imp.input_shape,
            "train_subset": imp.train_subset, "width": imp.width, "bias": imp.bias, "dropout": imp.dropout,
            "seed": str(imp.seed)}


def subject_config(config: StabilityConfig, point: str, resolved: bool = True):
    """The config of the run the analysis at step ``point`` starts from: an IMP run rewinding to it
    (the given ``imp_run``'s own config), or the strong-ticket search."""
    if config.imp_run is not None:
        return _read_imp_run(config.imp_run)[0]
    shared = dict(dataset=config.dataset, classes=config.classes, input_shape=config.input_shape, context=config.context,
                  train_subset=config.train_subset, depth=config.depth, bias=config.bias, width=config.width,
                  dropout=config.dropout,
                  image_size=config.image_size, seed=config.seed, out=config.out, device=config.device,
                  data_root=config.data_root, download=config.download, num_workers=config.num_workers,
                  checkpoint_every=config.checkpoint_every, channels_last=config.channels_last,
                  compile=config.compile, tensorboard=config.tensorboard, wandb_project=config.wandb_project,
                  keep_checkpoints=config.keep_checkpoints)
    train = dataclasses.replace(config.train, selection=TrainConfig().selection)  # the subject's own default
    if config.subject == "imp":
        imp = engine("imp").config_type
        plan = {"levels": config.prune_levels} if config.prune_levels else {"target_density": 1.0}
        subject = imp.for_arch(config.arch, **shared, **plan, rewind=point, init=config.init)  # None: IMP's
        subject = dataclasses.replace(subject, train=train)
    else:
        search = engine("search").config_type
        subject = search(arch=config.arch, **shared, method=config.method, density=config.density, init=config.init, train=train)
    return resolve(subject) if resolved else subject


# -- the copies -------------------------------------------------------------------------------------

def noise_seed(config: StabilityConfig, copy: int) -> int:
    """The data-order seed of copy ``copy`` (every copy's differs from the others' and the subject's)."""
    return derived_seed(config.seed, f"sgd-noise-{copy}")


def _point_dir(root: RunDir, point: str) -> Path:
    return root.path / f"{STABILITY_POINT_PREFIX}{point}"


def _copy_dir(root: RunDir, point: str, level: int, copy: int) -> RunDir:
    return RunDir(_point_dir(root, point) / level_dir_name(level) / f"{STABILITY_COPY_PREFIX}{copy}")


def _copy_stage(config, root, point, level, copy, build, start_step, callbacks) -> Stage:
    record = config_dict(config) | {"k": point, "level": level, "copy": copy}
    fields = {"method": f"{config.subject}-stability-copy", "k": point, "level": level, "copy": copy}
    return Stage(_copy_dir(root, point, level, copy), record, build, fields,
                 ticket_fields={"kind": "weak" if config.subject == "imp" else "strong", "k": point, "level": level},
                 callbacks=callbacks, start_step=start_step, lock=False, seed=noise_seed(config, copy),
                 label=f"k={point} level {level} copy {copy}", keep_start=WEIGHTS_FILE)


def _imp_copies(config, data, spec, device, root, point, level, imp_root: Path, k_step, callbacks):
    subject = subject_config(config, point)
    masks, _ = read_ticket(imp_root / level_dir_name(level) / TICKET)
    theta_k = read_tensors(imp_root / REWIND_FILE)

    def build():
        model = build_masked(subject, spec, subject.seed)
        rewind(model, theta_k, masks)
        return model

    copies = []
    for copy in range(2 * config.noise_pairs):
        stage = _copy_stage(config, root, point, level, copy, build, k_step, [MaskAfterStep()])
        copies.append(run_stage(config, data, stage, device, callbacks))
    return copies


def _search_copies(config, data, spec, device, root, point, k_step, callbacks):
    """A search to step k (its snapshot), then the copies from it."""
    from supermask.methods import METHODS

    subject = subject_config(config, point)
    found = METHODS.get(subject.method)
    snapshot_path = _point_dir(root, point) / THETA_K_FILE
    if not snapshot_path.exists():
        torch.manual_seed(subject.seed)
        model = found.build(subject, spec)
        if k_step > 0:
            model = _train_to(config, subject, data, model, k_step, device, root, point, found, callbacks)
        if distributed.is_main():
            snapshot_path.parent.mkdir(parents=True, exist_ok=True)
            save_state(snapshot_path, snapshot(model))
        distributed.barrier()
    theta_k = read_tensors(snapshot_path)

    def build():
        torch.manual_seed(subject.seed)
        model = found.build(subject, spec)
        model.load_state_dict(theta_k)
        return model

    copies = []
    for copy in range(2 * config.noise_pairs):
        stage = _copy_stage(config, root, point, 0, copy, build, k_step, found.callbacks(subject))
        copies.append(run_stage(config, data, stage, device, callbacks))
    return copies


class _StopAt(SnapshotAt):
    """Ends training right after step k, with the state kept."""

    def after_step(self, state, loss, correct, count):
        super().after_step(state, loss, correct, count)
        if self.state is not None:
            state.stopped = f"step {state.step}: the state the copies start from"


def _train_to(config, subject, data, model, k_step, device, root, point, method, callbacks):
    """The search trained to step k of its schedule (a stage of its own, ``k-<k>/to-k/``)."""
    stop = _StopAt(k_step)
    stage = Stage(RunDir(_point_dir(root, point) / "to-k"), config_dict(config) | {"k": point, "to_k": True},
                  lambda: model, {"method": f"{config.subject}-stability-to-k", "k": point},
                  ticket_fields={"kind": "strong", "k": point}, callbacks=[*method.callbacks(subject), stop],
                  lock=False, label=f"k={point}: training to step {k_step}")
    done = run_stage(config, data, stage, device, callbacks)
    if done.model is None:  # finished before: its checkpoint holds the state at step k
        checkpoint = load_checkpoint(stage.run.checkpoint_path)
        model.load_state_dict(checkpoint["model"])
    elif stop.state is not None:
        model.load_state_dict(stop.state)
    return model


# -- the path between two copies ----------------------------------------------------------------------

def _loaders(config, data):
    batch = eval_batch_size(config.train)
    return {"train": make_loader(data.train, data.info, batch, train=False),
            "test": make_loader(data.test, data.info, batch, train=False)}


def _bn_batches(config, data):
    loader = make_loader(data.train, data.info, config.train.batch_size, train=True, seed=config.seed)
    return lambda: loader


def _barriers(errors: dict) -> dict:
    return {f"barrier_{split}": error_barrier(values["error"]) for split, values in errors.items()}


def interpolate_pair(config, data, spec, model, a: RunDir, b: RunDir, path: str) -> dict:
    """The error and loss along the path between copies ``a`` and ``b`` (their final weights)."""
    alphas = alpha_grid(config.alphas)
    errors = path_errors(model, ticket_state(a.path), ticket_state(b.path), alphas, _loaders(config, data),
                         bn=config.bn, bn_batches=_bn_batches(config, data))
    return {"path": path, "alphas": alphas, **errors, **_barriers(errors)}


def _overlap(a: RunDir, b: RunDir) -> dict:
    ma, mb = load_masks(a.ticket_dir / MASK_FILE), load_masks(b.ticket_dir / MASK_FILE)
    per_layer = {n: jaccard(ma[n], mb[n]) for n in ma}
    random = {n: random_jaccard(float(ma[n].float().mean())) for n in ma}
    kept_a = torch.cat([ma[n].reshape(-1) for n in ma])
    kept_b = torch.cat([mb[n].reshape(-1) for n in ma])
    return {"overlap": jaccard(kept_a, kept_b), "overlap_random": random_jaccard(float(kept_a.float().mean())),
            "overlap_per_layer": per_layer, "overlap_random_per_layer": random}


def _mask_path_state(run: RunDir, model) -> dict:
    """The plain network computing a strong ticket: its weights (as the layers compute with them) x mask."""
    from supermask.search import effective_weights

    masks, _ = read_ticket(run.ticket_dir)
    state = ticket_state(run.path)
    model.load_state_dict(state)
    return folded_state_dict(effective_weights(model, state, masks), masks)


def run_stability(config: StabilityConfig, callbacks: Sequence = ()):
    """Run (or resume, or skip) an instability analysis (``config`` is resolved first)."""
    config, data, spec, root = open_run(config)
    rows = finished_rows(root, config, "rows")
    if rows is not None:
        return StabilityResult(root.path, rows, skipped=True)
    device = resolve_device(config.device)
    subjects = {}
    if config.imp_run is not None:  # the given finished run: read, never rerun
        from .engine import IMPResult

        _, result = _read_imp_run(config.imp_run)
        subjects[config.points[0]] = IMPResult(Path(config.imp_run), result["levels"], skipped=True)
    elif config.subject == "imp":  # the IMP runs first: ordinary runs of their own (reused when finished)
        for point in config.points:
            subjects[point] = engine("imp").run(subject_config(config, point), callbacks)
    rows = []
    with composite(root, config) as finish:
        for point in config.points:
            k_step = RewindPoint.parse(point).step(steps_per_epoch(config, data))
            for level in config.levels:
                if config.subject == "imp":
                    imp = subjects[point]
                    copies = _imp_copies(config, data, spec, device, root, point, level, imp.run_dir, k_step,
                                         callbacks)
                    model = build_masked(subject_config(config, point), spec, config.seed)
                else:
                    copies = _search_copies(config, data, spec, device, root, point, k_step, callbacks)
                    from supermask.methods import METHODS

                    subject = subject_config(config, point)
                    model = METHODS.get(subject.method).build(subject, spec)
                for pair in range(config.noise_pairs):
                    a, b = RunDir(copies[2 * pair].run_dir), RunDir(copies[2 * pair + 1].run_dir)
                    folder = a.path.parent
                    found = interpolate_pair(config, data, spec, model, a, b, "weights" if config.subject == "imp"
                                             else "scores")
                    row = {"k": point, "k_step": k_step, "level": level, "pair": [2 * pair, 2 * pair + 1],
                           "copy_test_accuracy": [copies[2 * pair].result["test_accuracy"],
                                                  copies[2 * pair + 1].result["test_accuracy"]],
                           "density": copies[2 * pair].result["density"],
                           "barrier_train": found["barrier_train"], "barrier_test": found["barrier_test"]}
                    row["stable"] = row["barrier_test"] < config.threshold
                    detail = {"score_path" if config.subject == "search" else "weight_path": found}
                    if config.subject == "imp":
                        levels = subjects[point].levels
                        dense = levels[0]["test_accuracy"]
                        mine = next(r for r in levels if r["level"] == level)["test_accuracy"]
                        row.update(dense_test_accuracy=dense, level_test_accuracy=mine,
                                   matching=mine >= dense - config.matching_margin / 100.0)
                    else:
                        plain = plain_model({**read_ticket(a.ticket_dir)[1]}, a.ticket_dir)
                        sa, sb = _mask_path_state(a, model), _mask_path_state(b, model)
                        alphas = alpha_grid(config.alphas)
                        errors = path_errors(plain, sa, sb, alphas, _loaders(config, data), bn=config.bn,
                                             bn_batches=_bn_batches(config, data))
                        mask_path = {"path": "masks", "alphas": alphas, **errors, **_barriers(errors)}
                        detail["mask_path"] = mask_path
                        overlap = _overlap(a, b)
                        row.update(mask_barrier_train=mask_path["barrier_train"],
                                   mask_barrier_test=mask_path["barrier_test"],
                                   overlap=overlap["overlap"], overlap_random=overlap["overlap_random"])
                        detail["overlap_layers"] = {k: overlap[k] for k in ("overlap_per_layer",
                                                                             "overlap_random_per_layer")}
                    if distributed.is_main():
                        atomic_write_json(folder / stability_pair_name(pair), {**row, **detail})
                    rows.append(row)
                    log.info("k=%s level %d pair %d: test barrier %.2f points (%s)", point, level, pair,
                             row["barrier_test"], "stable" if row["stable"] else "unstable")
        finish({"status": "finished", "engine": "stability", "subject": config.subject, "arch": config.arch,
                **data_fields(config), "seed": config.seed, "threshold": config.threshold, "rows": rows})
    return StabilityResult(root.path, rows)


def label(config: StabilityConfig) -> str:
    what = "dense/IMP levels " + ",".join(map(str, config.levels)) if config.subject == "imp" else config.method
    return f"{config.arch} stability {what} k={','.join(config.points)} s={config.seed}"


def read_pairs(root: Path) -> list[dict]:
    """Every pair's interpolation under a finished stability run ``root``."""
    pairs = []
    for path in sorted(Path(root).glob(STABILITY_PAIR_GLOB)):
        try:
            pairs.append(read_json(path))
        except (OSError, ValueError) as exc:
            raise RunError(f"{path}: unreadable ({exc})") from None
    return pairs


def _no_network(run_dir: Path):
    raise SupermaskError(f"{run_dir}: a stability analysis reports barriers, not a network: export one of its "
                         f"copies (k-<k>/level-<L>/copy-<n>)")


def _report(roots, out):
    from supermask import stability_report

    return stability_report.write(roots, out)


ENGINES.add("stability", Engine("stability", StabilityConfig, run_stability, label, _no_network, kind="analysis",
                                in_comparisons=False, report=_report))
