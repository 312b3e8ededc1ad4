"""Linear interpolation between two networks and the error barrier along the path (Frankle,
Dziugaite, Roy & Carbin 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

- :func:`interpolate`: the state ``(1 - α)·θA + α·θB`` of every floating tensor of two state
  dicts; a tensor the two hold equal (a mask both copies keep, a step counter) is kept as it is,
  so a mask stays exactly a mask along the whole path;
- :func:`path_errors`: the error (1 − accuracy) and loss of the interpolated network at each α,
  on each split given;
- :func:`error_barrier`: max over α of error(α) − mean(error(0), error(1)), in percentage points
  (the paper's definition, Section 2): a network is *stable* when it is below a threshold (2).

BatchNorm: the running statistics are tensors of the state dict and are interpolated with
everything else (``bn="interpolate"``, what interpolating two networks' states gives, and the
default); ``bn="recompute"`` resets them and recomputes them on training batches at every α
(the repair Jordan et al. 2022, "REPAIR", show to matter for deep BatchNorm networks). Nothing
here trains: the path is evaluated with the same loaders and ``evaluate`` as every run.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import Tensor, nn

from .errors import SupermaskError

BN_MODES = ("interpolate", "recompute")


def alpha_grid(points: int) -> list[float]:
    """``points`` evenly spaced values of α in [0, 1], both ends included."""
    if not isinstance(points, int) or isinstance(points, bool) or points < 2:
        raise SupermaskError(f"alphas must be an integer >= 2 (both ends are included), got {points!r}")
    return [i / (points - 1) for i in range(points)]


def interpolate(a: dict[str, Tensor], b: dict[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """``(1 - alpha) * a + alpha * b`` for every floating tensor the two differ in."""
    if set(a) != set(b):
        raise SupermaskError(f"the two states hold other tensors: {sorted(set(a) ^ set(b))[:3]}")
    out = {}
    for key, x in a.items():
        y = b[key]
        if x.shape != y.shape:
            raise SupermaskError(f"{key}: shapes {tuple(x.shape)} and {tuple(y.shape)} differ")
        if not x.is_floating_point() or torch.equal(x, y):
            out[key] = x.clone()
        else:
            out[key] = torch.lerp(x, y.to(x.dtype), float(alpha))
    return out


def error_barrier(errors: Sequence[float]) -> float:
    """max over the path of the error, minus the mean of the endpoints' errors (errors in [0, 1];
    the barrier in percentage points)."""
    if len(errors) < 2:
        raise SupermaskError("an error barrier needs at least both endpoints")
    return 100.0 * (max(errors) - (errors[0] + errors[-1]) / 2.0)


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable) -> None:
    """Reset every BatchNorm's running statistics and recompute them as the plain average over
    ``batches`` (momentum None), in train mode; the model is left in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for images, _ in batches:
        model(images)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def path_errors(model: nn.Module, a: dict[str, Tensor], b: dict[str, Tensor], alphas: Sequence[float],
                loaders: dict[str, object], *, bn: str = "interpolate",
                bn_batches: Optional[Callable[[], Iterable]] = None) -> dict[str, dict[str, list[float]]]:
    """For each split of ``loaders``: the error and the loss of ``model`` holding the state at
    every α of ``alphas`` (``{"test": {"error": [...], "loss": [...]}}``)."""
    from .training import evaluate

    if bn not in BN_MODES:
        raise SupermaskError(f"bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
    out = {split: {"error": [], "loss": []} for split in loaders}
    for alpha in alphas:
        model.load_state_dict(interpolate(a, b, alpha))
        if bn == "recompute":
            recompute_batchnorm(model, bn_batches())
        for split, loader in loaders.items():
            loss, accuracy = evaluate(model, loader)
            out[split]["error"].append(1.0 - accuracy)
            out[split]["loss"].append(loss)
    return out


def jaccard(a: Tensor, b: Tensor) -> float:
    """|A ∩ B| / |A ∪ B| of two {0, 1} masks (1.0 for two empty ones)."""
    a, b = a.bool(), b.bool()
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def random_jaccard(density: float) -> float:
    """The Jaccard overlap two independent uniformly random masks of ``density`` have in
    expectation, for large layers: d² / (2d − d²) = d / (2 − d)."""
    return density / (2.0 - density) if density > 0 else 0.0
