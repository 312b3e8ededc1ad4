"""Benchmark: IMP's masked training step against the dense step of the same model, in one run.

    python scripts/bench_imp.py [--steps 10] [--arch conv6] [--json bench_imp.json]

The masked model carries a ``weight_mask`` buffer per layer (80% of the weights pruned) and
zeroes the pruned weights after each optimiser step (``mask_applier``, as ``MaskAfterStep`` does);
forward and backward are the dense layer's. Steps alternate between the two models.
Target (issue 3): masked step <= 1.05x dense.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from benchlib import interleaved_medians, sgd_step_fn

from supermask.models import DENSE, InputSpec, create_model, masked_layer_types
from supermask.nn import init_model
from supermask.nn.masked import get_masks, mask_applier, set_masks
from supermask_imp import magnitude_prune

SHAPES = {"conv6": (InputSpec(3, 32, 10), 128), "lenet_300_100": (InputSpec(1, 28, 10), 60)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--arch", default="conv6", choices=sorted(SHAPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec, batch = SHAPES[args.arch]
    dense = init_model(create_model(args.arch, spec, DENSE), "kaiming-normal", 0)
    masked = init_model(create_model(args.arch, spec, masked_layer_types()), "kaiming-normal", 0)
    weights = {n: masked.state_dict()[n] for n in get_masks(masked)}
    set_masks(masked, magnitude_prune(weights, get_masks(masked), 0.8, scope="global"))
    x = torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size)
    y = torch.randint(0, spec.num_classes, (batch,))
    med = interleaved_medians({"dense": sgd_step_fn(dense, x, y),
                               "masked": sgd_step_fn(masked, x, y, mask_applier(masked))}, args.steps)
    ratio = med["masked"] / med["dense"]
    print(f"{args.arch} training step, batch {batch}, median of {args.steps} (torch {torch.__version__}, "
          f"{args.threads} threads)")
    print(f"dense {med['dense'] * 1e3:.1f} ms   IMP masked (density 0.2) {med['masked'] * 1e3:.1f} ms   "
          f"ratio {ratio:.3f} (target <= 1.05)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": args.arch, "dense_s": med["dense"], "masked_s": med["masked"], "ratio": ratio}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
