#!/usr/bin/env bash
# Every ticket finder side by side on LeNet-300-100 and the bundled data, on the CPU:
# strong tickets (edge-popup, iterand, biprop, bernoulli, gem-miner), pruning at initialisation
# (random, magnitude, SNIP, GraSP, SynFlow), IMP and the dense baseline, at densities 0.5, 0.2
# and 0.05 with three seeds; then `supermask compare`.
#
#   bash scripts/compare_methods.sh [OUT]      (runs under OUT/runs, report in OUT/report)
#
# Two lanes run at once (one thread each): the strong tickets, and everything trained.
# Budgets: 20 epochs for every run and every IMP level. Edge-popup and iterand draw
# kaiming-normal weights without the scaled fan (on LeNet the scaled fan hurts edge-popup at low
# density: 28-74% at 0.05 with it, 83.6% without); biprop, bernoulli and gem-miner run at their
# own defaults (`supermask list methods --verbose`: each its reference's). Pruning at init and IMP
# use the family's IMP training defaults (Adam 1.2e-3, batch 60). IMP runs 13 levels
# (density 1.0 -> 0.055). Finished runs are skipped: an interrupted sweep resumes.
set -euo pipefail
out=${1:-methods}
runs="$out/runs"
export OMP_NUM_THREADS=1
started=$(date +%s)
common=(--arch lenet_300_100 --density 0.5,0.2,0.05 --seed 0,1,2 --epochs 20 --out "$runs" --quiet)

strong() {
  for method in edge-popup iterand; do
    supermask search "${common[@]}" --method "$method" --init kaiming-normal
  done
  for method in biprop bernoulli gem-miner; do
    supermask search "${common[@]}" --method "$method"
  done
}

weak() {
  supermask prune "${common[@]}" --method random,magnitude,snip,grasp,synflow
  supermask imp --arch lenet_300_100 --levels 13 --seed 0,1,2 --epochs 20 --out "$runs" --quiet
  supermask train --arch lenet_300_100 --seed 0,1,2 --epochs 20 --out "$runs" --quiet
}

strong > "$out.strong.log" 2>&1 &
weak > "$out.weak.log" 2>&1 &
wait
supermask compare "$runs" --out "$out/report"
echo "wall time: $(( $(date +%s) - started )) s"
