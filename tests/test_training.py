
import pytest
import torch

from supermask import SearchConfig, TrainConfig, search
from supermask.errors import SupermaskError
from supermask.runs import RunDir
from supermask.training import lr_factor
from supermask.ticket_files import load_masks
from supermask.resolved import resolve


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
        resolve(TrainConfig(**{field: value}))


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
    r = run.read_result()
    # the test split before training and, at the end, for the last and the best-validation networks
    tested = sorted({0, r["best_epoch"], 2})
    assert [(m["epoch"], m["split"]) for m in metrics] == [(0, "val"), (0, "test"), (1, "val"), (2, "val"),
                                                           *[(e, "test") for e in tested if e]]
    assert all({"step", "epoch", "split", "loss", "accuracy", "density"} <= set(m) for m in metrics)
    assert all({"lr", "seconds"} <= set(m) for m in metrics if m["split"] == "val")
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


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, capsys):
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
    from supermask.training import ProgressBar

    capsys.readouterr()
    resumed = search(cfg, callbacks=[ProgressBar("probe", plain=True)])
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "probe: resuming from step 8 of 24 (epoch 1, batch 0)"  # its last checkpoint
    a, b = full.result, resumed.result
    for key in ("test_accuracy", "best_val_accuracy", "last_test_accuracy", "density", "best_epoch", "steps"):
        assert a[key] == b[key], key
    ma = load_masks(full.run_dir / "ticket" / "mask.safetensors")
    mb = load_masks(resumed.run_dir / "ticket" / "mask.safetensors")
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    strip = lambda ms: [{k: v for k, v in m.items() if k != "seconds"} for m in ms]  # noqa: E731
    assert strip(RunDir(full.run_dir).read_metrics()) == strip(run.read_metrics())


class _SpoilLastEpoch:
    """Scores drawn anew at every step of the third epoch (a fixed generator: the same in every run),
    so the last network is worse than an earlier one and the best-validation epoch is not the last."""

    def __new__(cls):
        from supermask.training import Callback

        class Spoil(Callback):
            def after_step(self, state, loss, correct, count):
                if state.epoch == 2:
                    g = torch.Generator().manual_seed(state.step)
                    for name, p in state.model.named_parameters():
                        if name.endswith("scores"):
                            p.data.copy_(torch.randn(p.shape, generator=g))

        return Spoil()


@pytest.mark.parametrize("selection", ["best-val", "last"])
def test_the_test_split_measured_at_the_end_gives_the_results_of_measuring_it_every_epoch(tmp_path, selection):
    def run(every):
        train = TrainConfig(epochs=3, batch_size=500, selection=selection, test_every_epoch=every)
        return search(_config(tmp_path / str(every), density=0.3, train=train), callbacks=[_SpoilLastEpoch()])

    end, every = run(False), run(True)
    assert end.result["best_epoch"] != end.result["epochs"]  # the spoiled last epoch: two networks to test
    for key in ("test_accuracy", "best_test_accuracy", "last_test_accuracy", "initial_test_accuracy",
                "val_accuracy", "selected_epoch", "density"):
        assert end.result[key] == every.result[key], key
    masks = [load_masks(r.run_dir / "ticket" / "mask.safetensors") for r in (end, every)]
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    metrics = [RunDir(r.run_dir).read_metrics() for r in (end, every)]
    tests = [[(m["step"], m["accuracy"]) for m in ms if m["split"] == "test"] for ms in metrics]
    assert [m for m in metrics[0] if m["split"] == "val"] != []
    assert len(tests[1]) == 4 and len(tests[0]) == 3  # epochs 0-3 against epoch 0, the best and the last
    assert sorted(tests[0]) == [t for t in tests[1] if t[0] in {s for s, _ in tests[0]}]
    assert end.run_dir.parent.name != every.run_dir.parent.name  # another record: another run directory


