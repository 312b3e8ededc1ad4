"""Grids of runs: one config per point, each its own run directory.

``expand_grid(base, density=[0.1, 0.5], seed=[0, 1, 2])`` gives the configs of the
Cartesian product (later fields vary fastest). Running them one by one through an
engine skips finished points and resumes unfinished ones, because every point is an
ordinary run; a job array on a cluster can run the same grid point by point.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Sequence, TypeVar

from .errors import SupermaskError

C = TypeVar("C")


def parse_list(text: str | None, convert=str, what: str = "value") -> list[Any] | None:
    """``"0.1,0.5"`` -> ``[0.1, 0.5]``; ``None`` stays ``None``."""
    if text is None:
        return None
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items:
        raise SupermaskError(f"{what}: empty list")
    try:
        return [convert(x) for x in items]
    except ValueError:
        raise SupermaskError(f"{what} must be a comma-separated list, got {text!r}") from None


def expand_grid(base: C, **axes: Sequence[Any] | None) -> list[C]:
    """Configs for every combination of the given field values (``None`` axes are left out)."""
    axes = {name: list(values) for name, values in axes.items() if values is not None}
    if not axes:
        return [base]
    names = list(axes)
    return [dataclasses.replace(base, **dict(zip(names, combo))) for combo in itertools.product(*axes.values())]
