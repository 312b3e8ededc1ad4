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

import logging
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from .configs import SearchConfig, config_from_record
from .engines import ENGINES, Engine
from .errors import SupermaskError
from .io import check_shapes, read_json
from .layout import CONFIG, META_FILE, MODEL_FILE, TICKET
from .methods import METHODS
from .models import InputSpec
from .models.spec import spec_from_record, spec_record
from .resolved import resolve
from .stage import ExperimentResult, run_single
from .structure import CHANNEL, HEAD, Structure
from .ticket_files import ticket_state
from .training import Callback

#: What :func:`search` returns: an :class:`~supermask.stage.ExperimentResult` (the same class).
SearchResult = ExperimentResult
log = logging.getLogger(__name__)


def resolved_defaults(method: str) -> dict:
    """The settings a search with ``method`` runs at when nothing else is given: the resolver's
    answer for a config that gives nothing else (``list methods --verbose`` shows it for a
    user's method; for the built-in ones it reads the same defaults without torch)."""
    config = resolve(SearchConfig(method=method))
    fields = {name: getattr(config, name) for name in (*METHODS.get(method).search_defaults(),
                                                       *METHODS.get(method).options)}
    train = config.train
    fields.update(optimizer=train.optimizer, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay,
                  schedule=train.schedule, batch_size=train.batch_size, epochs=train.epochs)
    return fields


def ticket_meta(config: SearchConfig, spec: InputSpec) -> dict:
    """What rebuilds the frozen network a strong ticket's mask applies to."""
    return {
        "kind": "strong", "engine": config.ENGINE, "method": config.method, "arch": config.arch,
        "width": config.width, "dropout": config.dropout, **spec_record(spec),
        **({"depth": config.depth} if config.depth is not None else {}),
        **({"bias": config.bias} if config.bias is not None else {}), "init": config.init, "scaled_fan": config.scaled_fan,
        "seed": config.seed, "density": config.density, "scope": config.scope, "learned_bn": config.learned_bn,
        "structure": config.structure,
    }


def search(config: SearchConfig, callbacks: Sequence[Callback] = ()) -> SearchResult:
    """Run (or resume, or skip if finished) one strong-ticket search (``config`` is resolved first,
    if it is not yet)."""
    config = resolve(config)
    method = METHODS.get(config.method)

    def build(spec, data):
        model = method.build(config, spec)
        warn_if_no_signal(model, data, config)
        return model

    return run_single(
        config, build, callbacks=[*method.callbacks(config), *callbacks],
        ticket_fields=lambda spec: ticket_meta(config, spec),
        result_fields={"method": config.method, "init": config.init, "scope": config.scope,
                       "structure": config.structure, **requested_density(config.structure, config.density)},
    )


#: Below this spread of the random network's logits over a batch of training images (their std
#: across examples, averaged over classes) a search starts from a network whose signal has all but
#: vanished at its density (measured, signed constant, no scaled fan: Conv-6 at density 0.5 0.029,
#: which trains to 90%; Conv-4 at 0.2 0.0022 and Conv-6 at 0.2 0.00044, which stay near chance;
#: with --scaled-fan all of them 0.5-0.7).
NO_SIGNAL_STD = 0.005
PROBE_BATCH = 64


def warn_if_no_signal(model: nn.Module, data, config: SearchConfig) -> Optional[float]:
    """Warn, before training, when the random network passes (almost) no signal at its density:
    the remedy is ``--scaled-fan``. Image classifiers only; the spread measured (None: not probed)."""
    from .data import make_loader

    if data.info.task != "image-classification" or config.scaled_fan or len(data.train) < 2:
        return None
    loader = make_loader(data.train, data.info, min(PROBE_BATCH, len(data.train)), train=False)
    images, _ = next(iter(loader))
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            spread = float(model.eval()(images).float().std(dim=0).mean())
    except (RuntimeError, ValueError, IndexError, TypeError):
        return None  # a network that cannot take the data: the input-shape check refuses it in one line
    finally:
        model.train(was_training)
    if spread < NO_SIGNAL_STD:
        log.warning("the random network's outputs barely differ between images (logit spread %.2g, below %g): at "
                    "density %g its signal all but vanishes through the layers, and a search from it tends to stay "
                    "near chance; --scaled-fan scales the weights to the density (Ramanujan et al. 2020)",
                    spread, NO_SIGNAL_STD, config.density)
    return spread


