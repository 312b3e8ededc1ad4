#!/usr/bin/env bash
# Mask structures side by side (docs/structures/): unstructured, N:M and channel tickets of
# edge-popup (strong) and IMP (weak) on LeNet-300-100 and Conv-4 (width 0.5), the bundled data,
# three seeds, on the CPU; then `supermask compare`.
#
#   bash scripts/structures_sweep.sh [OUT]      (runs under OUT/runs, report in docs/structures/)
#
# Matched densities: N:M fixes the density (2:4: 0.5, 1:4: 0.25); a channel ticket's --density is
# the fraction of each layer's channels kept, chosen so that the weights' density lands near
# the others (LeNet: 0.54 -> 0.50 of the weights, 0.275 -> 0.25; Conv-4: 0.7 -> 0.50). The
# report places every run at the density of weights it reached.
# Budgets: edge-popup LeNet 10 epochs (the search default), Conv-4 5 epochs; IMP LeNet 20 epochs a
# level at the family's defaults (layerwise fc 0.2, output 0.1 per level; 6 levels reach ~0.26),
# N:M in one level; IMP Conv-4 5 epochs a level, one shot to 0.5 (channel: 0.7 of the channels).
# Two lanes run at once (one thread each). Finished runs are skipped: an interrupted sweep resumes.
set -euo pipefail
out=${1:-structures}
runs="$out/runs"
export OMP_NUM_THREADS=1
seeds=(--seed 0,1,2 --out "$runs" --quiet)

strong() {
  local lenet=(--arch lenet_300_100 "${seeds[@]}")
  supermask search "${lenet[@]}" --density 0.5,0.25
  supermask search "${lenet[@]}" --structure nm:2:4
  supermask search "${lenet[@]}" --structure nm:1:4
  supermask search "${lenet[@]}" --structure channel --density 0.54,0.275
  local conv4=(--arch conv4 --width 0.5 --epochs 5 "${seeds[@]}")
  supermask search "${conv4[@]}" --density 0.5
  supermask search "${conv4[@]}" --structure nm:2:4
  supermask search "${conv4[@]}" --structure channel --density 0.7
}

weak() {
  local lenet=(--arch lenet_300_100 "${seeds[@]}")
  supermask imp "${lenet[@]}" --levels 6
  supermask imp "${lenet[@]}" --structure channel --levels 6
  supermask imp "${lenet[@]}" --structure nm:2:4
  local conv4=(--arch conv4 --width 0.5 --epochs 5 "${seeds[@]}")
  supermask imp "${conv4[@]}" --one-shot --target-density 0.5
  supermask imp "${conv4[@]}" --structure nm:2:4
  supermask imp "${conv4[@]}" --structure channel --one-shot --target-density 0.7
}

started=$(date +%s)
strong > "$out.strong.log" 2>&1 &
weak > "$out.weak.log" 2>&1 &
wait
echo "sweep: $(( $(date +%s) - started )) s"
supermask compare "$runs" --out docs/structures
