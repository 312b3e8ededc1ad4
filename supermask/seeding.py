"""Seeds derived from a run's seed, one per purpose, so that no two consumers of randomness
(weights, scores, the data order, a control's mask) share a stream. Torch-free: the data
loader, the layers and the engines all take their generators' seeds from here."""

from __future__ import annotations

import hashlib


def derived_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed derived from ``seed`` for one purpose ("weights", "scores", ...)."""
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
