"""The IMP level loop (Frankle & Carbin 2019; Frankle et al. 2020).

Level 0 trains the dense network. Each later level prunes the previous level's final
weights by magnitude, rewinds the survivors to θ0 (or θk) and retrains them with a fresh
optimiser from step 0 (or, rewound to θk, from step k to the end: T − k steps, the schedule's
learning rate and the data order continuing from step k, as open_lth's ``start_step``; every
control does the same). Pruned weights are zeroed after every optimiser step, so they stay
exactly zero.

With ``structure`` (see :mod:`.structured`): ``nm:N:M`` prunes the dense level's weights to the
N largest |w| of every group of M in one level; ``channel`` removes, each level, the filters of
smallest L1 norm and the next layer's inputs with them (layerwise fractions of the surviving
channels; ``target_density`` is then the fraction of channels kept).

Controls run beside a finished IMP run of the same config and reuse its masks:

- ``reinit``: level L keeps the IMP mask of level L and draws fresh random weights;
- ``random-prune``: level L keeps the rewind weights and draws a random mask with the
  same number of weights in every layer as the IMP mask of level L (structured: a random N:M
  mask, or as many random channels in every layer).

Layout: ``<out>/imp/<arch>-<dataset>/<hash>/seed-<s>/level-<L>/`` with the files of any run
(config, metrics, checkpoint, result, ticket = mask + starting weights); the seed folder
holds ``config.json``, level 0's ``rewind.safetensors`` (the θ0/θk snapshot) and, once
every level is done, ``result.json`` with one row per level.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from torch import nn

from supermask.configs import ExperimentConfig
from supermask.engines import ENGINES, Engine
from supermask.errors import RunError, SupermaskError
from supermask.io import check_shapes, save_state
from supermask.layout import REWIND_FILE, WEIGHTS_FILE
from supermask.models import InputSpec, create_model, masked_layer_types
from supermask.nn import WEIGHT_INITS, check_density
from supermask.nn.init import canonical
from supermask.nn.masked import get_masks, set_masks
from supermask.runs import RESULT_KEYS, RunDir
from supermask.starting_points import load_starting_point, resolve_starting_point
from supermask.stage import (check_input_shape, composite, data_fields, describe_density, finished_rows, open_run, planned_steps,
                             run_stage, steps_per_epoch)
from supermask.structure import Structure
from supermask.ticket_files import rebuild_plain
from supermask.training import Callback, MaskAfterStep, TrainConfig, distributed, resolve_device

from .branches import BRANCHES
from .defaults import default_train_config, family_defaults
from .early_bird import DEFAULT_EPSILON as EB_EPSILON
from .early_bird import DEFAULT_WINDOW as EB_WINDOW
from .early_bird import EarlyBird
from .levels import BN_INITS, build_masked, conv_names, level_run, level_stage
from .pruning import check_fraction, frankle_carbin_rates
from .rewind import RewindPoint, SnapshotAt, rewind, snapshot
from .strategies import Context, target_pruner
from .structured import head_levels, selection_for

log = logging.getLogger(__name__)

CONTROLS = ("none", "reinit", "random-prune")  # the branches (supermask_imp.branches)
EARLY_BIRDS = (None, "magnitude", "channel")
MAX_LEVELS = 200  # a plan beyond this is a typo, not an experiment (0.8**200 = 4e-20)


@dataclass
class IMPConfig(ExperimentConfig):
    levels: int = 10  # pruning levels after the dense level 0
    target_density: Optional[float] = None  # if set: as many levels as reach it (one level with one_shot);
    # with structure "channel": the fraction of channels kept
    one_shot: bool = False
    scope: str = "global"
    prune_fraction: float = 0.2  # of the survivors, per level: global, or each layerwise FC layer
    conv_prune_fraction: Optional[float] = None  # layerwise convolutions (default: prune_fraction)
    output_prune_fraction: Optional[float] = None  # layerwise output layer (default: prune_fraction)
    keep_unpruned: tuple[str, ...] = ()
    # "nm:N:M": one level to the N largest |w| of every group of M; "channel": every level removes
    # the layer's filters of smallest L1 norm, the next layer's inputs with them (structured.py)
    structure: str = "unstructured"
    # BatchNorm γ: "ones", "uniform" U(0, 1) as open_lth (see defaults.py), or "half" (0.5: the channel
    # early-bird ticket's default, as its reference)
    bn_init: str = "ones"
    rewind: str = "0"
    control: str = "none"
    init: str = "kaiming-normal"
    # Early-bird tickets (You et al. 2020): None; "magnitude" (unstructured: IMP's weight mask at the
    # target density settles, then IMP goes on); "channel" (the paper's: BatchNorm-γ channel masks under
    # an L1 penalty, then the physically smaller network is trained; see channel_early_bird.py).
    early_bird: Optional[str] = None
    eb_epsilon: float = EB_EPSILON
    eb_window: int = EB_WINDOW
    eb_l1: Optional[float] = None  # channel: the L1 penalty on BatchNorm γ [1e-4]
    # channel: how the smaller network trains: "early-bird-weights" (ours: from the early-bird weights,
    # the full schedule, no penalty) or "reference" (its main_c.py: fresh weights, from the drawing
    # epoch on, the L1 penalty on); None: early-bird-weights
    eb_retrain: Optional[str] = None
    # Stop after the first level whose test accuracy falls more than this many points below level 0's
    # (the common stopping rule); the result then names the sparsest matching level. None: every level.
    stop_when_unmatched: Optional[float] = None
    # A pretrained starting point (supermask.starting_points): level 0 starts from it and every level
    # rewinds to it (θ0); its path is not hashed, the SHA-256 of its tensors is.
    init_from: Optional[str] = None
    init_from_checksum: Optional[str] = None
    train: TrainConfig = field(default_factory=lambda: default_train_config("conv6"))

    ENGINE = "imp"

    @classmethod
    def for_arch(cls, arch: str, epochs: Optional[int] = None, **overrides) -> "IMPConfig":
        """The paper's defaults for ``arch``'s family (see :mod:`supermask_imp.defaults`), then ``overrides``."""
        d = family_defaults(arch)
        train = default_train_config(arch, **({"epochs": epochs} if epochs else {}))
        structured = Structure.parse(overrides.get("structure")).structured
        scope = "layerwise" if structured else d.scope  # a structure selects layer by layer
        layerwise = (overrides.get("scope") or scope) == "layerwise"  # the per-layer fractions: layerwise only
        # the channel early-bird ticket starts its BatchNorm γ at 0.5, as its reference's networks do
        bn_init = "half" if overrides.get("early_bird") == "channel" else d.bn_init
        base = dict(arch=arch, scope=scope, prune_fraction=d.fc_fraction, train=train,
                    keep_unpruned=d.keep_unpruned, bn_init=bn_init,
                    conv_prune_fraction=d.conv_fraction if layerwise else None,
                    output_prune_fraction=d.output_fraction if layerwise else None)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def _resolve_fields(self) -> None:
        if self.control not in CONTROLS:
            raise SupermaskError(f"control must be one of {', '.join(CONTROLS)}, got {self.control!r}")
        if self.scope not in ("global", "layerwise"):
            raise SupermaskError(f"scope must be global or layerwise, got {self.scope!r}")
        self._check_structure()
        if not isinstance(self.levels, int) or self.levels < 1:
            raise SupermaskError(f"levels must be a positive integer, got {self.levels!r}")
        self._check_levels_used()
        check_fraction(self.prune_fraction)
        for name in ("conv_prune_fraction", "output_prune_fraction"):
            if getattr(self, name) is not None and self.scope == "global":
                # does nothing under one global threshold: dropped (with a warning), so it changes no hash
                log.warning("--%s applies to --scope layerwise only; ignored", name.replace("_", "-"))
                setattr(self, name, None)
            if getattr(self, name) is not None:
                check_fraction(getattr(self, name), name.replace("_", " "))
        if self.target_density is not None:
            self.target_density = check_density(self.target_density, "target density")
        self.init = canonical(self.init)
        WEIGHT_INITS.get(self.init)
        RewindPoint.parse(self.rewind)
        if self.early_bird is True or self.early_bird is False:  # the 0.1 flag: the unstructured version
            self.early_bird = "magnitude" if self.early_bird else None
        if self.early_bird not in EARLY_BIRDS:
            raise SupermaskError(f"early bird must be magnitude or channel, got {self.early_bird!r}")
        if self.early_bird == "channel":
            self._check_channel_early_bird()
        elif self.eb_l1 is not None:
            raise SupermaskError("--eb-l1 applies to --early-bird channel only")
        elif self.eb_retrain is not None:
            raise SupermaskError("--eb-retrain applies to --early-bird channel only")
        if self.early_bird is None and (self.eb_epsilon, self.eb_window) != (EB_EPSILON, EB_WINDOW):
            raise SupermaskError("--eb-epsilon and --eb-window apply to --early-bird only")
        if not (0.0 < self.eb_epsilon < 1.0):
            raise SupermaskError(f"early-bird epsilon must be in (0, 1), got {self.eb_epsilon!r}")
        if not isinstance(self.eb_window, int) or self.eb_window < 1:
            raise SupermaskError(f"early-bird window must be a positive integer, got {self.eb_window!r}")
        if self.stop_when_unmatched is not None and not (
                isinstance(self.stop_when_unmatched, (int, float)) and math.isfinite(self.stop_when_unmatched)
                and self.stop_when_unmatched >= 0):
            raise SupermaskError(f"--stop-when-unmatched must be a number of points >= 0, got "
                                 f"{self.stop_when_unmatched!r}")
        if self.pruning_levels() > MAX_LEVELS:
            raise SupermaskError(f"this plan runs {self.pruning_levels()} pruning levels (more than {MAX_LEVELS}): "
                                 f"raise --prune-fraction, use --one-shot or a larger --target-density")
        self.keep_unpruned = tuple(self.keep_unpruned)
        if self.bn_init not in BN_INITS:
            raise SupermaskError(f"bn init must be one of {', '.join(BN_INITS)}, got {self.bn_init!r}")
        self.init_from_checksum = resolve_starting_point(self.init_from, self.init_from_checksum)
        if self.init_from is not None and self.early_bird == "channel":
            raise SupermaskError("--init-from with --early-bird channel is not built: the channel ticket trains its "
                                 "own smaller network")
        super()._resolve_fields()
        self._check_rewind()

    def _check_levels_used(self) -> None:
        """``--levels`` given where the plan does not read it is refused (it would change the hash and
        nothing else): an N:M structure and the channel early bird prune once, a target density sets
        the count itself."""
        default = next(f.default for f in dataclasses.fields(self) if f.name == "levels")
        if self.levels == default:
            return
        if Structure.parse(self.structure).nm is not None:
            reason = f"--structure {self.structure} prunes once, to N of every M"
        elif self.early_bird == "channel":
            reason = "--early-bird channel draws one channel ticket"
        elif self.target_density is not None:
            reason = "--target-density sets the number of levels"
        else:
            return
        raise SupermaskError(f"--levels {self.levels} does nothing here: {reason}; leave --levels out")

    def _check_rewind(self) -> None:
        """A rewind point at or beyond the end of training is refused here where the config alone
        tells (epochs against epochs, iterations against iterations); the run checks the rest
        against the data's batches an epoch."""
        point = RewindPoint.parse(self.rewind)
        train = self.train
        if point.value == 0:
            return
        length = (train.iterations, "it") if train.iterations is not None else (train.epochs, "ep")
        if point.unit == length[1] and point.value >= length[0]:
            raise SupermaskError(f"rewind point {point} is not before the end of training ({length[0]}{length[1]}): "
                                 f"a rewound level would train no step")

    def _check_structure(self) -> None:
        structure = Structure.parse(self.structure)
        self.structure = str(structure)
        if not structure.structured:
            return
        structure.scope(self.scope)  # refuses global
        if self.early_bird is not None:
            raise SupermaskError(f"--early-bird draws unstructured or BatchNorm-γ channel tickets: not with "
                                 f"--structure {self.structure}")
        if structure.nm is not None and self.target_density is not None:
            structure.density(self.target_density, None, "--target-density")
        if structure.head and (self.target_density is not None or self.one_shot):
            raise SupermaskError("--structure head prunes whole heads level by level (each level removes "
                                 "--prune-fraction of every block's surviving heads, at least one): give --levels, "
                                 "not --target-density or --one-shot")

    def _check_channel_early_bird(self) -> None:
        from .channel_early_bird import DEFAULT_L1, EB_RETRAINS, SUPPORTED

        if self.arch not in SUPPORTED:
            raise SupermaskError(f"--early-bird channel supports {', '.join(SUPPORTED)} (networks of conv-BatchNorm "
                                 f"stages or residual blocks), not {self.arch}")
        if self.control != "none" or self.rewind != "0":
            raise SupermaskError("--early-bird channel trains the smaller network from the early-bird weights: "
                                 "no --control or --rewind")
        if self.eb_l1 is None:
            self.eb_l1 = DEFAULT_L1
        if self.eb_retrain is not None and self.eb_retrain not in EB_RETRAINS:  # None: early-bird-weights
            raise SupermaskError(f"eb retrain must be one of {', '.join(EB_RETRAINS)}, got {self.eb_retrain!r}")
        if not (math.isfinite(self.eb_l1) and self.eb_l1 >= 0):
            raise SupermaskError(f"early-bird L1 must be >= 0, got {self.eb_l1!r}")
        if self.target_density is None:
            self.target_density = 0.5  # channels kept (the paper's 50% pruning ratio)

    def pruning_levels(self) -> int:
        if self.early_bird == "channel" or Structure.parse(self.structure).nm is not None:
            return 1
        if self.one_shot:
            return 1
        if self.target_density is None or self.target_density >= 1.0:
            return self.levels if self.target_density is None else 0
        return max(1, math.ceil(math.log(self.target_density) / math.log(1.0 - self.prune_fraction) - 1e-9))

    def level_fractions(self, names: list[str], conv_names: set[str]):
        """The prune fraction of one level: one number (global) or one per tensor (layerwise)."""
        def one_shot(rate: float) -> float:
            if self.target_density is not None:
                return 1.0 - self.target_density
            return 1.0 - (1.0 - rate) ** self.levels

        if self.scope == "global":
            return one_shot(self.prune_fraction) if self.one_shot else self.prune_fraction
        rates = frankle_carbin_rates(names, conv=self.conv_prune_fraction or self.prune_fraction,
                                     fc=self.prune_fraction, output=self.output_prune_fraction or self.prune_fraction,
                                     conv_names=conv_names)
        return {name: one_shot(rate) for name, rate in rates.items()} if self.one_shot else rates


