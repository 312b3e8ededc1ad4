"""What every IMP variant shares: the masked network, a finished level's final weights, and the
one helper that turns a level into a run stage (:mod:`supermask.stage`)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from supermask.errors import RunError
from supermask.io import load_checkpoint
from supermask.layout import level_dir_name
from supermask.models import InputSpec, create_model, masked_layer_types
from supermask.nn import init_model
from supermask.runs import RunDir, config_dict
from supermask.seeding import derived_seed
from supermask.stage import Stage

#: BatchNorm γ at initialisation: PyTorch's ones; open_lth's U(0, 1); the early-bird reference's 0.5
#: (GATECH-EIC/Early-Bird-Tickets ``models/vgg.py``: ``m.weight.data.fill_(0.5)``). β is 0 in each.
BN_INITS = ("ones", "uniform", "half")


def build_masked(config, spec: InputSpec, seed: int) -> nn.Module:
    """The dense network with a ``weight_mask`` per prunable weight, drawn from ``seed``."""
    model = create_model(config.arch, spec, config.layer_types(masked_layer_types()), **config.model_kwargs())
    init_model(model, config.init, seed)
    if config.bn_init != "ones":  # a new model's BatchNorm is already PyTorch's
        init_batchnorm(model, config.bn_init, derived_seed(seed, "bn-init"))
    return model


@torch.no_grad()
def init_batchnorm(model: nn.Module, bn_init: str, seed: int) -> None:
    """Every affine BatchNorm of ``model`` as ``bn_init`` (:data:`BN_INITS`) gives it: γ ones, U(0, 1)
    drawn from ``seed`` (open_lth's ``bn_initializers.uniform``) or 0.5 (the early-bird reference's);
    β 0."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            if bn_init == "uniform":
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen))
            else:
                module.weight.fill_(0.5 if bn_init == "half" else 1.0)
            module.bias.zero_()


def conv_names(model: nn.Module) -> frozenset[str]:
    return frozenset(f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d))


def final_state(run: RunDir, device="cpu") -> dict[str, torch.Tensor]:
    """A finished level's final weights: its latest checkpoint, which must be the last step's
    (the previous checkpoint is an earlier state: pruning it would give other masks)."""
    ckpt = load_checkpoint(run.checkpoint_path, map_location=device)
    if isinstance(ckpt, dict):
        run.check_own(ckpt, run.checkpoint_path)  # the level's own, not another level's copied over it
    steps = run.read_result().get("steps")
    if not isinstance(ckpt, dict) or "model" not in ckpt or ckpt.get("step") != steps:
        raise RunError(f"{run.checkpoint_path}: not the final checkpoint of this finished level (step "
                       f"{ckpt.get('step') if isinstance(ckpt, dict) else '?'}, expected {steps}); "
                       f"delete {run.path} to retrain it")
    return ckpt["model"]


def level_run(root: RunDir, level: int) -> RunDir:
    return RunDir(root.path / level_dir_name(level))


def level_stage(config, root: RunDir, level: int, build: Callable[[], nn.Module], fields: dict, ticket: dict, *,
                callbacks: Sequence = (), start_step: int = 0, label: Optional[str] = None,
                masks: Optional[Callable] = None, keep_start: Optional[str] = None,
                finish: Optional[Callable] = None) -> Stage:
    """Level ``level`` of the IMP run in ``root`` as a run stage: its directory ``level-<L>/``, the
    run's config with the level, the root's lock (held by the composite run). ``fields`` (the
    result's engine fields) name the level themselves, where the variant records it."""
    extra = {} if masks is None else {"masks": masks}
    return Stage(level_run(root, level), config_dict(config) | {"level": level}, build,
                 fields, ticket_fields=ticket, callbacks=callbacks, start_step=start_step,
                 lock=False, label=label, keep_start=keep_start, finish=finish, **extra)
