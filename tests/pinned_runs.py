"""What a few tiny runs of every engine write, as the test of pinned outputs compares it.

``python tests/pinned_runs.py > tests/pins/run_outputs.json`` regenerated the pins, once, at
0a7db55 (before the run-stage refactor); rerun it only in a commit that changes results on
purpose and says so.

The checksums of the trained states depend on the machine's floating-point kernels (another CPU
gives other last bits, measured: the same accuracies, other checksums), so the pins name the
machine they were written on by :func:`float_environment`, and the checksums are compared only on
a machine whose kernels give the same bits; the files, accuracies and keys are compared everywhere.
Regenerated at c5b862b (the code the first pins held, measured again) on an AMD EPYC (AVX512).
Regenerated for issue 23 (fidelity, round two), which changes results on purpose: the search and
Bernoulli cases (a strong ticket's LeNet has no biases; Bernoulli's Glorot-normal weights) and the
channel early-bird case (BatchNorm γ starts at 0.5); the other cases' files, accuracies and keys
were unchanged (their checksums are of this Intel Xeon: its float environment is another). The
channel early-bird case's level 1 then gained the key ``eb_retrain`` (``--eb-retrain``), nothing else.
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


def float_environment() -> str:
    """16 hex digits of what this machine's float kernels compute for a few training-like steps
    (matrix products, a convolution, SGD): machines that agree here give the runs' bits."""
    import hashlib

    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 784, generator=gen)
    w1 = torch.randn(784, 300, generator=gen, requires_grad=True)
    w2 = torch.randn(300, 10, generator=gen, requires_grad=True)
    conv = torch.randn(8, 1, 3, 3, generator=gen, requires_grad=True)
    digest = hashlib.sha256()
    for _ in range(3):
        image = torch.nn.functional.conv2d(x.view(256, 1, 28, 28), conv, padding=1).mean(1).view(256, 784)
        loss = torch.nn.functional.cross_entropy(torch.relu((x + image) @ w1) @ w2, torch.arange(256) % 10)
        loss.backward()
        with torch.no_grad():
            for t in (w1, w2, conv):
                t -= 0.01 * t.grad
                t.grad = None
        digest.update(loss.detach().numpy().tobytes())
    for t in (w1, w2, conv):
        digest.update(t.detach().numpy().tobytes())
    return digest.hexdigest()[:16]


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
    pins = {"float_environment": float_environment()}
    for name, args in CASES.items():
        with tempfile.TemporaryDirectory() as folder:
            pins[name] = outputs(args, Path(folder))
    json.dump(pins, sys.stdout, indent=1, sort_keys=True)
    print()
