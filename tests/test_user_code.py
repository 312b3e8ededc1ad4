"""User code reached through --import that misbehaves: one line and exit status 2, nothing run."""

import json
import sys
import textwrap

import pytest

from supermask.cli import main
from supermask.models import MODELS

SMALL = ["--iterations", "2", "--batch-size", "500", "--device", "cpu", "-q"]

MODELS_MODULE = textwrap.dedent("""
    from torch import nn

    import supermask


    @supermask.register_model("plain_torch_net")
    def plain_torch_net(spec, layers, width=1.0):  # ignores the layer types it is given
        return nn.Sequential(nn.Flatten(), nn.Linear(spec.in_channels * spec.image_size ** 2, 32), nn.ReLU(),
                             nn.Linear(32, spec.num_classes))


    @supermask.register_model("three_outputs_net")
    def three_outputs_net(spec, layers, width=1.0):  # a classifier of the wrong size
        return nn.Sequential(nn.Flatten(), layers.linear(spec.in_channels * spec.image_size ** 2, 32), nn.ReLU(),
                             layers.linear(32, 3))
""")


def _user_module(tmp_path, monkeypatch, filename: str, text: str, registers: tuple[str, ...]):
    """A module of the user's written to ``tmp_path`` (the working directory); the architectures it
    registers are removed from the registry afterwards."""
    path = tmp_path / filename
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    yield path
    for name in registers:
        MODELS._items.pop(name, None)


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    yield from _user_module(tmp_path, monkeypatch, "user_models.py", MODELS_MODULE,
                            ("plain_torch_net", "three_outputs_net"))


def one_line(capsys, args) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("supermask: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["search", "imp", "prune"])
def test_a_model_with_nothing_to_mask_is_refused_naming_the_remedy(command, user_models, tmp_path, capsys):
    err = one_line(capsys, [command, "--import", str(user_models), "--arch", "plain_torch_net", *SMALL,
                            "--out", str(tmp_path / "runs")])
    assert "has no layer this engine can mask" in err and "layers.linear" in err and "supermask.convert" in err
    assert not (tmp_path / "runs").exists()


def test_dense_training_of_a_plain_torch_model_runs(user_models, tmp_path, capsys):
    assert main(["train", "--import", str(user_models), "--arch", "plain_torch_net", *SMALL,
                 "--out", str(tmp_path / "runs")]) == 0


@pytest.mark.parametrize("command", ["search", "imp", "train"])
def test_a_classifier_of_the_wrong_size_is_refused(command, user_models, tmp_path, capsys):
    err = one_line(capsys, [command, "--import", str(user_models), "--arch", "three_outputs_net", *SMALL,
                            "--out", str(tmp_path / "runs")])
    assert "gives outputs of shape [1, 3] for one input, not one score per class (10 classes)" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("how", ["name", "path"])
def test_a_module_that_exits_while_imported_does_not_end_the_command_as_done(how, tmp_path, monkeypatch, capsys):
    (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit(0)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    target = "exits_at_import" if how == "name" else str(tmp_path / "exits_at_import.py")
    err = one_line(capsys, ["search", "--import", target, "--dry-run"])
    assert "called sys.exit(0) while being imported" in err
    sys.modules.pop("exits_at_import", None)


def test_a_file_named_like_a_standard_module_does_not_replace_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "json.py").write_text("RAN = True\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    standard = sys.modules["json"]
    err = one_line(capsys, ["search", "--import", "json", "--dry-run"])  # the name finds the standard module
    assert "that name is taken by an installed or standard module" in err and "--import ./json.py" in err
    assert main(["search", "--import", str(tmp_path / "json.py"), "--dry-run", "-q"]) == 0  # the path runs the file
    assert sys.modules["json"] is standard and json.dumps({"a": 1}) == '{"a": 1}'
    ran = [m for name, m in sys.modules.items() if name.startswith("_imported_") and name.endswith("_json")]
    assert ran and all(getattr(m, "RAN", False) for m in ran)


ATTENTION_MODULE = textwrap.dedent("""
    from torch import nn

    import supermask
    from supermask.nn import LinearAttention


    class Net(nn.Module):
        def __init__(self, spec, layers, attention):
            super().__init__()
            self.inp = layers.linear(spec.in_channels * spec.image_size, 16)
            self.attn = attention(16, layers)
            self.out = layers.linear(16, spec.num_classes)

        def forward(self, x):  # each image row is a token
            h = self.inp(x.permute(0, 2, 1, 3).flatten(2))
            return self.out(self.attn(h, h, h)[0].mean(1))


    @supermask.register_model("torch_attention_net")
    def torch_attention_net(spec, layers, width=1.0):
        return Net(spec, layers, lambda dim, layers: nn.MultiheadAttention(dim, 4, batch_first=True))


    @supermask.register_model("linear_attention_net")
    def linear_attention_net(spec, layers, width=1.0):
        return Net(spec, layers, lambda dim, layers: LinearAttention(dim, 4, linear=layers.linear))
""")


@pytest.fixture
def attention_models(tmp_path, monkeypatch):
    yield from _user_module(tmp_path, monkeypatch, "attention_models.py", ATTENTION_MODULE,
                            ("torch_attention_net", "linear_attention_net"))


def test_a_search_never_trains_a_users_plain_attention_and_heads_need_maskable_projections(attention_models,
                                                                                            tmp_path, capsys):
    from supermask import SearchConfig, resolve
    from supermask.methods import METHODS
    from supermask.models import InputSpec
    from supermask.plugins import import_user_module

    err = one_line(capsys, ["search", "--import", str(attention_models), "--arch", "torch_attention_net",
                            "--structure", "head", *SMALL, "--out", str(tmp_path / "runs")])
    assert "LinearAttention built with linear=layers.linear" in err
    import_user_module(str(attention_models))  # after the CLI's logging setup, which binds this test's stderr
    config = resolve(SearchConfig(arch="torch_attention_net"))
    model = METHODS.get("edge-popup").build(config, InputSpec(1, 28, 10))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["inp.scores", "out.scores"]  # nn.MultiheadAttention: frozen, unmasked
    assert "attn.in_proj_weight" in capsys.readouterr().err  # and said
    assert main(["search", "--import", str(attention_models), "--arch", "linear_attention_net", "--structure", "head",
                 *SMALL, "--out", str(tmp_path / "runs")]) == 0
    result = json.loads(next((tmp_path / "runs").rglob("result.json")).read_text())
    assert (result["heads_kept"], result["heads_total"]) == (2, 4)
