"""Pretrained starting points (--init-from): IMP and dense training start from a given network,
which IMP rewinds to; its content, not its path, is part of the run's identity."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from supermask.cli import main

SMALL = ["--arch", "lenet_300_100", "--batch-size", "500", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A network this library trained, exported as a plain state dict."""
    root = tmp_path_factory.mktemp("pretrained")
    assert main(["train", *SMALL, "--iterations", "16", "--out", str(root / "runs")]) == 0
    run = next((root / "runs").rglob("result.json")).parent
    assert main(["export", str(run), "--format", "state-dict", "--out", str(root / "start.safetensors")]) == 0
    return root / "start.safetensors", json.loads((run / "result.json").read_text())["test_accuracy"]


def _result(root):
    return json.loads(next(p for p in root.rglob("result.json") if "levels" not in p.read_text()).read_text())


def test_dense_training_starts_from_the_given_network(pretrained, tmp_path):
    path, accuracy = pretrained
    assert main(["train", *SMALL, "--iterations", "1", "--init-from", str(path), "--out", str(tmp_path / "a")]) == 0
    result = _result(tmp_path / "a")
    assert result["initial_test_accuracy"] == accuracy  # before any step: the file's network
    config = json.loads(next((tmp_path / "a").rglob("config.json")).read_text())
    tensors = load_file(path)
    assert config["init_from_checksum"] == _checksum(tensors)
    ticket = json.loads(next((tmp_path / "a").rglob("ticket.json")).read_text())
    assert ticket["init_from_checksum"] == config["init_from_checksum"]  # in the provenance too
    moved = tmp_path / "elsewhere.safetensors"
    shutil.copy(path, moved)  # the same content under another path: the same run
    assert main(["train", *SMALL, "--iterations", "1", "--init-from", str(moved), "--out", str(tmp_path / "a")]) == 0
    assert len(list((tmp_path / "a").rglob("result.json"))) == 1
    assert main(["train", *SMALL, "--iterations", "1", "--out", str(tmp_path / "a")]) == 0  # without: another run
    assert len(list((tmp_path / "a").rglob("result.json"))) == 2


def _checksum(tensors):
    import hashlib

    digest = hashlib.sha256()  # written out here: names sorted, dtype, shape and bytes of each
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_imp_rewinds_to_the_given_network(pretrained, tmp_path):
    path, accuracy = pretrained
    torch_saved = tmp_path / "start.pt"
    torch.save(load_file(path), torch_saved)  # a plain torch.save state dict works as well
    for source in (path, torch_saved):
        out = tmp_path / source.suffix[1:]
        assert main(["imp", *SMALL, "--iterations", "2", "--levels", "1", "--init-from", str(source),
                     "--out", str(out)]) == 0
        theta0 = load_file(next(out.rglob("rewind.safetensors")))
        start = load_file(path)
        assert all(torch.equal(theta0[name], start[name]) for name in start)  # θ0 is the file's network
        level0 = json.loads(next(out.rglob("level-0/result.json")).read_text())
        assert level0["initial_test_accuracy"] == accuracy


def test_a_file_that_is_no_starting_point_is_one_line(pretrained, tmp_path, capsys):
    path, _ = pretrained
    tensors = load_file(path)
    save_file({k: v for k, v in tensors.items() if k != "1.bias"}, tmp_path / "short.safetensors")
    save_file({**tensors, "1.weight": torch.zeros(3, 3)}, tmp_path / "shape.safetensors")
    save_file({**tensors, "1.weight": torch.full_like(tensors["1.weight"], float("nan"))}, tmp_path / "nan.safetensors")
    (tmp_path / "text.safetensors").write_text("not tensors")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases = {"short.safetensors": "lacks 1.bias", "shape.safetensors": "1.weight has shape [3, 3]",
             "nan.safetensors": "1.weight holds non-finite values", "text.safetensors": "not a safetensors file",
             "list.pt": "not a state dict", "missing.pt": "no such file"}
    for name, message in cases.items():
        for command in ("train", "imp"):
            code = main([command, *SMALL, "--iterations", "1", "--init-from", str(tmp_path / name),
                         "--out", str(tmp_path / "runs")])
            err = capsys.readouterr().err
            assert code == 2 and err.count("\n") == 1 and message in err, (name, err)
    assert not (tmp_path / "runs").exists()  # refused before any run directory is made
