"""Instability analysis (supermask.interpolation, supermask_imp.stability): the path and the barrier
against plain computations, copies that differ only in their data order, masks kept along the
path, the midpoint rebuilt by hand, strong tickets' overlap, and exact resume."""

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from supermask.interpolation import alpha_grid, error_barrier, interpolate, path_errors, random_jaccard
from supermask.runs import RunDir
from supermask_imp.stability import StabilityConfig, run_stability


def _config(tmp_path, **kw):
    config = StabilityConfig.for_arch("lenet_300_100", out=str(tmp_path), device="cpu", alphas=3, **kw)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2, batch_size=500))


def test_the_path_and_its_barrier_against_a_hand_interpolation():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    alphas = alpha_grid(5)
    assert alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
    model = nn.Linear(4, 3)
    found = path_errors(model, a.state_dict(), b.state_dict(), alphas, {"test": [(x[:32], y[:32]), (x[32:], y[32:])]})
    by_hand = []
    for alpha in alphas:
        w = (1 - alpha) * a.weight.detach() + alpha * b.weight.detach()
        bias = (1 - alpha) * a.bias.detach() + alpha * b.bias.detach()
        by_hand.append(float(((x @ w.T + bias).argmax(1) != y).float().mean()))
    assert found["test"]["error"] == pytest.approx(by_hand, abs=1e-12)
    assert error_barrier(by_hand) == pytest.approx(100 * (max(by_hand) - (by_hand[0] + by_hand[-1]) / 2))
    assert error_barrier([0.1, 0.1]) == 0.0 and error_barrier([0.1, 0.3, 0.1]) == pytest.approx(20.0)


def test_interpolation_keeps_what_both_hold_equal_exactly():
    a = {"w": torch.tensor([1.0, 0.0]), "mask": torch.tensor([1.0, 0.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 0.0]), "mask": torch.tensor([1.0, 0.0]), "n": torch.tensor(3)}
    mid = interpolate(a, b, 0.3)
    assert torch.equal(mid["mask"], a["mask"]) and torch.equal(mid["n"], a["n"])
    assert mid["w"].tolist() == pytest.approx([1.6, 0.0])
    assert random_jaccard(0.2) == pytest.approx(0.2 / 1.8)


def test_imp_copies_differ_only_in_data_order_and_keep_the_mask_along_the_path(tmp_path):
    from supermask.ticket_files import load_masks, ticket_state
    from supermask.io import read_tensors

    result = run_stability(_config(tmp_path, levels=(1,)))
    (row,) = result.rows
    level = result.run_dir / "k-0" / "level-1"
    a, b = RunDir(level / "copy-0"), RunDir(level / "copy-1")
    start_a, start_b = (read_tensors(r.ticket_dir / "weights.safetensors") for r in (a, b))
    assert all(torch.equal(start_a[k], start_b[k]) for k in start_a)  # the same state, bit for bit
    metrics = [[json.loads(line) for line in r.metrics_path.read_text().splitlines()] for r in (a, b)]
    assert metrics[0][0] == metrics[1][0]  # the same evaluation before the first step
    assert metrics[0][-1]["loss"] != metrics[1][-1]["loss"]  # other batches: other networks
    masks = load_masks(a.ticket_dir / "mask.safetensors")
    assert 0.79 < row["density"] < 0.81 and row["pair"] == [0, 1]
    sa, sb = ticket_state(a.path), ticket_state(b.path)
    for alpha in (0.0, 0.37, 0.5, 1.0):
        state = interpolate(sa, sb, alpha)
        for name, mask in masks.items():
            assert torch.equal(state[name.rsplit(".", 1)[0] + ".weight_mask"], mask.float())
            assert (state[name][~mask.bool()] == 0).all()  # the path stays inside the mask


