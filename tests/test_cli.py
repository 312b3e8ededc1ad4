"""The command line: thin over the library, one line and exit status 2 for every user error."""

import json
import subprocess
import sys

import pytest

from supermask.cli import main


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("args,message", [
    (["search", "--arch", "nope"], "unknown architecture 'nope'"),
    (["search", "--arch", "torchvision/nope"], "unknown torchvision model 'nope'"),
    (["search", "--density", "0"], "density must be in (0, 1]"),
    (["search", "--density", "1.5"], "density must be in (0, 1]"),
    (["search", "--density", "nan"], "density must be in (0, 1]"),
    (["search", "--density", "0.5", "--sparsity", "0.5"], "not both"),
    (["search", "--dataset", "cifar7"], "unknown dataset"),
    (["search", "--init", "zeros"], "unknown init"),
    (["search", "--method", "magic"], "unknown method"),
    (["search", "--epochs", "0"], "epochs must be a positive integer"),
    (["search", "--lr", "-1"], "learning rate must be a positive number"),
    (["search", "--lr", "1e308"], "learning rate 1e+308 overflows float32"),
    (["search", "--batch-size", "x"], "Invalid value for '--batch-size'"),
    (["search", "--scope", "local"], "Invalid value for '--scope'"),
    (["search", "--device", "tpu"], "device must be auto, cpu or cuda"),
    (["search", "--bogus"], "No such option"),
    (["list", "things"], "Invalid value"),
    (["imp", "--prune-fraction", "1.0"], "prune fraction must be in (0, 1)"),
    (["imp", "--prune-fraction", "0"], "prune fraction must be in (0, 1)"),
    (["imp", "--levels", "0"], "levels must be a positive integer"),
    (["imp", "--rewind", "soon"], "rewind must be 0, <N>it or <N>ep"),
    (["imp", "--control", "other"], "control must be one of"),
    (["search", "--density", "0.5,x"], "--density must be a comma-separated list"),
    (["search", "--seed", "0,-1"], "seed must be an integer in [0, 2**63)"),
    (["search", "--seed", str(2**64)], "seed must be an integer in [0, 2**63)"),
    (["search", "--width", "inf"], "width must be positive"),
    (["search", "--gamma", "nan", "--schedule", "step"], "gamma must be a positive number"),
    (["search", "--milestones", "nan,inf", "--schedule", "step"], "milestones must be finite"),
    (["imp", "--arch", "lenet_300_100", "--rewind", "1000ep", "--epochs", "1"], "is not before the end of training"),
    (["imp", "--target-density", "2"], "target density must be in (0, 1]"),
    (["train", "--init", "ones"], "unknown init"),
    (["search", "--checkpoint-every", "0"], "checkpoint every must be a positive number of steps"),
    (["search", "--width", "0"], "width must be positive"),
    (["search", "--precision", "8"], "Invalid value for '--precision'"),
    (["search", "--method", "iterand", "--rerandomize-rate", "1.5"], "rerandomize rate must be in (0, 1]"),
    (["prune", "--method", "obd"], "unknown pruning method"),
    (["prune", "--density", "0"], "density must be in (0, 1]"),
    (["imp", "--early-bird", "magnitude", "--eb-epsilon", "2"], "early-bird epsilon must be in (0, 1)"),
    (["imp", "--arch", "conv4", "--early-bird", "channel"], "--early-bird channel supports vgg11, vgg16, vgg19, resnet18"),
    (["imp", "--arch", "vgg11", "--early-bird", "channel", "--control", "reinit"], "no --control or --rewind"),
    (["imp", "--eb-l1", "0.1"], "--eb-l1 applies to --early-bird channel only"),
    (["search", "--method", "edge-popup", "--score-l2", "0.1"], "--score-l2 applies to gem-miner only"),
    (["search", "--arch", "resnet20", "--dropout", "0.5"], "--dropout applies to"),
    (["search", "--dropout", "1.5"], "dropout must be in [0, 1)"),
    # counts no run can finish: refused before anything runs (the bound is MAX_STEPS, 10**9 steps)
    (["search", "--epochs", "99999999999999999999"], "epochs 99,999,999,999,999,999,999 is more than a run can finish"),
    (["train", "--iterations", "99999999999999999999"], "iterations 99,999,999,999,999,999,999 is more than a run"),
    (["imp", "--epochs", "1000000001"], "epochs 1,000,000,001 is more than a run can finish"),
    (["search", "--epochs", "999999999"], "this run plans 31,999,999,968 optimiser steps"),  # 32 batches an epoch
    (["search", "--batch-size", "99999999999999999999"], "is more than the largest allowed (2,147,483,647)"),
    (["imp", "--rewind", "99999999999ep", "--dry-run"], "is beyond any run's end (at most 1,000,000,000 steps)"),
    (["imp", "--rewind", "10ep", "--epochs", "10", "--dry-run"], "rewind point 10ep is not before the end"),
    (["imp", "--rewind", "100it", "--iterations", "100", "--dry-run"], "rewind point 100it is not before the end"),
    # an option the plan does not read is refused (it would change the hash and nothing else)
    (["imp", "--structure", "nm:2:4", "--levels", "3"], "--levels 3 does nothing here: --structure nm:2:4 prunes once"),
    (["imp", "--target-density", "0.2", "--levels", "3"], "--target-density sets the number of levels"),
    (["imp", "--structure", "channel", "--arch", "resnet20", "--iterations", "1"], "--structure channel needs a chain"),
])
def test_user_errors_are_one_line_with_status_2(args, message, capsys, tmp_path):
    code, out, err = run_cli(args + ["--out", str(tmp_path)] if args[0] != "list" else args, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("supermask: error:"), err
    assert "Traceback" not in err
    assert message in err
    assert not list(tmp_path.iterdir())  # nothing half-written, nothing looking finished


@pytest.mark.parametrize("command", ["search", "train", "imp"])
def test_endless_counts_in_a_config_file_are_refused(command, capsys, tmp_path):
    options = tmp_path / "options.toml"
    options.write_text("epochs = 99999999999999999999\n")
    code, _, err = run_cli([command, "--config", str(options), "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and err.count("\n") == 1 and "is more than a run can finish" in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args", [["search", "--out", ""], ["compare", "runs", "--out", " "],
                                  ["search", "--data-root", ""], ["export", ".", "--format", "mask", "--out", ""]])
def test_an_empty_path_is_refused_not_taken_for_the_current_directory(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1 and "an empty path" in err, err
    assert not list(tmp_path.iterdir())


def test_missing_data_and_unwritable_output(capsys, tmp_path):
    code, _, err = run_cli(["search", "--dataset", "cifar10", "--data-root", str(tmp_path / "none"),
                            "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and "pass --download" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(["search", "--arch", "lenet_300_100", "--out", str(blocker), "--epochs", "1"], capsys)
    assert code == 2 and "is a file" in err and err.count("\n") == 1
    code, _, err = run_cli(["search", "--arch", "lenet_300_100", "--out", str(blocker / "runs"), "--epochs", "1"],
                           capsys)
    assert code == 2 and "cannot create run directory" in err and err.count("\n") == 1


def test_list_shows_the_registries(capsys):
    for what, expected in (("archs", "conv6"), ("datasets", "mnist-5k"), ("methods", "edge-popup"),
                           ("inits", "signed-constant")):
        code, out, _ = run_cli(["list", what], capsys)
        assert code == 0 and expected in out.split("\n")[0] + out


def test_search_end_to_end_then_skip(capsys, tmp_path):
    args = ["search", "--arch", "lenet_300_100", "--epochs", "1", "--sparsity", "0.8", "--out", str(tmp_path),
            "--batch-size", "500", "--quiet", "--device", "cpu"]
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and out.startswith("finished: ")
    run_dir = out.split("\n")[0].split(": ", 1)[1]
    result = json.loads(open(f"{run_dir}/result.json").read())
    assert result["requested_density"] == pytest.approx(0.2)
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and out.startswith("already finished: ")


def test_console_entry_point_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "supermask", "search", "--arch", "nope"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_imp_end_to_end_prints_the_level_table(capsys, tmp_path):
    args = ["imp", "--arch", "lenet_300_100", "--levels", "1", "--epochs", "1", "--batch-size", "500",
            "--out", str(tmp_path), "--quiet", "--device", "cpu"]
    code, out, _ = run_cli(args, capsys)
    lines = out.strip().split("\n")
    assert code == 0 and lines[0].startswith("finished: ")
    assert lines[1] == "lenet_300_100 imp s=0:"  # the summary names what ran
    assert lines[2].split() == ["level", "density", "test", "acc", "best", "val", "early-stop", "it"]
    assert [line.split()[0] for line in lines[3:]] == ["0", "1"]
    config = json.loads(open(lines[0].split(": ", 1)[1] + "/config.json").read())
    assert config["train"]["optimizer"] == "adam" and config["train"]["lr"] == 1.2e-3  # the family's defaults
    assert config["train"]["batch_size"] == 500  # a given option wins
    assert config["scope"] == "layerwise" and config["output_prune_fraction"] == 0.1


def _bench(tmp_path, *args):
    import pathlib

    script = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
    out_json = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(script), "--quick", *args, "--json", str(out_json)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out_json.read_text())["rows"]
    for row in rows:  # every measured row is printed with the ratio the JSON holds, timed on both sides
        assert row["a_value"] > 0 and row["b_value"] > 0
        assert f"| {row['what']} |" in proc.stdout
        assert f"{row['ratio']:.3f} ({row['ratio_min']:.3f}-{row['ratio_max']:.3f})" in proc.stdout
    return {row["name"] for row in rows}


def test_benchmark_script_measures_data_and_eval(tmp_path):
    assert _bench(tmp_path, "--only", "data,eval,cli") == {"resident_data", "cached_eval", "cli_help"}


@pytest.mark.slow
def test_benchmark_script_measures_everything(tmp_path):
    assert _bench(tmp_path) == {"selection_layerwise", "selection_global", "edge_popup_step", "imp_step",
                                "gpt_edge_popup_step", "gpt_imp_step", "resident_data", "cached_eval", "epoch", "cli_help"} | {
        f"sparse_lenet_d{d}_b{b}" for d in ("0.5", "0.2", "0.05", "0.01") for b in (1, 256)}


@pytest.mark.slow
def test_benchmark_script_measures_deployment(tmp_path):
    names = _bench(tmp_path, "--only", "deploy")
    expected = {f"deploy_{arch}_d{d}_{part}" for arch in ("lenet_300_100", "conv6") for d in ("0.5", "0.2", "0.05", "0.01")
                for part in ("b1_sparse", "b256_sparse", "b1_compact", "b256_compact", "memory_sparse",
                             "memory_compact-dense")}
    assert names == expected


@pytest.mark.slow
def test_export_sizes_script_writes_every_format(tmp_path):
    import pathlib

    script = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "export_sizes.py"
    proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "runs"), "--markdown",
                           str(tmp_path / "sizes.md")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in (tmp_path / "sizes.md").read_text().splitlines() if line.startswith("| lenet")
             or line.startswith("| conv6")]
    assert len(lines) == 10 and sum("n/a" in line for line in lines) == 6  # compact-dense: channel tickets only


def test_export_command_writes_the_compact_ticket(capsys, tmp_path):
    code, out, _ = run_cli(["search", "--arch", "lenet_300_100", "--iterations", "2", "--batch-size", "500",
                            "--out", str(tmp_path), "--quiet", "--device", "cpu"], capsys)
    run_dir = out.split("\n")[0].split(": ", 1)[1]
    code, out, err = run_cli(["export", run_dir, "--format", "ticket"], capsys)
    assert code == 0 and out.startswith(f"wrote {run_dir}/export/ticket.safetensors")
    code, _, err = run_cli(["export", str(tmp_path), "--format", "mask"], capsys)
    assert code == 2 and "not a finished run" in err and err.count("\n") == 1


def test_search_sweeps_a_grid_and_skips_finished_points(capsys, tmp_path):
    args = ["search", "--arch", "lenet_300_100", "--iterations", "2", "--batch-size", "500", "--out", str(tmp_path),
            "--density", "0.5,0.2", "--seed", "0,1", "--init", "signed-constant,kaiming-normal", "--quiet",
            "--device", "cpu"]
    code, out, _ = run_cli(args, capsys)
    finished = [line for line in out.splitlines() if line.startswith("finished: ")]
    assert code == 0 and len(finished) == 8 and len(set(finished)) == 8
    assert len(list(tmp_path.rglob("result.json"))) == 8
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and sum(line.startswith("already finished: ") for line in out.splitlines()) == 8


def test_compare_command_prints_the_table_and_warns_about_damage(capsys, tmp_path):
    run_cli(["search", "--arch", "lenet_300_100", "--iterations", "2", "--batch-size", "500", "--seed", "0,1",
             "--out", str(tmp_path / "runs"), "--quiet", "--device", "cpu"], capsys)
    bad = tmp_path / "runs" / "bad"
    bad.mkdir()
    (bad / "result.json").write_text("{")
    code, out, err = run_cli(["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "report")], capsys)
    assert code == 0 and "| edge-popup signed-constant | 0.5 |" in out
    assert err.startswith("supermask: warning: left out") and "bad" in err
    assert (tmp_path / "report" / "accuracy_vs_density.png").exists()
    code, _, err = run_cli(["compare", str(tmp_path / "report")], capsys)
    assert code == 2 and "no finished runs" in err
