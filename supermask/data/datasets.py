"""The dataset registry: every data set as train / val / test splits plus what the model needs.

- ``mnist-5k`` (default): the 5,000 real MNIST images bundled with the package,
  split stratified 4,000 / 500 / 500 by a fixed seed.
- ``mnist``, ``fashion-mnist``, ``kmnist``, ``cifar10``, ``cifar100``, ``svhn``: read from
  ``--data-root`` in torchvision's on-disk layout; with ``download`` set, torchvision fetches them there.
- ``imagefolder:PATH``: ImageNet-style ``PATH/train/<class>/*`` and ``PATH/val/<class>/*``.
- ``tinyshakespeare`` (bundled) and ``text:PATH``: character-level text for language models
  (:mod:`supermask.data.text`).

Any of them restricted to some of its classes (``load_dataset(..., classes="0-4")``, the
command line's ``--classes``): the kept classes relabelled ``0..n-1`` (:func:`restrict_classes`).

The validation split is always held out of the training split by a fixed seed
(``VAL_SPLIT_SEED``), so every run of every seed selects on the same images; the
test split is only ever reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import io
import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from ..catalog import IMAGEFOLDER_PREFIX, imagefolder_path
from ..errors import DataError, SupermaskError
from ..registry import Registry
from . import formats
from .splits import Dataset, DatasetInfo, Split, TensorSplit  # noqa: F401  (the data set's parts, re-exported)

#: torchvision's ImageNet normalisation (mean, std), used for image folders.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

log = logging.getLogger(__name__)

VAL_SPLIT_SEED = 0


Loader = Callable[[Path, bool], Dataset]
DATASETS: Registry[Loader] = Registry("dataset")

MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
KMNIST_STATS = ((0.1918,), (0.3483,))  # Kuzushiji-MNIST's training pixels (the values in common use)
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))


def default_data_root() -> Path:
    """``$SUPERMASK_DATA``, else ``$XDG_CACHE_HOME/supermask/data`` (``~/.cache/supermask/data``)."""
    if os.environ.get("SUPERMASK_DATA"):
        return Path(os.environ["SUPERMASK_DATA"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "supermask" / "data"


def stratified_holdout(labels: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(held_out, rest)``: ``size`` examples drawn per class in proportion to the
    class frequencies (largest-remainder rounding), deterministic given ``seed``."""
    labels_np = labels.numpy()
    n = len(labels_np)
    if not 0 < size < n:
        raise DataError(f"cannot hold out {size} of {n} examples")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels_np, return_counts=True)
    exact = counts * size / n
    quotas = np.floor(exact).astype(int)
    quotas[np.argsort(-(exact - quotas), kind="stable")[: size - quotas.sum()]] += 1
    held = np.concatenate([rng.permutation(np.flatnonzero(labels_np == c))[:q] for c, q in zip(classes, quotas)])
    is_held = np.zeros(n, dtype=bool)
    is_held[held] = True
    return torch.from_numpy(np.flatnonzero(is_held)), torch.from_numpy(np.flatnonzero(~is_held))


def _hold_out_val(images, labels, val_size: int) -> tuple[TensorSplit, TensorSplit]:
    val_idx, train_idx = stratified_holdout(labels, val_size, VAL_SPLIT_SEED)
    return TensorSplit(images[train_idx], labels[train_idx]), TensorSplit(images[val_idx], labels[val_idx])


def _missing(name: str, expected: Path) -> DataError:
    return DataError(f"{name} not found: expected {expected}; pass --download to fetch it, or --data-root")


def _download(name: str, root: Path, fetch: Callable[[str], object]) -> None:
    """``fetch(folder)`` (torchvision's download) into a staging folder beside ``root``'s files; each
    complete file is then renamed into ``root``. An interrupted or failed download leaves nothing
    half-written where the loaders look (the staging folder is removed)."""
    log.info("downloading %s", name)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".download-{name}-", dir=root))
    try:
        chatter = io.StringIO()  # torchvision prints its progress and every failed mirror
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                fetch(str(staging))
        except Exception as exc:  # network errors come in many types
            detail = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise DataError(f"downloading {name} failed, nothing written to {root}: {detail}") from None
        finally:
            log.debug("download of %s said: %s", name, chatter.getvalue())
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                target = root / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@DATASETS.register("mnist-5k")
def load_mnist5k(root: Path, download: bool) -> Dataset:
    with resources.files("supermask.data").joinpath("files/mnist-5k.npz").open("rb") as f:
        arrays = np.load(f)
        images = torch.from_numpy(arrays["images"].copy()).unsqueeze(1)
        labels = torch.from_numpy(arrays["labels"].astype(np.int64))
    test_idx, rest = stratified_holdout(labels, 500, VAL_SPLIT_SEED)
    val_pos, train_pos = stratified_holdout(labels[rest], 500, VAL_SPLIT_SEED + 1)
    train_idx, val_idx = rest[train_pos], rest[val_pos]
    info = DatasetInfo("mnist-5k", 1, 28, 10, *MNIST_STATS, augment=False)
    split = lambda idx: TensorSplit(images[idx], labels[idx])  # noqa: E731
    return Dataset(info, split(train_idx), split(val_idx), split(test_idx))


