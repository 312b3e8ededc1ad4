"""Pruning at initialisation: one-shot pruners before training, then ordinary training of the survivors.

``supermask prune --method snip --density 0.1`` builds the masked model from the seed, scores
every prunable weight once, keeps the top ``density`` of the scores (``--scope global``, the
default of the papers, or ``layerwise``), and trains the kept weights with the family's IMP
training defaults (pruned weights are zeroed after every optimiser step, as in IMP). The run
directory is that of any run; its ticket holds the mask and the starting weights.

Pruners (scores: higher is kept):

- ``random``: uniform random scores (a random mask of the density);
- ``magnitude``: |w| at initialisation;
- ``snip`` (Lee, Ajanthan & Torr 2019): |dL/dw * w| on one batch of training data;
- ``grasp`` (Wang, Zhang & Grosse 2020): ``-w * (H g)`` is the score GraSP *removes* highest, so
  the kept score is ``w * (H g)``; ``H g`` by double back-propagation, with the logits divided
  by a temperature of 200, over ``10 x classes`` training examples drawn at random with the
  training augmentation (Synaptic-Flow's prune loader, ``prune_dataset_ratio`` 10; the GraSP
  paper's own code draws ten per class);
- ``synflow`` (Tanaka, Kunin, Yamins & Ganguli 2020): data-free and iterative: on the network
  with every parameter and buffer replaced by its absolute value (biases and BatchNorm
  included, as the reference's ``linearize``) and an all-ones input, the score is ``|dR/dw * w|``
  of ``R = sum(f(1))``, re-computed over 100 rounds that prune to ``density**(r/100)``
  (exponential schedule), in float64 (the reference computes in float32). It avoids layer
  collapse (every layer keeps weights).

Every pruner scores the network in eval mode (BatchNorm uses its running statistics), as
Synaptic-Flow's ``prune_loop`` does by default.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from supermask.data import make_loader
from supermask.errors import SupermaskError
from supermask.configs import ExperimentConfig
from supermask.engines import ENGINES, Engine
from supermask.resolved import resolve
from supermask.search import requested_density
from supermask.stage import ExperimentResult, run_single
from supermask.structure import Structure
from supermask.ticket_files import rebuild_plain
from supermask.models import InputSpec, create_model, masked_layer_types
from supermask.models.registry import model_task
from supermask.nn import WEIGHT_INITS, check_density, init_model
from supermask.nn.init import canonical
from supermask.seeding import derived_seed
from supermask.nn.masked import masked_layers, set_masks
from supermask.nn.topk import global_topk_masks, kept_count, topk_mask
from supermask.registry import Registry
from supermask.training import TrainConfig
from supermask.training.loop import flat

from .defaults import default_train_config
from supermask.training import MaskAfterStep
from .rewind import snapshot
from .structured import Selection, channel_keep, head_keep, nm_keep, selection_for

log = logging.getLogger(__name__)

Scores = dict[str, Tensor]
# A pruner: (model, batches, seed, density, scope, spec) -> masks. ``batches`` is None for data-free ones.
Pruner = Callable[[nn.Module, Optional[list], int, float, str, InputSpec], dict[str, Tensor]]
PRUNERS: Registry[Pruner] = Registry("pruning method")
DATA_FREE = {"random", "magnitude", "synflow"}
SYNFLOW_ROUNDS = 100
GRASP_TEMPERATURE = 200.0  # the softmax temperature of GraSP's reference code


DEFAULT_DENSITY = 0.1


@dataclass
class PruneConfig(ExperimentConfig):
    method: str = "snip"
    density: Optional[float] = None  # None: DEFAULT_DENSITY, or N/M with an N:M structure
    scope: Optional[str] = None  # None: global, or layerwise with a structure (channels and groups are per layer)
    structure: str = "unstructured"  # "nm:N:M" or "channel" (supermask_imp.structured)
    init: str = "kaiming-normal"
    train: TrainConfig = field(default_factory=lambda: default_train_config("lenet_300_100"))

    ENGINE = "prune"

    @classmethod
    def for_arch(cls, arch: str, epochs: Optional[int] = None, **overrides) -> "PruneConfig":
        """The family's IMP training defaults for ``arch`` (see :mod:`.defaults`), then ``overrides``."""
        train = default_train_config(arch, **({"epochs": epochs} if epochs else {}))
        return cls(arch=arch, train=train, **{k: v for k, v in overrides.items() if v is not None})

    def _resolve_fields(self) -> None:
        PRUNERS.get(self.method)
        structure = Structure.parse(self.structure)
        self.structure = str(structure)
        self.scope = structure.scope(self.scope, "global")
        self.density = check_density(structure.density(self.density, DEFAULT_DENSITY))
        if self.scope not in ("global", "layerwise"):
            raise SupermaskError(f"scope must be global or layerwise, got {self.scope!r}")
        self.init = canonical(self.init)
        WEIGHT_INITS.get(self.init)
        super()._resolve_fields()
        if self.method == "synflow" and model_task(self.arch) == "language-model":
            raise SupermaskError(f"synflow scores with an all-ones image, which a language model ({self.arch}) "
                                 f"cannot take: use snip, grasp, magnitude or random")


