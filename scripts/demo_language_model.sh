#!/usr/bin/env bash
# Weak and strong tickets of a small GPT on the bundled tinyshakespeare, on the CPU; then
# `supermask compare`, and text from the dense network and the best ticket. Two lanes run at once
# (one thread each).
#
#   bash scripts/demo_language_model.sh [OUT] [SEEDS]   (runs under OUT/runs, report in OUT/report)
#
# gpt_tiny at --width 0.5 --depth 2 (dim 64, 2 blocks, 4 heads; 98K prunable weights), windows of
# 64 characters, 2 epochs (490 steps at batch 64) a run or level, SEEDS (default 0,1,2):
# - dense baseline (AdamW 1e-3, nanoGPT's, the library's default for gpt_tiny);
# - IMP: 7 levels of global 20% magnitude pruning (to density 0.21), rewinding to θ0, with the reinit
#   control;
# - IMP head tickets: 3 levels, each removing one of every block's 4 heads (smallest L1 norm),
#   with the random-prune control (as many random heads);
# - edge-popup over the random GPT at densities 0.5 and 0.2 (signed-constant weights, the method's
#   defaults: SGD lr 0.1, cosine), on gpt_tiny (output tied to the frozen embedding) and on
#   gpt_tiny_untied (its own output layer, searched like every other layer);
# - edge-popup head tickets of the random gpt_tiny_untied: half of every block's heads.
set -euo pipefail
out=${1:-language-model}
seeds=${2:-0,1,2}
runs="$out/runs"
export OMP_NUM_THREADS=1
started=$(date +%s)
common=(--dataset tinyshakespeare --width 0.5 --depth 2 --epochs 2 --seed "$seeds" --out "$runs" --quiet)

lane_a() {
  supermask train --arch gpt_tiny "${common[@]}"
  supermask imp --arch gpt_tiny "${common[@]}" --levels 7 --control none,reinit
  supermask search --arch gpt_tiny_untied "${common[@]}" --structure head --density 0.5
}

lane_b() {
  supermask imp --arch gpt_tiny "${common[@]}" --structure head --levels 3 --control none,random-prune
  supermask search --arch gpt_tiny "${common[@]}" --density 0.5,0.2
  supermask search --arch gpt_tiny_untied "${common[@]}" --density 0.5,0.2
}

lane_a > "$out.a.log" 2>&1 &
lane_b > "$out.b.log" 2>&1 &
wait
supermask compare "$runs" --out "$out/report"

# Text: the dense network's and that of the IMP ticket of lowest validation loss (seed 0), the
# same prompt and sampling seed.
best=$(python - "$runs" <<'EOF'
import json, pathlib, sys
rows = [(json.loads(p.read_text()), p.parent) for p in pathlib.Path(sys.argv[1]).rglob("result.json")]
tickets = [(r["val_loss"], str(d)) for r, d in rows if r.get("engine") == "imp" and r.get("level", 0) > 0
           and r.get("control") == "none" and r.get("structure") == "unstructured" and r.get("seed") == 0]
print(min(tickets)[1])
EOF
)
dense=$(dirname "$(ls "$runs"/train/gpt_tiny-tinyshakespeare/*/seed-0/result.json | head -1)")
{
  for run in "$dense" "$best"; do
    supermask export "$run" --format state-dict --out "$out/generate.safetensors" > /dev/null
    echo "## $run"
    echo
    echo '```text'
    supermask generate "$out/generate.safetensors" --prompt "ROMEO:" --chars 300 --seed 0
    echo '```'
    echo
  done
} > "$out/report/generated.md"
rm -f "$out/generate.safetensors"
echo "wall time: $(( $(date +%s) - started )) s"
