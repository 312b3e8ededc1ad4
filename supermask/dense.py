"""The dense baseline: the same zoo, data and trainer, with the weights trained (density 1.0).

Every comparison needs its reference: ``train_dense(DenseConfig(arch="conv6"))`` (the CLI's
``supermask train``) writes a run directory of the same format under ``<out>/train/``.
Defaults: Kaiming-normal init and SGD lr 0.01 (the edge-popup reference's dense
baselines for Conv-2/4/6/8), momentum 0.9, weight decay 1e-4, cosine, batch 128.

``DenseConfig(ticket=RUN_DIR)`` (``supermask train --ticket RUN_DIR``) fine-tunes a strong ticket
instead: the frozen weights a finished search ended with are trained under its final mask (the
pruned ones held at zero after every step, as in IMP): the weak-ticket variant of any strong
ticket (Gem-Miner's fine-tuning step, for one). Architecture, data set and width come from the
search run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from .catalog import DENSE_TRAIN_DEFAULTS, LANGUAGE_MODEL_TRAIN_DEFAULTS
from .configs import ExperimentConfig
from .engines import ENGINES, Engine, engine_of_run
from .errors import SupermaskError
from .io import read_json
from .layout import META_FILE
from .models import DENSE, InputSpec, create_model, masked_layer_types
from .nn import WEIGHT_INITS, init_model
from .nn.init import canonical
from .resolved import resolve
from .runs import RunDir
from .stage import ExperimentResult, run_single
from .starting_points import load_starting_point, resolve_starting_point
from .ticket_files import rebuild_plain
from .training import Callback, MaskAfterStep, TrainConfig


DEFAULT_INIT = "kaiming-normal"  # the edge-popup reference's dense baselines


@dataclass
class DenseConfig(ExperimentConfig):
    init: Optional[str] = None  # None: kaiming-normal; with a ticket, the init that drew the ticket's weights
    # None: the dense baseline's defaults for the architecture's task (dense_train_defaults)
    train: Optional[TrainConfig] = None
    ticket: Optional[str] = None  # a finished search run whose ticket is fine-tuned (its path: not hashed)
    ticket_checksum: Optional[str] = None  # what identifies that ticket's network (its state checksum)
    init_from: Optional[str] = None  # start from these weights (supermask.starting_points; the path: not hashed)
    init_from_checksum: Optional[str] = None  # what identifies them: the SHA-256 of their tensors

    ENGINE = "train"

    def __post_init__(self) -> None:
        if self.train is None:
            self.train = TrainConfig(**dense_train_defaults(self.arch))
        super().__post_init__()

    def _resolve_fields(self) -> None:
        if self.ticket is not None:
            search = ticket_source(self.ticket)
            if self.init_from is not None:
                raise SupermaskError("--init-from and --ticket: a fine-tuned ticket starts from its own weights")
            for name in ("arch", "dataset", "classes", "input_shape", "context", "width", "depth", "bias",
                         "dropout"):  # the ticket's own
                if getattr(self, name) != getattr(search, name):
                    raise SupermaskError(f"--ticket {self.ticket} is a {name} {getattr(search, name)!r} run, "
                                         f"not {getattr(self, name)!r}: a ticket is fine-tuned on what it was "
                                         f"found with (transfer to other data is not built yet)")
            if self.init is not None and canonical(self.init) != search.init:
                raise SupermaskError(f"--init {self.init}: a fine-tuned ticket starts from its own weights, drawn "
                                     f"by {search.init}; leave --init out")
            self.init = search.init  # what drew the weights this run trains
            meta = read_json(RunDir(Path(self.ticket)).ticket_dir / META_FILE)
            if not isinstance(meta, dict):
                raise SupermaskError(f"{self.ticket}/ticket/ticket.json: not a ticket description")
            found = meta.get("state_checksum")
            if found is None:
                raise SupermaskError(f"{self.ticket}: its ticket records no checksum (supermask < 0.2): rerun it")
            if self.ticket_checksum is not None and self.ticket_checksum != found:
                raise SupermaskError(f"{self.ticket}: not the ticket this config fine-tunes (checksum differs)")
            self.ticket_checksum = found
        self.init = canonical(self.init or DEFAULT_INIT)
        WEIGHT_INITS.get(self.init)
        self.init_from_checksum = resolve_starting_point(self.init_from, self.init_from_checksum)
        super()._resolve_fields()


def dense_train_defaults(arch: str) -> dict:
    """The training fields a dense baseline of ``arch`` defaults to: SGD lr 0.01 for the image
    classifiers (the edge-popup reference's dense baselines), nanoGPT's AdamW for a language model."""
    from .models.registry import model_task

    try:
        language_model = model_task(arch) == "language-model"
    except SupermaskError:  # an unknown architecture: refused when the config resolves
        language_model = False
    return dict(LANGUAGE_MODEL_TRAIN_DEFAULTS if language_model else DENSE_TRAIN_DEFAULTS)


def ticket_source(run_dir: str):
    """The resolved config of the finished strong-ticket run ``run_dir`` that ``--ticket`` fine-tunes."""
    run = RunDir(Path(run_dir))
    if not run.is_finished() or not (run.ticket_dir / META_FILE).exists():
        raise SupermaskError(f"{run_dir}: not a finished search run with a ticket")
    result = run.read_result()
    source = engine_of_run(run.path, result)
    if source.kind != "strong":
        raise SupermaskError(f"{run_dir}: not a search run (engine {result.get('engine')!r}): --ticket fine-tunes a "
                             f"strong ticket, whose weights were never trained")
    return source.read_config(run.path)


#: How far (in accuracy) the network a fine-tuning starts from may be from the ticket's reported
#: accuracy: float differences between the supermask and the masked layers can flip an example.
START_TOLERANCE = 0.005


def build_finetune(config: DenseConfig, spec: InputSpec, data=None):
    """The masked model holding the network the ticket computes with (each kept weight as its layer
    uses it: biprop's sign(w)*alpha, Bernoulli's rescaled weights) under its final mask; with
    ``data``, checked to reach the ticket's reported test accuracy before any training."""
    from .nn import model_masks
    from .nn.masked import set_masks

    ticket = Path(config.ticket)
    source = engine_of_run(ticket)
    strong = source.rebuild(ticket)
    masks = model_masks(strong)
    meta = read_json(RunDir(ticket).ticket_dir / META_FILE)
    state = source.effective_state(ticket, strong.state_dict(), masks, meta)
    model = create_model(config.arch, spec, config.layer_types(masked_layer_types()), **config.model_kwargs())
    own = model.state_dict()
    missing = set(masks) - set(own)
    if missing:
        raise SupermaskError(f"{config.ticket}: masks for weights this model lacks: {sorted(missing)[:3]}")
    # weights, biases and BatchNorm statistics by name (a search's non-affine BN has no affine terms to copy)
    model.load_state_dict({k: v for k, v in state.items() if k in own and v.shape == own[k].shape}, strict=False)
    set_masks(model, masks)
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_parameter(name).mul_(mask)
    if data is not None:
        _check_start(model, data, RunDir(ticket).read_result(), config)
    return model


def _check_start(model, data, result: dict, config: DenseConfig) -> None:
    """Refuse to fine-tune from a network that is not the ticket's (its test accuracy differs)."""
    from .data import make_loader
    from .training import eval_batch_size, evaluate

    reported = result.get("test_accuracy")
    if not isinstance(reported, (int, float)):
        return
    loader = make_loader(data.test, data.info, eval_batch_size(config.train), train=False)
    _, accuracy = evaluate(model, loader)
    model.train()
    if abs(accuracy - reported) > START_TOLERANCE:
        raise SupermaskError(f"{config.ticket}: the network rebuilt for fine-tuning reaches {accuracy:.4f}, not the "
                             f"ticket's {reported:.4f}: it is not the ticket's network (please report this)")


def build_dense(config: DenseConfig, spec: InputSpec):
    model = create_model(config.arch, spec, config.layer_types(DENSE), **config.model_kwargs())
    model = init_model(model, config.init, config.seed)
    if config.init_from is not None:
        load_starting_point(model, config.init_from, config.init_from_checksum)
    return model


def train_dense(config: DenseConfig, callbacks: Sequence[Callback] = ()) -> ExperimentResult:
    """Run (or resume, or skip if finished) one dense training run, or the fine-tuning of a ticket."""
    config = resolve(config)
    if config.ticket is None:
        return run_single(config, lambda spec, data: build_dense(config, spec), callbacks=callbacks,
                              result_fields={"method": "dense", "init": config.init, "requested_density": 1.0})
    search = ticket_source(config.ticket)
    return run_single(config, lambda spec, data: build_finetune(config, spec, data),
                          callbacks=[MaskAfterStep(), *callbacks],
                          result_fields={"method": f"{search.method} fine-tuned", "init": search.init,
                                         "requested_density": search.density, "ticket": config.ticket})


def label(config: DenseConfig) -> str:
    return f"{config.arch} {'fine-tune' if config.ticket else 'dense'} {config.init} s={config.seed}"


def result_parts(result: dict) -> tuple[str, str]:
    return result.get("method", "dense"), ""  # "dense", or "<method> fine-tuned" for a fine-tuned ticket


def check_network(config: DenseConfig, spec: InputSpec) -> None:
    """What a dense run refuses about its network before it writes anything (a dry run's check; a
    ticket's fine-tuning is checked against the ticket when it runs)."""
    from .stage import check_input_shape

    if config.ticket is None:
        check_input_shape(build_dense(config, spec), spec, config.arch)


ENGINES.add("train", Engine("train", DenseConfig, train_dense, label, rebuild_plain, kind="weak",
                            result_parts=result_parts, check=check_network))