def test_a_kill_during_the_final_test_resumes_without_duplicate_records(tmp_path):
    from supermask.training import Callback

    class Stop(Exception):
        pass

    class KillInFinalTest(Callback):
        def on_final_test(self, state, records):
            raise Stop  # after the records are appended, before the checkpoint that holds them

    full = search(_config(tmp_path / "a", density=0.3), callbacks=[_SpoilLastEpoch()])
    cfg = _config(tmp_path / "b", density=0.3)
    with pytest.raises(Stop):
        search(cfg, callbacks=[_SpoilLastEpoch(), KillInFinalTest()])
    resumed = search(cfg, callbacks=[_SpoilLastEpoch()])
    strip = lambda ms: [{k: v for k, v in m.items() if k != "seconds"} for m in ms]  # noqa: E731
    assert strip(RunDir(full.run_dir).read_metrics()) == strip(cfg.run_dir().read_metrics())
    assert full.result["test_accuracy"] == resumed.result["test_accuracy"]


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
    from supermask.ticket_files import read_ticket, ticket_state

    masks, meta = read_ticket(result.run_dir / "ticket")  # the trained network, no masks
    assert masks == {} and meta["engine"] == "train" and meta["selected_epoch"] == r["selected_epoch"]
    assert set(ticket_state(result.run_dir)) == set(torch.load(result.run_dir / "checkpoint.pt")["model"])
    assert {m["split"] for m in RunDir(result.run_dir).read_metrics()} == {"val", "test"}


