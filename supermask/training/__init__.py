"""The one training loop, its config, optimisers, schedules, callbacks and checkpoint I/O.

Names are imported on first use: ``supermask.training.config`` (``TrainConfig``) needs no torch."""

from ..lazy import lazy_exports

_EXPORTS = {
    "distributed": ".distributed",
    **dict.fromkeys(["Callback", "MaskAfterStep", "ProgressBar"], ".callbacks"),
    "TrainConfig": ".config",
    "resolve_device": ".device",
    "TrainState": ".state",
    **dict.fromkeys(["TrainSummary", "eval_batch_size", "evaluate", "train"], ".loop"),
    **dict.fromkeys(["build_optimizer", "lr_factor"], ".optim"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
