import json

import pytest

from supermask import SearchConfig, TrainConfig
from supermask.errors import RunError
from supermask.runs import RunDir, config_dict, config_hash, find_runs
from supermask.resolved import resolve


def test_default_config_hash_is_pinned():
    # If this changes, every existing run directory is orphaned: change it only on purpose.
    from supermask.configs import identify

    config = identify(resolve(SearchConfig()))  # fingerprints the bundled data
    run = config.run_dir()
    assert config.data_fingerprint == MNIST_5K_FINGERPRINT
    assert config_hash(config) == PINNED_DEFAULT_HASH == run.path.parent.name


def test_image_size_does_not_change_the_hash_of_data_that_ignores_it(caplog):
    base = resolve(SearchConfig())
    given = resolve(SearchConfig(image_size=64))
    assert "image folders only" in caplog.text and given.image_size is None
    assert config_hash(given) == config_hash(base)


def test_hash_ignores_paths_device_and_seed_but_not_results():
    base = config_hash(SearchConfig())
    assert config_hash(SearchConfig(out="elsewhere", device="cpu", data_root="/x", num_workers=3, seed=4)) == base
    assert config_hash(SearchConfig(density=0.3)) != base
    assert config_hash(SearchConfig(train=TrainConfig(lr=0.05))) != base
    assert config_hash(SearchConfig(init="kaiming-normal")) != base


def test_run_refuses_a_directory_of_another_config(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare(config_dict(SearchConfig()))
    run.prepare(config_dict(SearchConfig(out="other")))  # same results: accepted
    with pytest.raises(RunError, match=r"differs in: density, train\.lr"):
        run.prepare(config_dict(SearchConfig(density=0.2, train=TrainConfig(lr=0.3))))


def test_unwritable_output_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="cannot create run directory"):
        RunDir(blocker / "run").prepare({})


def test_metrics_truncation_drops_work_after_the_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    for epoch in range(4):
        run.append_metrics({"epoch": epoch, "step": 10 * epoch, "split": "val"})
    with open(run.metrics_path, "a") as f:
        f.write('{"epoch": 4, "spl')  # a line cut by a kill
    assert len(run.read_metrics()) == 4
    run.truncate_metrics(25)  # a checkpoint mid-way through epoch 3
    assert [m["epoch"] for m in run.read_metrics()] == [0, 1, 2]


def test_damaged_metrics_lines_keep_what_is_valid_and_are_set_aside(tmp_path, caplog):
    run = RunDir(tmp_path)
    lines = [b'{"epoch": 0, "step": 0}', b'{"epoch": 1, "st', b'\xff\xfe not utf-8', b'[1, 2]',
             b'{"epoch": 2, "step": 20}', b'{"epoch": 3, "step": 30}']
    run.metrics_path.write_bytes(b"\n".join(lines) + b"\n")
    assert [m["epoch"] for m in run.read_metrics()] == [0, 2, 3]  # every valid line, after the damage too
    run.truncate_metrics(25)
    assert [m["epoch"] for m in run.read_metrics()] == [0, 2]
    aside = (tmp_path / "metrics.damaged.jsonl").read_bytes().splitlines()
    assert aside == [b'{"epoch": 1, "st', b'\xff\xfe not utf-8', b'[1, 2]']  # nothing lost
    assert "3 damaged line(s) set aside" in caplog.text


def test_find_runs_lists_finished_runs_only(tmp_path):
    for name, finished in (("a", True), ("b", False)):
        run = RunDir(tmp_path / "x" / name)
        run.path.mkdir(parents=True)
        if finished:
            run.write_result({"status": "finished"})
    assert [r.path.name for r in find_runs(tmp_path)] == ["a"]
    assert json.loads((tmp_path / "x" / "a" / "result.json").read_text())["status"] == "finished"
    with pytest.raises(RunError):
        find_runs(tmp_path / "missing")


PINNED_DEFAULT_HASH = "8228bd68f7fe"  # 0.2: train.selection and data_fingerprint joined the config
MNIST_5K_FINGERPRINT = "5e1267f330e0ec89"


