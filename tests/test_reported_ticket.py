"""The ticket is the network reported: what ticket/ holds and every export writes re-evaluates to
the run's test accuracy exactly; status.json ends finished or failed; files honour the umask."""

import json
import os
import stat

import pytest
from safetensors.torch import load_file

from supermask import SearchConfig, TrainConfig, search
from supermask.data import load_dataset, make_loader
from supermask.models import DENSE, InputSpec, create_model, masked_layer_types
from supermask.runs import RunDir
from supermask.exports import export_run, load_ticket, read_provenance
from supermask.training import evaluate
from supermask_imp import IMPConfig, run_imp


def _test_accuracy(model):
    """Accuracy on the test split with the loader the training loop evaluates with (batch 256)."""
    data = load_dataset("mnist-5k")
    return evaluate(model, make_loader(data.test, data.info, 256, train=False, device="cpu"))[1]


@pytest.fixture(scope="module")
def edge_popup(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    # On these settings the best validation epoch (5) is not the last (6): the two networks differ.
    return search(SearchConfig(arch="lenet_300_100", out=str(out), device="cpu", density=0.5,
                               train=TrainConfig(epochs=6, batch_size=250, lr=0.1)))


@pytest.fixture(scope="module")
def imp(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run_imp(IMPConfig.for_arch("lenet_300_100", out=str(out), device="cpu", levels=1,
                                      train=TrainConfig(epochs=5, batch_size=250, optimizer="adam", lr=1.2e-3)))


def test_edge_popup_exports_re_evaluate_to_the_reported_accuracy(edge_popup, tmp_path):
    r = edge_popup.result
    assert r["selection"] == "best-val" and r["selected_epoch"] < r["epochs"]  # the case that used to differ
    assert r["test_accuracy"] != r["last_test_accuracy"]
    export_run(edge_popup.run_dir, "state-dict", tmp_path / "sd.safetensors")
    plain = create_model("lenet_300_100", InputSpec(1, 28, 10), DENSE, bias=False)  # a strong ticket's: no biases
    plain.load_state_dict(load_file(tmp_path / "sd.safetensors"))
    assert _test_accuracy(plain) == r["test_accuracy"]
    export_run(edge_popup.run_dir, "ticket", tmp_path / "t.ticket")
    assert _test_accuracy(load_ticket(tmp_path / "t.ticket")) == r["test_accuracy"]
    provenance = read_provenance(tmp_path / "sd.safetensors")
    assert provenance["selected_epoch"] == r["selected_epoch"] and provenance["test_accuracy"] == r["test_accuracy"]
    assert provenance["config_hash"] == r["config_hash"] and provenance["input_shape"] == [1, 28, 28]
    assert provenance["normalization"] == {"mean": [0.1307], "std": [0.3081]} and provenance["num_classes"] == 10
    assert {"supermask_version", "torch_version"} <= set(provenance)


def test_the_ticket_mask_is_the_selected_epochs_mask_not_the_last(edge_popup):
    import torch

    from supermask.ticket_files import load_masks

    run = RunDir(edge_popup.run_dir)
    ticket = load_masks(run.ticket_dir / "mask.safetensors")
    last = torch.load(run.checkpoint_path, weights_only=True)["model"]  # the final epoch's scores
    name = next(iter(ticket))
    k = ticket[name].sum().item()
    last_scores = last[name[: -len("weight")] + "scores"].abs().flatten()
    last_mask = torch.zeros_like(last_scores, dtype=torch.uint8)
    last_mask[last_scores.topk(int(k)).indices] = 1
    assert not torch.equal(last_mask.view_as(ticket[name]), ticket[name])


def test_imp_level_export_re_evaluates_to_the_reported_accuracy(imp, tmp_path):
    level = imp.run_dir / "level-1"
    r = RunDir(level).read_result()
    assert r["selected_epoch"] < r["epochs"]
    export_run(level, "state-dict", tmp_path / "sd.safetensors")
    plain = create_model("lenet_300_100", InputSpec(1, 28, 10), DENSE)
    plain.load_state_dict(load_file(tmp_path / "sd.safetensors"))
    assert _test_accuracy(plain) == r["test_accuracy"]
    masked = create_model("lenet_300_100", InputSpec(1, 28, 10), masked_layer_types())
    masked.load_state_dict(load_file(level / "ticket" / "model.safetensors"))
    assert _test_accuracy(masked) == r["test_accuracy"]


def test_last_epoch_selection_is_a_recorded_setting(tmp_path):
    cfg = SearchConfig(arch="lenet_300_100", out=str(tmp_path), device="cpu", density=0.5,
                       train=TrainConfig(epochs=6, batch_size=250, lr=0.1, selection="last"))
    result = search(cfg)
    r = result.result
    assert r["selected_epoch"] == r["epochs"] and r["test_accuracy"] == r["last_test_accuracy"]
    assert r["best_epoch"] < r["epochs"] and "best_test_accuracy" in r  # both accuracies stay in result.json
    assert json.loads((result.run_dir / "config.json").read_text())["train"]["selection"] == "last"
    best = SearchConfig(arch="lenet_300_100", out=str(tmp_path), device="cpu", density=0.5,
                        train=TrainConfig(epochs=6, batch_size=250, lr=0.1))
    assert best.run_dir().path != result.run_dir  # a different config, a different hash


def test_status_ends_finished_for_every_engine_and_level(edge_popup, imp):
    assert RunDir(edge_popup.run_dir).read_status()["status"] == "finished"
    for path in [imp.run_dir, imp.run_dir / "level-0", imp.run_dir / "level-1"]:
        assert json.loads((path / "status.json").read_text())["status"] == "finished", path


def test_a_failed_run_says_failed_with_the_reason(tmp_path, monkeypatch):
    import supermask.training.loop as loop

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loop, "evaluate", broken)
    cfg = SearchConfig(arch="lenet_300_100", out=str(tmp_path), device="cpu", train=TrainConfig(iterations=2))
    with pytest.raises(OSError):
        search(cfg)
    status = json.loads((cfg.run_dir().status_path).read_text())
    assert status == {"status": "failed", "reason": "[Errno 28] No space left on device"}


def test_files_and_folders_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        cfg = SearchConfig(arch="lenet_300_100", out=str(tmp_path), device="cpu", train=TrainConfig(iterations=2))
        run_dir = search(cfg).run_dir
    finally:
        os.umask(old)
    paths = [p for p in run_dir.rglob("*")] + [run_dir]
    assert len(paths) > 6
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        want = 0o755 if path.is_dir() else 0o644
        assert mode == want, (path, oct(mode))


def test_layer_collapse_is_a_warning_and_a_result_field(tmp_path, caplog):
    import logging

    from supermask_imp import PruneConfig, prune_and_train

    cfg = PruneConfig.for_arch("lenet_300_100", out=str(tmp_path), device="cpu", method="snip", density=0.0005)
    cfg.train = TrainConfig(iterations=2, batch_size=500)
    with caplog.at_level(logging.WARNING):
        r = prune_and_train(cfg).result
    assert r["collapsed_layers"] and all(r["density_per_layer"][n] == 0.0 for n in r["collapsed_layers"])
    assert "layer collapse" in caplog.text
    healthy = search(SearchConfig(arch="lenet_300_100", out=str(tmp_path), device="cpu", density=0.0005,
                                  train=TrainConfig(iterations=2, batch_size=500))).result
    assert healthy["collapsed_layers"] == []  # edge-popup keeps at least one weight per layer


def test_evaluate_command_reproduces_the_reported_accuracy(edge_popup, imp, tmp_path, capsys):
    from supermask.cli import main

    for run_dir, fmt in ((edge_popup.run_dir, "ticket"), (edge_popup.run_dir, "torch-prune"),
                         (imp.run_dir / "level-1", "state-dict")):
        out = tmp_path / f"{fmt}.safetensors"
        assert main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0
        capsys.readouterr()
        assert main(["evaluate", str(out)]) == 0
        reported = RunDir(run_dir).read_result()["test_accuracy"]
        printed = capsys.readouterr().out
        assert f"test accuracy {reported:.4f} on mnist-5k (500 examples)" in printed
        assert f"the run reported {reported:.4f} (the same)" in printed, printed


def _with_recipe(path, out, change):
    """A copy of a compact ticket whose recipe is changed by ``change``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    recipe = json.loads(metadata["supermask_ticket"])
    change(recipe)
    metadata["supermask_ticket"] = json.dumps(recipe)
    save_file(tensors, out, metadata=metadata)


def test_a_ticket_whose_weights_do_not_regenerate_is_refused_naming_the_versions(edge_popup, tmp_path, capsys):
    from supermask.cli import main

    export_run(edge_popup.run_dir, "ticket", tmp_path / "t.ticket")

    def other_torch(recipe):
        recipe["weights_checksum"] = "0" * 64  # what another torch's random stream would give
        recipe["torch_version"] = "1.13.0"

    _with_recipe(tmp_path / "t.ticket", tmp_path / "bad.ticket", other_torch)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "bad.ticket")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("supermask: error:") and "Traceback" not in err
    assert "torch 1.13.0" in err and "regenerates other weights" in err
    _with_recipe(tmp_path / "t.ticket", tmp_path / "edited.ticket", lambda r: r.update(seed=r["seed"] + 1))
    assert main(["evaluate", str(tmp_path / "edited.ticket")]) == 2  # same versions: the file was edited
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not regenerate the weights it was made with, with the same versions" in err
    assert "the file was changed after it was written" in err, err
    _with_recipe(tmp_path / "t.ticket", tmp_path / "old.ticket", lambda r: r.pop("weights_checksum"))
    with pytest.raises(Exception, match="records no checksum"):
        load_ticket(tmp_path / "old.ticket")