def keep_top(scores: Scores, density: float, scope) -> dict[str, Tensor]:
    """Masks keeping the highest scores: ``density`` of all (``scope`` "global") or of each tensor
    ("layerwise"); ``scope`` may be a :class:`~supermask_imp.structured.Selection` (N:M groups, or
    ``density`` of each layer's channels)."""
    if isinstance(scope, Selection):
        if scope.nm is not None:
            return nm_keep(scores, scope.nm)
        if scope.blocks is not None:
            return head_keep(scores, scope.blocks, density)
        return channel_keep(scores, scope.links, density)
    names = list(scores)
    if scope == "global":
        low = min(float(s.min()) for s in scores.values())
        shifted = [scores[n].double() - low for n in names]  # non-negative, order kept
        return {n: m.detach().float() for n, m in zip(names, global_topk_masks(shifted, density))}
    out = {}
    for n in names:
        s = scores[n].double()
        out[n] = topk_mask(s - s.min(), kept_count(s.numel(), density)).float()
    return out


def _weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return {f"{name}.weight": layer.weight for name, layer in masked_layers(model)}


def _loss_grads(model: nn.Module, batches: list, create_graph: bool = False, temperature: float = 1.0) -> list[Tensor]:
    weights = list(_weights(model).values())
    total = None
    for images, labels in batches:
        loss = nn.functional.cross_entropy(*flat(model(images) / temperature, labels))
        grads = torch.autograd.grad(loss, weights, create_graph=create_graph)
        total = list(grads) if total is None else [t + g for t, g in zip(total, grads)]
    return [t / len(batches) for t in total]


@PRUNERS.register("random")
def prune_random(model, batches, seed, density, scope, spec):
    scores = {}
    for name, w in _weights(model).items():
        gen = torch.Generator().manual_seed(derived_seed(seed, f"pai-random-{name}"))
        scores[name] = torch.rand(w.shape, generator=gen)
    return keep_top(scores, density, scope)


@PRUNERS.register("magnitude")
def prune_magnitude(model, batches, seed, density, scope, spec):
    return keep_top({n: w.detach().abs() for n, w in _weights(model).items()}, density, scope)


@PRUNERS.register("snip")
def prune_snip(model, batches, seed, density, scope, spec):
    weights = _weights(model)
    grads = _loss_grads(model, batches[:1])
    return keep_top({n: (g * w).detach().abs() for (n, w), g in zip(weights.items(), grads)}, density, scope)


@PRUNERS.register("grasp")
def prune_grasp(model, batches, seed, density, scope, spec):
    weights = _weights(model)
    g = [x.detach() for x in _loss_grads(model, batches, temperature=GRASP_TEMPERATURE)]
    hg = None
    for images, labels in batches:  # H g = d(g . stopgrad(g))/dw, accumulated batch by batch
        with sdpa_kernel(SDPBackend.MATH):  # attention's fused CPU kernels have no second derivative
            loss = nn.functional.cross_entropy(*flat(model(images) / GRASP_TEMPERATURE, labels))
            grads = torch.autograd.grad(loss, list(weights.values()), create_graph=True)
        z = sum((gi * gs).sum() for gi, gs in zip(grads, g))
        part = torch.autograd.grad(z, list(weights.values()))
        hg = list(part) if hg is None else [a + b for a, b in zip(hg, part)]
    # GraSP removes the highest -w*Hg, i.e. keeps the highest w*Hg.
    return keep_top({n: (w * h / len(batches)).detach() for (n, w), h in zip(weights.items(), hg)}, density, scope)


