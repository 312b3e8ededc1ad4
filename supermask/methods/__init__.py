"""Strong-ticket methods, each registered by name and selectable with ``--method``.

A method turns the resolved search config and the input shape into the model whose
trainable parameters the one training loop optimises, plus any callbacks it needs
during training (IteRand's re-randomisation, Gem-Miner's clamping and freezing).
Each lives in its own module:

- :mod:`.edge_popup`: Ramanujan et al. 2020 (the default);
- :mod:`.bernoulli`: Zhou et al. 2019, sampled sigmoid masks;
- :mod:`.biprop`: Diffenderfer & Kailkhura 2021, binarised kept weights;
- :mod:`.iterand`: Chijiwa et al. 2021, pruned weights re-drawn during the search;
- :mod:`.gem_miner`: Sreenivasan et al. 2022, rounded [0, 1] scores with freezing.

Pruning-at-initialisation methods (weak tickets, trained) are in :mod:`supermask_imp.pai`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..catalog import SEARCH_METHODS
from ..registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from ..models import InputSpec
    from ..search import SearchConfig
    from ..training import Callback


def _no_callbacks(config: "SearchConfig") -> list["Callback"]:
    return []


@dataclass(frozen=True)
class Method:
    """A strong-ticket method. Its defaults live here, not in the CLI: ``SearchConfig.validate``
    fills every field left None from ``defaults`` (search fields) and ``train_defaults``
    (training fields), then from the search's generic defaults, so a library call and the
    command line resolve to the same config and hash."""

    name: str
    summary: str
    build: Callable[["SearchConfig", "InputSpec"], "nn.Module"]
    callbacks: Callable[["SearchConfig"], list["Callback"]] = field(default=_no_callbacks)
    density_is_outcome: bool = False  # the mask's density is learned, not imposed (Bernoulli)
    defaults: dict = field(default_factory=dict)  # SearchConfig fields, e.g. {"init": "kaiming-normal"}
    train_defaults: dict = field(default_factory=dict)  # TrainConfig fields, e.g. {"lr": 100.0}
    reference: str = ""  # the paper and the reference code the defaults come from
    options: tuple[str, ...] = ()  # the SearchConfig fields that only this method reads
    structures: tuple[str, ...] = ("unstructured",)  # the mask structures it supports ("nm": N:M)

    @classmethod
    def builtin(cls, name: str, build: Callable, callbacks: Callable = _no_callbacks) -> "Method":
        """A built-in method: its summary, defaults and reference are its card in :mod:`supermask.catalog`."""
        card = SEARCH_METHODS[name]
        return cls(name, card.summary, build, callbacks, density_is_outcome=card.density_is_outcome,
                   defaults=dict(card.defaults), train_defaults=dict(card.train_defaults),
                   reference=card.reference, options=card.options, structures=card.structures)


METHODS: Registry[Method] = Registry("method")

from . import bernoulli, biprop, edge_popup, gem_miner, iterand  # noqa: E402,F401  (each registers itself)
