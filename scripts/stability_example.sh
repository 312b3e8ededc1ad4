#!/usr/bin/env bash
# The instability analysis of the guide (docs/guide/stability.md, report in docs/stability/): dense LeNet-300-100 on the bundled data
# at IMP's recipe for it (Adam 1.2e-3, batch 60, 20 epochs) and at --lr 0.01; its IMP level 7
# (density 0.21); a strong ticket of edge-popup (density 0.5); three seeds, one pair of copies (two
# noise seeds) each. Conv-2 dense at its recipe cut to 5 epochs, one seed (a Conv-2 run takes ~3 min
# for 20 epochs here). On the CPU; then `supermask compare`.
#
#   bash scripts/stability_example.sh [OUT]      (runs under OUT/runs, report in docs/stability/)
#
# Finished runs are skipped: an interrupted sweep resumes where it stopped.
set -euo pipefail
out=${1:-stability}
runs="$out/runs"
export OMP_NUM_THREADS=1
common=(--seed 0,1,2 --out "$runs" --quiet)
points=0,10it,50it,1ep,2ep,5ep
supermask stability --arch lenet_300_100 --points "$points" "${common[@]}"
supermask stability --arch lenet_300_100 --points "$points" --lr 0.01 "${common[@]}"
supermask stability --arch lenet_300_100 --points 0,50it,1ep,5ep --levels 0,7 "${common[@]}"
supermask stability --arch lenet_300_100 --subject search --points 0,1ep,3ep "${common[@]}"
supermask stability --arch conv2 --points 0,50it,1ep --epochs 5 --seed 0 --out "$runs" --quiet
supermask compare "$runs/stability" --out docs/stability
