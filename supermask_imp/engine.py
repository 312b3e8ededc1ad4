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

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors.torch import save as st_save
from torch import nn

from supermask.errors import RunError, SupermaskError
from supermask.experiment import (ExperimentConfig, check_input_shape, describe_density, load_data, result_record, ticket_record, tracking,
                                  writing)
from supermask.io import atomic_write_bytes, check_shapes, load_checkpoint, read_tensors
from supermask.models import InputSpec, create_model, masked_layer_types
from supermask.nn import WEIGHT_INITS, check_density, derived_seed, init_model
from supermask.nn.init import canonical
from supermask.nn.nm import check_structure, parse_structure
from supermask.nn.masked import get_masks, set_masks
from supermask.runs import RESULT_KEYS, RunDir, config_dict
from supermask.tickets import read_ticket, save_ticket
from supermask.training import Callback, MaskAfterStep, TrainConfig, distributed, resolve_device, train
from supermask.training.callbacks import announce_stage

from .defaults import default_train_config, family_defaults
from .early_bird import EarlyBird
from .pruning import check_fraction, frankle_carbin_rates, magnitude_prune, random_masks_like
from .rewind import RewindPoint, SnapshotAt, rewind, snapshot
from .structured import Selection, channel_prune, nm_keep, random_structured, refuse_global_scope, selection_for

log = logging.getLogger(__name__)

CONTROLS = ("none", "reinit", "random-prune")
EARLY_BIRDS = (None, "magnitude", "channel")
MAX_LEVELS = 200  # a plan beyond this is a typo, not an experiment (0.8**200 = 4e-20)
REWIND_FILE = "rewind.safetensors"
WEIGHTS_FILE = "weights.safetensors"


EB_EPSILON, EB_WINDOW = 0.1, 5  # early-bird's mask-distance threshold and window (You et al. 2020)


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
    bn_init: str = "ones"  # BatchNorm γ: "ones", or "uniform" U(0, 1) as open_lth (see defaults.py)
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
    train: TrainConfig = field(default_factory=lambda: default_train_config("conv6"))

    ENGINE = "imp"

    @classmethod
    def for_arch(cls, arch: str, epochs: Optional[int] = None, **overrides) -> "IMPConfig":
        """The paper's defaults for ``arch``'s family (see :mod:`imp.defaults`), then ``overrides``."""
        d = family_defaults(arch)
        train = default_train_config(arch, **({"epochs": epochs} if epochs else {}))
        structured = (overrides.get("structure") or "unstructured") != "unstructured"
        scope = "layerwise" if structured else d.scope  # a structure selects layer by layer
        layerwise = (overrides.get("scope") or scope) == "layerwise"  # the per-layer fractions: layerwise only
        base = dict(arch=arch, scope=scope, prune_fraction=d.fc_fraction, train=train,
                    keep_unpruned=d.keep_unpruned, bn_init=d.bn_init,
                    conv_prune_fraction=d.conv_fraction if layerwise else None,
                    output_prune_fraction=d.output_fraction if layerwise else None)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def validate(self) -> "IMPConfig":
        if self.control not in CONTROLS:
            raise SupermaskError(f"control must be one of {', '.join(CONTROLS)}, got {self.control!r}")
        if self.scope not in ("global", "layerwise"):
            raise SupermaskError(f"scope must be global or layerwise, got {self.scope!r}")
        self._check_structure()
        if not isinstance(self.levels, int) or self.levels < 1:
            raise SupermaskError(f"levels must be a positive integer, got {self.levels!r}")
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
        if self.early_bird is None and (self.eb_epsilon, self.eb_window) != (EB_EPSILON, EB_WINDOW):
            raise SupermaskError("--eb-epsilon and --eb-window apply to --early-bird only")
        if not (0.0 < self.eb_epsilon < 1.0):
            raise SupermaskError(f"early-bird epsilon must be in (0, 1), got {self.eb_epsilon!r}")
        if not isinstance(self.eb_window, int) or self.eb_window < 1:
            raise SupermaskError(f"early-bird window must be a positive integer, got {self.eb_window!r}")
        if self.pruning_levels() > MAX_LEVELS:
            raise SupermaskError(f"this plan runs {self.pruning_levels()} pruning levels (more than {MAX_LEVELS}): "
                                 f"raise --prune-fraction, use --one-shot or a larger --target-density")
        self.keep_unpruned = tuple(self.keep_unpruned)
        if self.bn_init not in BN_INITS:
            raise SupermaskError(f"bn init must be one of {', '.join(BN_INITS)}, got {self.bn_init!r}")
        return super().validate()

    def _check_structure(self) -> None:
        self.structure = check_structure(self.structure)
        if self.structure == "unstructured":
            return
        refuse_global_scope(self.structure, self.scope)
        if self.early_bird is not None:
            raise SupermaskError(f"--early-bird draws unstructured or BatchNorm-γ channel tickets: not with "
                                 f"--structure {self.structure}")
        nm = parse_structure(self.structure)
        if nm is not None and self.target_density is not None and self.target_density != nm.density:
            raise SupermaskError(f"--structure {nm} prunes to density {nm.density:g} in one level: "
                                 f"--target-density {self.target_density:g} contradicts it")

    def _check_channel_early_bird(self) -> None:
        from .channel_early_bird import DEFAULT_L1, SUPPORTED

        if self.arch not in SUPPORTED:
            raise SupermaskError(f"--early-bird channel supports {', '.join(SUPPORTED)} (networks of conv-BatchNorm "
                                 f"stages or residual blocks), not {self.arch}")
        if self.control != "none" or self.rewind != "0":
            raise SupermaskError("--early-bird channel trains the smaller network from the early-bird weights: "
                                 "no --control or --rewind")
        if self.eb_l1 is None:
            self.eb_l1 = DEFAULT_L1
        if not (math.isfinite(self.eb_l1) and self.eb_l1 >= 0):
            raise SupermaskError(f"early-bird L1 must be >= 0, got {self.eb_l1!r}")
        if self.target_density is None:
            self.target_density = 0.5  # channels kept (the paper's 50% pruning ratio)

    def pruning_levels(self) -> int:
        if self.early_bird == "channel" or parse_structure(self.structure) is not None:
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


