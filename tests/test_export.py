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
