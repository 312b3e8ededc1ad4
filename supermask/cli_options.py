"""The command line's shared options, each help text stating its default.

A default that depends on the method (``supermask search``) or on the architecture's family
(``imp``, ``prune``) is shown as such, with its values, read from where the library keeps them
(:mod:`supermask.catalog`, :mod:`supermask_imp.defaults`, :class:`TrainConfig`): nothing here
imports torch, so ``--help`` is instant. Options left out on the command line arrive as None and
the library resolves them (``--dry-run`` prints what they resolved to).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import click

from .catalog import GENERIC_SEARCH_DEFAULTS, SEARCH_METHODS
from .training.config import GENERIC_DEFAULTS, TrainConfig

TRAIN_FIELDS = ("epochs", "iterations", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
                "schedule", "warmup_epochs", "milestones", "gamma", "label_smoothing", "precision", "selection",
                "test_every_epoch")
_TRAIN_DEFAULTS = TrainConfig()
_ENGINE_DEFAULTS = GENERIC_DEFAULTS


class PathOption(click.Path):
    """``click.Path`` that refuses the empty word: ``--out ''`` would mean the current directory,
    never what the user meant."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path (give a file or folder name)", param, ctx)
        return super().convert(value, param, ctx)


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _train_default(field: str):
    """What ``TrainConfig.validate`` resolves ``field`` to when nothing sets it."""
    return _ENGINE_DEFAULTS.get(field, getattr(_TRAIN_DEFAULTS, field))


def plain_default(field: str, overrides: Optional[dict] = None) -> str:
    """``TrainConfig``'s default of ``field`` (or an engine's override of it)."""
    return _shown((overrides or {}).get(field, _train_default(field)))


def method_default(field: str, train: bool = False) -> str:
    """A search field's default, per method: ``the method's: signed-constant; bernoulli
    signed-constant-glorot, biprop kaiming-normal``."""
    generic = _train_default(field) if train else GENERIC_SEARCH_DEFAULTS.get(field)
    special = [f"{name} {_shown(card.train_defaults[field] if train else card.defaults[field])}"
               + (f" (x {card.lr_tuned_epochs}/epochs beyond {card.lr_tuned_epochs} epochs)"
                  if train and field == "lr" and card.lr_tuned_epochs else "")
               for name, card in SEARCH_METHODS.items()
               if field in (card.train_defaults if train else card.defaults)]
    if generic is None:
        return ", ".join(special)
    return f"the method's: {_shown(generic)}" + (f"; {', '.join(special)}" if special else "")


def family_default(field: str) -> str:
    from supermask_imp.defaults import family_default_text

    return f"the family's: {family_default_text(field)}"


def help_with_default(text: str, default: str) -> str:
    return f"{text} [default: {default}]".strip()


TRAIN_HELP = {
    "epochs": "Training epochs.",
    "iterations": "Train this many steps instead of --epochs.",
    "batch_size": "Batch size.",
    "optimizer": "Optimiser.",
    "lr": "Learning rate.",
    "momentum": "SGD momentum.",
    "nesterov": "Nesterov momentum.",
    "weight_decay": "Weight decay (L2).",
    "schedule": "Learning-rate schedule.",
    "warmup_epochs": "Linear warmup epochs.",
    "milestones": "Epochs where the step schedule multiplies lr by --gamma, e.g. 50,75.",
    "gamma": "Step schedule factor.",
    "label_smoothing": "Label smoothing.",
    "precision": "CUDA autocast precision (16: with a grad scaler); the CPU trains in 32.",
    "selection": "The evaluation whose network is reported and kept as the ticket: the best validation "
                 "accuracy, or the last epoch.",
    "test_every_epoch": "Evaluate the test split after every epoch (test curves in metrics.jsonl); off: before "
                        "training and at the end, for the best-validation and the last network only (the same "
                        "results, a test pass less per epoch).",
}
_TYPES = {"epochs": int, "iterations": int, "batch_size": int, "lr": float, "momentum": float, "weight_decay": float,
          "warmup_epochs": float, "gamma": float, "label_smoothing": float,
          "optimizer": click.Choice(["sgd", "adam", "adamw"]), "schedule": click.Choice(["cosine", "step", "constant"]),
          "precision": click.Choice(["32", "bf16", "16"]), "selection": click.Choice(["best-val", "last"])}


def train_options(default_text: Callable[[str], str], seed: bool = True) -> Callable:
    """The training options (every one None when not given); ``default_text(field)`` says what
    the library resolves a field to; ``--seed`` too unless ``seed`` is False (a run whose seed is
    another run's)."""

    def option(name: str):
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{name.replace('_', '-')}"] if name in ("nesterov", "test_every_epoch") else [flag]
        kwargs = {"type": _TYPES[name]} if name in _TYPES else {}
        return click.option(*decls, name, default=None, help=help_with_default(TRAIN_HELP[name], default_text(name)),
                            **kwargs)

    def decorate(f: Callable) -> Callable:
        for name in reversed(TRAIN_FIELDS):
            if name == "iterations":
                f = click.option("--iterations", default=None, type=int,
                                 help=help_with_default(TRAIN_HELP[name], "off"))(f)
            else:
                f = option(name)(f)
        if seed:
            f = click.option("--seed", default="0", show_default=True, help="A seed, or a list: 0,1,2.")(f)
        return f

    return decorate


def density_options(default: str, structure_help: str) -> Callable:
    """``--density``, ``--sparsity`` and ``--structure``, as ``search`` and ``prune`` take them;
    ``default`` is the library's density when none is given."""

    def decorate(f: Callable) -> Callable:
        for option in reversed([
            click.option("--density", default=None,
                         help="Fraction of weights kept (channel: of each layer's channels), in (0, 1], or a list. "
                              f"[default: {default}; N/M with --structure nm:N:M]"),
            click.option("--sparsity", default=None,
                         help="Fraction of weights removed (1 - density), or a list. [default: from --density]"),
            click.option("--structure", default="unstructured", show_default=True, help=structure_help),
        ]):
            f = option(f)
        return f

    return decorate


def search_train_default(field: str) -> str:
    return method_default(field, train=True) if field in ("lr", "weight_decay") else plain_default(field)


def family_train_default(field: str, epochs_text: str) -> str:
    if field == "epochs":
        return epochs_text
    if field == "milestones":
        return "50%,75% of the epochs with --schedule step (the family's step schedule), else none"
    if field in ("optimizer", "lr", "batch_size", "momentum", "weight_decay", "schedule", "warmup_epochs"):
        return family_default(field)
    return plain_default(field)


def train_overrides(kw: dict) -> dict:
    """Pop the training options from ``kw``: the ones given (not None), as TrainConfig fields."""
    from .sweep import parse_list

    given = {name: kw.pop(name) for name in TRAIN_FIELDS}
    if given["milestones"] is not None:  # "" (as in a config file: none) is no milestone
        text = given["milestones"]
        given["milestones"] = tuple(parse_list(text, float, "--milestones")) if text.strip() else ()
    return {k: v for k, v in given.items() if v is not None}


def with_train_overrides(train: TrainConfig, kw: dict) -> TrainConfig:
    return dataclasses.replace(train, **train_overrides(kw))
