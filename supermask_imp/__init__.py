"""Weak tickets: iterative magnitude pruning with rewinding, on supermask's zoo, data and trainer."""

from .engine import CONTROLS, IMPConfig, IMPResult, MaskAfterStep, run_imp
from .pai import PRUNERS, PruneConfig, prune_and_train
from .pruning import magnitude_prune, random_masks_like
from .rewind import RewindPoint, rewind, snapshot

__all__ = ["CONTROLS", "IMPConfig", "IMPResult", "MaskAfterStep", "PRUNERS", "PruneConfig", "RewindPoint", "magnitude_prune",
           "prune_and_train", "random_masks_like", "rewind", "run_imp", "snapshot"]
