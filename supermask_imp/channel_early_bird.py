"""Early-bird channel tickets (You, Li, Xu, Fu, Wang, Chen, Baraniuk, Wang & Lin 2020, "Drawing
Early-Bird Tickets"), as the reference code computes them (GATECH-EIC/Early-Bird-Tickets,
``main.py``: ``updateBN``, ``EarlyBird``; ``vggprune.py``).

Dense training carries an L1 penalty on every BatchNorm scale γ (``--eb-l1``, the reference's
``--s``, 1e-4: the gradient gains ``s * sign(γ)``). At the start of every epoch the channel mask
is drawn: over all BatchNorm layers at once, the channels whose |γ| exceeds the value at the
pruned fraction of the sorted |γ| (``1 - --target-density``, the fraction of channels kept) are
kept. The last ``--eb-window`` masks (5) are kept first in, first out; the distances between the
newest and each older one (the fraction of channels whose bit differs) must all be at most
``--eb-epsilon`` (0.1) for the ticket to be drawn. Dense training stops there.

The ticket is then made physically smaller: every convolution keeps its kept output channels,
its BatchNorm those channels, the next convolution (or the classifier) those input channels. The
smaller dense network starts from the early-bird weights and is trained with the full schedule
from step 0, without the L1 penalty. That is ours, not the reference's retraining: its
``main_c.py`` (``scripts/standard-train/retrain_continue.sh``) builds the pruned configuration with
fresh random weights (only the channel selection is taken from the pruned model) and trains it
from the drawing epoch on (``--start-epoch``) with the L1 penalty on (``--sparsity-regularization``);
``retrain_scratch.sh`` trains that configuration from scratch, penalty on too (docs/fidelity.md).
BatchNorm γ starts at 0.5, as the reference's VGG and ResNet (``bn_init="half"``, the default
with ``--early-bird channel``). Level 0's result holds the epoch the ticket was
drawn at; level 1's the small network's parameter count, multiply-accumulates and FLOPs (2 per
multiply-accumulate) per input beside the dense network's, and its ticket ``model.safetensors`` loads into ``create_model(arch, spec,
channels=...)`` (the channel counts are in ``ticket.json``).

Supported: the VGG family (every convolution's channels) and the ResNets (each residual block's
inner channels: ``conv1``'s outputs, ``bn1``, ``conv2``'s inputs). A ResNet's residual-stream
channels (the stem, every ``bn2`` and shortcut) are kept whole and are not part of the masks: the
reference instead selects them too, through a channel-selection layer in a pre-activation ResNet.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from supermask.models import DENSE, create_model
from supermask.models.cost import count_macs, count_parameters
from supermask.nn.masked import get_masks
from supermask.runs import RunDir
from supermask.stage import planned_steps, run_stage, steps_per_epoch
from supermask.training import Callback, MaskAfterStep, distributed

from .early_bird import mask_distance
from .levels import build_masked, final_state, init_batchnorm, level_run, level_stage

log = logging.getLogger(__name__)

DEFAULT_L1 = 1e-4  # the reference's --s
#: How the smaller network trains (IMPConfig.eb_retrain): ours, the default, and the reference's.
EB_RETRAINS = ("early-bird-weights", "reference")
VGGS = ("vgg11", "vgg16", "vgg19")
RESNETS = ("resnet18", "resnet20", "resnet56")
SUPPORTED = VGGS + RESNETS


def batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm layers whose channels a channel ticket can remove: every one of a VGG; the
    first of every residual block of a ResNet (the residual stream's channels are kept)."""
    blocks = [m for m in model.modules() if hasattr(m, "conv1") and hasattr(m, "shortcut")]
    if blocks:
        return [block.bn1 for block in blocks]
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@torch.no_grad()
def channel_masks(model: nn.Module, pruned_fraction: float) -> list[torch.Tensor]:
    """One bool mask per prunable BatchNorm layer: |γ| above the global threshold at ``pruned_fraction``
    of the sorted |γ| of all their channels (the reference's ``EarlyBird.pruning``)."""
    gammas = [bn.weight.detach().abs().cpu() for bn in batchnorms(model)]
    flat = torch.cat(gammas)
    threshold = flat.sort().values[min(int(flat.numel() * pruned_fraction), flat.numel() - 1)]
    masks = [g > threshold for g in gammas]
    for mask, g in zip(masks, gammas):  # never an empty layer: keep its largest channel
        if not mask.any():
            mask[g.argmax()] = True
    return masks