@dataclass
class IMPResult:
    run_dir: Path
    levels: list[dict]
    skipped: bool = False


class SaveSnapshotAt(SnapshotAt):
    """θk for late rewinding, written to disk the moment it is taken (so a resumed run has it)."""

    def __init__(self, step: int, path: Path):
        super().__init__(step)
        self.path = path

    def after_step(self, state, loss, correct, count):
        super().after_step(state, loss, correct, count)
        if self.state is not None and distributed.is_main() and not self.path.exists():
            save_state(self.path, self.state)


def run_imp(config: IMPConfig, callbacks: Sequence[Callback] = ()) -> IMPResult:
    """Run (or resume, or skip) IMP: level 0 dense, then ``pruning_levels()`` prune-rewind-retrain
    levels (``config`` is resolved first, if it is not yet)."""
    config, data, spec, root = open_run(config)
    levels = finished_rows(root, config, "levels")
    if levels is not None:
        if not (isinstance(levels, list) and all(isinstance(r, dict) and set(RESULT_KEYS) <= set(r) for r in levels)):
            raise RunError(f"{root.result_path}: a damaged IMP result (its levels); move the run away to rerun it")
        return IMPResult(root.path, levels, skipped=True)
    main: Optional[IMPResult] = None
    if config.control != "none":
        main = run_imp(dataclasses.replace(config, control="none"), callbacks)
    device = resolve_device(config.device)
    rewind_point = RewindPoint.parse(config.rewind)
    rewind_step = rewind_point.step(steps_per_epoch(config, data))
    total_steps = planned_steps(config, data)
    if rewind_step >= total_steps:
        raise SupermaskError(f"rewind point {rewind_point} (step {rewind_step}) is not before the end of training "
                             f"({total_steps} steps): a rewound level would train no step")
    _check_model(config, spec)
    with composite(root, config) as finish:
        if config.early_bird == "channel":
            from .channel_early_bird import run_channel_levels

            rows = run_channel_levels(config, data, spec, device, root, callbacks)
        else:
            rows = run_levels(config, data, spec, device, root, main, rewind_point, rewind_step, callbacks)
        finish({"status": "finished", "engine": "imp", "arch": config.arch, **data_fields(config),
                "seed": config.seed, "control": config.control, "levels": rows, **stopping_fields(config, rows)})
    return IMPResult(root.path, rows)


