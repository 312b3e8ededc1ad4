#!/usr/bin/env bash
# The ticket-transfer example of the guide (docs/guide/transfer.md, report in docs/transfer/): LeNet-300-100 on the bundled data, a
# source task of digits 0-4 and a target task of digits 5-9 (--classes), three seeds.
#
# - Weak tickets (Morcos et al. 2019's question): IMP on digits 0-4 at its recipe for LeNet (Adam
#   1.2e-3, batch 60, 20 epochs a level, 20% pruned a level), 20 levels (density 0.0115); levels
#   0,4,8,12,16,20 transferred to digits 5-9, beside the random-mask control and IMP on 5-9 itself.
# - Strong tickets (new): edge-popup at densities 0.1, 0.3 and 0.5 on digits 0-4 (its defaults, 10
#   epochs); the hidden masks kept over the same random weights and the output layer searched on
#   digits 5-9 (--rescore output), or every layer's scores fine-searched from the source's
#   (--rescore all), beside random hidden masks and a search on digits 5-9 from scratch.
#
#   bash scripts/transfer_example.sh [OUT]      (runs under OUT/runs, report in docs/transfer/)
#
# Finished runs are skipped: an interrupted sweep resumes where it stopped.
set -euo pipefail
out=${1:-transfer}
runs="$out/runs"
common=(--out "$runs" --quiet)
supermask imp --arch lenet_300_100 --classes 0-4 --levels 20 --seed 0,1,2 "${common[@]}"
supermask search --arch lenet_300_100 --classes 0-4 --density 0.1,0.3,0.5 --seed 0,1,2 "${common[@]}"
sources() {  # the finished runs of engine $1 on digits 0-4
  for d in "$runs/$1"/lenet_300_100-mnist-5k/*/seed-*; do
    grep -q '"classes": "0-4"' "$d/config.json" && echo "$d"
  done
}
for imp in $(sources imp); do
  supermask transfer --source "$imp" --classes 5-9 --levels 0,4,8,12,16,20 "${common[@]}"
done
for found in $(sources search); do
  supermask transfer --source "$found" --classes 5-9 "${common[@]}"
  supermask transfer --source "$found" --classes 5-9 --rescore all --controls none "${common[@]}"
done
supermask compare "$runs/transfer" --out docs/transfer
