#!/usr/bin/env bash
# Weak and strong tickets of a small GPT on the bundled tinyshakespeare, on the CPU; then
# `supermask compare`. Two lanes run at once (one thread each).
#
#   bash scripts/demo_language_model.sh [OUT] [SEEDS]   (runs under OUT/runs, report in OUT/report)
#
# gpt_tiny at --width 0.5 --depth 2 (dim 64, 2 blocks, 4 heads; 98K prunable weights), windows of
# 64 characters, 2 epochs (490 steps at batch 64) a run or level:
# - dense baseline (AdamW 1e-3, nanoGPT's, the library's default for gpt_tiny);
# - IMP: 3 levels of global 20% magnitude pruning, rewinding to θ0, with the reinit control;
# - edge-popup over the random GPT at densities 0.5 and 0.2 (signed-constant weights, the method's
#   defaults: SGD lr 0.1, cosine).
set -euo pipefail
out=${1:-language-model}
seeds=${2:-0}
runs="$out/runs"
export OMP_NUM_THREADS=1
started=$(date +%s)
common=(--arch gpt_tiny --dataset tinyshakespeare --width 0.5 --depth 2 --epochs 2 --seed "$seeds" --out "$runs" --quiet)

weak() {
  supermask train "${common[@]}"
  supermask imp "${common[@]}" --levels 3 --control none,reinit
}

strong() {
  supermask search "${common[@]}" --density 0.5,0.2
}

weak > "$out.weak.log" 2>&1 &
strong > "$out.strong.log" 2>&1 &
wait
supermask compare "$runs" --out "$out/report"
echo "wall time: $(( $(date +%s) - started )) s"
