"""Branches (open_lth's ``lottery/branch/``): where each IMP level's mask and starting weights
come from. One level loop (:func:`supermask_imp.engine.run_levels`) runs every branch:

- ``none`` (IMP itself): the level's pruning strategy applied to the previous level's final
  weights; the survivors rewound to θ0 or θk;
- ``reinit``: IMP's mask of the level, fresh random weights (a seed derived per level);
- ``random-prune``: a random mask with as many weights per layer as IMP's (structured: a random
  N:M mask or as many random channels), the rewind weights.

A control runs beside a finished IMP run of the same config (``main``) and reads its masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from supermask.io import check_shapes, read_tensors
from supermask.layout import TICKET
from supermask.registry import Registry
from supermask.runs import RunDir
from supermask.seeding import derived_seed
from supermask.ticket_files import read_ticket

from .levels import build_masked, final_state, level_run
from .rewind import snapshot
from .strategies import Context, random_like, strategy_for

Masks = dict[str, torch.Tensor]


@dataclass
class Branch:
    """IMP's own levels: prune the previous level, rewind to the rewind point."""

    config: object
    spec: object
    context: Context
    rewind_path: Path
    main: Optional[object] = None  # the finished IMP run a control reads (IMPResult)

    first_level = 0

    def mask(self, level: int, current: Masks, previous: RunDir) -> Masks:
        state = final_state(previous, "cpu")
        names = self.context.names
        check_shapes({n: state[n] for n in names if n in state}, current, previous.checkpoint_path, complete=True)
        weights = {n: state[n] for n in names}
        masks = {n: state[n.rsplit(".", 1)[0] + ".weight_mask"] for n in names}
        return strategy_for(self.context.selection)(self.config, weights, masks, self.context)

    def start(self, level: int) -> Masks:
        return read_tensors(self.rewind_path)

    def imp_mask(self, level: int, current: Masks) -> Masks:
        """The mask IMP drew at ``level`` (a control's starting point)."""
        folder = level_run(RunDir(self.main.run_dir), level).path / TICKET
        masks, _ = read_ticket(folder)
        check_shapes(masks, current, folder, complete=True)
        return masks


class Reinit(Branch):
    first_level = 1  # level 0 is IMP's dense run

    def mask(self, level, current, previous):
        return self.imp_mask(level, current)

    def start(self, level):
        return snapshot(build_masked(self.config, self.spec, derived_seed(self.config.seed, f"reinit-{level}")))


class RandomPrune(Branch):
    first_level = 1

    def mask(self, level, current, previous):
        seed = derived_seed(self.config.seed, f"random-prune-{level}")
        return random_like(self.imp_mask(level, current), self.context.selection, seed)


BRANCHES: Registry[type] = Registry("control")
BRANCHES.add("none", Branch)
BRANCHES.add("reinit", Reinit)
BRANCHES.add("random-prune", RandomPrune)