def _mnist_like(name: str, folder: str, stats, tv_class: str) -> Loader:
    def load(root: Path, download: bool) -> Dataset:
        raw = root / folder / "raw"
        present = (raw / "train-images-idx3-ubyte").exists() or (raw / "train-images-idx3-ubyte.gz").exists()
        if download and not present:
            import torchvision

            cls = getattr(torchvision.datasets, tv_class)
            _download(name, root, lambda folder: (cls(folder, train=True, download=download),
                                                  cls(folder, train=False, download=download)))
        if not (raw / "train-images-idx3-ubyte").exists() and not (raw / "train-images-idx3-ubyte.gz").exists():
            raise _missing(name, raw / "train-images-idx3-ubyte")
        try:
            images, labels = formats.read_mnist_folder(raw, train=True)
            test_images, test_labels = formats.read_mnist_folder(raw, train=False)
        except FileNotFoundError as exc:
            raise _missing(name, Path(exc.args[0])) from None
        train, val = _hold_out_val(images, labels, min(5000, len(labels) // 10))
        info = DatasetInfo(name, 1, images.shape[-1], 10, *stats, augment=False)
        return Dataset(info, train, val, TensorSplit(test_images, test_labels))

    return load


DATASETS.add("mnist", _mnist_like("mnist", "MNIST", MNIST_STATS, "MNIST"))
DATASETS.add("fashion-mnist", _mnist_like("fashion-mnist", "FashionMNIST", FASHION_STATS, "FashionMNIST"))
DATASETS.add("kmnist", _mnist_like("kmnist", "KMNIST", KMNIST_STATS, "KMNIST"))


def _cifar(name: str, folder: str, train_files, test_files, label_key, classes, stats, tv_class) -> Loader:
    def load(root: Path, download: bool) -> Dataset:
        path = root / folder
        if download and not (path / train_files[0]).exists():
            import torchvision

            cls = getattr(torchvision.datasets, tv_class)
            _download(name, root, lambda folder: cls(folder, train=True, download=download))
        try:
            images, labels = formats.read_cifar_folder(path, train_files, label_key)
            test = TensorSplit(*formats.read_cifar_folder(path, test_files, label_key))
        except FileNotFoundError as exc:
            raise _missing(name, Path(exc.filename or path)) from None
        train, val = _hold_out_val(images, labels, min(5000, len(labels) // 10))
        return Dataset(DatasetInfo(name, 3, 32, classes, *stats, augment=True), train, val, test)

    return load


DATASETS.add("cifar10", _cifar("cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                               ["test_batch"], "labels", 10, CIFAR10_STATS, "CIFAR10"))
DATASETS.add("cifar100", _cifar("cifar100", "cifar-100-python", ["train"], ["test"], "fine_labels", 100,
                                CIFAR100_STATS, "CIFAR100"))


@DATASETS.register("svhn")
def load_svhn(root: Path, download: bool) -> Dataset:
    if download and not (root / "train_32x32.mat").exists():
        import torchvision

        _download("svhn", root, lambda folder: (torchvision.datasets.SVHN(folder, split="train", download=download),
                                                torchvision.datasets.SVHN(folder, split="test", download=download)))
    try:
        images, labels = formats.read_svhn_mat(root / "train_32x32.mat")
        test = TensorSplit(*formats.read_svhn_mat(root / "test_32x32.mat"))
    except FileNotFoundError as exc:
        raise _missing("svhn", Path(exc.filename or root / "train_32x32.mat")) from None
    train, val = _hold_out_val(images, labels, min(5000, len(labels) // 10))
    # No horizontal flip for digits: SVHN trains without augmentation here.
    return Dataset(DatasetInfo("svhn", 3, 32, 10, *SVHN_STATS, augment=False), train, val, test)


class _ImageFolderOfClasses:
    """Builds a torchvision ``ImageFolder`` whose class-to-index map is given (the train split's),
    so that a ``val/`` lacking a class keeps every other label where ``train/`` put it."""

    def __init__(self, classes: list[str]):
        self.classes = classes

    def __call__(self, root: str, transform):
        from torchvision import datasets

        classes = self.classes

        class Folder(datasets.ImageFolder):
            def find_classes(self, directory):
                return list(classes), {name: i for i, name in enumerate(classes)}

        return Folder(root, transform=transform, allow_empty=True)


def load_imagefolder(path: Path, image_size: int = 224) -> Dataset:
    """``PATH/train`` (10% held out, stratified, as validation) and ``PATH/val`` (reported as test).
    Class indices come from ``train/`` alone; a ``val/`` class that ``train/`` lacks is an error."""
    from torchvision import datasets, transforms


    for part in ("train", "val"):
        if not (path / part).is_dir():
            raise DataError(f"image folder {path} has no {part}/ directory (expected {path}/{part}/<class>/<image>)")
    normalize = transforms.Normalize(*IMAGENET_STATS)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    eval_tf = transforms.Compose([transforms.Resize(round(image_size * 8 / 7)), transforms.CenterCrop(image_size),
                                  transforms.ToTensor(), normalize])
    try:
        full_train = datasets.ImageFolder(str(path / "train"), transform=train_tf)
        unknown = sorted({p.name for p in (path / "val").iterdir() if p.is_dir()} - set(full_train.classes))
        if unknown:
            raise DataError(f"image folder {path}: val/ has classes that train/ lacks: {', '.join(unknown[:5])}"
                            f"{' ...' if len(unknown) > 5 else ''}")
        same_classes = _ImageFolderOfClasses(full_train.classes)
        full_eval = same_classes(str(path / "train"), eval_tf)
        test = same_classes(str(path / "val"), eval_tf)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"image folder {path}: {exc}") from None
    if len(test) == 0:
        raise DataError(f"image folder {path}: val/ holds no images")
    labels = torch.tensor(full_train.targets)
    val_idx, train_idx = stratified_holdout(labels, max(1, len(labels) // 10), VAL_SPLIT_SEED)
    subset = torch.utils.data.Subset
    info = DatasetInfo(f"{IMAGEFOLDER_PREFIX}{path}", 3, image_size, len(full_train.classes), *IMAGENET_STATS, augment=False)
    return Dataset(info, subset(full_train, train_idx.tolist()), subset(full_eval, val_idx.tolist()), test)


class RelabelledSplit(TorchDataset):
    """The examples of ``split`` (a torch Dataset) at ``indices``, each label ``y`` replaced by
    ``mapping[y]``: a class subset of an image folder."""

    def __init__(self, split, indices: list[int], mapping: dict[int, int]):
        self.split, self.indices, self.mapping = split, list(indices), dict(mapping)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, label = self.split[self.indices[index]]
        return image, self.mapping[int(label)]


def _split_labels(split) -> torch.Tensor:
    if isinstance(split, TensorSplit):
        return split.labels
    if isinstance(split, RelabelledSplit):
        inner = _split_labels(split.split)
        return torch.tensor([split.mapping[int(inner[i])] for i in split.indices], dtype=torch.int64)
    if isinstance(split, torch.utils.data.Subset):
        targets = split.dataset.targets
        return torch.tensor([targets[i] for i in split.indices], dtype=torch.int64)
    return torch.tensor(split.targets, dtype=torch.int64)


def restrict_classes(data: Dataset, classes: tuple[int, ...]) -> Dataset:
    """``data`` holding only the examples of ``classes`` (sorted indices), relabelled ``0..n-1`` in
    that order, in every split (the validation hold-out stays the one of the full data set)."""
    from ..classes import classes_text

    name, total = data.info.name, data.info.num_classes
    beyond = [c for c in classes if c >= total]
    if beyond:
        raise DataError(f"--classes {classes_text(classes)}: {name} has classes 0-{total - 1} (no class {beyond[0]})")
    mapping = {c: i for i, c in enumerate(classes)}
    lookup = torch.full((total,), -1, dtype=torch.int64)
    lookup[list(classes)] = torch.arange(len(classes))
    splits = {}
    for part in ("train", "val", "test"):
        split = getattr(data, part)
        labels = _split_labels(split)
        keep = torch.isin(labels, torch.tensor(classes))
        if part == "train":
            absent = sorted(set(classes) - set(labels[keep].tolist()))
            if absent:
                raise DataError(f"--classes {classes_text(classes)}: {name}'s training split has no example of "
                                f"class {absent[0]}")
        if isinstance(split, TensorSplit):
            splits[part] = TensorSplit(split.images[keep], lookup[split.labels[keep]])
        else:
            splits[part] = RelabelledSplit(split, torch.nonzero(keep).flatten().tolist(), mapping)
    info = dataclasses.replace(data.info, num_classes=len(classes), classes=classes_text(classes))
    return Dataset(info, splits["train"], splits["val"], splits["test"])


def train_subset_size(subset: float, total: int) -> int:
    """How many training examples ``--train-subset`` keeps of ``total``: a fraction in (0, 1)
    (rounded half up), or a count."""
    return int(math.floor(subset * total + 0.5)) if subset < 1 else int(subset)


def subsample_train(data: Dataset, subset: float) -> Dataset:
    """``data`` with its training split cut to ``subset`` (a fraction in (0, 1), or a count),
    stratified: each class keeps its share (rounded by largest remainder, ties to the lower class),
    its examples drawn by one seeded permutation per class, in their original order. The seed is
    fixed (``derived_seed(0, "train-subset")``): every run seed trains on the same subset, so seeds
    vary the training only. Validation and test splits are untouched."""
    from ..seeding import derived_seed

    labels = _split_labels(data.train)
    total, size = len(labels), train_subset_size(subset, len(labels))
    counts = torch.bincount(labels, minlength=data.info.num_classes)
    present = int((counts > 0).sum())
    if not present <= size <= total:
        raise DataError(f"--train-subset {subset:g}: {size} of {data.info.name}'s {total} training examples; need "
                        f"between {present} (one per class) and {total}")
    exact = counts.double() * size / total
    quota = exact.floor().long()
    remainders = (exact - quota.double()).tolist()
    for c in sorted(range(len(remainders)), key=lambda c: (-remainders[c], c))[: size - int(quota.sum())]:
        quota[c] += 1
    generator = torch.Generator().manual_seed(derived_seed(0, "train-subset"))
    chosen = []
    for c in range(len(counts)):
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[: int(quota[c])]])
    keep = torch.cat(chosen).sort().values
    train = data.train
    if isinstance(train, TensorSplit):
        train = TensorSplit(train.images[keep], train.labels[keep])
    else:
        identity = {c: c for c in range(data.info.num_classes)}
        train = RelabelledSplit(train, keep.tolist(), identity)
    return Dataset(data.info, train, data.val, data.test)


def parse_input_shape(text) -> tuple[int, int]:
    """``"3x32x32"`` -> ``(3, 32)``: channels (1 or 3) and a square size."""
    parts = str(text).lower().split("x")
    try:
        channels, *sides = (int(p) for p in parts)
    except ValueError:
        raise DataError(f"--input-shape {text}: not CxHxW (e.g. 3x32x32)") from None
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or channels not in (1, 3) or sides[0] != sides[1] or not 0 < sides[0] <= 4096:
        raise DataError(f"--input-shape {text}: give 1 or 3 channels and a square size up to 4096, e.g. 3x32x32")
    return channels, sides[0]


def convert_images(images: torch.Tensor, channels: int, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 images (N, C, H, W) as ``channels`` x ``size`` x ``size`` uint8 images: one channel
    repeated into three, or three reduced to their luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B);
    resized bilinearly with antialiasing; rounded back to uint8."""
    import torch.nn.functional as F

    out = torch.empty((len(images), channels, size, size), dtype=torch.uint8)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].float()
        if x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and channels == 1:
            x = (x * luma).sum(1, keepdim=True)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start:start + chunk] = x.round().clamp(0, 255).to(torch.uint8)
    return out


def reshape_inputs(data: Dataset, input_shape: str) -> Dataset:
    """``data`` (in memory) with every image converted to ``input_shape`` (:func:`convert_images`);
    normalised by the converted training split's own per-channel mean and std."""
    channels, size = parse_input_shape(input_shape)
    if not isinstance(data.train, TensorSplit):
        raise DataError(f"--input-shape applies to in-memory data sets; {data.info.name} is an image folder: "
                        f"use --image-size")
    splits = {part: TensorSplit(convert_images(getattr(data, part).images, channels, size), getattr(data, part).labels)
              for part in ("train", "val", "test")}
    pixels = splits["train"].images.float().div(255.0)
    mean = tuple(round(float(v), 4) for v in pixels.mean((0, 2, 3)))
    std = tuple(round(float(v), 4) for v in pixels.std((0, 2, 3)))
    info = dataclasses.replace(data.info, in_channels=channels, image_size=size, mean=mean, std=std)
    return Dataset(info, splits["train"], splits["val"], splits["test"])


def fingerprint(data: Dataset) -> str:
    """16 hex digits identifying a data set's content, wherever it lies: SHA-256 over every split's
    images and labels (in-memory splits), or over the listing of an image folder (each file's path
    relative to the folder, its size and its class index), with the shape the model sees."""
    from .text import TokenSplit, fingerprint_lines

    digest = hashlib.sha256(f"{data.info.in_channels}|{data.info.num_classes}|".encode())
    if data.info.vocabulary is not None:
        digest.update(f"text|{data.info.vocabulary}|".encode())
    if data.info.classes is not None:  # the labels say which classes were kept, not which they were
        digest.update(f"classes {data.info.classes}|".encode())
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        digest.update(f"|{name}|{len(split)}|".encode())
        if isinstance(split, TokenSplit):
            for part in fingerprint_lines(split):
                digest.update(part)
        elif isinstance(split, TensorSplit):
            for tensor in (split.images, split.labels):
                t = tensor.contiguous()
                digest.update(f"{t.dtype}{list(t.shape)}".encode())
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            for line in _listing(split):
                digest.update(line.encode())
    return digest.hexdigest()[:16]


def _listing(split) -> Iterator[str]:
    """``relative path|size|class`` per example of a (subset of an) image folder, in order."""
    if isinstance(split, RelabelledSplit):
        lines = list(_listing(split.split))
        for i in split.indices:
            yield f"{lines[i][:-1]}>{split.mapping[int(lines[i].rsplit('|', 1)[1])]}\n"
        return
    indices = None
    if isinstance(split, torch.utils.data.Subset):
        split, indices = split.dataset, split.indices
    root = Path(split.root)
    samples = split.samples if indices is None else [split.samples[i] for i in indices]
    for file, target in samples:
        yield f"{Path(file).relative_to(root).as_posix()}|{os.path.getsize(file)}|{target}\n"


def _load_text(name: str, root, download: bool, context: Optional[int], classes, input_shape) -> Dataset:
    from . import text

    for option, value in (("--classes", classes), ("--input-shape", input_shape)):
        if value is not None:
            raise SupermaskError(f"{option} applies to image data sets, not the text {name}")
    path = text.text_path(name)
    if path is not None:
        return text.load_text_file(path, context or text.DEFAULT_CONTEXT)
    data = DATASETS.get(name)(root, download)
    return data if context is None else text.with_context(data, context)


def load_dataset(name: str, root: Optional[Path] = None, download: bool = False, image_size: int = 224,
                 classes=None, input_shape: Optional[str] = None, context: Optional[int] = None,
                 train_subset: Optional[float] = None) -> Dataset:
    """Load data set ``name`` (a registry name or ``imagefolder:PATH``); with ``classes`` (text such
    as ``"0-4"``, or indices) only those classes, relabelled ``0..n-1`` (:func:`restrict_classes`);
    with ``train_subset`` (a fraction, or a count) a stratified part of its training split
    (:func:`subsample_train`); with ``input_shape`` (``"3x32x32"``) its images converted to that
    shape (:func:`reshape_inputs`)."""
    from ..classes import parse_classes

    from . import text

    if text.is_text(name):
        if train_subset is not None:
            raise SupermaskError("--train-subset applies to image data sets (a text's windows: give a shorter "
                                 "text:PATH)")
        return _load_text(name, root, download, context, classes, input_shape)
    if context is not None:
        raise SupermaskError(f"--context applies to text data sets, not {name}")
    subset = None if classes is None else parse_classes(classes)
    if imagefolder_path(name) is not None:
        data = load_imagefolder(Path(imagefolder_path(name)).expanduser(), image_size)
    else:
        loader = DATASETS.get(name)
        root = Path(root).expanduser() if root is not None else default_data_root()
        if download:
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SupermaskError(f"cannot create data root {root}: {exc.strerror}") from None
        data = loader(root, download)
    data = data if subset is None else restrict_classes(data, subset)
    data = data if train_subset is None else subsample_train(data, train_subset)
    return data if input_shape is None else reshape_inputs(data, input_shape)


def list_datasets() -> list[str]:
    from .text import TEXT_PREFIX

    return DATASETS.names() + [IMAGEFOLDER_PREFIX + "PATH", TEXT_PREFIX + "PATH"]


def _register_text() -> None:
    from .text import BUNDLED_TEXT, load_bundled_text

    DATASETS.add(BUNDLED_TEXT, load_bundled_text)


_register_text()
