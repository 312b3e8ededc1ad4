#!/usr/bin/env bash
# The measurements docs/fidelity.md quotes beside the main sweep (scripts/compare_methods.sh): the
# scaled fan's two rules at density 0.05 for edge-popup and biprop, IteRand at its reference's
# signed-constant setting, and Gem-Miner at a fixed lr 1.0 over 20 epochs (targets 0.05 and 0.2). LeNet-300-100 on the bundled data, 20 epochs, seeds 0-2; then one line per
# configuration (mean ± std of the test accuracy, in %).
#
#   bash scripts/fidelity_checks.sh [OUT]      (runs under OUT/runs)
set -euo pipefail
out=${1:-fidelity-checks}
runs="$out/runs"
export OMP_NUM_THREADS=1
started=$(date +%s)
common=(--arch lenet_300_100 --density 0.05 --epochs 20 --seed 0,1,2 --out "$runs" --quiet)
supermask search "${common[@]}" --method edge-popup --init kaiming-normal --scaled-fan-rule paper > /dev/null
supermask search "${common[@]}" --method edge-popup --init kaiming-normal --scaled-fan-rule reference-code > /dev/null
supermask search "${common[@]}" --method biprop --scaled-fan-rule paper > /dev/null
supermask search "${common[@]}" --method biprop --no-scaled-fan > /dev/null
supermask search "${common[@]}" --method iterand --init signed-constant > /dev/null
# Gem-Miner at a fixed lr 1.0 over 20 epochs (the default holds lr x epochs: 0.5 there)
supermask search "${common[@]}" --method gem-miner --lr 1.0 > /dev/null
supermask search --arch lenet_300_100 --density 0.2 --epochs 20 --seed 0,1,2 --out "$runs" --quiet \
  --method gem-miner --lr 1.0 > /dev/null
python - "$runs" <<'EOF'
import json, statistics, sys
from collections import defaultdict
from pathlib import Path

groups = defaultdict(list)
for result in Path(sys.argv[1]).rglob("result.json"):
    config = json.loads((result.parent / "config.json").read_text())
    key = (config["method"], config["init"], str(config["scaled_fan"]), config["density"], config["train"]["lr"])
    found = json.loads(result.read_text())
    groups[key].append((100 * found["test_accuracy"], found["density"]))
for (method, init, fan, density, lr), runs in sorted(groups.items()):
    accs = [a for a, _ in runs]
    print(f"{method:<10} init {init:<16} scaled_fan {fan:<14} density {density:g} lr {lr:g}: "
          f"{statistics.mean(accs):.1f} ± {statistics.stdev(accs):.1f} ({len(accs)} seeds: "
          f"{', '.join(f'{a:.1f}' for a in accs)}; ending at density {', '.join(f'{d:.3f}' for _, d in runs)})")
EOF
echo "wall time: $(( $(date +%s) - started )) s"
