"""DDP through torchrun, on the CPU with gloo and two processes: the same run as one process."""

import json
import os
import subprocess
import sys

import pytest
import torch

from supermask.runs import RunDir, find_runs
from supermask.ticket_files import load_masks

TIMING = {"seconds", "train_seconds", "wall_seconds", "device"}


def _cli(args, out, nproc=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    prefix = [sys.executable, "-m", "supermask"]
    if nproc:
        prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                  "-m", "supermask"]
    proc = subprocess.run(prefix + args + ["--device", "cpu", "--out", str(out), "-q"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def _assert_same_run(a: RunDir, b: RunDir):
    ma, mb = _strip(a.read_metrics()), _strip(b.read_metrics())
    assert len(ma) == len(mb) > 2
    for x, y in zip(ma, mb):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], float):
                assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), key
            else:
                assert x[key] == y[key], key
    masks_a, masks_b = load_masks(a.ticket_dir / "mask.safetensors"), load_masks(b.ticket_dir / "mask.safetensors")
    assert masks_a.keys() == masks_b.keys()
    for name in masks_a:
        assert torch.equal(masks_a[name], masks_b[name]), name


def test_two_process_search_equals_one_process_with_the_same_global_batch(tmp_path):
    # batch 300 over 4,000 training images: 13 full global batches and a ragged one of 100
    args = ["search", "--arch", "lenet_300_100", "--epochs", "2", "--batch-size", "300", "--density", "0.3"]
    _cli(args, tmp_path / "one")
    proc = _cli(args, tmp_path / "two", nproc=2)
    assert proc.stdout.count("finished:") == 1  # only rank 0 reports
    (one,), (two,) = find_runs(tmp_path / "one"), find_runs(tmp_path / "two")
    assert one.path.relative_to(tmp_path / "one") == two.path.relative_to(tmp_path / "two")  # same config hash
    _assert_same_run(one, two)
    assert not two.lock_path.exists()
    ckpt_two = torch.load(two.checkpoint_path, weights_only=True)
    ckpt_one = torch.load(one.checkpoint_path, weights_only=True)
    for name, scores in ckpt_one["model"].items():
        assert torch.allclose(scores, ckpt_two["model"][name], rtol=1e-5, atol=1e-7), name


def test_two_process_imp_equals_one_process(tmp_path):
    args = ["imp", "--arch", "lenet_300_100", "--epochs", "1", "--levels", "1", "--batch-size", "500"]
    _cli(args, tmp_path / "one")
    _cli(args, tmp_path / "two", nproc=2)
    runs_one = {r.path.name: r for r in find_runs(tmp_path / "one")}
    runs_two = {r.path.name: r for r in find_runs(tmp_path / "two")}
    assert set(runs_one) == set(runs_two) == {"level-0", "level-1", "seed-0"}
    for level in ("level-0", "level-1"):
        _assert_same_run(runs_one[level], runs_two[level])
    rows = [json.loads(r.result_path.read_text()) for r in (runs_one["seed-0"], runs_two["seed-0"])]
    assert [row["density"] for row in rows[0]["levels"]] == [row["density"] for row in rows[1]["levels"]]
