"""Exports of a found ticket: folded state dict, torch.nn.utils.prune form, compact ticket, masks."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from supermask import SearchConfig, TrainConfig, search
from supermask.errors import RunError, SupermaskError
from supermask.models import DENSE, InputSpec, create_model
from supermask.nn import model_masks
from supermask.search import load_search_model
from supermask.ticket_files import load_masks
from supermask.exports import export_run, load_ticket, load_torch_prune


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    made = {}
    for arch, kw in (("conv6", {"scope": "global", "density": 0.3}), ("resnet20", {"density": 0.5})):
        cfg = SearchConfig(arch=arch, out=str(out), device="cpu", train=TrainConfig(iterations=2, batch_size=32), **kw)
        made[arch] = search(cfg).run_dir
    return made


def _inputs():
    return torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ["conv6", "resnet20"])
def test_folded_state_dict_gives_the_same_logits_in_a_plain_model(runs, arch, tmp_path):
    sm = load_search_model(runs[arch])
    export_run(runs[arch], "state-dict", tmp_path / "sd.safetensors")
    plain = create_model(arch, InputSpec(1, 28, 10), DENSE)
    plain.load_state_dict(load_file(tmp_path / "sd.safetensors"))  # strict: exactly the plain keys
    plain.eval()
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(plain(x), sm(x))


@pytest.mark.parametrize("arch", ["conv6", "resnet20"])
def test_torch_prune_export_loads_through_pytorch_pruning(runs, arch, tmp_path):
    from torch.nn.utils import prune

    sm = load_search_model(runs[arch])
    export_run(runs[arch], "torch-prune", tmp_path / "tp.safetensors")
    plain = load_torch_prune(create_model(arch, InputSpec(1, 28, 10), DENSE), load_file(tmp_path / "tp.safetensors"))
    plain.eval()
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(plain(x), sm(x))
    first = next(m for m in plain.modules() if hasattr(m, "weight_orig"))
    prune.l1_unstructured(first, "weight", amount=0.1)  # PyTorch's own API goes on from here
    prune.remove(first, "weight")
    assert not hasattr(first, "weight_orig")


def test_compact_ticket_rebuilds_weights_and_mask_bit_for_bit(runs, tmp_path):
    info = export_run(runs["conv6"], "ticket", tmp_path / "conv6.ticket")
    rebuilt = load_ticket(tmp_path / "conv6.ticket")
    original = load_search_model(runs["conv6"])
    for (name, a), (_, b) in zip(model_masks(original).items(), model_masks(rebuilt).items()):
        assert torch.equal(a, b), name
    own = original.state_dict()
    for key, value in rebuilt.state_dict().items():
        if not key.endswith("scores"):
            assert torch.equal(value, own[key]), key
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), original(x))
    assert info["bytes"] * 25 <= info["float32_state_dict_bytes"]


def test_resnet_ticket_carries_batchnorm_statistics(runs, tmp_path):
    export_run(runs["resnet20"], "ticket", tmp_path / "r.ticket")
    rebuilt, original = load_ticket(tmp_path / "r.ticket"), load_search_model(runs["resnet20"])
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), original(x))


def test_mask_export_and_refusals(runs, tmp_path):
    export_run(runs["conv6"], "mask", tmp_path / "m.safetensors")
    masks = load_masks(tmp_path / "m.safetensors")
    assert set(masks) == set(model_masks(load_search_model(runs["conv6"])))
    with pytest.raises(SupermaskError, match="format must be one of"):
        export_run(runs["conv6"], "onnx", tmp_path / "x")
    with pytest.raises(RunError, match="not a finished run"):
        export_run(tmp_path, "mask", tmp_path / "y")
    (tmp_path / "bad.ticket").write_bytes(b"\x00" * 64)
    with pytest.raises(RunError, match="not a supermask ticket"):
        load_ticket(tmp_path / "bad.ticket")


def test_export_out_folder_and_replacing_its_own_files(runs, tmp_path, capsys):
    from supermask.cli import main

    folder = tmp_path / "newdir"
    assert main(["export", str(runs["conv6"]), "--format", "mask", "--out", f"{folder}/"]) == 0
    assert (folder / "mask.safetensors").is_file()
    assert main(["export", str(runs["conv6"]), "--format", "mask", "--out", str(folder)]) == 0  # replaces its own
    (tmp_path / "mine.bin").write_bytes(b"precious")
    assert main(["export", str(runs["conv6"]), "--format", "mask", "--out", str(tmp_path / "mine.bin")]) == 2
    assert (tmp_path / "mine.bin").read_bytes() == b"precious"
    assert main(["export", str(runs["conv6"]), "--format", "mask", "--out", str(tmp_path / "mine.bin"), "--force"]) == 0


def test_sparse_export_of_a_lenet_ticket_at_density_0_05_gives_the_same_predictions(tmp_path, capsys):
    from supermask.cli import main
    from supermask.data import load_dataset
    from supermask.search import load_search_model
    from supermask.sparse import SparseLinear
    from supermask.exports import load_export

    args = ["search", "--arch", "lenet_300_100", "--density", "0.05", "--iterations", "5", "--batch-size", "500",
            "--out", str(tmp_path), "--quiet", "--device", "cpu"]
    assert main(args) == 0
    run = Path(capsys.readouterr().out.splitlines()[0].split(": ", 1)[1])
    assert main(["export", str(run), "--format", "sparse"]) == 0
    sparse, provenance = load_export(run / "export" / "sparse.safetensors")
    assert provenance["format"] == "sparse"
    layers = [m for m in sparse.modules() if isinstance(m, SparseLinear)]
    masked = load_search_model(run)
    masks = {n: m.mask() for n, m in masked.named_modules() if hasattr(m, "scores")}
    assert len(layers) == 3 and sum(m.weight.values().numel() for m in layers) == sum(
        int(m.sum()) for m in masks.values())
    x = load_dataset("mnist-5k").test.images[:256].float()
    with torch.no_grad():
        expected, got = masked(x), sparse(x)
    assert (got - expected).abs().max() < 1e-5
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert main(["evaluate", str(run / "export" / "sparse.safetensors")]) == 0
    assert "(the same)" in capsys.readouterr().out


# -- every export loads back: Gem-Miner, ViT, a channel ticket with a layer of no channels ---------

PLAIN_FORMATS = ("state-dict", "torch-prune", "sparse", "compact-dense", "ticket")


@pytest.fixture(scope="module")
def awkward_runs(tmp_path_factory):
    """Runs whose exports once did not load: Gem-Miner (frozen-score buffers), ViT (non-affine
    LayerNorm), a global channel ticket that keeps no channel of its first layer."""
    out = tmp_path_factory.mktemp("awkward")
    train = TrainConfig(iterations=20, batch_size=64)
    made = {
        "gem-miner": SearchConfig(arch="lenet_300_100", method="gem-miner", density=0.5, out=str(out), device="cpu",
                                  train=train),
        "vit": SearchConfig(arch="vit_tiny", density=0.5, out=str(out), device="cpu", train=train),
        "channel": SearchConfig(arch="lenet_300_100", structure="channel", scope="global", density=0.02,
                                out=str(out), device="cpu", train=train),
    }
    return {name: search(cfg) for name, cfg in made.items()}


def _logits_of(model, run_dir):
    from supermask.data import load_dataset

    x = load_dataset("mnist-5k").test.images[:128].float()
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("run", ["gem-miner", "vit", "channel"])
@pytest.mark.parametrize("fmt", PLAIN_FORMATS)
def test_every_export_loads_back_as_the_reported_network(awkward_runs, run, fmt, tmp_path):
    from supermask.exports import evaluate_export, load_export

    result = awkward_runs[run]
    path = tmp_path / f"{fmt}.safetensors"
    refusals = {("gem-miner", "ticket"): "rebuilds edge-popup networks", ("vit", "compact-dense"): "chain networks"}
    if (run, fmt) in refusals:
        with pytest.raises(SupermaskError, match=refusals[run, fmt]):
            export_run(result.run_dir, fmt, path)
        assert not path.exists() and not list(tmp_path.iterdir())  # refused before anything was written
        return
    info = export_run(result.run_dir, fmt, path)
    assert info["round_trip_accuracy"] == pytest.approx(result.result["test_accuracy"], abs=0.005)
    loaded, _ = load_export(path)
    # the loaded export computes what the run's own (supermask) network computes
    original = load_search_model(result.run_dir)
    assert torch.allclose(_logits_of(loaded, result.run_dir), _logits_of(original, result.run_dir),
                          rtol=1e-4, atol=1e-4)
    assert evaluate_export(path)["test_accuracy"] == pytest.approx(result.result["test_accuracy"], abs=0.005)


def test_the_global_channel_ticket_keeps_the_channels_a_dead_layer_hides(awkward_runs):
    masks = load_masks(awkward_runs["channel"].run_dir / "ticket" / "mask.safetensors")
    assert int(masks["1.weight"].sum()) == 0  # the case: the first layer keeps no channel at all
    assert int(masks["5.weight"].sum()) > 0  # yet the second layer's channels feed the classifier


def test_an_export_that_does_not_reproduce_the_run_is_never_written(awkward_runs, tmp_path, monkeypatch):
    from supermask import exports

    good = exports.EXPORTS.get("state-dict")
    def wrong(src):  # a writer gone wrong: every weight of the first layer zero
        return exports.st_save({k: (torch.zeros_like(v) if k == "1.weight" else v).contiguous()
                                for k, v in src.folded.items()}, metadata=src.metadata)
    monkeypatch.setitem(exports.EXPORTS._items, "state-dict", exports.ExportFormat("state-dict", wrong, good.load,
                                                                                   good.summary))
    path = tmp_path / "sd.safetensors"
    with pytest.raises(SupermaskError, match="not the run's network"):
        export_run(awkward_runs["gem-miner"].run_dir, "state-dict", path)
    assert not list(tmp_path.iterdir())  # neither the file nor its temporary


def test_the_export_summary_says_how_the_file_compares_with_the_state_dict(tmp_path, capsys):
    import re

    from supermask.cli import main

    assert main(["search", "--arch", "lenet_300_100", "--density", "0.5", "--iterations", "2", "--batch-size", "500",
                 "--out", str(tmp_path), "--quiet", "--device", "cpu"]) == 0
    run = Path(capsys.readouterr().out.splitlines()[0].split(": ", 1)[1])
    for fmt, relation in (("ticket", "smaller than"), ("torch-prune", "the size of")):
        assert main(["export", str(run), "--format", fmt]) == 0
        line = capsys.readouterr().out
        found = re.search(r"wrote (\S+): ([\d,]+) bytes, ([\d.]+)x (smaller than|the size of) the float32 state dict "
                          r"\(([\d,]+) bytes\)", line)
        assert found and found.group(4) == relation, line
        written, state = int(found.group(2).replace(",", "")), int(found.group(5).replace(",", ""))
        assert written == Path(found.group(1)).stat().st_size
        ratio = state / written if relation == "smaller than" else written / state
        assert float(found.group(3)) == pytest.approx(ratio, abs=0.051)
