"""The real loaders, exercised on small data sets written in the real on-disk formats."""

import gzip
import json
import pickle
import struct

import numpy as np
import pytest
import torch

from supermask.data import TensorLoader, TensorSplit, load_dataset, make_loader, stratified_holdout
from supermask.data.datasets import DatasetInfo
from supermask.data.loader import random_crop
from supermask.errors import DataError, UnknownNameError
from supermask.resolved import resolve


def write_idx(path, array: np.ndarray, compress=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def fake_mnist(root, folder="MNIST", n_train=200, n_test=50, compress=False):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress)
    return root


def fake_cifar(root, classes=10, n_per_batch=40):
    rng = np.random.default_rng(1)
    if classes == 10:
        folder, files, key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels"
    else:
        folder, files, key = root / "cifar-100-python", ["train", "test"], "fine_labels"
    folder.mkdir(parents=True)
    for name in files:
        entry = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 key: list(np.arange(n_per_batch) % classes), "filenames": [b"x.png"] * n_per_batch}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    return root


def test_bundled_mnist5k_is_split_stratified_and_disjoint():
    d = load_dataset("mnist-5k")
    assert (len(d.train), len(d.val), len(d.test)) == (4000, 500, 500)
    assert d.train.images.dtype == torch.uint8 and d.train.images.shape[1:] == (1, 28, 28)
    for split, per_class in ((d.train, 400), (d.val, 50), (d.test, 50)):
        assert split.labels.bincount().tolist() == [per_class] * 10
    flat = lambda s: {bytes(img.numpy().tobytes()) for img in s.images}  # noqa: E731
    assert not (flat(d.val) & flat(d.test)) and not (flat(d.train) & flat(d.test))
    again = load_dataset("mnist-5k")
    assert torch.equal(again.test.images, d.test.images)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    d = load_dataset("mnist", fake_mnist(tmp_path, compress=compress))
    assert d.info.num_classes == 10 and d.info.in_channels == 1
    assert len(d.train) + len(d.val) == 200 and len(d.test) == 50
    assert d.test.labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_fashion_mnist_folder(tmp_path):
    d = load_dataset("fashion-mnist", fake_mnist(tmp_path, folder="FashionMNIST"))
    assert len(d.test) == 50


@pytest.mark.parametrize("classes,name", [(10, "cifar10"), (100, "cifar100")])
def test_cifar_pickle_batches(tmp_path, classes, name):
    d = load_dataset(name, fake_cifar(tmp_path, classes, n_per_batch=200))
    assert d.info.num_classes == classes and d.info.augment
    assert d.train.images.shape[1:] == (3, 32, 32)
    n_train = 5 * 200 if classes == 10 else 200
    assert len(d.train) + len(d.val) == n_train and len(d.test) == 200


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    folder = fake_cifar(tmp_path) / "cifar-10-batches-py"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({"data": Evil()}, f)
    with pytest.raises(DataError, match="not a CIFAR batch"):
        load_dataset("cifar10", tmp_path)


def test_svhn_mat_files(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    for split, n in (("train", 60), ("test", 20)):
        savemat(tmp_path / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                                   "y": (np.arange(n) % 10 + 1).reshape(-1, 1)})
    d = load_dataset("svhn", tmp_path)
    assert d.test.labels.tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # label 10 is the digit 0
    assert d.test.images.shape == (20, 3, 32, 32)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    for part, n in (("train", 10), ("val", 3)):
        for cls in ("cat", "dog"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / part / cls / f"{i}.png")
    d = load_dataset(f"imagefolder:{tmp_path}", image_size=8)
    assert d.info.num_classes == 2 and len(d.test) == 6 and len(d.train) + len(d.val) == 20
    loader = make_loader(d.train, d.info, 4, train=True, num_workers=0)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 8, 8) and labels.dtype == torch.int64


