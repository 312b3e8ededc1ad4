"""The file size of every export format, for LeNet-300-100 and Conv-6 tickets of each structure.

    python scripts/export_sizes.py [--out DIR] [--markdown FILE]

Each ticket is a one-step edge-popup search on the bundled data (sizes depend on the shapes, the
density and the structure, not on training): unstructured at densities 0.5 and 0.05, nm:2:4,
and channel at channel density 0.5 and 0.2; then ``export_run`` in every format that applies.
Prints a Markdown table: bytes, and the ratio to the float32 state dict.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from supermask.resolved import resolve
from supermask.search import SearchConfig, search
from supermask.exports import EXPORT_FORMATS, export_run
from supermask.training import TrainConfig

TICKETS = [("unstructured", 0.5), ("unstructured", 0.05), ("nm:2:4", None), ("channel", 0.5), ("channel", 0.2)]


def sizes(out: Path) -> list[dict]:
    rows = []
    for arch in ("lenet_300_100", "conv6"):
        for structure, density in TICKETS:
            config = resolve(SearchConfig(arch=arch, dataset="mnist-5k", structure=structure, density=density,
                                          out=str(out), train=TrainConfig(iterations=1, batch_size=64)))
            result = search(config)
            row = {"arch": arch, "structure": structure, "density": config.density,
                   "weights_density": result.result["density"]}
            for fmt in EXPORT_FORMATS:
                if fmt == "compact-dense" and structure != "channel":
                    continue
                info = export_run(Path(result.run_dir), fmt, Path(result.run_dir) / "export" / f"{fmt}.safetensors",
                                  force=True)
                row[fmt] = info["bytes"]
                row["float32"] = info["float32_state_dict_bytes"]
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    formats = [f for f in EXPORT_FORMATS]
    lines = ["| arch | structure | density (weights) | " + " | ".join(f"`{f}`" for f in formats) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in formats) + " |"]
    for r in rows:
        cells = []
        for f in formats:
            cells.append(f"{r[f]:,} ({r['float32'] / r[f]:.1f}x)" if f in r else "n/a")
        asked = f"{r['density']:g}" if r["structure"] != "channel" else f"channels {r['density']:g}"
        lines.append(f"| {r['arch']} | {r['structure']} | {asked} ({r['weights_density']:.3f}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="Folder for the runs [default: a temporary one].")
    parser.add_argument("--markdown", default=None, help="Also write the table to this file.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        table = markdown(sizes(Path(args.out or tmp)))
    print(table)
    if args.markdown:
        command = "python scripts/export_sizes.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.markdown).write_text(f"`{command.strip()}`: bytes of each export (in brackets: how many times "
                                       f"smaller than the float32 state dict)\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