class GammaL1(Callback):
    """The L1 penalty on the prunable BatchNorm γ (the reference's ``updateBN``: ``s * sign(γ)`` added to
    the gradient)."""

    def __init__(self, l1: float):
        self.l1, self.bns = l1, None

    def loss_penalty(self, state):
        if self.l1 == 0:
            return None
        if self.bns is None:
            self.bns = batchnorms(state.model)
        return self.l1 * sum(bn.weight.abs().sum() for bn in self.bns)


class ChannelEarlyBird(GammaL1):
    """L1 on BatchNorm γ during training; stop once the channel mask settles (FIFO window)."""

    def __init__(self, kept_fraction: float, epsilon: float, window: int, l1: float, run: Optional[RunDir] = None):
        super().__init__(l1)
        self.pruned = 1.0 - kept_fraction
        self.epsilon, self.window, self.run = epsilon, window, run
        self.masks: list[torch.Tensor] = []
        self.drawn_epoch: Optional[int] = None

    def on_eval(self, state, records):
        # The reference draws the mask before each epoch's training: the state after epoch e-1.
        mask = torch.cat(channel_masks(state.model, self.pruned))
        self.masks = (self.masks + [mask])[-self.window:]
        if len(self.masks) < self.window:
            return
        distances = [mask_distance({"": self.masks[-1]}, {"": older}) for older in self.masks[:-1]]
        if self.run is not None and distributed.is_main():
            self.run.append_metrics({"epoch": state.epoch, "step": state.step, "split": "early-bird",
                                     "mask_distance": max(distances)})
        log.info("early-bird: epoch %d largest channel-mask distance %.4f", state.epoch, max(distances))
        if max(distances) <= self.epsilon and state.epoch > 0:
            self.drawn_epoch = state.epoch
            state.stopped = f"early-bird channel ticket drawn at epoch {state.epoch}"

    def state_dict(self) -> dict:
        return {"masks": list(self.masks), "drawn_epoch": self.drawn_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.masks = list(state.get("masks", []))
        self.drawn_epoch = state.get("drawn_epoch")


def _kept(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero().flatten()


@torch.no_grad()
def shrink_vgg(model: nn.Module, masks: list[torch.Tensor], small: nn.Module) -> nn.Module:
    """Copy ``model``'s kept channels into ``small`` (built with the kept channel counts)."""
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    small_convs = [m for m in small.features if isinstance(m, nn.Conv2d)]
    small_bns = [m for m in small.features if isinstance(m, nn.BatchNorm2d)]
    previous = torch.arange(convs[0].in_channels)
    for conv, bn, mask, sconv, sbn in zip(convs, bns, masks, small_convs, small_bns):
        out = _kept(mask)
        weight = conv.weight * getattr(conv, "weight_mask", 1)
        sconv.weight.copy_(weight[out][:, previous])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(sbn, name).copy_(getattr(bn, name)[out])
        sbn.num_batches_tracked.copy_(bn.num_batches_tracked)
        previous = out
    classifier = model.classifier
    weight = classifier.weight * getattr(classifier, "weight_mask", 1)
    small.classifier.weight.copy_(weight[:, previous])
    small.classifier.bias.copy_(classifier.bias)
    return small


@torch.no_grad()
def shrink_resnet(model: nn.Module, masks: list[torch.Tensor], small: nn.Module) -> nn.Module:
    """Copy ``model`` into ``small`` (built with each block's kept inner channels): every block keeps
    its kept ``conv1`` outputs, their ``bn1`` and the matching ``conv2`` inputs; the rest is copied."""
    def weight(conv):
        return conv.weight * getattr(conv, "weight_mask", 1)

    state = {k: v for k, v in model.state_dict().items() if not k.endswith("weight_mask")}
    blocks = [(n, m) for n, m in model.named_modules() if hasattr(m, "conv1") and hasattr(m, "shortcut")]
    for (name, block), mask in zip(blocks, masks):
        kept = _kept(mask)
        state[f"{name}.conv1.weight"] = weight(block.conv1)[kept]
        for part in ("weight", "bias", "running_mean", "running_var"):
            state[f"{name}.bn1.{part}"] = getattr(block.bn1, part)[kept]
        state[f"{name}.conv2.weight"] = weight(block.conv2)[:, kept]
    for key, value in state.items():  # masked weights folded where a layer was not shrunk
        layer, _, leaf = key.rpartition(".")
        if leaf == "weight" and f"{layer}.weight_mask" in model.state_dict() and key not in {
                f"{n}.conv1.weight" for n, _ in blocks} | {f"{n}.conv2.weight" for n, _ in blocks}:
            state[key] = value * model.state_dict()[f"{layer}.weight_mask"]
    small.load_state_dict(state)
    return small


@torch.no_grad()
def fresh_weights(small: nn.Module, config) -> nn.Module:
    """``small`` with new random weights (the reference's retraining keeps only the pruned
    configuration): drawn by the run's init from a seed of their own, BatchNorm γ as ``bn_init``."""
    from supermask.nn import init_model
    from supermask.seeding import derived_seed

    seed = derived_seed(config.seed, "early-bird-retrain")
    init_model(small, config.init, seed)
    init_batchnorm(small, config.bn_init, seed)
    for module in small.modules():  # nor the early-bird network's running statistics
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    return small


def shrink(arch: str, model: nn.Module, masks: list[torch.Tensor], small: nn.Module) -> nn.Module:
    return shrink_resnet(model, masks, small) if arch in RESNETS else shrink_vgg(model, masks, small)


def run_channel_levels(config, data, spec, device, root: RunDir, callbacks) -> list[dict]:
    """Level 0: dense training with the L1 penalty until the channel ticket is drawn; level 1: the
    physically smaller network, from the early-bird weights, trained with the same schedule."""
    torch.manual_seed(config.seed)
    shape = (spec.in_channels, spec.image_size, spec.image_size)

    def level(number: int, model: nn.Module, extra: list, fields: dict, ticket: dict, finish=None,
              start_step: int = 0) -> dict:
        stage = level_stage(config, root, number, lambda: model, {**fields, "level": number}, ticket,
                            callbacks=extra, start_step=start_step, label=f"level {number}/1 " + ("dense, L1 on γ" if number == 0
                                                                          else "channel ticket"),
                            masks=get_masks, finish=finish)
        return run_stage(config, data, stage, device, callbacks).result

    dense = build_masked(config, spec, config.seed)
    bird = ChannelEarlyBird(config.target_density, config.eb_epsilon, config.eb_window, config.eb_l1,
                            level_run(root, 0))
    planned = planned_steps(config, data)
    dense_fields = {"method": "early-bird-channel", "control": "none", "rewind": "0", "scope": "global",
                    "parameters": count_parameters(dense), "macs": count_macs(dense, shape)}
    row0 = level(0, dense, [MaskAfterStep(), bird], dense_fields, {"kind": "weak"},
                 finish=lambda row, summary: row.update(early_bird_epoch=bird.drawn_epoch, planned_steps=planned,
                                                        steps_saved=planned - row["steps"]))

    # the ticket: the early-bird weights (level 0's last state), its kept channels, physically removed
    dense.load_state_dict(final_state(level_run(root, 0), "cpu"))
    masks = channel_masks(dense, 1.0 - config.target_density)
    channels = [int(m.sum()) for m in masks]
    small = shrink(config.arch, dense, masks,
                   create_model(config.arch, spec, config.layer_types(DENSE), channels=channels,
                                **config.model_kwargs()))
    retrain, start_step = [], 0
    if config.eb_retrain == "reference":  # main_c.py: the pruned configuration, fresh weights, from the drawing epoch
        small = fresh_weights(small, config)
        drawn = row0.get("early_bird_epoch") or 0
        start_step = min(drawn * steps_per_epoch(config, data), planned - 1)
        retrain = [GammaL1(config.eb_l1)]
    macs = count_macs(small, shape)
    fields = {"method": "early-bird-channel", "control": "none", "rewind": "0", "scope": "global",
              "channels": channels, "channel_density": sum(channels) / sum(m.numel() for m in masks),
              "parameters": count_parameters(small), "macs": macs, "flops": 2 * macs,
              "dense_parameters": dense_fields["parameters"], "dense_macs": dense_fields["macs"],
              "dense_flops": 2 * dense_fields["macs"],
              "early_bird_epoch": row0.get("early_bird_epoch"),
              "eb_retrain": config.eb_retrain or EB_RETRAINS[0]}
    weights = lambda m: sum(x.weight.numel() for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear)))  # noqa: E731
    kept = weights(small) / weights(dense)  # the density: the kept fraction of the prunable weights
    row1 = level(1, small, retrain, fields, {"kind": "weak", "channels": channels, "model_kwargs": {"channels": channels}},
                 finish=lambda row, summary: row.update(density=kept, density_per_layer={}), start_step=start_step)
    log.info("channel ticket: %d of %d parameters, %d of %d MACs", fields["parameters"], fields["dense_parameters"],
             fields["macs"], fields["dense_macs"])
    return [row0, row1]