def _image_folder(root, classes):
    from PIL import Image

    rng = np.random.default_rng(4)
    for part, names in classes.items():
        for i, cls in enumerate(names):
            (root / part / cls).mkdir(parents=True)
            for j in range(6 if part == "train" else 2):
                colour = np.full((12, 12, 3), 40 * i + j, dtype=np.uint8) + rng.integers(0, 3, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(colour).save(root / part / cls / f"{j}.png")


def test_image_folder_classes_come_from_train_alone(tmp_path):
    _image_folder(tmp_path / "a", {"train": ["ant", "bee", "cat"], "val": ["bee", "cat"]})  # val lacks "ant"
    d = load_dataset(f"imagefolder:{tmp_path / 'a'}", image_size=8)
    assert d.info.num_classes == 3
    assert sorted({label for _, label in d.test}) == [1, 2]  # bee and cat keep train's indices
    _image_folder(tmp_path / "b", {"train": ["ant", "bee"], "val": ["bee", "cow"]})
    with pytest.raises(DataError, match="val/ has classes that train/ lacks: cow"):
        load_dataset(f"imagefolder:{tmp_path / 'b'}", image_size=8)


def test_moving_an_image_folder_keeps_the_run_hash(tmp_path):
    import shutil

    from supermask import SearchConfig

    _image_folder(tmp_path / "here", {"train": ["ant", "bee"], "val": ["ant", "bee"]})
    first = resolve(SearchConfig(arch="lenet_300_100", dataset=f"imagefolder:{tmp_path / 'here'}", image_size=8,
                         out=str(tmp_path / "runs")))
    first_path = first.run_dir().path
    shutil.move(tmp_path / "here", tmp_path / "moved" / "elsewhere")
    moved = resolve(SearchConfig(arch="lenet_300_100", dataset=f"imagefolder:{tmp_path / 'moved' / 'elsewhere'}",
                         image_size=8, out=str(tmp_path / "runs")))
    assert moved.run_dir().path == first_path
    assert "here" not in str(first_path) and first.data_fingerprint == moved.data_fingerprint
    other = resolve(SearchConfig(arch="lenet_300_100", dataset=f"imagefolder:{tmp_path / 'moved' / 'elsewhere'}",
                         image_size=10, out=str(tmp_path / "runs")))
    assert other.run_dir().path != first_path  # the crop size matters for image folders
    (tmp_path / "moved" / "elsewhere" / "train" / "ant" / "0.png").unlink()  # other content, other data
    changed = resolve(SearchConfig(arch="lenet_300_100", dataset=f"imagefolder:{tmp_path / 'moved' / 'elsewhere'}",
                           image_size=8, out=str(tmp_path / "runs")))
    assert changed.run_dir().path != first_path


def test_missing_and_unknown_data_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="pass --download"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DataError, match="no train/ directory"):
        load_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(UnknownNameError, match="unknown dataset"):
        load_dataset("imagenet-21k")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    (raw / "train-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(DataError):
        load_dataset("mnist", tmp_path)


def test_stratified_holdout_is_proportional_and_deterministic():
    labels = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    held, rest = stratified_holdout(labels, 10, seed=5)
    assert labels[held].bincount().tolist() == [7, 2, 1]
    assert len(set(held.tolist()) | set(rest.tolist())) == 100
    assert torch.equal(held, stratified_holdout(labels, 10, seed=5)[0])


def _split(n):
    return TensorSplit(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8), torch.arange(n) % 10)


def _info(augment):
    return DatasetInfo("t", 3, 8, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), augment=augment)