def test_the_midpoint_barrier_is_the_error_of_the_midpoint_built_by_hand(tmp_path):
    from supermask.data import load_dataset
    from supermask.models import DENSE, InputSpec, create_model
    from supermask.ticket_files import ticket_state

    result = run_stability(_config(tmp_path))
    level = result.run_dir / "k-0" / "level-0"
    pair = json.loads((level / "pair-0.json").read_text())
    sa, sb = ticket_state(level / "copy-0"), ticket_state(level / "copy-1")
    mid = {k: (sa[k] + sb[k]) / 2 for k in sa if not k.endswith("weight_mask")}
    model = create_model("lenet_300_100", InputSpec(1, 28, 10), DENSE)
    model.load_state_dict(mid)
    data = load_dataset("mnist-5k")
    mean, std = data.info.mean[0], data.info.std[0]
    x = (data.test.images.float() / 255.0 - mean) / std if data.test.images.dtype == torch.uint8 else data.test.images
    with torch.no_grad():
        error = float((model.eval()(x).argmax(1) != data.test.labels).float().mean())
    assert pair["weight_path"]["alphas"] == [0.0, 0.5, 1.0]
    assert pair["weight_path"]["test"]["error"][1] == pytest.approx(error, abs=1e-9)
    errors = pair["weight_path"]["test"]["error"]
    assert pair["barrier_test"] == pytest.approx(100 * (max(errors) - (errors[0] + errors[2]) / 2))
    assert result.rows[0]["stable"] == (result.rows[0]["barrier_test"] < 2.0)


def test_strong_tickets_report_their_overlap_and_both_barriers(tmp_path):
    config = _config(tmp_path, subject="search", points=("0", "3it"), density=0.2)
    result = run_stability(config)
    assert [row["k"] for row in result.rows] == ["0", "3it"]
    for row in result.rows:
        assert 0 <= row["overlap"] <= 1 and row["overlap_random"] == pytest.approx(0.2 / 1.8, rel=1e-3)
        assert math.isfinite(row["barrier_test"]) and math.isfinite(row["mask_barrier_test"])
        assert row["density"] == pytest.approx(0.2, abs=1e-3)
    pair = json.loads((result.run_dir / "k-3it" / "level-0" / "pair-0.json").read_text())
    assert set(pair) >= {"score_path", "mask_path", "overlap_layers"} and pair["overlap"] == result.rows[1]["overlap"]
    layers = pair["overlap_layers"]["overlap_per_layer"]
    assert set(layers) == {"1.weight", "3.weight", "5.weight"} and all(0 <= v <= 1 for v in layers.values())
    assert run_stability(config).skipped


def test_an_interrupted_stability_run_resumes_to_the_uninterrupted_result(tmp_path):
    from supermask.training import Callback

    class Stop(Exception):
        pass

    class StopInTheSecondCopy(Callback):
        def __init__(self):
            self.starts = 0

        def on_train_start(self, state):
            self.starts += 1

        def after_step(self, state, loss, correct, count):
            if self.starts == 3 and state.step == state.steps_per_epoch + 1:  # IMP level 0, copy 0, then copy 1
                raise Stop

    full = run_stability(_config(tmp_path / "a"))
    config = _config(tmp_path / "b")
    with pytest.raises(Stop):
        run_stability(config, callbacks=[StopInTheSecondCopy()])
    copy = RunDir(config.run_dir().path / "k-0" / "level-0" / "copy-1")
    assert copy.has_checkpoint() and not copy.is_finished() and not config.run_dir().is_finished()
    resumed = run_stability(config)
    assert resumed.rows == full.rows
    pairs = [json.loads((r / "k-0" / "level-0" / "pair-0.json").read_text()) for r in (full.run_dir, resumed.run_dir)]
    assert pairs[0] == pairs[1]


