"""Early-bird tickets (You, Li, Xu, Fu, Wang, Chen, Baraniuk, Wang & Lin 2020, "Drawing Early-Bird
Tickets").

During IMP's dense training (level 0), after every epoch compute the mask that magnitude
pruning would take at the target density, and the normalised Hamming distance between it and
the previous epoch's mask (the fraction of prunable weights whose bit flipped). Once the last
``window`` distances all stay below ``epsilon`` the ticket is drawn: dense training stops there,
and IMP continues from those weights as it always does (prune, rewind, retrain).

Defaults from the paper: ``epsilon = 0.1``, ``window = 5`` (``--eb-epsilon``, ``--eb-window``).
Every distance is a ``split: "early-bird"`` record in level 0's ``metrics.jsonl``; the level's
result records the epoch the ticket was drawn and the training steps saved against the
configured length. The masks and distances seen so far are part of every checkpoint, so a
resumed run draws the same ticket.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch

from supermask.nn.masked import get_masks
from supermask.runs import RunDir
from supermask.training import Callback, distributed

log = logging.getLogger(__name__)

DEFAULT_EPSILON = 0.1
DEFAULT_WINDOW = 5


def mask_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Normalised Hamming distance: the fraction of entries where two mask dicts differ."""
    flipped = sum(int((a[n].bool() != b[n].bool()).sum()) for n in a)
    return flipped / sum(a[n].numel() for n in a)


class EarlyBird(Callback):
    """Stop dense training once the target-density magnitude mask stops changing."""

    def __init__(self, prune: Callable[[dict, dict], dict], epsilon: float = DEFAULT_EPSILON,
                 window: int = DEFAULT_WINDOW, run: Optional[RunDir] = None):
        self.prune, self.epsilon, self.window, self.run = prune, epsilon, window, run
        self.previous: Optional[dict[str, torch.Tensor]] = None
        self.distances: list[float] = []
        self.drawn_epoch: Optional[int] = None

    def on_eval(self, state, records):
        if state.epoch == 0:
            return
        model = state.model
        current = get_masks(model)
        weights = {n: model.get_parameter(n).detach() for n in current}
        mask = {n: m.to(torch.uint8).cpu() for n, m in self.prune(weights, current).items()}
        if self.previous is not None:
            distance = mask_distance(mask, self.previous)
            self.distances.append(distance)
            if self.run is not None and distributed.is_main():
                self.run.append_metrics({"epoch": state.epoch, "step": state.step, "split": "early-bird",
                                         "mask_distance": distance})
            log.info("early-bird: epoch %d mask distance %.4f", state.epoch, distance)
            recent = self.distances[-self.window:]
            if len(recent) == self.window and max(recent) < self.epsilon:
                self.drawn_epoch = state.epoch
                state.stopped = f"early-bird ticket drawn at epoch {state.epoch}"
                log.info("early-bird ticket drawn at epoch %d", state.epoch)
        self.previous = mask

    def state_dict(self) -> dict:
        return {"previous": self.previous, "distances": list(self.distances), "drawn_epoch": self.drawn_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.previous = state.get("previous")
        self.distances = list(state.get("distances", []))
        self.drawn_epoch = state.get("drawn_epoch")