@PRUNERS.register("synflow")
def prune_synflow(model, batches, seed, density, scope, spec, rounds: int = SYNFLOW_ROUNDS):
    model = copy.deepcopy(model).double().eval()  # the linearised copy, float64
    weights = _weights(model)
    with torch.no_grad():  # |.| of every parameter and buffer, biases and BatchNorm included (the reference's linearize)
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.abs_()
    masks = {n: torch.ones_like(w) for n, w in weights.items()}
    shape = (1, spec.in_channels, spec.image_size, spec.image_size)
    ones = torch.ones(shape, dtype=torch.float64, device=next(model.parameters()).device)
    for r in range(1, rounds + 1):
        set_masks(model, masks)
        with torch.no_grad():
            for n, w in weights.items():
                w.mul_(masks[n])
        out = model(ones).sum()
        grads = torch.autograd.grad(out, list(weights.values()))
        scores = {n: (g * w).detach().abs() for (n, w), g in zip(weights.items(), grads)}
        # already-pruned weights score 0 and stay pruned (they are ranked last)
        masks = keep_top(scores, density ** (r / rounds), scope)
    return masks


def calibration_batches(data, info, num_classes: int, seed: int, device, per_class: int = 10) -> list:
    """One batch of ``per_class * num_classes`` training examples drawn at random, augmented (GraSP's
    sample as Synaptic-Flow draws it; SNIP uses it too)."""
    loader = make_loader(data.train, info, batch_size=per_class * num_classes, train=True, seed=seed, device=device)
    loader.set_epoch(0)
    return [next(iter(loader))]


def build_pruned(config: PruneConfig, spec: InputSpec, data, device) -> nn.Module:
    model = create_model(config.arch, spec, config.layer_types(masked_layer_types()), **config.model_kwargs())
    init_model(model, config.init, config.seed)
    model.to(device)
    batches = None
    if config.method not in DATA_FREE:
        batches = calibration_batches(data, data.info, spec.num_classes, config.seed, device)
    start = snapshot(model)
    model.eval()  # scored with BatchNorm's running statistics (Synaptic-Flow's prune_loop default)
    selection = selection_for(model, config.scope, config.structure,
                              (spec.in_channels, spec.image_size, spec.image_size))
    masks = PRUNERS.get(config.method)(model, batches, config.seed, config.density, selection, spec)
    model.train()
    model.load_state_dict(start)  # the drawn weights, whatever a pruner did to them
    set_masks(model, masks)
    with torch.no_grad():
        for name, layer in masked_layers(model):
            layer.weight.mul_(layer.weight_mask)
    return model


def prune_and_train(config: PruneConfig, callbacks: Sequence = ()) -> ExperimentResult:
    """Run (or resume, or skip) one pruning-at-initialisation run: prune once, then train the survivors."""
    from supermask.training import resolve_device

    config = resolve(config)
    device = resolve_device(config.device)
    meta = lambda spec: {"kind": "weak", "engine": "prune", "method": config.method, "arch": config.arch,  # noqa: E731
                         "seed": config.seed, "init": config.init, "density": config.density,
                         "scope": config.scope, "structure": config.structure}
    return run_single(config, lambda spec, data: build_pruned(config, spec, data, device),
                          callbacks=[MaskAfterStep(), *callbacks], ticket_fields=meta,
                          result_fields={"method": config.method, "init": config.init, "scope": config.scope,
                                         "structure": config.structure,
                                         **requested_density(config.structure, config.density)})


def label(config: PruneConfig) -> str:
    return f"{config.arch} {config.method}{Structure.parse(config.structure).label()} d={config.density:g} s={config.seed}"


def check_network(config: PruneConfig, spec: InputSpec) -> None:
    """What pruning at initialisation refuses about its network before it writes anything (a dry
    run's check): the architecture takes the data and the structure."""
    from supermask.stage import check_input_shape

    model = create_model(config.arch, spec, config.layer_types(masked_layer_types()), **config.model_kwargs())
    check_input_shape(model, spec, config.arch)
    selection_for(model, config.scope, config.structure, (spec.in_channels, spec.image_size, spec.image_size))


ENGINES.add("prune", Engine("prune", PruneConfig, prune_and_train, label, rebuild_plain, kind="weak",
                            check=check_network))