def test_tensor_loader_order_depends_on_seed_and_epoch_only():
    split = TensorSplit(torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8), torch.arange(50) % 10)
    def labels_of(seed, epoch):
        loader = TensorLoader(split, _info(True), 16, train=True, seed=seed)
        loader.set_epoch(epoch)
        return [torch.cat([y for _, y in loader]), torch.cat([x for x, _ in loader])]
    a, b, c = labels_of(0, 1), labels_of(0, 1), labels_of(0, 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert sorted(a[0].tolist()) == sorted(split.labels.tolist())  # every example once an epoch
    evals = TensorLoader(split, _info(True), 16, train=False)
    x, y = next(iter(evals))
    assert torch.equal(y, split.labels[:16])  # no shuffling and no augmentation when evaluating
    assert torch.allclose(x, (split.images[:16].float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_random_crop_is_the_shift_of_the_padded_image_at_its_offsets():
    images = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5) + 1
    dy, dx = torch.tensor([0, 3]), torch.tensor([4, 1])
    out = random_crop(images, 2, dy, dx)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for b in range(2):
        assert torch.equal(out[b], padded[b, :, dy[b]:dy[b] + 5, dx[b]:dx[b] + 5])


@pytest.mark.parametrize("n,batch,world", [(50, 16, 2), (37, 10, 3), (5, 8, 4)])
def test_sharded_loaders_together_yield_the_single_process_batches(n, batch, world):
    split = _split(n)
    whole = TensorLoader(split, _info(True), batch, train=True, seed=3)
    whole.set_epoch(2)
    ranks = [TensorLoader(split, _info(True), batch, train=True, seed=3, rank=r, world_size=world)
             for r in range(world)]
    for loader in ranks:
        loader.set_epoch(2)
    for i, ((x, y), *parts) in enumerate(zip(whole, *ranks)):
        assert torch.equal(torch.cat([p[0] for p in parts]), x)  # same examples, same augmentation
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        assert whole.global_batch_size(i) == len(y)


class _FakeTorchvisionMNIST:
    """Stands in for torchvision.datasets.MNIST's download: writes the IDX files, or half of one and fails."""

    fail = False

    def __init__(self, root, train=True, download=False):
        from pathlib import Path

        raw = Path(root) / "MNIST" / "raw"
        if self.fail:
            raw.mkdir(parents=True, exist_ok=True)
            (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b partial")
            raise ConnectionResetError("connection reset by peer")
        if train and not raw.exists():
            fake_mnist(Path(root), n_train=100, n_test=20)


def test_download_is_staged_so_an_interrupted_one_leaves_nothing_half_written(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torchvision.datasets, "MNIST", _FakeTorchvisionMNIST)
    monkeypatch.setattr(_FakeTorchvisionMNIST, "fail", True)
    with pytest.raises(DataError, match="downloading mnist failed, nothing written to .*connection reset"):
        load_dataset("mnist", tmp_path, download=True)
    assert not (tmp_path / "MNIST").exists() and not list(tmp_path.iterdir())  # no partial file, no staging
    monkeypatch.setattr(_FakeTorchvisionMNIST, "fail", False)
    data = load_dataset("mnist", tmp_path, download=True)
    assert len(data.train) + len(data.val) == 100 and len(data.test) == 20
    assert (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").exists() and len(list(tmp_path.iterdir())) == 1


def test_a_loaded_split_is_a_torch_dataset_too():
    """``load_dataset`` splits work with a plain DataLoader (ToTensor's [0, 1] floats and the labels),
    beside the resident loader that stays the fast path."""
    import torch

    from supermask import load_dataset

    data = load_dataset("mnist-5k")
    loader = torch.utils.data.DataLoader(data.train, batch_size=64)
    assert len(loader) == -(-len(data.train) // 64)
    images, labels = next(iter(loader))
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32
    assert torch.equal(images, data.train.images[:64].float() / 255) and torch.equal(labels, data.train.labels[:64])


def test_kmnist_folder_in_torchvisions_layout(tmp_path):
    from supermask.data.datasets import KMNIST_STATS

    d = load_dataset("kmnist", fake_mnist(tmp_path, folder="KMNIST", n_train=300))
    assert d.info.name == "kmnist" and (d.info.mean, d.info.std) == KMNIST_STATS
    assert d.train.images.shape[1:] == (1, 28, 28) and len(d.test) == 50
    assert len(d.val) == 30 and len(d.train) == 270  # a tenth held out
    assert sorted(d.val.labels.tolist()) == sorted(list(range(10)) * 3)  # stratified


def test_a_class_subset_is_relabelled_in_order_and_is_data_of_its_own():
    from supermask.data import fingerprint

    full = load_dataset("mnist-5k")
    upper = load_dataset("mnist-5k", classes="5-9")
    assert upper.info.num_classes == 5 and upper.info.classes == "5-9"
    for part in ("train", "val", "test"):
        original, kept = getattr(full, part), getattr(upper, part)
        chosen = original.labels >= 5  # computed here: every example of 5..9, in its order, label - 5
        assert torch.equal(kept.images, original.images[chosen])
        assert torch.equal(kept.labels, original.labels[chosen] - 5)
    lower = load_dataset("mnist-5k", classes=[0, 1, 2, 3, 4])
    prints = {fingerprint(full), fingerprint(upper), fingerprint(lower)}
    assert len(prints) == 3
    assert fingerprint(load_dataset("mnist-5k", classes="5,6,7-9")) == fingerprint(upper)
    odd = load_dataset("mnist-5k", classes="1,3,8")
    assert torch.equal(odd.test.labels.unique(), torch.tensor([0, 1, 2]))
    assert (odd.test.labels == 2).sum() == (full.test.labels == 8).sum()


@pytest.mark.parametrize("classes,message", [("5-12", "mnist-5k has classes 0-9 .no class 10."),
                                             ("3", "at least two classes"), ("a-b", "not a class index"),
                                             ("4-2", "not a range")])
def test_bad_class_subsets_are_one_line(classes, message):
    from supermask.errors import SupermaskError

    with pytest.raises(SupermaskError, match=message):
        load_dataset("mnist-5k", classes=classes)


def test_classes_are_in_the_hash_in_canonical_form(tmp_path):
    from supermask.configs import SearchConfig

    def run_dir(classes):
        return resolve(SearchConfig(arch="lenet_300_100", classes=classes, out=str(tmp_path))).run_dir().path

    assert run_dir("5-9") == run_dir("9,8,7,5,6") != run_dir(None) != run_dir("0-4")
    assert resolve(SearchConfig(classes="9,8,7,5,6")).classes == "5-9"


def test_an_image_folder_subset_is_relabelled(tmp_path):
    from PIL import Image

    from supermask.data import fingerprint

    for part, n in (("train", 10), ("val", 2)):
        for name in ("ant", "bee", "cat"):
            folder = tmp_path / part / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"{i}.png")
    d = load_dataset(f"imagefolder:{tmp_path}", image_size=8, classes="1-2")
    assert d.info.num_classes == 2
    assert sorted(int(d.test[i][1]) for i in range(len(d.test))) == [0, 0, 1, 1]
    assert len(d.train) + len(d.val) == 20
    assert fingerprint(d) != fingerprint(load_dataset(f"imagefolder:{tmp_path}", image_size=8))


def test_images_converted_to_another_shape_match_a_plain_computation(tmp_path):
    import torch.nn.functional as F

    from supermask.data.datasets import parse_input_shape

    full = load_dataset("mnist-5k")
    rgb = load_dataset("mnist-5k", input_shape="3x32x32")
    assert (rgb.info.in_channels, rgb.info.image_size) == (3, 32)
    x = full.test.images[:7].float().repeat(1, 3, 1, 1)  # here: repeat, then resize, then round
    by_hand = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(rgb.test.images[:7], by_hand.round().clamp(0, 255).to(torch.uint8))
    assert torch.equal(rgb.test.labels, full.test.labels)
    assert rgb.info.mean[0] == rgb.info.mean[1] == rgb.info.mean[2]  # three copies of one channel
    cifar = load_dataset("cifar10", fake_cifar(tmp_path, n_per_batch=20), input_shape="1x28x28")
    pixels = load_dataset("cifar10", tmp_path).test.images[:3].float()
    luma = (pixels * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    expected = F.interpolate(luma, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(cifar.test.images[:3], expected.round().clamp(0, 255).to(torch.uint8))
    for bad in ("2x28x28", "3x28x30", "axb"):
        with pytest.raises(DataError, match="input-shape"):
            parse_input_shape(bad)


def test_a_train_subset_is_stratified_fixed_and_leaves_validation_and_test_alone():
    from supermask.data import fingerprint, load_dataset
    from supermask.data.datasets import subsample_train

    full = load_dataset("mnist-5k")
    part = subsample_train(full, 0.1)
    again = load_dataset("mnist-5k", train_subset=0.1)
    assert torch.equal(part.train.labels, again.train.labels) and torch.equal(part.train.images, again.train.images)
    counts = torch.bincount(full.train.labels, minlength=10).tolist()
    kept = torch.bincount(part.train.labels, minlength=10).tolist()
    # largest remainder, by hand: each class's exact share of 400, floors, then the largest fractions get one more
    exact = [c * 400 / sum(counts) for c in counts]
    want = [int(e) for e in exact]
    for c in sorted(range(10), key=lambda c: (-(exact[c] - int(exact[c])), c))[: 400 - sum(want)]:
        want[c] += 1
    assert kept == want and sum(kept) == 400
    rows = {bytes(img.numpy().tobytes()) for img in full.train.images}
    assert all(bytes(img.numpy().tobytes()) in rows for img in part.train.images)  # a subset, no copies
    assert torch.equal(part.val.labels, full.val.labels) and torch.equal(part.test.images, full.test.images)
    assert fingerprint(part) != fingerprint(full)
    counted = load_dataset("mnist-5k", train_subset=400)
    assert torch.equal(counted.train.labels, part.train.labels)  # 400 examples = a tenth


def test_a_run_on_a_train_subset_trains_fewer_steps_and_its_export_evaluates(tmp_path, capsys):
    from supermask.cli import main

    args = ["search", "--arch", "lenet_300_100", "--train-subset", "0.25", "--epochs", "1", "--batch-size", "250",
            "--device", "cpu", "-q", "--out", str(tmp_path)]
    assert main(args) == 0
    run = next(tmp_path.rglob("result.json")).parent
    config, result = (json.loads((run / name).read_text()) for name in ("config.json", "result.json"))
    assert config["train_subset"] == 0.25 and result["train_subset"] == 0.25
    assert result["steps"] == 4  # 1,000 of 4,000 training images at batch 250
    capsys.readouterr()
    assert main(["export", str(run), "--format", "state-dict"]) == 0
    assert main(["evaluate", str(run / "export" / "state-dict.safetensors")]) == 0
    assert "(the same)" in capsys.readouterr().out
    for value, message in (("1.5", "a fraction in (0, 1) or a count"), ("3", "need between 10 (one per class)"),
                           ("half", "a fraction in (0, 1) or a count")):
        assert main([*args[:3], "--train-subset", value, *args[5:]]) == 2
        assert message in capsys.readouterr().err
