"""The strong-ticket engine: find a mask over a frozen random network.

``search(SearchConfig(arch="conv6"))`` builds the supermask model, optimises its
scores only with the one training loop, and leaves a run directory holding the
config, metrics, checkpoint, result and the ticket (mask + what rebuilds the network).

Defaults follow the edge-popup paper's small-scale setting (Ramanujan et al. 2020 and
its reference configs for Conv-2/4/6/8 on CIFAR-10): signed-constant weights (their
best init), density 0.5 layerwise (k = 50%, the paper's best Conv-6 point), SGD lr 0.1,
momentum 0.9, weight decay 1e-4, cosine decay, batch 128. The paper trains 100 epochs on
CIFAR-10; the default here is 10, enough on the bundled 4,000 MNIST images.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from torch import nn

from .catalog import GENERIC_SEARCH_DEFAULTS
from .experiment import ExperimentConfig, ExperimentResult, run_experiment
from .methods import METHODS
from .models import InputSpec
from .nn import SCORE_INITS, WEIGHT_INITS, check_density, check_scope
from .nn.nm import CHANNEL, UNSTRUCTURED, check_structure, parse_structure
from .errors import SupermaskError
from .nn.init import canonical
from .training import Callback, TrainConfig

#: What :func:`search` returns: an :class:`~supermask.experiment.ExperimentResult` (the same class).
SearchResult = ExperimentResult
log = logging.getLogger(__name__)


DEFAULT_DENSITY = 0.5  # k = 50%: the edge-popup paper's best Conv-6 point
#: Below this starting density Bernoulli's sampled network rarely learns (measured: docs/fidelity.md).
BERNOULLI_LOW_START = 0.1

#: Fields that only some methods read: None unless the chosen method uses them.
METHOD_OPTIONS = ("rerandomize_every", "rerandomize_rate", "score_l2", "freeze_every", "bernoulli_eval",
                  "rescale_weights")


@dataclass
class SearchConfig(ExperimentConfig):
    """A strong-ticket search. Fields left None take the method's default (see
    ``supermask list methods --verbose``), then :data:`GENERIC_SEARCH_DEFAULTS`; ``validate`` writes
    the resolved values into the config, so they are in ``config.json`` and the hash."""

    method: str = "edge-popup"
    density: Optional[float] = None  # None: DEFAULT_DENSITY, or N/M with an N:M structure
    structure: str = UNSTRUCTURED  # "nm:N:M" (supermask.nn.nm): N kept in every group of M; "channel"
    # (supermask.nn.channels): whole output channels, density = the fraction of each layer's channels kept
    scope: Optional[str] = None  # layerwise | global
    init: Optional[str] = None  # weight initialiser (supermask list inits)
    scaled_fan: Optional[bool] = None  # scale the init's fan by the density (Ramanujan et al. 2020)
    score_init: Optional[str] = None
    learned_bn: bool = False
    # Method options (None: the method's default; refused for a method that does not read them).
    rerandomize_every: Optional[int] = None  # IteRand: K, in steps
    rerandomize_rate: Optional[float] = None  # IteRand: r
    score_l2: Optional[float] = None  # Gem-Miner: lambda of the penalty lambda * sum(s^2) in the loss
    freeze_every: Optional[int] = None  # Gem-Miner: epochs between two freezing rounds
    bernoulli_eval: Optional[str] = None  # Bernoulli: "sample" (a seeded sample of the mask) or "threshold"
    rescale_weights: Optional[bool] = None  # Bernoulli: Zhou et al.'s dynamic weight rescaling

    ENGINE = "search"

    def validate(self) -> "SearchConfig":
        method = METHODS.get(self.method)
        self._resolve_structure(method)
        self.density = check_density(self.density)
        for name in METHOD_OPTIONS:
            if getattr(self, name) is not None and name not in method.options:
                owners = [m for m in METHODS if name in METHODS.get(m).options]
                raise SupermaskError(f"--{name.replace('_', '-')} applies to {' and '.join(owners)} only, "
                                     f"not {self.method}")
        for name, value in {**GENERIC_SEARCH_DEFAULTS, **method.defaults}.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.train.with_defaults(**method.train_defaults)
        check_scope(self.scope)
        if self.rerandomize_every is not None and (not isinstance(self.rerandomize_every, int)
                                                   or self.rerandomize_every <= 0):
            raise SupermaskError(f"rerandomize every must be a positive number of steps, got {self.rerandomize_every!r}")
        if self.rerandomize_rate is not None and not (0.0 < self.rerandomize_rate <= 1.0):
            raise SupermaskError(f"rerandomize rate must be in (0, 1], got {self.rerandomize_rate!r}")
        if self.score_l2 is not None and not (math.isfinite(self.score_l2) and self.score_l2 >= 0):
            raise SupermaskError(f"score L2 must be >= 0, got {self.score_l2!r}")
        if self.freeze_every is not None and (not isinstance(self.freeze_every, int) or self.freeze_every <= 0):
            raise SupermaskError(f"freeze every must be a positive number of epochs, got {self.freeze_every!r}")
        if self.bernoulli_eval is not None and self.bernoulli_eval not in ("sample", "threshold"):
            raise SupermaskError(f"bernoulli eval must be sample or threshold, got {self.bernoulli_eval!r}")
        if self.method == "bernoulli" and self.density < BERNOULLI_LOW_START:
            log.warning("bernoulli starts its masks at density %g: the sampled network passes almost no signal "
                        "and may never learn (LeNet at 0.05: 10%%); the reference starts at 0.5 (--density 0.5)",
                        self.density)
        self.init = canonical(self.init)
        WEIGHT_INITS.get(self.init)
        self.score_init = canonical(self.score_init)
        SCORE_INITS.get(self.score_init)
        return super().validate()


    def _resolve_structure(self, method) -> None:
        self.structure = check_structure(self.structure)
        kind = "nm" if self.structure.startswith("nm:") else self.structure
        if kind != UNSTRUCTURED and kind not in method.structures:
            owners = [m for m in METHODS if kind in METHODS.get(m).structures]
            raise SupermaskError(f"--structure {self.structure} applies to {', '.join(owners)}, not {self.method}")
        nm = parse_structure(self.structure)
        if nm is None:  # unstructured: the fraction of weights kept; channel: of each layer's channels
            if self.density is None:
                self.density = DEFAULT_DENSITY
            return  # a channel structure's chain is checked when the model is built (before any file is written)
        if self.density is not None and self.density != nm.density:
            raise SupermaskError(f"--structure {nm} keeps {nm.n} of every {nm.m} weights (density {nm.density:g}): "
                                 f"--density {self.density:g} contradicts it; leave --density out")
        if self.scope == "global":
            raise SupermaskError(f"--structure {nm} is per group of {nm.m} weights: --scope global does not apply")
        self.density = nm.density


def resolved_defaults(method: str) -> dict:
    """The settings a search with ``method`` runs at when nothing else is given (as ``validate``
    resolves them: the method's defaults, then the generic ones)."""
    config = SearchConfig(method=method).validate()
    fields = {name: getattr(config, name) for name in (*GENERIC_SEARCH_DEFAULTS, *METHODS.get(method).options)}
    train = config.train
    fields.update(optimizer=train.optimizer, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay,
                  schedule=train.schedule, batch_size=train.batch_size, epochs=train.epochs)
    return fields


def ticket_meta(config: SearchConfig, spec: InputSpec) -> dict:
    """What rebuilds the frozen network a strong ticket's mask applies to."""
    return {
        "kind": "strong", "engine": config.ENGINE, "method": config.method, "arch": config.arch,
        "width": config.width, "dropout": config.dropout, "in_channels": spec.in_channels, "image_size": spec.image_size,
        "num_classes": spec.num_classes, "init": config.init, "scaled_fan": config.scaled_fan,
        "seed": config.seed, "density": config.density, "scope": config.scope, "learned_bn": config.learned_bn,
        "structure": config.structure,
    }


def search(config: SearchConfig, callbacks: Sequence[Callback] = ()) -> SearchResult:
    """Run (or resume, or skip if finished) one strong-ticket search."""
    config.validate()
    method = METHODS.get(config.method)
    return run_experiment(
        config, lambda spec, data: method.build(config, spec), callbacks=[*method.callbacks(config), *callbacks],
        ticket_meta=lambda spec: ticket_meta(config, spec),
        result_fields={"method": config.method, "init": config.init, "scope": config.scope,
                       "structure": config.structure, **requested_density(config.structure, config.density)},
    )


def requested_density(structure: str, density: float) -> dict:
    """The result's record of the density asked for: ``requested_density`` (what a report groups
    by), or with a channel structure ``channel_density`` (the fraction of channels kept; the
    weights' density, the result's ``density``, follows from the chain, and reports group by it)."""
    return {"channel_density": density} if structure == CHANNEL else {"requested_density": density}


#: What a search run's ``config.json`` must hold to rebuild its network.
CONFIG_REQUIRED = ("arch", "dataset", "method", "density", "scope", "init", "scaled_fan", "score_init", "seed", "train")


def config_from_dict(data: dict) -> SearchConfig:
    """A :class:`SearchConfig` from a run's ``config.json``, validated; a damaged one is a
    ``SupermaskError`` naming what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        raise SupermaskError("config.json is not a search run's config")
    absent = [name for name in CONFIG_REQUIRED if data.get(name) is None]
    if absent:
        raise SupermaskError(f"config.json is not a search run's config: it lacks {', '.join(absent)}")
    data = dict(data)
    train_fields = dict(data.pop("train"))
    known = {f.name for f in dataclasses.fields(SearchConfig)}
    known_train = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        train_fields["milestones"] = tuple(train_fields.get("milestones") or ())
        train = TrainConfig(**{k: v for k, v in train_fields.items() if k in known_train})
        return SearchConfig(**{k: v for k, v in data.items() if k in known}, train=train).validate()
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, SupermaskError):
            raise SupermaskError(f"config.json: {exc}") from None
        raise SupermaskError(f"config.json is not a search run's config ({type(exc).__name__}: {exc})") from None


def load_search_model(run_dir: Path, meta: Optional[dict] = None, state: Optional[dict] = None) -> nn.Module:
    """The supermask network a finished search run reports (its ticket's state), in eval mode;
    ``meta`` (``ticket.json``) and ``state`` are read from the run unless the caller has them."""
    from .io import check_shapes, read_json
    from .tickets import META_FILE, MODEL_FILE, ticket_state

    run_dir = Path(run_dir)
    config = config_from_dict(read_json(run_dir / "config.json"))
    meta = read_json(run_dir / "ticket" / META_FILE) if meta is None else meta
    shape = [meta.get(name) if isinstance(meta, dict) else None for name in ("in_channels", "image_size", "num_classes")]
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in shape):
        raise SupermaskError(f"{run_dir / 'ticket' / META_FILE}: damaged (no input shape and classes): rerun the run")
    spec = InputSpec(*shape)
    model = METHODS.get(config.method).build(config, spec)
    state = ticket_state(run_dir) if state is None else state
    check_shapes(state, model.state_dict(), run_dir / "ticket" / MODEL_FILE, complete=True)
    model.load_state_dict(state)
    return model.eval()