def test_bad_stability_options_are_one_line(tmp_path, capsys):
    from supermask.cli import main

    for args, message in ((["--points", "0,0"], "distinct"), (["--alphas", "1"], "alphas"),
                          (["--subject", "search", "--levels", "1"], "--levels applies"),
                          (["--levels", "2", "--prune-levels", "1"], "stops before level 2")):
        code = main(["stability", "--arch", "lenet_300_100", *args, "--out", str(tmp_path), "--iterations", "2"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_compare_reports_stability_runs_without_pooling_configs(tmp_path):
    from supermask.report import compare
    from supermask_imp.stability import run_stability

    for seed in (0, 1):
        run_stability(dataclasses.replace(_config(tmp_path / "runs"), seed=seed))
    other = _config(tmp_path / "runs")
    run_stability(dataclasses.replace(other, train=dataclasses.replace(other.train, lr=0.01)))
    text, problems, written = compare([tmp_path / "runs" / "stability"], tmp_path / "report")
    names = {p.name for p in written}
    assert {"stability.md", "stability.csv", "stability_barrier_vs_k.png", "stability_barrier_vs_k.pdf",
            "stability_error_vs_alpha.png", "stability_error_vs_alpha.pdf"} <= names and not problems
    import csv

    rows = list(csv.DictReader((tmp_path / "report" / "stability.csv").read_text().splitlines()))
    assert len(rows) == 2  # one row per config (lr 0.0012 over two seeds; lr 0.01 over one), never pooled
    replicates = sorted(int(row["replicates"]) for row in rows)
    assert replicates == [1, 2] and "lr 0.01" in text and "lr 0.0012" in text


def test_a_finished_imp_run_is_analysed_as_it_is_never_rerun(tmp_path, monkeypatch, capsys):
    from supermask.cli import main
    from supermask.engines import ENGINES, engine
    from supermask.ticket_files import load_masks

    args = ["--arch", "lenet_300_100", "--iterations", "8", "--batch-size", "500", "--out", str(tmp_path), "--quiet"]
    assert main(["imp", "--levels", "2", "--rewind", "3it", "--prune-fraction", "0.5", *args]) == 0
    (imp_run,) = (tmp_path / "imp").glob("*/*/seed-0")
    never = dataclasses.replace(engine("imp"), run=lambda *a, **k: pytest.fail("the IMP run was run again"))
    monkeypatch.setitem(ENGINES._items, "imp", never)
    assert main(["stability", "--imp-run", str(imp_run), "--levels", "2", "--alphas", "3", "--out", str(tmp_path),
                 "--quiet"]) == 0
    (root,) = (tmp_path / "stability").glob("*/*/seed-0")
    copy = root / "k-3it" / "level-2" / "copy-0"
    level = load_masks(imp_run / "level-2" / "ticket" / "mask.safetensors")
    kept = load_masks(copy / "ticket" / "mask.safetensors")
    assert all(torch.equal(level[n], kept[n]) for n in level)  # the run's own level-2 mask
    config = json.loads((root / "config.json").read_text())
    assert config["points"] == ["3it"] and config["train"]["lr"] == 1.2e-3 and config["imp_config_hash"]
    capsys.readouterr()
    assert main(["stability", "--imp-run", str(imp_run), "--lr", "0.1", "--out", str(tmp_path)]) == 2
    assert "does not apply" in capsys.readouterr().err
    assert main(["stability", "--imp-run", str(imp_run), "--arch", "conv4", "--out", str(tmp_path)]) == 2
    assert "is a arch 'lenet_300_100' run, not 'conv4'" in capsys.readouterr().err  # refused, not replaced


def test_the_stability_subject_trains_on_the_train_subset_it_was_given(tmp_path, capsys):
    import json

    from supermask.cli import main

    assert main(["stability", "--arch", "lenet_300_100", "--train-subset", "0.25", "--points", "0", "--iterations",
                 "4", "--batch-size", "250", "-q", "--device", "cpu", "--out", str(tmp_path)]) == 0
    configs = [json.loads(p.read_text()) for p in tmp_path.rglob("config.json")]
    assert len(configs) > 1 and all(c.get("train_subset") == 0.25 for c in configs)  # the analysis and its stages
