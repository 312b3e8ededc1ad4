#!/usr/bin/env bash
# Early-bird IMP against full IMP on Conv-4, and vit_tiny strong and weak tickets, on the bundled
# data, on the CPU; then `supermask compare`. Two lanes run at once (one thread each).
#
#   bash scripts/demo_vit_earlybird.sh [OUT]      (runs under OUT/runs, report in OUT/report)
#
# Conv-4: one-shot IMP to density 0.2 with the family defaults (Adam 3e-4, batch 60) but 10 epochs
# a level (a Conv-4 epoch takes ~30-45 s on one of these cores), with and without --early-bird
# (epsilon 0.1, window 5: the paper's), seed 0.
# vit_tiny: edge-popup at 0.5 / 0.2 / 0.05 (kaiming-normal, 10 epochs), IMP (4 levels of global
# 20% pruning, 10 epochs a level with the deep-net defaults: SGD lr 0.1, step decay, warm-up cut
# to 1 epoch), and the dense baseline (10 epochs, SGD lr 0.01), seed 0.
set -euo pipefail
out=${1:-vit-earlybird}
runs="$out/runs"
export OMP_NUM_THREADS=1
started=$(date +%s)

earlybird() {
  supermask imp --arch conv4 --one-shot --target-density 0.2 --epochs 10 --out "$runs" --quiet
  supermask imp --arch conv4 --one-shot --target-density 0.2 --epochs 10 --early-bird magnitude --out "$runs" --quiet
}

vit() {
  supermask search --arch vit_tiny --density 0.5,0.2,0.05 --init kaiming-normal --epochs 10 --out "$runs" --quiet
  supermask imp --arch vit_tiny --levels 4 --epochs 10 --warmup-epochs 1 --out "$runs" --quiet
  supermask train --arch vit_tiny --epochs 10 --out "$runs" --quiet
}

earlybird > "$out.earlybird.log" 2>&1 &
vit > "$out.vit.log" 2>&1 &
wait
supermask compare "$runs" --out "$out/report"
echo "wall time: $(( $(date +%s) - started )) s"
