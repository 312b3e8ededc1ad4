#!/usr/bin/env bash
# Gem-Miner at its defaults, target density 0.2, LeNet-300-100 on the bundled data, at three
# training lengths (10, 20 and 40 epochs), three seeds each: the density each run ends at and its
# test accuracy (docs/fidelity.md, Gem-Miner). Its default lr holds lr x epochs at 10 (lr 1.0 up to
# 10 epochs, 0.5 at 20, 0.25 at 40): without that the penalty takes kept scores below 0.5 after the
# last freezing round and the density falls under the target.
#
#   bash scripts/gem_miner_lengths.sh [OUT]      (runs under OUT/runs; one line per run)
set -euo pipefail
out=${1:-gem-miner-lengths}
export OMP_NUM_THREADS=1
started=$(date +%s)
for epochs in 10 20 40; do
  supermask search --arch lenet_300_100 --method gem-miner --density 0.2 --epochs "$epochs" --seed 0,1,2 \
    --out "$out/runs" --quiet > /dev/null
done
for result in "$out"/runs/search/lenet_300_100-mnist-5k/*/seed-*/result.json; do
  python - "$result" <<'EOF'
import json, sys
from pathlib import Path

result = json.loads(Path(sys.argv[1]).read_text())
config = json.loads((Path(sys.argv[1]).parent / "config.json").read_text())
print(f"epochs {config['train']['epochs']:>2}  lr {config['train']['lr']:<5g} seed {config['seed']}  "
      f"density {result['density']:.4f}  test accuracy {100 * result['test_accuracy']:.1f}%")
EOF
done | sort -n -k2 -k6
echo "wall time: $(( $(date +%s) - started )) s"
