"""Timing helpers shared by the benchmarks (measurement only; the measured code is the library's)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import nn


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sgd_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, after_step: Callable[[], None] = lambda: None):
    """One SGD training step of ``model`` on (x, y): forward, backward, optimiser step, ``after_step``."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                          weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        after_step()

    return step


def interleaved_medians(steps: dict[str, Callable[[], None]], n: int) -> dict[str, float]:
    """Median seconds per call of each function, calls alternating so that machine noise hits all alike."""
    for fn in steps.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(n):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