def _check_model(config: IMPConfig, spec: InputSpec) -> None:
    """The architecture takes the data and the structure (a channel structure needs a chain), and
    every ``--keep-unpruned`` name is one of its weights: checked before the run directory is made."""
    model = create_model(config.arch, spec, config.layer_types(masked_layer_types()), **config.model_kwargs())
    check_input_shape(model, spec, config.arch)
    selection = selection_for(model, config.scope, config.structure,
                              (spec.in_channels, spec.image_size, spec.image_size))
    if getattr(selection, "blocks", None) is not None:
        _check_head_levels(config, selection.blocks)
    if config.init_from is not None:
        load_starting_point(model, config.init_from, config.init_from_checksum)
    names = list(get_masks(model))
    unknown = sorted(set(config.keep_unpruned) - set(names))
    if unknown:
        raise SupermaskError(f"--keep-unpruned names no prunable weight of {config.arch}: {', '.join(unknown)} "
                             f"(prunable: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")


def _check_head_levels(config: IMPConfig, blocks) -> None:
    """A head plan whose levels would outlast the heads (every block down to one) is refused."""
    fraction = config.level_fractions([block.weight("q_proj") for block in blocks], set())
    fraction = fraction if isinstance(fraction, float) else min(fraction.values())
    heads = min(block.heads for block in blocks)
    possible = head_levels(heads, fraction)
    if config.pruning_levels() > possible:
        raise SupermaskError(f"--structure head: {config.arch}'s attention blocks have {heads} heads; at --prune-fraction "
                             f"{fraction:g} (at least one head a level, never the last) every block is down to one "
                             f"head after {possible} level{'s' if possible != 1 else ''}: give --levels {possible} "
                             f"or fewer")


