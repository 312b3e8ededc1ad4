
import pytest
import torch

from supermask import SearchConfig, TrainConfig, search
from supermask.errors import SupermaskError
from supermask.runs import RunDir
from supermask.training import lr_factor
from supermask.tickets import load_masks


def test_cosine_warmup_and_step_schedules():
    cos = TrainConfig(schedule="cosine", warmup_epochs=1)
    assert lr_factor(0, 100, 10, cos) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, cos) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, cos) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, cos) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, cos) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(schedule="step", milestones=(2, 4), gamma=0.1)
    assert [lr_factor(s, 60, 10, step) for s in (0, 19, 20, 40)] == pytest.approx([1, 1, 0.1, 0.01])
    assert lr_factor(37, 60, 10, TrainConfig(schedule="constant")) == 1.0


@pytest.mark.parametrize("field,value", [("epochs", 0), ("epochs", -1), ("batch_size", 0), ("lr", 0.0),
                                         ("lr", float("nan")), ("optimizer", "rmsprop"), ("schedule", "linear"),
                                         ("weight_decay", -1.0), ("iterations", 0), ("label_smoothing", 1.0)])
def test_bad_training_values_are_refused(field, value):
    with pytest.raises(SupermaskError):
        TrainConfig(**{field: value}).validate()


def _config(tmp_path, **kw):
    train = kw.pop("train", TrainConfig(epochs=2, batch_size=500))
    return SearchConfig(arch="lenet_300_100", out=str(tmp_path), device="cpu", train=train, **kw)


def test_search_run_directory_holds_everything(tmp_path):
    result = search(_config(tmp_path, density=0.3))
    run = RunDir(result.run_dir)
    assert result.run_dir.parent.parent.name == "lenet_300_100-mnist-5k"
    assert result.run_dir.name == "seed-0"
    config = __import__("json").loads(run.config_path.read_text())
    assert config["train"]["lr"] == 0.1 and config["density"] == 0.3  # every default written out
    metrics = run.read_metrics()
    assert [(m["epoch"], m["split"]) for m in metrics] == [(0, "val"), (0, "test"), (1, "val"), (1, "test"),
                                                           (2, "val"), (2, "test")]
    assert all({"step", "epoch", "split", "loss", "accuracy", "density", "lr", "seconds"} <= set(m) for m in metrics)
    r = run.read_result()
    assert r["status"] == "finished" and r["density"] == pytest.approx(0.3, abs=1e-3)
    assert set(r["density_per_layer"]) == {"1.weight", "3.weight", "5.weight"}
    assert r["initial_test_accuracy"] < 0.35 < r["test_accuracy"]  # untrained mask near chance; trained far above
    best = max((m for m in metrics if m["split"] == "val" and m["epoch"] > 0), key=lambda m: m["accuracy"])
    assert r["best_epoch"] == best["epoch"]
    test_at_best = next(m for m in metrics if m["split"] == "test" and m["epoch"] == best["epoch"])
    assert r["test_accuracy"] == test_at_best["accuracy"]  # reported, never selected on
    masks = load_masks(run.ticket_dir / "mask.safetensors")
    assert set(masks) == set(r["density_per_layer"])
    assert masks["1.weight"].float().mean().item() == pytest.approx(0.3, abs=1e-3)
    assert run.checkpoint_path.exists()


def test_finished_run_is_skipped(tmp_path):
    first = search(_config(tmp_path))
    again = search(_config(tmp_path))
    assert again.skipped and not first.skipped
    assert again.result == first.result


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    full = search(_config(tmp_path / "a", train=TrainConfig(epochs=3, batch_size=500)))
    # Interrupted run: train 3 epochs but stop after the first checkpoint, then resume.
    cfg = _config(tmp_path / "b", train=TrainConfig(epochs=3, batch_size=500))

    class Stop(Exception):
        pass

    from supermask.training import Callback

    class KillAfterFirstEpoch(Callback):
        def after_step(self, state, loss, correct, count):
            if state.epoch == 1 and state.step == state.steps_per_epoch + 2:
                raise Stop

    with pytest.raises(Stop):
        search(cfg, callbacks=[KillAfterFirstEpoch()])
    run = cfg.run_dir()
    assert run.checkpoint_path.exists() and not run.is_finished()
    resumed = search(cfg)
    a, b = full.result, resumed.result
    for key in ("test_accuracy", "best_val_accuracy", "last_test_accuracy", "density", "best_epoch", "steps"):
        assert a[key] == b[key], key
    ma = load_masks(full.run_dir / "ticket" / "mask.safetensors")
    mb = load_masks(resumed.run_dir / "ticket" / "mask.safetensors")
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    strip = lambda ms: [{k: v for k, v in m.items() if k != "seconds"} for m in ms]  # noqa: E731
    assert strip(RunDir(full.run_dir).read_metrics()) == strip(run.read_metrics())


def test_iterations_stop_mid_epoch(tmp_path):
    result = search(_config(tmp_path, train=TrainConfig(epochs=5, iterations=3, batch_size=500)))
    assert result.result["steps"] == 3 and result.result["epochs"] == 1


def test_global_scope_search_keeps_total_density(tmp_path):
    r = search(_config(tmp_path, scope="global", density=0.2)).result
    assert r["density"] == pytest.approx(0.2, abs=1e-4)
    assert len({round(v, 3) for v in r["density_per_layer"].values()}) > 1


def test_dense_baseline_trains_weights_in_the_same_run_format(tmp_path):
    from supermask.dense import DenseConfig, train_dense

    result = train_dense(DenseConfig(arch="lenet_300_100", out=str(tmp_path), device="cpu",
                                     train=TrainConfig(epochs=2, batch_size=500, lr=0.05)))
    r = result.result
    assert result.run_dir.parts[-4] == "train"
    assert r["method"] == "dense" and r["density"] == 1.0
    assert r["test_accuracy"] > 0.8 > r["initial_test_accuracy"]
    assert not (result.run_dir / "ticket").exists()
    assert {m["split"] for m in RunDir(result.run_dir).read_metrics()} == {"val", "test"}
