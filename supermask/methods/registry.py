"""The strong-ticket method type and its registry (each method's module registers itself)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from ..catalog import SEARCH_METHODS, default_settings, scaled_lr
from ..registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from ..models import InputSpec
    from ..training import Callback


def _no_callbacks(config: "SearchConfig") -> list["Callback"]:
    return []


@dataclass(frozen=True)
class Method:
    """A strong-ticket method. Its defaults live here, not in the CLI: resolving a ``SearchConfig``
    fills every field left None from ``defaults`` (search fields) and ``train_defaults``
    (training fields), then from the search's generic defaults (:func:`supermask.catalog.default_settings`,
    the one place that combines them), so a library call and the command line resolve to the
    same config and hash.

    ``build(config, spec)`` returns the model whose trainable parameters the loop optimises; a
    method with its own mask rule passes its layer types into :func:`.edge_popup.build_edge_popup`
    (the zoo builds them in place: nothing is retyped after building)."""

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
    revision: int = 1  # bumped when it computes something else under the same options (catalog.MethodCard)
    lr_tuned_epochs: Optional[int] = None  # the lr default holds lr x epochs beyond this (catalog.scaled_lr)

    @classmethod
    def builtin(cls, name: str, build: Callable, callbacks: Callable = _no_callbacks) -> "Method":
        """A built-in method: its summary, defaults and reference are its card in :mod:`supermask.catalog`."""
        card = SEARCH_METHODS[name]
        return cls(name, card.summary, build, callbacks, density_is_outcome=card.density_is_outcome,
                   defaults=dict(card.defaults), train_defaults=dict(card.train_defaults),
                   reference=card.reference, options=card.options, structures=card.structures,
                   revision=card.revision, lr_tuned_epochs=card.lr_tuned_epochs)

    def train_defaults_for(self, epochs: int, iterations: Optional[int]) -> dict:
        """The training fields this method resolves a field left None to, for a run of this length."""
        if "lr" not in self.train_defaults:
            return dict(self.train_defaults)
        lr = scaled_lr(self.train_defaults["lr"], self.lr_tuned_epochs, epochs, iterations)
        return {**self.train_defaults, "lr": lr}

    def search_defaults(self) -> dict:
        """The search fields this method resolves a field left None to."""
        return default_settings(self.defaults, self.train_defaults)[0]


METHODS: Registry[Method] = Registry("method")