def test_a_checkpoint_is_in_place_at_every_instant_of_its_rotation(tmp_path, monkeypatch):
    """A kill at any point of saving leaves checkpoint.pt (old or new): the rotation never moves
    the latest away before the new one is in place."""
    import os

    from supermask.io import load_checkpoint
    from supermask.runs import RunDir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.save_checkpoint({"model": {}, "step": 1})
    present = []

    def watched(fn):
        def call(*args, **kwargs):
            present.append(run.checkpoint_path.exists())
            result = fn(*args, **kwargs)
            present.append(run.checkpoint_path.exists())
            return result
        return call

    monkeypatch.setattr(os, "replace", watched(os.replace))
    monkeypatch.setattr(os, "link", watched(os.link))
    run.save_checkpoint({"model": {}, "step": 2})
    assert len(present) >= 4 and all(present), present
    assert load_checkpoint(run.checkpoint_path)["step"] == 2
    assert load_checkpoint(run.previous_checkpoint_path)["step"] == 1
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]  # no leftovers


def test_temporaries_a_killed_writer_left_are_removed_when_the_run_goes_on(tmp_path):
    from supermask import search

    config = SearchConfig(arch="lenet_300_100", out=str(tmp_path), device="cpu",
                          train=TrainConfig(iterations=2, batch_size=500))
    run = resolve(config)
    from supermask.configs import identified, load_data

    path = identified(run, load_data(run)[0]).run_dir().path
    (path / "ticket").mkdir(parents=True)
    left = [path / ".checkpoint.pt.k1ll3d.tmp", path / "ticket" / ".mask.safetensors.k1ll3d.tmp"]
    for file in left:
        file.write_bytes(b"half a checkpoint")
    kept = path / "notes.tmp"  # not a temporary of ours: kept
    kept.write_text("mine")
    result = search(config)
    assert result.run_dir == path and (path / "result.json").exists()
    assert not any(file.exists() for file in left) and kept.read_text() == "mine"


def test_a_finished_run_keeps_its_final_checkpoint_only_unless_asked(tmp_path, capsys):
    import torch

    from supermask.cli import main

    args = ["imp", "--arch", "lenet_300_100", "--levels", "1", "--epochs", "2", "--batch-size", "500", "-q",
            "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    levels = sorted((tmp_path / "a").rglob("level-*"))
    assert len(levels) == 2 and not list((tmp_path / "a").rglob("checkpoint.prev.pt"))
    for level in levels:  # the final state stays: IMP's next level pruned from it
        result = json.loads((level / "result.json").read_text())
        final = torch.load(level / "checkpoint.pt", weights_only=True)
        assert final["step"] == result["steps"] and final["final"] and "model" in final
        assert not {"optimizer", "rng", "scaler"} & set(final)  # only a resume of training reads them
    assert main([*args, "--out", str(tmp_path / "b"), "--keep-checkpoints"]) == 0
    assert len(list((tmp_path / "b").rglob("checkpoint.prev.pt"))) == 2
    for kept in (tmp_path / "b").rglob("checkpoint.pt"):
        assert {"optimizer", "rng"} <= set(torch.load(kept, weights_only=True))
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "a")]) == 0  # still finished, found as such
    assert "already finished" in capsys.readouterr().out


def test_a_final_checkpoint_is_refused_for_more_training(tmp_path):
    from supermask import SearchConfig, TrainConfig, search
    from supermask.errors import RunError

    cfg = SearchConfig(arch="lenet_300_100", out=str(tmp_path), device="cpu",
                       train=TrainConfig(epochs=1, batch_size=500))
    done = search(cfg)
    run = RunDir(done.run_dir)
    (run.path / "result.json").unlink()
    import torch

    state = torch.load(run.checkpoint_path, weights_only=True)
    state["step"] = 3  # as if the final checkpoint were an unfinished one's
    torch.save(state, run.checkpoint_path)
    with pytest.raises(RunError, match="the final checkpoint of a finished run .* cannot continue training"):
        search(cfg)