def run_levels(config, data, spec, device, root, main, rewind_point, rewind_step, callbacks) -> list[dict]:
    """Every level of IMP or of one of its controls: the branch of ``config.control`` supplies each
    level's mask and starting weights; each level is one run stage."""
    import torch

    writer = distributed.is_main()
    torch.manual_seed(config.seed)
    model = build_masked(config, spec, config.seed)
    if config.init_from is not None:  # θ0 is the given network (the reinit control still draws its own)
        load_starting_point(model, config.init_from, config.init_from_checksum)
    context = Context(tuple(get_masks(model)), conv_names(model),
                      selection_for(model, config.scope, config.structure,
                                    (spec.in_channels, spec.image_size, spec.image_size)))
    rewind_path = (main.run_dir if main else root.path) / REWIND_FILE
    branch = BRANCHES.get(config.control)(config, spec, context, rewind_path, main)
    rows: list[dict] = [main.levels[0]] if main else []  # level 0 of a control is IMP's dense run
    masks = get_masks(model)
    previous: Optional[RunDir] = None
    levels = config.pruning_levels()
    if main is not None:  # a control follows the levels IMP ran (fewer if its stopping rule ended it)
        levels = min(levels, main.levels[-1]["level"])
    for level in range(branch.first_level, levels + 1):
        if level > 0:
            masks = branch.mask(level, masks, previous)
        extra: list[Callback] = [MaskAfterStep()]
        early_bird = None
        if level == 0 and rewind_step > 0:
            extra.append(SaveSnapshotAt(rewind_step, rewind_path))
        if level == 0 and config.early_bird == "magnitude":
            early_bird = EarlyBird(target_pruner(config, context), config.eb_epsilon, config.eb_window,
                                   level_run(root, level))
            extra.append(early_bird)

        def prepare(level=level, masks=masks) -> nn.Module:
            if level == 0:
                set_masks(model, masks)
                if rewind_step == 0 and writer and not rewind_path.exists():
                    save_state(rewind_path, snapshot(model))
                return model
            start = branch.start(level)
            own = {k: v for k, v in model.state_dict().items() if not k.endswith("weight_mask")}
            check_shapes({k: v for k, v in start.items() if not k.endswith("weight_mask")}, own, rewind_path,
                         complete=True)
            rewind(model, start, masks)
            return model

        def finish(row, summary, early_bird=early_bird):
            if early_bird is not None:
                planned = planned_steps(config, data)
                row.update(early_bird_epoch=early_bird.drawn_epoch, planned_steps=planned,
                           steps_saved=planned - summary.steps)

        fields = {"method": "imp-early-bird-magnitude" if config.early_bird else "imp", "level": level,
                  "control": config.control, "rewind": str(rewind_point), "scope": config.scope,
                  "structure": config.structure}
        ticket = {"kind": "weak", "level": level, "control": config.control, "rewind": str(rewind_point),
                  "seed": config.seed, "init": config.init, "structure": config.structure}
        density = lambda: describe_density(model)["density"]  # noqa: E731  (after prepare: the level's mask)
        stage = level_stage(config, root, level, prepare, fields, ticket, callbacks=extra,
                            start_step=rewind_step if level > 0 else 0,
                            label=_Label(level, levels, density), masks=lambda m, masks=masks: masks,
                            keep_start=WEIGHTS_FILE, finish=finish)
        done = run_stage(config, data, stage, device, callbacks)
        if not done.skipped:
            if level == 0 and not rewind_path.exists():
                raise RunError(f"{rewind_path}: the rewind snapshot was not taken (step {rewind_step})")
            log.info("level %d: density %.4f, test accuracy %.4f", level, done.result["density"],
                     done.result["test_accuracy"])
        rows.append(done.result)
        previous = RunDir(done.run_dir)
        if main is None and level > 0 and _unmatched(config, rows[0], done.result):
            log.info("level %d: %.4f is more than %g points below the dense level's %.4f: stopping", level,
                     done.result["test_accuracy"], config.stop_when_unmatched, rows[0]["test_accuracy"])
            break
    return rows


