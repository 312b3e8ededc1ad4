"""The run stage (supermask.stage) and the engine registry (supermask.engines): one lifecycle
for every kind of run, and dispatch that never branches on an engine's name."""

import json
import logging

import pytest
import torch
from torch import nn

from supermask import SearchConfig, TrainConfig, resolve
from supermask.configs import identified, load_data
from supermask.engines import ENGINES, Engine, engine, engine_for, engine_of_run
from supermask.registry import Registry
from supermask.resolved import FrozenConfigError, is_resolved
from supermask.runs import RunDir, config_dict
from supermask.stage import Stage, run_stage

TINY = TrainConfig(iterations=2, batch_size=500)


def _stage(run, record, built, **kw):
    def build():
        built.append(1)
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    return Stage(run, record, build, {"method": "probe"}, **kw)


def test_a_stage_writes_its_files_in_order_and_a_finished_one_is_skipped_without_building(tmp_path):
    config = identified(resolve(SearchConfig(arch="lenet_300_100", train=TINY, out=str(tmp_path))),
                        load_data(resolve(SearchConfig(arch="lenet_300_100")))[0])
    data, _ = load_data(config)
    run, built, seen = RunDir(tmp_path / "stage"), [], []

    def finish(row, summary):
        seen.append(json.loads((run.path / "status.json").read_text())["status"])  # result not written yet
        assert not run.is_finished()
        row["extra"] = summary.steps

    done = run_stage(config, data, _stage(run, {"k": 1}, built, keep_start="start.safetensors", finish=finish))
    assert not done.skipped and built == [1] and seen == ["running"]
    assert json.loads((run.path / "status.json").read_text())["status"] == "finished"
    result = json.loads((run.path / "result.json").read_text())
    assert result["extra"] == 2 and result["method"] == "probe" and result["steps"] == 2
    meta = json.loads((run.ticket_dir / "ticket.json").read_text())
    assert meta["state_checksum"] and (run.ticket_dir / "model.safetensors").exists()
    assert (run.ticket_dir / "start.safetensors").exists()  # the weights it started from, kept
    again = run_stage(config, data, _stage(run, {"k": 1}, built))
    assert again.skipped and built == [1] and again.result["test_accuracy"] == result["test_accuracy"]
    with pytest.raises(Exception, match="config"):
        run_stage(config, data, _stage(run, {"k": 2}, built))  # another config in a finished directory


def test_a_model_that_cannot_be_built_writes_nothing(tmp_path):
    config = resolve(SearchConfig(arch="lenet_300_100", train=TINY, out=str(tmp_path)))
    data, _ = load_data(config)
    run = RunDir(tmp_path / "stage")

    def build():
        raise ValueError("no model")

    with pytest.raises(ValueError):
        run_stage(config, data, Stage(run, {}, build, {}))
    assert not run.path.exists()


def test_resolve_once_frozen_and_idempotent(caplog):
    with caplog.at_level(logging.WARNING):
        config = resolve(SearchConfig(arch="lenet_300_100", method="bernoulli", density=0.05))
        assert resolve(config) is config and is_resolved(config)
    assert sum("bernoulli starts its masks" in r.getMessage() for r in caplog.records) == 1
    assert config.init == "xavier-normal" and config.train.lr == 100.0  # the method's defaults
    with pytest.raises(FrozenConfigError):
        config.density = 0.5
    with pytest.raises(FrozenConfigError):
        config.train.lr = 1.0
    import dataclasses

    other = dataclasses.replace(config, seed=1)
    assert not is_resolved(other) and resolve(other).seed == 1


def test_a_bernoulli_run_from_the_command_line_warns_once(tmp_path, capsys):
    from supermask.cli import main

    code = main(["search", "--arch", "lenet_300_100", "--method", "bernoulli", "--density", "0.05",
                 "--iterations", "1", "--batch-size", "500", "--out", str(tmp_path), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 and err.count("bernoulli starts its masks") == 1


def test_engines_are_found_by_config_and_by_run_and_refuse_duplicates():
    from supermask.dense import DenseConfig
    from supermask_imp import IMPConfig, PruneConfig

    for config, name, kind in ((SearchConfig(), "search", "strong"), (DenseConfig(), "train", "weak"),
                               (IMPConfig(), "imp", "weak"), (PruneConfig(), "prune", "weak")):
        found = engine_for(config)
        assert found.name == name and found.kind == kind and isinstance(config, found.config_type)
    assert engine("stability").kind == "analysis" and not engine("stability").in_comparisons
    assert set(ENGINES.names()) >= {"search", "train", "imp", "prune", "stability"}
    with pytest.raises(ValueError, match="already registered"):
        ENGINES.add("search", engine("search"))
    with pytest.raises(TypeError):
        engine("search").resolve(IMPConfig())


def test_a_new_engine_is_one_registry_entry(tmp_path):
    """A kind of run written in a few lines on the stage: registered, dispatched by the CLI's
    machinery (run, label) and found again from its run directory."""
    import dataclasses

    from supermask.configs import ExperimentConfig
    from supermask.stage import run_single

    @dataclasses.dataclass
    class ProbeConfig(ExperimentConfig):
        ENGINE = "probe-engine"

    def run(config, callbacks=()):
        build = lambda spec, data: nn.Sequential(nn.Flatten(), nn.Linear(784, spec.num_classes))  # noqa: E731
        return run_single(config, build, callbacks=callbacks, result_fields={"method": "probe"})

    ENGINES.add("probe-engine", Engine("probe-engine", ProbeConfig, run, lambda c: "probe", lambda d: None,
                                       kind="weak"))
    try:
        config = ProbeConfig(arch="lenet_300_100", train=TINY, out=str(tmp_path))
        result = engine_for(config).run(resolve(config), [])
        assert engine_of_run(result.run_dir).name == "probe-engine"
        assert "probe-engine/lenet_300_100-mnist-5k" in str(result.run_dir)
    finally:
        ENGINES._items.pop("probe-engine")


def test_registry_refuses_duplicates():
    registry = Registry("thing")
    registry.add("a", 1)
    with pytest.raises(ValueError):
        registry.add("a", 2)


def test_config_dict_of_a_resolved_config_has_no_private_fields():
    assert "_resolved" not in json.dumps(config_dict(resolve(SearchConfig())))
