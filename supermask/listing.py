"""What ``supermask list`` prints: the built-in names from :mod:`supermask.catalog` (no torch),
plus whatever user code registered (``--import``, entry points), read from the registries when
that code has loaded them."""

from __future__ import annotations

import sys

from . import catalog

#: The module holding each registry; it is in ``sys.modules`` once anything registered into it.
_REGISTRY_MODULES = {"archs": "supermask.models.registry", "datasets": "supermask.data.datasets",
                     "methods": "supermask.methods", "inits": "supermask.nn.init"}


def _registered(what: str) -> bool:
    return _REGISTRY_MODULES[what] in sys.modules


def items(what: str, verbose: bool = False) -> list[str]:
    return {"archs": _archs, "datasets": _datasets, "methods": lambda: _methods(verbose), "inits": _inits}[what]()


def _names(what: str, registries: str, attrs: tuple[str, ...], builtin: tuple) -> list[list[str]]:
    """Each registry's names (``registries``' ``attrs``) once user code has loaded it, else the
    catalog's built-in names (``builtin``), without importing torch."""
    if _registered(what):
        import importlib

        module = importlib.import_module(registries)
        return [getattr(module, attr).names() for attr in attrs]
    return [sorted(names) for names in builtin]


def _archs() -> list[str]:
    [names] = _names("archs", "supermask.models", ("MODELS",), (catalog.ARCHITECTURES,))
    return names + [catalog.TORCHVISION_PREFIX + "<name>"]


def _datasets() -> list[str]:
    [names] = _names("datasets", "supermask.data", ("DATASETS",), (catalog.DATASETS,))
    return names + [catalog.IMAGEFOLDER_PREFIX + "PATH", catalog.TEXT_PREFIX + "PATH"]


def _inits() -> list[str]:
    weights, scores = _names("inits", "supermask.nn", ("WEIGHT_INITS", "SCORE_INITS"),
                             (catalog.WEIGHT_INITS, catalog.SCORE_INITS))
    return weights + [f"score: {name}" for name in scores]


def _methods(verbose: bool) -> list[str]:
    cards = dict(catalog.SEARCH_METHODS)
    if _registered("methods"):
        from .methods import METHODS

        cards.update({name: METHODS.get(name) for name in METHODS if name not in cards})
    lines = []
    for name in sorted(cards):
        lines.append(f"{name} (search): {cards[name].summary}")
        if verbose:
            defaults = ", ".join(f"{k} {v}" for k, v in resolved_defaults(name).items())
            structures = ", ".join("nm:N:M" if s == "nm" else s for s in cards[name].structures)
            lines += [f"    defaults: {defaults}", f"    structures: {structures}",
                      f"    reference: {cards[name].reference}"]
    lines += [f"{name} (prune): {summary}" for name, summary in catalog.PRUNERS.items()]
    lines += [f"{name} ({command}): {summary}" for name, command, summary in catalog.OTHER_FINDERS]
    return lines


def resolved_defaults(method: str) -> dict:
    """The settings a search with ``method`` runs at when nothing else is given. A built-in method's
    are read from its card through :func:`supermask.catalog.default_settings`, the function the
    resolver reads them through, without torch (``tests/test_cli_habits.py`` checks the two agree);
    a user's method is asked of the resolver itself."""
    from .training.config import TrainConfig

    card = catalog.SEARCH_METHODS.get(method)
    if card is None:  # a user's method: resolve it the library's way
        from .search import resolved_defaults as library_resolved

        return library_resolved(method)
    search, train_fields = catalog.default_settings(card.defaults, card.train_defaults)
    fields = {k: search[k] for k in (*catalog.GENERIC_SEARCH_DEFAULTS, *card.options)}
    if "density_ramp_epochs" in fields and not catalog.density_ramp_applies(fields["scope"], catalog.DEFAULT_DENSITY):
        fields["density_ramp_epochs"] = None  # as the resolver drops it where it cannot act
    train = TrainConfig(**train_fields)
    fields.update(optimizer=train.optimizer, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay,
                  schedule=train.schedule, batch_size=train.batch_size, epochs=train.epochs)
    return fields