def _unmatched(config: IMPConfig, dense: dict, row: dict) -> bool:
    return (config.stop_when_unmatched is not None
            and row["test_accuracy"] < dense["test_accuracy"] - config.stop_when_unmatched / 100.0)


#: A level is matching within this many points of the dense network's test accuracy (Frankle et al. 2020).
MATCHING_MARGIN = 0.2


def stopping_fields(config: IMPConfig, rows: list[dict]) -> dict:
    """With ``--stop-when-unmatched``: where IMP stopped, and its sparsest matching level (within
    :data:`MATCHING_MARGIN` points of level 0), in the result; nothing otherwise."""
    if config.stop_when_unmatched is None or not rows:
        return {}
    dense = rows[0]["test_accuracy"]
    matching = [r for r in rows[1:] if r["test_accuracy"] >= dense - MATCHING_MARGIN / 100.0]
    stopped = rows[-1]["level"] if _unmatched(config, rows[0], rows[-1]) else None
    return {"stopped_at_level": stopped, "matching_margin": MATCHING_MARGIN,
            "sparsest_matching_level": min(matching, key=lambda r: r["density"])["level"] if matching else None}


class _Label:
    """A level's name for the progress display, read once its mask is in place."""

    def __init__(self, level: int, levels: int, density):
        self.level, self.levels, self.density = level, levels, density

    def __str__(self) -> str:
        return f"level {self.level}/{self.levels} d={self.density():.4f}"


def label(config: IMPConfig) -> str:
    control = "" if config.control == "none" else " " + config.control
    return f"{config.arch} imp{Structure.parse(config.structure).label()}{control} s={config.seed}"


def result_parts(result: dict) -> tuple[str, str]:
    """``("imp channel", "reinit")``: IMP's method and structure; its control apart."""
    control = result.get("control", "none")
    return (result.get("method", "imp") + Structure.parse(result.get("structure")).label(),
            "" if control == "none" else control)


ENGINES.add("imp", Engine("imp", IMPConfig, run_imp, label, rebuild_plain, kind="weak", result_parts=result_parts,
                          early_stopping=True, check=_check_model))
