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

from . import bernoulli, biprop, edge_popup, gem_miner, iterand  # noqa: F401  (each registers itself)
from .registry import METHODS, Method

__all__ = ["METHODS", "Method"]
