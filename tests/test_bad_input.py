"""Bad input that needs files to exist first: every case one line on stderr, exit 2, nothing finished."""

import gzip
import json
from pathlib import Path

import pytest

from supermask.cli import main

SMALL = ["--arch", "lenet_300_100", "--iterations", "2", "--batch-size", "500", "--device", "cpu", "-q"]


def finished_run(tmp_path: Path) -> Path:
    assert main(["search", *SMALL, "--out", str(tmp_path / "done")]) == 0
    return next((tmp_path / "done").rglob("result.json")).parent


def cifar_with_junk(tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"this is not a pickle")
    return ["search", "--dataset", "cifar10", "--data-root", str(tmp_path / "data")], "not a CIFAR batch"


def mnist_truncated(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03")[:12])
    return ["search", "--dataset", "mnist", "--data-root", str(tmp_path / "data")], "MNIST/raw/train-images"


def image_folder_without_images(tmp_path):
    for part in ("train", "val"):
        (tmp_path / "imgs" / part / "cat").mkdir(parents=True)
    return ["search", "--dataset", f"imagefolder:{tmp_path / 'imgs'}"], "image folder"


def image_folder_without_train(tmp_path):
    (tmp_path / "imgs").mkdir()
    return ["search", "--dataset", f"imagefolder:{tmp_path / 'imgs'}"], "has no train/ directory"


def data_root_is_a_file(tmp_path):
    (tmp_path / "data").write_text("")
    return ["search", "--dataset", "cifar10", "--data-root", str(tmp_path / "data")], "is a file"


def export_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    return ["export", str(tmp_path / "empty"), "--format", "mask"], "not a finished run"


def export_a_file(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    return ["export", str(tmp_path / "f.txt"), "--format", "mask"], "is a file"


def export_over_a_device_node(tmp_path):
    import os

    run = finished_run(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # a non-regular file, like /dev/null
    return ["export", str(run), "--format", "mask", "--out", str(fifo)], "is not a regular file: refusing"


def export_over_a_file_it_did_not_write(tmp_path):
    run = finished_run(tmp_path)
    (tmp_path / "notes.txt").write_text("my notes")
    return ["export", str(run), "--format", "mask", "--out", str(tmp_path / "notes.txt")], "was not written by supermask: refusing to replace it"


def export_into_another_run_directory(tmp_path):
    run = finished_run(tmp_path)
    other = tmp_path / "other"
    assert main(["search", *SMALL, "--seed", "1", "--out", str(other)]) == 0
    (config,) = [p for p in other.rglob("config.json")]
    return ["export", str(run), "--format", "mask", "--out", str(config.parent / "mask.safetensors")], \
        "is inside a run directory"


def rerun_with_a_result_that_is_a_list(tmp_path):
    run = finished_run(tmp_path)
    (run / "result.json").write_text("[1, 2, 3]")
    return ["search", *SMALL, "--out", str(tmp_path / "done")], "not a result record (a JSON list)"


def rerun_with_a_result_lacking_a_key(tmp_path):
    run = finished_run(tmp_path)
    result = json.loads((run / "result.json").read_text())
    del result["test_accuracy"]
    (run / "result.json").write_text(json.dumps(result))
    return ["search", *SMALL, "--out", str(tmp_path / "done")], "a damaged result record (no test_accuracy)"


def export_with_a_ticket_json_that_is_a_list(tmp_path):
    run = finished_run(tmp_path)
    (run / "ticket" / "ticket.json").write_text("[]")
    return ["export", str(run), "--format", "mask"], "not a ticket description"


def finetune_a_ticket_whose_config_is_a_list(tmp_path):
    run = finished_run(tmp_path)
    (run / "config.json").write_text("[]")
    return ["train", "--ticket", str(run), *SMALL[2:]], "not a search run's config"


def export_unknown_format(tmp_path):
    return ["export", str(finished_run(tmp_path)), "--format", "onnx"], "Invalid value for '--format'"


def export_corrupt_ticket_state(tmp_path):
    run = finished_run(tmp_path)
    (run / "ticket" / "model.safetensors").write_bytes(b"PK\x03\x04 truncated")
    return ["export", str(run), "--format", "state-dict"], "model.safetensors: not a safetensors file"


def resume_from_checkpoint_that_runs_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    run = finished_run(tmp_path)
    (run / "result.json").unlink()  # unfinished: the same command resumes from the checkpoint
    (run / "checkpoint.pt").write_bytes(pickle.dumps({"model": Evil()}))
    return ["search", *SMALL, "--out", str(tmp_path / "done")], "checkpoint.pt: unreadable checkpoint"


def export_corrupt_mask(tmp_path):
    run = finished_run(tmp_path)
    (run / "ticket" / "mask.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return ["export", str(run), "--format", "mask"], "mask.safetensors"


def export_corrupt_ticket_json(tmp_path):
    run = finished_run(tmp_path)
    (run / "ticket" / "ticket.json").write_text("{")
    return ["export", str(run), "--format", "ticket"], "ticket.json: not valid JSON"


def export_corrupt_result(tmp_path):
    run = finished_run(tmp_path)
    (run / "result.json").write_text("[1, 2")
    return ["export", str(run), "--format", "mask"], "result.json: not valid JSON"


def compare_a_file(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    return ["compare", str(tmp_path / "f.txt"), "--out", str(tmp_path / "report")], "no finished runs"


def run_dir_of_another_config(tmp_path):
    from supermask.search import SearchConfig
    from supermask.training import TrainConfig

    from supermask.configs import identify
    from supermask.resolved import resolve

    config = identify(resolve(SearchConfig(arch="lenet_300_100", out=str(tmp_path / "runs"), device="cpu",
                                           train=TrainConfig(iterations=2, batch_size=500))))
    run = config.run_dir()
    run.path.mkdir(parents=True)
    stored = json.loads(json.dumps(__import__("dataclasses").asdict(config)))
    stored["density"] = 0.25
    run.config_path.write_text(json.dumps(stored))
    return ["search", *SMALL, "--out", str(tmp_path / "runs")], "holds a run of another config (differs in: density)"


def output_is_unwritable(tmp_path):
    return ["search", *SMALL, "--out", "/proc/supermask-runs"], "cannot create run directory"


def interrupted_download(tmp_path, monkeypatch=None):
    return ["search", "--dataset", "fashion-mnist", "--data-root", str(tmp_path / "data"), "--download"], \
        "downloading fashion-mnist failed, nothing written"


def torchvision_vit_on_28_pixel_images(tmp_path):
    return ["search", *SMALL, "--arch", "torchvision/vit_b_16"], "cannot be built for 28-pixel images"


def architecture_that_pools_the_images_away(tmp_path):
    return ["search", *SMALL, "--arch", "torchvision/alexnet"], "cannot take 1x28x28 inputs"


def imp_on_an_architecture_that_pools_the_images_away(tmp_path):
    return ["imp", *SMALL, "--arch", "torchvision/alexnet"], "cannot take 1x28x28 inputs"


def _images(root: Path, classes=("a", "b"), n=4):
    import numpy as np
    from PIL import Image

    for part in ("train", "val"):
        for c in classes:
            (root / part / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / part / c / f"{i}.jpg")
    return root


def image_size_beyond_memory(tmp_path):
    folder = _images(tmp_path / "imgs")
    return ["search", *SMALL, "--dataset", f"imagefolder:{folder}", "--image-size", "1000000"], \
        "more than this machine's"


def truncated_image_read_by_workers(tmp_path):
    folder = _images(tmp_path / "imgs")
    image = folder / "train" / "a" / "1.jpg"
    image.write_bytes(image.read_bytes()[:40])
    return ["search", *SMALL, "--dataset", f"imagefolder:{folder}", "--image-size", "8", "--num-workers", "2",
            "--batch-size", "8"], "1.jpg: not a readable image"


def _finished_imp(tmp_path: Path) -> Path:
    assert main(["imp", *SMALL, "--levels", "1", "--out", str(tmp_path / "imp")]) == 0
    return next((tmp_path / "imp").rglob("rewind.safetensors")).parent


def imp_resumed_with_a_reshaped_rewind_point(tmp_path):
    from safetensors.torch import load_file, save_file

    root = _finished_imp(tmp_path)
    state = load_file(root / "rewind.safetensors")
    state["1.weight"] = state["1.weight"][:10].clone()
    save_file(state, root / "rewind.safetensors")
    import shutil

    shutil.rmtree(root / "level-1")
    (root / "result.json").unlink()
    return ["imp", *SMALL, "--levels", "1", "--out", str(tmp_path / "imp")], "1.weight has shape [10, 784]"


def export_a_mask_of_the_wrong_shape(tmp_path):
    from safetensors.torch import load_file, save_file

    run = finished_run(tmp_path)
    masks = load_file(run / "ticket" / "mask.safetensors")
    name = next(iter(masks))
    masks[name] = masks[name][:3].clone()
    save_file(masks, run / "ticket" / "mask.safetensors")
    return ["export", str(run), "--format", "state-dict"], "mask.safetensors: 1.weight has shape [3, 784]"


def finetune_an_imp_level(tmp_path):
    root = _finished_imp(tmp_path)
    return ["train", "--ticket", str(root / "level-1"), *SMALL[2:]], "not a search run (engine 'imp')"


def download_failing_with_a_long_message(tmp_path):
    return ["search", "--dataset", "mnist", "--data-root", str(tmp_path / "data"), "--download"], \
        "downloading mnist failed, nothing written to"


def width_beyond_memory(tmp_path):
    return ["search", *SMALL, "--width", "3000"], "more than this machine's"


def width_whose_sizes_overflow(tmp_path):
    return ["search", *SMALL, "--width", "1e9"], "sizes overflow"


def _exported(tmp_path: Path, fmt: str) -> Path:
    run = finished_run(tmp_path)
    assert main(["export", str(run), "--format", fmt, "--out", str(tmp_path / f"{fmt}.safetensors")]) == 0
    return tmp_path / f"{fmt}.safetensors"


def evaluate_on_cuda_without_one(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return ["evaluate", str(_exported(tmp_path, "state-dict")), "--device", "cuda"], "CUDA is not available"


def evaluate_on_a_bogus_device(tmp_path):
    return ["evaluate", str(_exported(tmp_path, "state-dict")), "--device", "bogus"], "device must be auto, cpu"


def evaluate_a_sparse_export_reading_beyond_its_inputs(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _exported(tmp_path, "sparse")
    tensors = load_file(path)
    tensors["3.weight.col_indices"][0] = 301  # a 300-input layer
    save_file(tensors, path, metadata={k: v for k, v in __import__("safetensors").safe_open(
        str(path), "pt").metadata().items() if k != "supermask_checksum"})  # as an old export, unchecked
    return ["evaluate", str(path)], "3.weight: damaged CSR parts"


CASES = [cifar_with_junk, mnist_truncated, image_folder_without_images, image_folder_without_train,
         data_root_is_a_file, export_not_a_run, export_a_file, export_over_a_device_node,
         export_over_a_file_it_did_not_write, export_into_another_run_directory, export_unknown_format,
         rerun_with_a_result_that_is_a_list, rerun_with_a_result_lacking_a_key,
         export_with_a_ticket_json_that_is_a_list, finetune_a_ticket_whose_config_is_a_list, export_corrupt_ticket_state,
         resume_from_checkpoint_that_runs_code, export_corrupt_mask, export_corrupt_ticket_json, export_corrupt_result,
         compare_a_file, run_dir_of_another_config, output_is_unwritable, interrupted_download,
         torchvision_vit_on_28_pixel_images, architecture_that_pools_the_images_away,
         imp_on_an_architecture_that_pools_the_images_away, image_size_beyond_memory, truncated_image_read_by_workers,
         imp_resumed_with_a_reshaped_rewind_point, export_a_mask_of_the_wrong_shape,
         download_failing_with_a_long_message, finetune_an_imp_level, width_beyond_memory,
         width_whose_sizes_overflow, evaluate_on_cuda_without_one, evaluate_on_a_bogus_device,
         evaluate_a_sparse_export_reading_beyond_its_inputs]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_clear_line_and_status_2(case, tmp_path, capsys, monkeypatch):
    import torchvision

    class NoNetwork:
        def __init__(self, root, *args, **kwargs):
            (Path(root) / "FashionMNIST" / "raw").mkdir(parents=True, exist_ok=True)
            (Path(root) / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b")
            raise OSError("[Errno 101] Network is unreachable")

    class ChattyFailure:  # prints to stdout and fails with a message over several lines, as mirrors do
        def __init__(self, root, *args, **kwargs):
            print("Downloading http://example.invalid/train-images-idx3-ubyte.gz")
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://a, got:\nHTTP Error 503")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", NoNetwork)
    monkeypatch.setattr(torchvision.datasets, "MNIST", ChattyFailure)
    args, message = case(tmp_path)
    finished_before = set(tmp_path.rglob("result.json"))
    checkpoints_before = set(tmp_path.rglob("checkpoint.pt"))
    files_before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")
                    if p.is_file() and not p.is_symlink() and p.name != "status.json"}
    capsys.readouterr()
    code = main(args + (["--out", str(tmp_path / "out")] if args[0] in ("search",) and "--out" not in args else []))
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert "Downloading" not in captured.out  # a library's chatter is not the user's output
    assert err.startswith("supermask: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err and "pwned" not in err
    assert message in err, err
    assert set(tmp_path.rglob("result.json")) == finished_before  # nothing new looks finished
    assert set(tmp_path.rglob("checkpoint.pt")) <= checkpoints_before  # no new training started
    assert all(p.exists() and (p.stat().st_size, p.stat().st_mtime_ns) == before  # nothing the user had changed
               for p, before in files_before.items())
    if case is interrupted_download:
        assert not (tmp_path / "data" / "FashionMNIST").exists()
