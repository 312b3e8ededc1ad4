#!/usr/bin/env bash
# Weak vs strong tickets on the bundled data, on the CPU (about 45 minutes on 2 cores):
# edge-popup (signed-constant and kaiming-normal), IMP with its reinit and random-prune controls,
# and the dense baseline, for lenet_300_100 (3 seeds) and conv4 (1 seed); then `supermask compare`.
#
#   bash scripts/demo_weak_vs_strong.sh [OUT]      (runs under OUT/runs, report in OUT/report)
#
# Budgets: LeNet 20 epochs per run or IMP level (IMP: family defaults, 13 levels: 1.0 -> 0.055);
# Conv-4 5 epochs per search or dense run, 3 epochs per IMP level (IMP: global pruning of half the
# survivors per level, 4 levels: 1.0 -> 0.0625). Finished runs are skipped, so an interrupted demo resumes where it stopped.
set -euo pipefail
out=${1:-demo}
runs="$out/runs"
started=$(date +%s)

supermask search --arch lenet_300_100 --density 0.5,0.2,0.1,0.05 --init signed-constant,kaiming-normal \
  --seed 0,1,2 --epochs 20 --out "$runs" --quiet
supermask imp --arch lenet_300_100 --levels 13 --control none,reinit,random-prune --seed 0,1,2 --epochs 20 \
  --out "$runs" --quiet
supermask train --arch lenet_300_100 --seed 0,1,2 --epochs 20 --out "$runs" --quiet

supermask search --arch conv4 --density 0.5,0.2,0.1,0.05 --init signed-constant,kaiming-normal \
  --seed 0 --epochs 5 --out "$runs" --quiet
supermask imp --arch conv4 --levels 4 --scope global --prune-fraction 0.5 --control none,reinit,random-prune \
  --seed 0 --epochs 3 --out "$runs" --quiet
supermask train --arch conv4 --seed 0 --epochs 5 --out "$runs" --quiet

supermask compare "$runs" --out "$out/report"
echo "demo wall time: $(( $(date +%s) - started )) s"
