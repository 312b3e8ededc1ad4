"""The command line fits the field's habits: instant help and lists, every default shown, dry runs,
TOML option files, user code through --import and entry points, progress fit for log files."""

import json
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint

import click
import pytest

from supermask import catalog
from supermask.cli import cli, main


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize("argv", [["--help"], ["search", "--help"], ["imp", "--help"], ["prune", "-h"],
                                  ["train", "--help"], ["list", "archs"], ["list", "datasets"],
                                  ["list", "methods"], ["list", "methods", "-v"], ["list", "inits"]])
def test_help_and_lists_import_no_torch(argv):
    proc = _fresh(f"import sys; from supermask.cli import main; code = main({argv!r}); "
                  f"sys.stdout.flush(); print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "NO-TORCH 0"


def test_the_catalog_holds_exactly_what_the_registries_hold():
    from supermask.data import DATASETS
    from supermask.methods import METHODS
    from supermask.models import MODELS
    from supermask.nn import SCORE_INITS, WEIGHT_INITS
    from supermask_imp import PRUNERS

    assert sorted(catalog.ARCHITECTURES) == MODELS.names()
    assert sorted(catalog.DATASETS) == DATASETS.names()
    assert sorted(catalog.WEIGHT_INITS) == WEIGHT_INITS.names()
    assert sorted(catalog.SCORE_INITS) == SCORE_INITS.names()
    assert sorted(catalog.SEARCH_METHODS) == METHODS.names()
    assert sorted(catalog.PRUNERS) == PRUNERS.names()


def test_list_methods_verbose_shows_what_validate_resolves(capsys):
    """The torch-free listing of each method's defaults equals the library's resolution."""
    from supermask.listing import resolved_defaults as listed
    from supermask.search import resolved_defaults as resolved

    for method in catalog.SEARCH_METHODS:
        assert listed(method) == resolved(method), method
    code, out, _ = run_cli(["list", "methods", "-v"], capsys)
    assert code == 0 and "defaults: scope global, init signed-constant" in out  # gem-miner's scope
    assert "lr 100.0" in out  # bernoulli's


def _value_options(command: click.Command):
    return [p for p in command.params if isinstance(p, click.Option) and not p.is_flag and p.name != "help"]


@pytest.mark.parametrize("name", ["search", "train", "imp", "prune"])
def test_every_value_option_shows_its_default(name):
    command = cli.commands[name]
    ctx = click.Context(command, info_name=name)
    for option in _value_options(command):
        if option.name in ("config", "save_config", "imports", "verbose"):  # files, modules, a count: no default
            continue
        _, help_text = option.get_help_record(ctx)
        assert "default:" in help_text, f"{name} --{option.name}: {help_text}"


def test_family_defaults_are_shown_with_their_values(capsys):
    code, out, _ = run_cli(["imp", "--help"], capsys)
    flat = " ".join(out.split())
    assert code == 0 and "lenet_300_100: adam 0.0012, batch 60" in flat and "20 epochs a level" in flat
    assert "0.0012 lenet_300_100; 0.0002 conv2; 0.0003 conv4/6/8; 0.1 resnet18/20/56, vgg11/16/19" in flat
    code, out, _ = run_cli(["search", "--help"], capsys)
    flat = " ".join(out.split())
    assert "[default: the method's: 0.1; bernoulli 100, gem-miner 1 (x 10/epochs beyond 10 epochs)]" in flat


def test_usage_errors_are_one_line_with_the_help_hint(capsys):
    code, _, err = run_cli(["search", "--no-such-option"], capsys)
    assert code == 2 and err.count("\n") == 1 and "(see 'supermask search -h')" in err


def _dry_run(capsys, *args):
    code, out, err = run_cli(["search", "--dry-run", "--verbose", *args], capsys)
    assert code == 0, err
    header = [line for line in out.splitlines() if line.startswith("# ")]
    return out, header


def test_dry_run_prints_config_hash_and_run_dir_and_writes_nothing(capsys, tmp_path):
    out_dir = tmp_path / "runs"
    args = ["--arch", "conv4", "--iterations", "1", "--batch-size", "500", "--out", str(out_dir), "--device", "cpu"]
    out, header = _dry_run(capsys, *args)
    assert not out_dir.exists()
    assert len(header) == 1 and "(hash " in header[0] and header[0].endswith("new)")
    config = json.loads(out.split("\n", 1)[1])
    assert config["arch"] == "conv4" and config["init"] == "signed-constant" and config["train"]["lr"] == 0.1
    predicted = header[0].split("run directory ", 1)[1].split(" (hash")[0]
    digest = header[0].split("(hash ", 1)[1].split(";")[0]
    code, real, _ = run_cli(["search", *args, "--quiet"], capsys)
    assert code == 0 and real.splitlines()[0] == f"finished: {predicted}" and f"/{digest}/" in predicted
    assert json.loads((out_dir.parent / predicted / "config.json").read_text()) == config
    _, header = _dry_run(capsys, *args)
    assert header[0].endswith("finished)")


def test_config_files_round_trip_and_the_command_line_wins(capsys, tmp_path):
    saved = tmp_path / "run.toml"
    args = ["--arch", "lenet_300_100", "--method", "gem-miner", "--density", "0.2,0.1", "--seed", "0,1",
            "--lr", "0.5", "--milestones", "", "--out", str(tmp_path / "runs")]
    out, header = _dry_run(capsys, *args, "--save-config", str(saved))
    text = saved.read_text()
    assert "density = [0.2, 0.1]" in text and "seed = [0, 1]" in text and 'method = "gem-miner"' in text
    # the defaults the library resolved are written too, so a later release's defaults change nothing
    for resolved in ("score-l2 = 0.0001", "freeze-every = 5", "epochs = 10", "batch-size = 128", 'scope = "global"',
                     'init = "signed-constant"', "momentum = 0.9"):
        assert f"\n{resolved}\n" in text, resolved
    again, header_again = _dry_run(capsys, "--config", str(saved))
    assert len(header) == 4 and header_again == header and again == out
    _, changed = _dry_run(capsys, "--config", str(saved), "--lr", "0.25", "--seed", "3")  # the command line wins
    assert len(changed) == 2 and all("seed-3" in line for line in changed)
    assert not set(changed) & set(header)


@pytest.mark.parametrize("content,message", [
    ("no-such = 1\n", "'no-such' is not an option of `supermask search`"),
    ("epochs = [1, 2]\n", "epochs takes one value, not a list"),
    ("learned-bn = 1\n", "learned-bn must be true or false"),
    ("lr = nan\n", "lr must be finite"),
    ("[train]\nlr = 1\n", "'train' is not an option of `supermask search`"),
    ("seed = [[0]]\n", "[0] is not a number or a string"),
    ("epochs = \n", "not a TOML file"),
    ("epochs = 0\n", "epochs must be a positive integer"),
    ("batch-size = 'x'\n", "Invalid value for '--batch-size'"),
])
def test_bad_config_files_are_one_line(capsys, tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    code, _, err = run_cli(["search", "--config", str(path), "--dry-run"], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_config_file_that_is_not_utf8_is_one_line(capsys, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("epochs = 1\n# r\u00e9glages\n".encode("latin-1"))
    code, _, err = run_cli(["search", "--config", str(path), "--dry-run"], capsys)
    assert code == 2 and err.count("\n") == 1 and "not UTF-8 text (byte 14), as TOML must be" in err, err


def test_saved_options_hold_any_character_and_read_back(capsys, tmp_path):
    """Characters beyond the BMP, quotes, backslashes and control characters: the file holds the
    characters themselves (TOML has no surrogate escapes) or TOML's escapes, and reads back the same."""
    out = str(tmp_path / 'runs \U0001F600 "quoted" back\\slash tab\there \u00e9')
    saved = tmp_path / "saved.toml"
    code, first, _ = run_cli(["search", "--out", out, "--dry-run", "--save-config", str(saved)], capsys)
    assert code == 0 and "\U0001F600" in saved.read_text(encoding="utf-8")
    code, again, err = run_cli(["search", "--config", str(saved), "--dry-run"], capsys)
    assert code == 0, err
    assert again.splitlines()[0] == first.splitlines()[0] and out in again.splitlines()[0]


def test_example_configs_load_and_resolve(capsys, tmp_path):
    examples = sorted((catalog_root() / "examples").glob("*.toml"))
    assert len(examples) >= 8
    for path in examples:
        command = path.name.split("-", 1)[0]
        code, out, err = run_cli([command, "--config", str(path), "--dry-run", "--verbose", "--data-root",
                                  str(tmp_path), "--out", str(tmp_path / "runs")], capsys)
        assert code == 0, (path.name, err)
        assert json.loads(out.split("\n", 1)[1].split("\n# ")[0])["arch"], path.name


def catalog_root():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


USER_MODULE = textwrap.dedent("""
    from torch import nn

    import supermask


    @supermask.register_model("my_net")
    def my_net(spec, layers, width=1.0):
        hidden = max(1, round(64 * width))
        return nn.Sequential(nn.Flatten(), layers.linear(spec.in_channels * spec.image_size ** 2, hidden),
                             nn.ReLU(), layers.linear(hidden, spec.num_classes))
""")


def test_a_users_module_model_runs_through_search_import(tmp_path):
    (tmp_path / "mymodule.py").write_text(USER_MODULE)
    args = ["search", "--import", "mymodule", "--arch", "my_net", "--iterations", "2", "--batch-size", "500",
            "--out", "runs", "--device", "cpu", "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "supermask", *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / proc.stdout.splitlines()[0].split(": ", 1)[1]
    assert json.loads((run_dir / "config.json").read_text())["arch"] == "my_net"
    assert (run_dir / "ticket" / "mask.safetensors").exists()
    listed = subprocess.run([sys.executable, "-m", "supermask", "list", "archs", "--import", "mymodule"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert "my_net" in listed.stdout.split()
    saved = subprocess.run([sys.executable, "-m", "supermask", *args, "--dry-run", "--save-config", "my.toml"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert 'import = ["mymodule"]' in (tmp_path / "my.toml").read_text()
    again = subprocess.run([sys.executable, "-m", "supermask", "search", "--config", "my.toml", "--dry-run"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.splitlines()[0] == saved.stdout.splitlines()[0]
    assert "finished)" in again.stdout.splitlines()[0]
    broken = subprocess.run([sys.executable, "-m", "supermask", "list", "archs", "--import", "nosuchmodule"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1 and "No module named 'nosuchmodule'" in broken.stderr


def test_entry_point_plugins_load_before_the_command(monkeypatch, tmp_path, capsys):
    import supermask.plugins as plugins

    (tmp_path / "entry_plugin.py").write_text(USER_MODULE.replace("my_net", "entry_net"))
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [EntryPoint(name="entry", value="entry_plugin", group=plugins.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(plugins, "entry_points", lambda group: points if group == plugins.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(plugins, "_loaded_entry_points", False)
    code, out, _ = run_cli(["list", "archs"], capsys)
    assert code == 0 and "entry_net" in out.split()
    from supermask.models import MODELS

    MODELS._items.pop("entry_net")


def test_a_log_file_of_a_run_holds_plain_lines(tmp_path):
    log = tmp_path / "run.log"
    with open(log, "w") as stderr:
        proc = subprocess.run([sys.executable, "-m", "supermask", "imp", "--arch", "lenet_300_100", "--levels", "1",
                               "--epochs", "1", "--batch-size", "500", "--out", str(tmp_path / "runs"),
                               "--device", "cpu"], stderr=stderr, stdout=subprocess.PIPE, text=True)
    assert proc.returncode == 0
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert any(line.startswith("lenet_300_100 imp s=0 level 0/1 d=1.0000 epoch 1/1 step 8/8 loss") for line in lines)
    assert any("level 1/1 d=0.80" in line and "epoch 1/1" in line for line in lines), text


def test_prune_rate_points_to_density_and_sparsity_and_list_lists_every_kind(capsys):
    code, _, err = run_cli(["search", "--prune-rate", "0.5"], capsys)
    assert code == 2 and "--density is the fraction kept, --sparsity the fraction removed" in err
    assert err.count("\n") == 1
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0 and all(f"{kind}:" in out.splitlines() for kind in ("archs", "datasets", "methods", "inits"))
    lines = out.splitlines()
    assert "  conv6" in lines and any(line.startswith("  edge-popup (search): ") for line in lines)


def test_a_train_dict_is_a_train_config_and_a_wrong_field_is_one_line():
    from supermask import SearchConfig, resolve
    from supermask.errors import SupermaskError

    assert resolve(SearchConfig(arch="lenet_300_100", train={"epochs": 1, "lr": 0.5})).train.lr == 0.5
    with pytest.raises(SupermaskError, match="no training field 'epoch'"):
        SearchConfig(train={"epoch": 1})


def test_a_runs_own_config_json_reruns_that_run(tmp_path, capsys):
    from supermask.cli import main

    small = ["--arch", "lenet_300_100", "--iterations", "2", "--batch-size", "500", "--device", "cpu", "-q",
             "--out", str(tmp_path)]
    assert main(["search", *small, "--density", "0.3", "--scope", "global"]) == 0
    assert main(["imp", *small, "--levels", "1", "--control", "reinit"]) == 0
    capsys.readouterr()
    runs = {p.parent.parts[-4]: p.parent for p in tmp_path.rglob("config.json") if p.parent.name == "seed-0"}
    for command in ("search", "imp"):
        assert main([command, "--config", str(runs[command] / "config.json"), "--out", str(tmp_path)]) == 0
        assert capsys.readouterr().out.splitlines()[0] == f"already finished: {runs[command]}"
    assert main(["search", "--config", str(runs["imp"] / "config.json")]) == 2
    assert "a config.json of another command's run?" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["search", "--arch", "resnet20", "--structure", "channel"], "--structure channel needs a chain"),
    (["imp", "--arch", "gpt_tiny", "--dataset", "tinyshakespeare", "--structure", "head"], "give --levels 3 or fewer"),
    (["prune", "--arch", "lenet_300_100", "--structure", "head"], "--structure head needs attention blocks"),
    (["train", "--arch", "vit_tiny", "--input-shape", "1x30x30"], "vit_tiny cannot take"),
])
def test_a_dry_run_refuses_what_the_run_would_refuse(args, message, tmp_path, capsys):
    code, out, err = run_cli([*args, "--dry-run", "--out", str(tmp_path)], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_dry_run_prints_one_line_per_grid_point_and_the_configs_with_verbose(tmp_path, capsys):
    args = ["search", "--arch", "lenet_300_100", "--density", "0.5,0.3", "--seed", "0,1", "--dry-run",
            "--out", str(tmp_path)]
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and len(out.splitlines()) == 4 and all(line.startswith("# ") for line in out.splitlines())
    code, verbose, _ = run_cli([*args, "--verbose"], capsys)
    headers = [line for line in verbose.splitlines() if line.startswith("# ")]
    assert headers == out.splitlines() and verbose.count('"arch": "lenet_300_100"') == 4