def save_state(path: Path, state: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(path, st_save({k: v.detach().cpu().contiguous() for k, v in state.items()}))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    return read_tensors(path)


BN_INITS = ("ones", "uniform")


def build_masked(config: IMPConfig, spec: InputSpec, seed: int) -> nn.Module:
    model = create_model(config.arch, spec, config.layer_types(masked_layer_types()), **config.model_kwargs())
    init_model(model, config.init, seed)
    if config.bn_init == "uniform":  # open_lth's bn_initializers.uniform: γ ~ U(0, 1), β = 0
        gen = torch.Generator().manual_seed(derived_seed(seed, "bn-init"))
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                    module.weight.copy_(torch.rand(module.weight.shape, generator=gen))
                    module.bias.zero_()
    return model


def _conv_names(model: nn.Module) -> set[str]:
    return {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _final_state(run: RunDir, device) -> dict[str, torch.Tensor]:
    """A finished level's final weights: its latest checkpoint, which must be the last step's
    (the previous checkpoint is an earlier state: pruning it would give other masks)."""
    ckpt = load_checkpoint(run.checkpoint_path, map_location=device)
    steps = run.read_result().get("steps")
    if not isinstance(ckpt, dict) or "model" not in ckpt or ckpt.get("step") != steps:
        raise RunError(f"{run.checkpoint_path}: not the final checkpoint of this finished level (step "
                       f"{ckpt.get('step') if isinstance(ckpt, dict) else '?'}, expected {steps}); "
                       f"delete {run.path} to retrain it")
    return ckpt["model"]


def run_imp(config: IMPConfig, callbacks: Sequence[Callback] = ()) -> IMPResult:
    """Run (or resume, or skip) IMP: level 0 dense, then ``pruning_levels()`` prune-rewind-retrain levels."""
    config.validate()
    data, spec = load_data(config)
    root = config.run_dir()
    if root.is_finished():
        root.check_config(config_dict(config))
        log.info("finished IMP run found, skipping: %s", root.path)
        levels = root.read_result(("levels",))["levels"]
        if not (isinstance(levels, list) and all(isinstance(r, dict) and set(RESULT_KEYS) <= set(r) for r in levels)):
            raise RunError(f"{root.result_path}: a damaged IMP result (its levels); move the run away to rerun it")
        return IMPResult(root.path, levels, skipped=True)
    main: Optional[IMPResult] = None
    if config.control != "none":
        main = run_imp(dataclasses.replace(config, control="none"), callbacks)
    device = resolve_device(config.device)
    rewind_point = RewindPoint.parse(config.rewind)
    steps_per_epoch = -(-len(data.train) // config.train.batch_size)
    total_steps = config.train.iterations or config.train.epochs * steps_per_epoch
    rewind_step = rewind_point.step(steps_per_epoch)
    if rewind_step >= total_steps:
        raise SupermaskError(f"rewind point {rewind_point} (step {rewind_step}) is not before the end of training "
                             f"({total_steps} steps): a rewound level would train no step")
    _check_model(config, spec)
    writer = distributed.is_main()
    with writing(root, config):
        if config.early_bird == "channel":
            from .channel_early_bird import run_channel_levels

            rows = run_channel_levels(config, data, spec, device, root, callbacks)
        else:
            rows = _run_levels(config, data, spec, device, root, main, rewind_point, rewind_step, callbacks)
        if writer:
            root.write_result({"status": "finished", "engine": "imp", "arch": config.arch, "dataset": config.dataset,
                               "seed": config.seed, "control": config.control, "levels": rows})
        distributed.barrier()
    return IMPResult(root.path, rows)


def _check_model(config: IMPConfig, spec: InputSpec) -> None:
    """The architecture takes the data, and every ``--keep-unpruned`` name is one of its weights."""
    model = create_model(config.arch, spec, config.layer_types(masked_layer_types()), **config.model_kwargs())
    check_input_shape(model, spec, config.arch)
    names = list(get_masks(model))
    unknown = sorted(set(config.keep_unpruned) - set(names))
    if unknown:
        raise SupermaskError(f"--keep-unpruned names no prunable weight of {config.arch}: {', '.join(unknown)} "
                             f"(prunable: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")


def _run_levels(config, data, spec, device, root, main, rewind_point, rewind_step, callbacks) -> list[dict]:
    writer = distributed.is_main()
    torch.manual_seed(config.seed)
    model = build_masked(config, spec, config.seed)
    names = list(get_masks(model))
    conv_names = _conv_names(model)
    selection = selection_for(model, config.scope, config.structure, (spec.in_channels, spec.image_size, spec.image_size))
    rewind_path = (main.run_dir if main else root.path) / REWIND_FILE
    rows: list[dict] = []
    masks = get_masks(model)
    previous: Optional[RunDir] = None
    first_level = 1 if main else 0
    if main:
        rows.append(main.levels[0])  # level 0 of a control is IMP's dense run
    for level in range(first_level, config.pruning_levels() + 1):
        run = RunDir(root.path / f"level-{level}")
        if level > 0:
            masks = _level_masks(config, level, masks, previous, main, names, conv_names, selection)
        if run.is_finished():
            run.check_config(config_dict(config) | {"level": level})
            rows.append(run.read_result(RESULT_KEYS))
            previous = run
            continue
        if writer:
            run.prepare(config_dict(config) | {"level": level})
        with run.tracking_status() if writer else contextlib.nullcontext():
            start_state = _starting_state(config, level, spec, rewind_path, main)
            if start_state is not None:
                own = {k: v for k, v in model.state_dict().items() if not k.endswith("weight_mask")}
                check_shapes({k: v for k, v in start_state.items() if not k.endswith("weight_mask")}, own,
                             rewind_path, complete=True)
                rewind(model, start_state, masks)
            else:
                set_masks(model, masks)
            extra: list[Callback] = [MaskAfterStep()]
            if level == 0:
                if rewind_step == 0 and writer and not rewind_path.exists():
                    save_state(rewind_path, snapshot(model))
                elif rewind_step > 0:
                    extra.append(SaveSnapshotAt(rewind_step, rewind_path))
            early_bird = None
            if level == 0 and config.early_bird == "magnitude":
                early_bird = EarlyBird(_target_pruner(config, names, conv_names), config.eb_epsilon, config.eb_window,
                                       run)
                extra.append(early_bird)
            ticket_state = snapshot(model)
            announce_stage(callbacks, f"level {level}/{config.pruning_levels()} "
                                      f"d={describe_density(model)['density']:.4f}")
            started = time.time()
            summary = train(model, [p for p in model.parameters() if p.requires_grad], data, config.train,
                            seed=config.seed, device=device, run=run,
                            callbacks=[*extra, *callbacks, *tracking(config, run)],
                            describe=describe_density, start_step=rewind_step if level > 0 else 0,
                            **config.execution())
            fields = {"method": "imp-early-bird-magnitude" if config.early_bird else "imp", "level": level,
                      "control": config.control, "rewind": str(rewind_point), "scope": config.scope,
                      "structure": config.structure}
            if early_bird is not None:
                planned = config.train.iterations or config.train.epochs * -(-len(data.train) // config.train.batch_size)
                fields.update(early_bird_epoch=early_bird.drawn_epoch, planned_steps=planned,
                              steps_saved=planned - summary.steps)
            row = result_record(config, summary, masks, started, device, fields)
            if writer:
                meta = ticket_record(config, data.info, summary, model, masks,
                                     {"kind": "weak", "level": level, "control": config.control,
                                      "rewind": str(rewind_point), "seed": config.seed, "init": config.init,
                                      "structure": config.structure})
                save_ticket(run.ticket_dir, masks, meta, model.state_dict())  # the selected network, trained
                save_state(run.ticket_dir / WEIGHTS_FILE, ticket_state)
                run.write_result(row)
                run.discard_selected(keep=None)
        distributed.barrier()  # the next level reads this one's files
        if level == 0 and not rewind_path.exists():
            raise RunError(f"{rewind_path}: the rewind snapshot was not taken (step {rewind_step})")
        rows.append(row)
        previous = run
        log.info("level %d: density %.4f, test accuracy %.4f", level, row["density"], row["test_accuracy"])
    return rows


def _target_pruner(config: IMPConfig, names: list[str], conv_names: set[str]):
    """The magnitude pruning that takes a dense level-0 model straight to the final density."""
    fractions = dataclasses.replace(config, one_shot=True).level_fractions(names, conv_names)

    def prune(weights, masks):
        return magnitude_prune(weights, masks, fractions, scope=config.scope, keep=config.keep_unpruned)

    return prune


def _level_masks(config, level, masks, previous, main, names, conv_names, selection):
    if main is not None:
        ticket_masks, _ = read_ticket(main.run_dir / f"level-{level}" / "ticket")
        check_shapes(ticket_masks, masks, main.run_dir / f"level-{level}" / "ticket", complete=True)
        if config.control == "random-prune":
            seed = derived_seed(config.seed, f"random-prune-{level}")
            if isinstance(selection, Selection):
                return random_structured(ticket_masks, selection, seed)
            return random_masks_like(ticket_masks, seed)
        return ticket_masks
    state = _final_state(previous, "cpu")
    check_shapes({n: state[n] for n in names if n in state}, masks, previous.checkpoint_path, complete=True)
    weights = {n: state[n] for n in names}
    current = {n: state[n.rsplit(".", 1)[0] + ".weight_mask"] for n in names}
    if isinstance(selection, Selection):
        return _structured_level(config, weights, current, names, conv_names, selection)
    return magnitude_prune(weights, current, config.level_fractions(names, conv_names), scope=config.scope,
                           keep=config.keep_unpruned)


def _structured_level(config, weights, current, names, conv_names, selection) -> dict:
    """One structured IMP level: N:M over |w| (tensors in ``keep_unpruned`` stay whole), or the
    channels of smallest L1 norm (``keep_unpruned`` layers keep their output channels)."""
    keep = set(config.keep_unpruned)
    if selection.nm is not None:
        pruned = nm_keep({n: weights[n].abs() * current[n] for n in names if n not in keep}, selection.nm)
        return {n: pruned.get(n, current[n]).to(current[n].dtype) for n in names}
    fractions = {n: (0.0 if n in keep else rate) for n, rate in config.level_fractions(names, conv_names).items()}
    new = channel_prune(weights, current, selection.links, fractions)
    return {n: new[n].to(current[n].dtype) for n in names}


def _starting_state(config, level, spec, rewind_path, main):
    """The weights a level starts from (masks are applied on top); None: the model as built (level 0)."""
    if level == 0:
        return None
    if config.control == "reinit":
        return snapshot(build_masked(config, spec, derived_seed(config.seed, f"reinit-{level}")))
    return load_state(rewind_path)