def _same_training(a: RunDir, b: RunDir, tol=0.0):
    strip = lambda ms: [{k: v for k, v in m.items() if k != "seconds"} for m in ms]  # noqa: E731
    ma, mb = strip(a.read_metrics()), strip(b.read_metrics())
    assert len(ma) == len(mb)
    for x, y in zip(ma, mb):
        for key in x:
            assert x[key] == (pytest.approx(y[key], rel=tol, abs=tol) if isinstance(x[key], float) else y[key]), key


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_cuda_only_execution_options_are_refused_where_they_cannot_run(tmp_path, capsys):
    """A config records what ran: bf16/16 precision and channels-last are refused on the CPU (a run
    would train in float32 and still record them), in one line, before anything is written."""
    from supermask.cli import main
    from supermask.resolved import resolve

    with pytest.raises(SupermaskError, match="trains in float32"):
        resolve(_config(tmp_path, train=TrainConfig(epochs=1, batch_size=500, precision="bf16")))
    with pytest.raises(SupermaskError, match="channels-last applies on CUDA only"):
        resolve(_config(tmp_path, channels_last=True))
    for option in (["--precision", "16"], ["--channels-last"]):
        code = main(["search", "--arch", "lenet_300_100", *option, "--out", str(tmp_path / "runs")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "CUDA" in err and not (tmp_path / "runs").exists()


def test_default_precision_keeps_the_hash_of_runs_written_before_it_existed(tmp_path):
    from supermask.runs import config_dict, config_hash

    config = _config(tmp_path)
    assert config_hash(config) != config_hash(_config(tmp_path, train=TrainConfig(precision="16")))
    run = config.run_dir()
    old = config_dict(config)
    del old["train"]["precision"]  # a config.json written before the field existed
    run.path.mkdir(parents=True)
    import json
    run.config_path.write_text(json.dumps(old))
    run.prepare(config_dict(config))  # accepted as the same config


def test_compiled_training_matches_eager(tmp_path):
    eager = search(_config(tmp_path / "eager", train=TrainConfig(epochs=1, batch_size=500)))
    compiled = search(_config(tmp_path / "compiled", train=TrainConfig(epochs=1, batch_size=500), compile=True))
    assert compiled.run_dir.parts[-2] == eager.run_dir.parts[-2]  # how it runs is not in the hash
    _same_training(RunDir(eager.run_dir), RunDir(compiled.run_dir), tol=1e-4)


def test_nan_loss_stops_the_run_and_marks_it_failed(tmp_path):
    from supermask.errors import TrainingDiverged
    from supermask.training import Callback

    class Poison(Callback):  # corrupt the frozen weights after step 10: the loss of step 11 is NaN
        def after_step(self, state, loss, correct, count):
            if state.step == 10:
                for p in state.model.parameters():
                    p.data.fill_(float("nan"))

    cfg = _config(tmp_path, train=TrainConfig(epochs=3, batch_size=500))  # 8 steps an epoch
    run = cfg.run_dir()
    with pytest.raises(TrainingDiverged, match=r"at step 11 \(epoch 2\); last good checkpoint: .*checkpoint.pt"):
        search(cfg, callbacks=[Poison()])
    assert not run.is_finished() and not run.lock_path.exists()
    status = run.read_status()
    assert status["status"] == "failed" and status["step"] == 11
    assert status["checkpoint"] == str(run.checkpoint_path)
    assert torch.load(run.checkpoint_path, weights_only=True)["step"] == 8  # the epoch-1 checkpoint, intact


def test_tensorboard_scalars_can_be_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = search(_config(tmp_path, density=0.3, tensorboard=True, train=TrainConfig(epochs=2, batch_size=500)))
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/accuracy", "test/loss", "density/overall", "density/1.weight",
            "mask/flipped"} <= tags
    assert len(events.Scalars("train/loss")) == 16  # every step of 2 epochs x 8 steps
    val = [e.value for e in events.Scalars("val/accuracy")]
    metrics = [m["accuracy"] for m in RunDir(result.run_dir).read_metrics() if m["split"] == "val"]
    assert val == pytest.approx(metrics)
    tests = sorted((m["step"], m["accuracy"]) for m in RunDir(result.run_dir).read_metrics() if m["split"] == "test")
    assert len(tests) >= 2 and sorted((e.step, e.value) for e in events.Scalars("test/accuracy")) == [
        (step, pytest.approx(acc)) for step, acc in tests]  # before training, and the final test
    assert events.Scalars("density/overall")[-1].value == pytest.approx(0.3, abs=1e-3)
    flips = [e.value for e in events.Scalars("mask/flipped")]
    assert len(flips) == 2 and all(0 < f < 1 for f in flips)  # the strong ticket's mask moves each epoch


def test_scores_turning_non_finite_fail_the_run_and_compare_leaves_it_out(tmp_path, capsys):
    import json

    from supermask.cli import main
    from supermask.report import collect

    args = ["search", "--arch", "lenet_300_100", "--epochs", "2", "--batch-size", "500", "--lr", "1e38",
            "--device", "cpu", "-q", "--out", str(tmp_path)]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "non-finite" in err, err
    (status,) = tmp_path.rglob("status.json")
    assert json.loads(status.read_text())["status"] == "failed"
    assert not list(tmp_path.rglob("result.json")) and not list(tmp_path.rglob("ticket"))
    found = collect([tmp_path])
    assert not found.points and any("failed" in p and "not counted" in p for p in found.problems)


def test_non_finite_schedule_values_are_refused():
    with pytest.raises(SupermaskError, match="milestones must be finite"):
        resolve(TrainConfig(schedule="step", milestones=(float("nan"), 5.0)))
    with pytest.raises(SupermaskError, match="gamma must be a positive number"):
        resolve(TrainConfig(gamma=float("nan")))


def test_an_absurd_imp_plan_is_refused_with_the_number_it_implies():
    from supermask_imp import IMPConfig

    with pytest.raises(SupermaskError, match="this plan runs 3096 pruning levels"):
        resolve(IMPConfig.for_arch("lenet_300_100", target_density=1e-300, scope="global"))


def test_tensorboard_on_a_finished_run_writes_its_evaluations_from_the_metrics(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from supermask.cli import main

    args = ["imp", "--arch", "lenet_300_100", "--levels", "1", "--epochs", "1", "--batch-size", "500", "-q",
            "--device", "cpu", "--out", str(tmp_path)]
    assert main(args) == 0 and not list(tmp_path.rglob("tensorboard"))
    assert main([*args, "--tensorboard"]) == 0
    assert "already finished" in capsys.readouterr().out
    folders = sorted(tmp_path.rglob("tensorboard"))
    assert [f.parent.name for f in folders] == ["level-0", "level-1"]
    for folder in folders:
        events = EventAccumulator(str(folder))
        events.Reload()
        metrics = RunDir(folder.parent).read_metrics()
        for split in ("val", "test"):
            logged = [(e.step, e.value) for e in events.Scalars(f"{split}/accuracy")]
            assert logged == [(m["step"], pytest.approx(m["accuracy"])) for m in metrics if m["split"] == split]
        assert "train/loss" not in events.Tags()["scalars"]  # not in metrics.jsonl: not invented
    before = [f.stat().st_mtime_ns for f in folders[0].iterdir()]
    assert main([*args, "--tensorboard"]) == 0  # written once
    assert [f.stat().st_mtime_ns for f in folders[0].iterdir()] == before


class _FakeWandb:
    """What the logger asks of ``wandb``, recorded (the real package's offline files are checked below)."""

    def __init__(self):
        self.runs = []

    def init(self, **kwargs):
        run = type("Run", (), {})()
        run.kwargs, run.logged, run.finished, run.summary = kwargs, [], False, {}
        run.log = lambda values, step: run.logged.append((step, dict(values)))
        run.finish = lambda: setattr(run, "finished", True)
        self.runs.append(run)
        return run


def test_the_wandb_logger_logs_every_step_and_evaluation_under_the_runs_name(tmp_path, monkeypatch, capsys):
    import json
    import sys

    from supermask.cli import main

    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    args = ["imp", "--arch", "lenet_300_100", "--levels", "1", "--epochs", "1", "--batch-size", "500", "-q",
            "--device", "cpu", "--out", str(tmp_path), "--wandb", "tickets"]
    assert main(args) == 0
    assert len(fake.runs) == 2 and all(r.finished for r in fake.runs)  # one W&B run per level
    for run in fake.runs:
        kwargs = run.kwargs
        level_dir = tmp_path / kwargs["name"]
        assert kwargs["project"] == "tickets" and level_dir.name.startswith("level-")
        assert kwargs["group"] == str(level_dir.parent.relative_to(tmp_path))
        assert kwargs["config"] == json.loads((level_dir / "config.json").read_text())
        steps = [step for step, values in run.logged if "train/loss" in values]
        assert steps == list(range(1, 9))  # 4,000 images at batch 500: 8 steps
        metrics = RunDir(level_dir).read_metrics()
        logged_val = [(step, v["val/accuracy"]) for step, v in run.logged if "val/accuracy" in v]
        assert logged_val == [(m["step"], m["accuracy"]) for m in metrics if m["split"] == "val"]
        final_tests = [m for m in metrics if m["split"] == "test" and m["step"] > 0]  # measured at the end
        assert final_tests and run.summary == {
            **{f"test/accuracy@{m['step']}": m["accuracy"] for m in final_tests},
            **{f"test/loss@{m['step']}": m["loss"] for m in final_tests}}


def test_wandb_offline_writes_the_run_beside_its_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb")  # the dev extra installs it
    from supermask.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["search", "--arch", "lenet_300_100", "--iterations", "3", "--batch-size", "500", "-q", "--device",
                 "cpu", "--out", str(tmp_path), "--wandb", "tickets"]) == 0
    (log,) = tmp_path.rglob("offline-run-*/run-*.wandb")
    assert log.parent.parent.parent.name == "seed-0" and log.parent.parent.name == "wandb"
    data = log.read_bytes()
    assert b"train/loss" in data and b"val/accuracy" in data and b"tickets" in data
