#!/usr/bin/env bash
# The measurements docs/fidelity.md quotes beside the main sweep (scripts/compare_methods.sh): the
# scaled fan's two rules at density 0.05 for edge-popup and biprop, and IteRand at its reference's
# signed-constant setting. LeNet-300-100 on the bundled data, 20 epochs, seeds 0-2; then one line per
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
python - "$runs" <<'EOF'
import json, statistics, sys
from collections import defaultdict
from pathlib import Path

groups = defaultdict(list)
for result in Path(sys.argv[1]).rglob("result.json"):
    config = json.loads((result.parent / "config.json").read_text())
    key = (config["method"], config["init"], str(config["scaled_fan"]), config["density"])
    groups[key].append(100 * json.loads(result.read_text())["test_accuracy"])
for (method, init, fan, density), accs in sorted(groups.items()):
    print(f"{method:<10} init {init:<16} scaled_fan {fan:<14} density {density:g}: "
          f"{statistics.mean(accs):.1f} ± {statistics.stdev(accs):.1f} ({len(accs)} seeds: "
          f"{', '.join(f'{a:.1f}' for a in accs)})")
EOF
echo "wall time: $(( $(date +%s) - started )) s"
