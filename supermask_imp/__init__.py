"""Weak tickets: iterative magnitude pruning with rewinding, on supermask's zoo, data and trainer.

Names are imported on first use (``supermask_imp.defaults`` needs no torch)."""

from supermask.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["CONTROLS", "IMPConfig", "IMPResult", "MaskAfterStep", "run_imp"], ".engine"),
    **dict.fromkeys(["PRUNERS", "PruneConfig", "prune_and_train"], ".pai"),
    **dict.fromkeys(["magnitude_prune", "random_masks_like"], ".pruning"),
    **dict.fromkeys(["RewindPoint", "rewind", "snapshot"], ".rewind"),
    **dict.fromkeys(["StabilityConfig", "StabilityResult", "run_stability"], ".stability"),
    **dict.fromkeys(["TransferConfig", "TransferResult", "run_transfer"], ".transfer"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
