"""What a few tiny runs of every engine write, as the test of pinned outputs compares it.

``python tests/pinned_runs.py > tests/pins/run_outputs.json`` regenerated the pins, once, at
0a7db55 (before the run-stage refactor); rerun it only in a commit that changes results on
purpose and says so.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

CASES = {
    "search": ["search", "--arch", "lenet_300_100", "--density", "0.1"],
    "bernoulli": ["search", "--arch", "lenet_300_100", "--method", "bernoulli"],
    "train": ["train", "--arch", "lenet_300_100"],
    "imp": ["imp", "--arch", "lenet_300_100", "--levels", "1", "--control", "none,random-prune"],
    "imp-eb-channel": ["imp", "--arch", "vgg11", "--early-bird", "channel", "--width", "0.125", "--eb-window", "2"],
    "prune": ["prune", "--arch", "lenet_300_100", "--method", "snip"],
}
EXECUTION = ["--iterations", "4", "--batch-size", "256", "--quiet", "--device", "cpu"]


def outputs(args: list[str], root: Path) -> dict:
    """Run ``args`` into ``root``; the files it wrote and, per trained run, its accuracy, the
    checksum of its ticket's state and the keys of its result."""
    from supermask.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main([*args, *EXECUTION, "--out", str(root)])
    if code != 0:
        raise RuntimeError(f"{args}: exit {code}")
    runs = {}
    for path in sorted(root.rglob("result.json")):
        result = json.loads(path.read_text())
        key = str(path.parent.relative_to(root))
        if "levels" in result:
            runs[key] = {"levels": [row["test_accuracy"] for row in result["levels"]], "keys": sorted(result)}
            continue
        meta = json.loads((path.parent / "ticket" / "ticket.json").read_text())
        runs[key] = {"test_accuracy": result["test_accuracy"], "state_checksum": meta["state_checksum"],
                     "keys": sorted(result), "ticket_keys": sorted(meta)}
    files = sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file() and f.name != "lock")
    return {"runs": runs, "files": files}


if __name__ == "__main__":
    pins = {}
    for name, args in CASES.items():
        with tempfile.TemporaryDirectory() as folder:
            pins[name] = outputs(args, Path(folder))
    json.dump(pins, sys.stdout, indent=1, sort_keys=True)
    print()
