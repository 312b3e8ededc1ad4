"""Benchmark: mask selection and the edge-popup training step, measured side by side in one run.

    python scripts/bench_search.py [--steps 10] [--repeats 20] [--json bench_search.json]

1. Mask selection at every Conv6 layer size (CIFAR shapes, 2.26M scores in all) and
   for global scope over all of them: supermask's O(n) ``topk_mask`` against the full
   sort the edge-popup reference performs on every forward pass.
2. One training step (forward, backward, SGD) of Conv6 at batch 128 on 3×32×32 inputs:
   the supermask model (scores trained, layerwise density 0.5) against the dense model
   (weights trained). Steps alternate between the two so machine noise hits both alike.

Targets (issue 2): selection >= 5x faster than the sort over a forward pass's layers and for
global scope; supermask step <= 1.15x dense. (The two smallest layers, 1,728 and 2,560
scores, take tens of microseconds either way: call overhead, not selection, dominates.)
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from benchlib import best_of, interleaved_medians, sgd_step_fn

from supermask.models import DENSE, InputSpec, create_model, supermask_layer_types
from supermask.nn import init_model, kept_count, topk_mask
from supermask.nn.topk import global_topk_masks


def reference_sort_mask(scores: torch.Tensor, density: float) -> torch.Tensor:
    """The edge-popup reference's selection: sort every score, zero the lowest (1 - k) part."""
    out = scores.clone()
    _, idx = scores.flatten().sort()
    j = int((1 - density) * scores.numel())
    flat = out.flatten()
    flat[idx[:j]] = 0
    flat[idx[j:]] = 1
    return out


def bench_selection(repeats: int, density: float = 0.5) -> list[dict]:
    model = create_model("conv6", InputSpec(3, 32, 10), supermask_layer_types(density))
    shapes = [m.scores.shape for m in model.modules() if hasattr(m, "scores")]
    rows = []
    all_scores = [torch.randn(s).abs() for s in shapes]
    for scores in all_scores:
        k = kept_count(scores.numel(), density)
        ours = best_of(lambda: topk_mask(scores, k), repeats)
        ref = best_of(lambda: reference_sort_mask(scores, density), repeats)
        rows.append({"what": f"layer {tuple(scores.shape)}", "n": scores.numel(), "ours_ms": ours * 1e3,
                     "sort_ms": ref * 1e3, "speedup": ref / ours})
    rows.append({"what": "layerwise, all 9 layers", "n": sum(r["n"] for r in rows),
                 "ours_ms": sum(r["ours_ms"] for r in rows), "sort_ms": sum(r["sort_ms"] for r in rows)})
    rows[-1]["speedup"] = rows[-1]["sort_ms"] / rows[-1]["ours_ms"]
    ours = best_of(lambda: global_topk_masks(all_scores, density), repeats)
    ref = best_of(lambda: reference_sort_mask(torch.cat([s.flatten() for s in all_scores]), density), repeats)
    total = sum(s.numel() for s in all_scores)
    rows.append({"what": "global, all of Conv6", "n": total, "ours_ms": ours * 1e3, "sort_ms": ref * 1e3,
                 "speedup": ref / ours})
    return rows


def bench_step(steps: int, batch: int = 128) -> dict:
    spec = InputSpec(3, 32, 10)
    dense = init_model(create_model("conv6", spec, DENSE), "kaiming-normal", 0)
    sm = init_model(create_model("conv6", spec, supermask_layer_types(0.5)), "signed-constant", 0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    med = interleaved_medians({"dense": sgd_step_fn(dense, x, y), "supermask": sgd_step_fn(sm, x, y)}, steps)
    return {"dense_s": med["dense"], "supermask_s": med["supermask"], "ratio": med["supermask"] / med["dense"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="Also write the numbers to this JSON file.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    selection = bench_selection(args.repeats)
    print(f"Mask selection, density 0.5, best of {args.repeats} (torch {torch.__version__}, {args.threads} threads)")
    print(f"{'scores':<28}{'n':>10}{'topk_mask ms':>14}{'full sort ms':>14}{'speedup':>9}")
    for r in selection:
        print(f"{r['what']:<28}{r['n']:>10}{r['ours_ms']:>14.2f}{r['sort_ms']:>14.2f}{r['speedup']:>8.1f}x")
    step = bench_step(args.steps)
    print(f"\nConv6 training step, batch 128, 3x32x32, median of {args.steps}")
    print(f"dense {step['dense_s'] * 1e3:.0f} ms   supermask {step['supermask_s'] * 1e3:.0f} ms")
    layerwise, global_ = selection[-2], selection[-1]
    print(f"\nselection speedup per forward pass: layerwise {layerwise['speedup']:.1f}x, global {global_['speedup']:.1f}x "
          f"(target >= 5x); supermask step / dense step {step['ratio']:.3f} (target <= 1.15)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"selection": selection, "step": step, "torch": torch.__version__, "threads": args.threads},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