def requested_density(structure: str, density: float) -> dict:
    """The result's record of the density asked for: ``requested_density`` (what a report groups
    by), or with a channel structure ``channel_density`` (the fraction of channels kept; the
    weights' density, the result's ``density``, follows from the chain, and reports group by it),
    with a head structure ``head_density`` (the fraction of each block's heads kept; likewise)."""
    if structure == CHANNEL:
        return {"channel_density": density}
    return {"head_density": density} if structure == HEAD else {"requested_density": density}


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
    return config_from_record(SearchConfig, data, "a search run's config")


def load_search_model(run_dir: Path, meta: Optional[dict] = None, state: Optional[dict] = None) -> nn.Module:
    """The supermask network a finished search run reports (its ticket's state), in eval mode;
    ``meta`` (``ticket.json``) and ``state`` are read from the run unless the caller has them."""
    run_dir = Path(run_dir)
    config = config_from_dict(read_json(run_dir / CONFIG))
    meta = read_json(run_dir / TICKET / META_FILE) if meta is None else meta
    shape = [meta.get(name) if isinstance(meta, dict) else None for name in ("in_channels", "image_size", "num_classes")]
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape) or not shape[2]:
        raise SupermaskError(f"{run_dir / TICKET / META_FILE}: damaged (no input shape and classes): rerun the run")
    spec = spec_from_record(meta)
    model = METHODS.get(config.method).build(config, spec)
    state = ticket_state(run_dir) if state is None else state
    check_shapes(state, model.state_dict(), run_dir / TICKET / MODEL_FILE, complete=True)
    model.load_state_dict(state)
    return model.eval()


def effective_state(run_dir: Path, state: dict, masks: dict, meta: dict) -> dict:
    """A search run's state with each masked weight replaced, where kept, by what the layer computes
    with (biprop's sign(w)*alpha; IteRand's re-drawn weights are in the state already)."""
    model = load_search_model(run_dir, meta, state)  # the ticket's state and meta, read once by the caller
    return effective_weights(model, state, masks)


def effective_weights(model: nn.Module, state: dict, masks: dict) -> dict:
    """``state`` (of ``model``, a supermask network holding it) with each masked weight replaced,
    where kept, by what its layer computes with."""
    from .nn.layers import SupermaskMixin

    state = dict(state)
    with torch.no_grad():
        for name, module in model.named_modules():
            key = f"{name}.weight"
            if isinstance(module, SupermaskMixin) and key in masks:
                kept = masks[key].bool()
                state[key] = torch.where(kept, module.masked_weight(), state[key])
    return state


def label(config: SearchConfig) -> str:
    return f"{config.arch} {config.method}{Structure.parse(config.structure).label()} {config.init} " \
           f"d={config.density:g} s={config.seed}"


def read_config(run_dir: Path) -> SearchConfig:
    return config_from_dict(read_json(Path(run_dir) / CONFIG))


def check_network(config: SearchConfig, spec: InputSpec) -> None:
    """What a search refuses about its network, before it writes anything (a dry run's check)."""
    from .stage import check_input_shape

    check_input_shape(METHODS.get(config.method).build(config, spec), spec, config.arch)


ENGINES.add("search", Engine("search", SearchConfig, search, label, load_search_model, kind="strong",
                             effective_state=effective_state, read_config=read_config, initial_is_control=True,
                             check=check_network))
