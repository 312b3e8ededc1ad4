"""Crash safety: runs killed with SIGKILL at many points resume to exactly the uninterrupted result."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from supermask.cli import main
from supermask.runs import RunDir, find_runs
from safetensors.torch import load_file

from supermask.ticket_files import load_masks

KILLABLE = str(Path(__file__).with_name("killable.py"))
TIMING = {"seconds", "train_seconds", "wall_seconds"}

SEARCH = ["search", "--arch", "lenet_300_100", "--epochs", "3", "--batch-size", "500", "--density", "0.3",
          "--device", "cpu", "-q", "--checkpoint-every", "3"]  # 8 steps an epoch
IMP = ["imp", "--arch", "lenet_300_100", "--epochs", "2", "--levels", "2", "--batch-size", "500",
       "--device", "cpu", "-q", "--checkpoint-every", "5"]


def run_killable(args, out, kill="none:0"):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, KILLABLE, kill, "--", *args, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    return proc


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def assert_same_runs(reference: Path, resumed: Path):
    """Every run directory under the two roots: identical metrics, masks and results (timing aside)."""
    ref = {r.path.relative_to(reference): r for r in find_runs(reference)}
    got = {r.path.relative_to(resumed): r for r in find_runs(resumed)}
    assert ref.keys() == got.keys() and ref
    for name, a in ref.items():
        b = got[name]
        assert [_strip(m) for m in a.read_metrics()] == [_strip(m) for m in b.read_metrics()], name
        ra, rb = a.read_result(), b.read_result()
        if "levels" in ra:
            assert [_strip(x) for x in ra["levels"]] == [_strip(x) for x in rb["levels"]]
        else:
            assert _strip(ra) == _strip(rb), name
        if a.ticket_dir.exists():
            ma, mb = load_masks(a.ticket_dir / "mask.safetensors"), load_masks(b.ticket_dir / "mask.safetensors")
            assert ma.keys() == mb.keys()
            assert all(torch.equal(ma[k], mb[k]) for k in ma), name
            na, nb = (load_file(r.ticket_dir / "model.safetensors") for r in (a, b))  # the reported network
            assert na.keys() == nb.keys() and all(torch.equal(na[k], nb[k]) for k in na), name
            assert not list(b.path.glob("selected-*")), "a kept selected state outlived its run"
        if a.checkpoint_path.exists():
            sa = torch.load(a.checkpoint_path, weights_only=True)["model"]
            sb = torch.load(b.checkpoint_path, weights_only=True)["model"]
            assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def kill_then_resume(args, out: Path, kills: list[str]) -> int:
    """Kill a run at each point in turn (each in a fresh process resuming the last), then finish it."""
    killed = 0
    for kill in kills:
        proc = run_killable(args, out, kill)
        if proc.returncode == 0:
            break  # the point lay beyond the end of the run: it finished
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        killed += 1
        assert not any(out.rglob("seed-0/result.json")), "a killed run looks finished"
    proc = run_killable(args, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(out.rglob("lock")), "a lock outlived its process"
    return killed


def test_search_killed_mid_epoch_between_epochs_and_mid_write_resumes_exactly(tmp_path):
    assert run_killable(SEARCH, tmp_path / "ref").returncode == 0  # same process setup (threads) as the killed runs
    # mid-epoch (step 4); after epoch 2's metrics, before its checkpoint; inside an atomic write; mid-epoch
    # again; in the test evaluation at the end, after its record and before the checkpoint holding it
    kills = ["step:5", "metrics:2", "replace:3", "step:7", "metrics:2"]
    assert kill_then_resume(SEARCH, tmp_path / "killed", kills) == 5
    assert_same_runs(tmp_path / "ref", tmp_path / "killed")


def test_imp_killed_mid_level_and_between_levels_resumes_exactly(tmp_path):
    assert run_killable(IMP, tmp_path / "ref").returncode == 0
    # level 0 mid-epoch 2; level 0 after its last metrics; level 1 mid-epoch 2; mid-write in level 2
    kills = ["step:12", "metrics:2", "step:20", "replace:12"]
    assert kill_then_resume(IMP, tmp_path / "killed", kills) == 4
    assert_same_runs(tmp_path / "ref", tmp_path / "killed")


GPT = ["--arch", "gpt_tiny", "--dataset", "tinyshakespeare", "--width", "0.25", "--depth", "1", "--context", "32",
       "--batch-size", "2048", "--epochs", "2", "--device", "cpu", "-q", "--checkpoint-every", "2"]  # 16 steps an epoch


@pytest.mark.parametrize("command", ["train", pytest.param("search", marks=pytest.mark.slow)])
def test_a_language_model_killed_mid_epoch_resumes_exactly(tmp_path, command):
    args = [command, *GPT]
    assert run_killable(args, tmp_path / "ref").returncode == 0
    assert kill_then_resume(args, tmp_path / "killed", ["step:6", "metrics:2"]) == 2  # mid-epoch; eval, no checkpoint
    assert_same_runs(tmp_path / "ref", tmp_path / "killed")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["search", "imp"])
def test_ten_random_kills_resume_exactly(tmp_path, command):
    longer = {"search": ["--epochs", "8"], "imp": ["--levels", "4"]}[command]  # room for ten kills
    args = (SEARCH if command == "search" else IMP) + longer
    assert run_killable(args, tmp_path / "ref").returncode == 0
    rng = random.Random(1234)
    kills = [f"{rng.choice(['step', 'step', 'metrics', 'replace'])}:{rng.randint(1, 8)}" for _ in range(10)]
    assert kill_then_resume(args, tmp_path / "killed", kills) == 10
    assert_same_runs(tmp_path / "ref", tmp_path / "killed")


def test_a_live_lock_refuses_a_second_writer_and_a_dead_one_is_taken_over(tmp_path, capsys):
    from supermask.errors import RunLocked
    from supermask.search import SearchConfig

    config = SearchConfig(arch="lenet_300_100", out=str(tmp_path), device="cpu")
    run = config.run_dir()
    with run.lock():
        with pytest.raises(RunLocked, match=f"being written by process {os.getpid()}"):
            with RunDir(run.path).lock():
                pass
        args = ["search", "--arch", "lenet_300_100", "--device", "cpu", "--out", str(tmp_path), "-q"]
        assert main(args) == 2
        assert "is being written by process" in capsys.readouterr().err
    assert not run.lock_path.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run.lock_path.write_text(f"{os.uname().nodename} {int(dead.stdout)}\n")  # a process that is gone
    with run.lock():
        assert run.lock_path.read_text().split()[1] == str(os.getpid())


def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path):
    proc = run_killable(SEARCH, tmp_path / "killed", "step:13")  # killed as step 12 starts
    assert proc.returncode == -signal.SIGKILL
    (run,) = [RunDir(p) for p in (tmp_path / "killed").rglob("seed-0")]
    assert torch.load(run.checkpoint_path, weights_only=True)["step"] == 9  # --checkpoint-every 3
    assert torch.load(run.previous_checkpoint_path, weights_only=True)["step"] == 8  # the end of epoch 1
    run.checkpoint_path.write_bytes(run.checkpoint_path.read_bytes()[:1000])  # truncated
    proc = run_killable(SEARCH, tmp_path / "killed")
    assert proc.returncode == 0, proc.stderr
    assert f"{run.checkpoint_path}: unreadable checkpoint" in proc.stderr and "trying the previous" in proc.stderr
    assert run_killable(SEARCH, tmp_path / "ref").returncode == 0
    assert_same_runs(tmp_path / "ref", tmp_path / "killed")
    assert run.read_status()["status"] == "finished"


def test_many_processes_taking_over_one_stale_lock_never_hold_it_together(tmp_path):
    """A stale lock (its writer gone) and ten processes taking it over at the same moment: their
    holding intervals never overlap (the earlier check-then-unlink takeover let two hold it)."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    script = (
        "import sys, time\n"
        "from supermask.runs import RunDir\n"
        "from supermask.errors import RunLocked\n"
        "start = float(sys.argv[2])\n"
        "while time.time() < start: pass\n"
        "try:\n"
        "    with RunDir(sys.argv[1]).lock():\n"
        "        t0 = time.time(); time.sleep(0.5); print('held', t0, time.time())\n"
        "except RunLocked:\n"
        "    print('refused')\n"
    )
    for trial in range(1):
        run.lock_path.write_text(f"{os.uname().nodename} {int(dead.stdout)}\n")
        start = time.time() + 6.0  # every process imported and waiting by then
        procs = [subprocess.Popen([sys.executable, "-c", script, str(run.path), str(start)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True) for _ in range(10)]
        outcomes = [p.communicate(timeout=120)[0].split() for p in procs]
        held = sorted((float(o[1]), float(o[2])) for o in outcomes if o and o[0] == "held")
        assert held and all(len(o) for o in outcomes), outcomes
        assert all(a[1] <= b[0] for a, b in zip(held, held[1:])), (trial, held)  # one holder at a time
        assert not run.lock_path.exists()


def test_two_ctrl_c_presses_in_quick_succession_end_in_one_line(tmp_path):
    args = [sys.executable, "-m", "supermask.cli", "search", "--arch", "lenet_300_100", "--epochs", "50",
            "--batch-size", "100", "--device", "cpu", "-q", "--out", str(tmp_path)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 60
    while not list(tmp_path.rglob("metrics.jsonl")) and time.time() < deadline:  # training has started
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert err == "supermask: interrupted; run the same command again to resume\n", err  # no blank line
    (status,) = tmp_path.rglob("status.json")
    assert '"interrupted"' in status.read_text()


def _image_folder(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(5)
    for part, n in (("train", 24), ("val", 4)):
        for c, cls in enumerate(("ant", "bee")):
            (root / part / cls).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(80 + 90 * c, 40, (12, 12, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / part / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_image_folder_run_killed_mid_epoch_resumes_exactly(tmp_path, workers):
    data = _image_folder(tmp_path / "images")
    args = ["search", "--arch", "lenet_300_100", "--dataset", f"imagefolder:{data}", "--image-size", "8",
            "--epochs", "2", "--batch-size", "8", "--num-workers", workers, "--checkpoint-every", "2",
            "--device", "cpu", "-q"]  # 43 training images: 6 steps an epoch
    assert run_killable(args, tmp_path / "ref").returncode == 0
    assert kill_then_resume(args, tmp_path / "killed", ["step:4", "step:5"]) == 2  # mid-epoch, twice
    assert_same_runs(tmp_path / "ref", tmp_path / "killed")
