"""Batches for training and evaluation.

In-memory splits (:class:`TensorSplit`) use :class:`TensorLoader`: the uint8 images live
on the training device once, and shuffling, augmentation (random crop with 4-pixel
zero padding, horizontal flip) and normalisation run as tensor operations on whole
batches, with no per-sample Python and no worker processes. The order and the
augmentation of epoch ``e`` depend only on ``(seed, e)``, so a run resumed at an
epoch boundary sees exactly the batches it would have seen.

Under data-parallel training (``rank``/``world_size``) every rank draws the same order
and augmentation of each *global* batch and keeps its own contiguous shard of it, so
the ranks together see exactly the batches one process would.

Other splits (image folders) go through a ``DataLoader`` with workers, sharded the same way; each
example's augmentation draws from a generator seeded by (seed, epoch, position in the epoch), so
their epochs, too, are pure functions of (seed, epoch) and resume exactly mid-epoch.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..errors import DataError
from ..seeding import derived_seed
from .datasets import DatasetInfo, Split, TensorSplit
CROP_PADDING = 4


def default_workers() -> int:
    """DataLoader workers for image folders when none are asked for: 4, at most the CPUs this
    process may use less one (torch warns when the workers outnumber the cores)."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cpus - 1))


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, f"data-epoch-{epoch}"))


def shard(count: int, rank: int, world_size: int) -> slice:
    """This rank's contiguous part of ``count`` items (sizes differ by at most one)."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def draw_augmentation(batch: int, padding: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """The random crop offsets (dy, dx) and flips of a batch, in one fixed order of draws."""
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=gen)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=gen)
    flip = torch.rand(batch, generator=gen) < 0.5
    return dy, dx, flip


def random_crop(images: Tensor, padding: int, dy: Tensor, dx: Tensor) -> Tensor:
    """Crop each image of a zero-padded batch back to its size at offsets (dy, dx), by one gather."""
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    dy, dx = dy.to(images.device), dx.to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def random_flip(images: Tensor, flip: Tensor) -> Tensor:
    flip = flip.to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


class _ResidentBatches:
    """What the resident loaders share: ``count`` examples in batches of ``batch_size``, an epoch
    yielded from ``start_batch`` on (a resume mid-epoch)."""

    count: int
    batch_size: int

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Yield epoch ``epoch``'s batches from batch ``start_batch`` on (a resume mid-epoch)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def global_batch_size(self, index: int) -> int:
        """Examples in global batch ``index`` over all ranks (the last one may be short)."""
        return min(self.batch_size, self.count - index * self.batch_size)


class TensorLoader(_ResidentBatches):
    """Batches of a resident split: ``(float images normalised, int64 labels)`` on ``device``."""

    def __init__(self, split: TensorSplit, info: DatasetInfo, batch_size: int, *, train: bool, seed: int = 0,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1):
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.count = len(self.labels)
        self.batch_size = batch_size
        self.train = train
        self.augment = train and info.augment
        self.seed = seed
        self.epoch = self.start_batch = 0
        self.mean = torch.tensor(info.mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(info.std, device=self.device).view(1, -1, 1, 1) * 255


    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        gen = _epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=gen).to(self.device) if self.train else torch.arange(n, device=self.device)
        for index, start in enumerate(range(0, n, self.batch_size)):
            idx = order[start:start + self.batch_size]
            if self.augment:  # drawn for skipped batches too: later batches get the same draws
                dy, dx, flip = draw_augmentation(len(idx), CROP_PADDING, gen)
            if index < self.start_batch:
                continue
            part = shard(len(idx), self.rank, self.world_size)
            images, labels = self.images[idx[part]], self.labels[idx[part]]
            if self.augment:
                images = random_flip(random_crop(images, CROP_PADDING, dy[part], dx[part]), flip[part])
            yield (images.float() - self.mean) / self.std, labels


class TokenLoader(_ResidentBatches):
    """Batches of a resident text split (:class:`~supermask.data.text.TokenSplit`): ``(inputs,
    targets)``, each ``(batch, context)`` int64 on ``device``; the windows shuffled by (seed, epoch)
    when training, in order otherwise; the same sharding and resume contract as
    :class:`TensorLoader`."""

    def __init__(self, split, batch_size: int, *, train: bool, seed: int = 0, device: torch.device | str = "cpu",
                 rank: int = 0, world_size: int = 1):
        from .text import TokenSplit

        self.device = torch.device(device)
        self.split = TokenSplit(split.tokens.to(self.device), split.context)
        self.count = len(self.split)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = self.start_batch = 0


    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        from .text import windows

        n = len(self.split)
        order = (torch.randperm(n, generator=_epoch_generator(self.seed, self.epoch)) if self.train
                 else torch.arange(n))
        for index, start in enumerate(range(0, n, self.batch_size)):
            if index < self.start_batch:
                continue
            idx = order[start:start + self.batch_size]
            yield windows(self.split, idx[shard(len(idx), self.rank, self.world_size)])


class _ShardedBatches:
    """Global batches of a (seeded) permutation, each cut to this rank's shard: a batch sampler."""

    def __init__(self, n: int, batch_size: int, gen: Optional[torch.Generator], rank: int, world_size: int,
                 start_batch: int = 0):
        self.n, self.batch_size, self.gen, self.rank, self.world_size = n, batch_size, gen, rank, world_size
        self.start_batch = start_batch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size) - self.start_batch

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.gen) if self.gen is not None else torch.arange(self.n)
        for start in range(self.start_batch * self.batch_size, self.n, self.batch_size):
            idx = order[start:start + self.batch_size]
            part = shard(len(idx), self.rank, self.world_size)
            # (example, position in the epoch): the position seeds the example's augmentation
            yield [(int(i), start + part.start + j) for j, i in enumerate(idx[part].tolist())]


class _SeededExamples(torch.utils.data.Dataset):
    """A map-style dataset read by ``(index, position)``: the example's random transforms draw from
    a generator seeded by (seed, epoch, position), inside ``fork_rng``, so the augmentation of an
    epoch is a pure function of (seed, epoch) whatever the workers and wherever a run resumes."""

    def __init__(self, dataset, seed: int, epoch: int):
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, position = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(self.seed, f"folder-{self.epoch}-{position}"))
            try:
                return self.dataset[index]
            except (OSError, SyntaxError, ValueError) as exc:  # PIL: truncated, unidentified, corrupt
                raise DataError(f"{_sample_path(self.dataset, index)}: not a readable image "
                                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _sample_path(dataset, index: int) -> str:
    """The file behind example ``index`` of an image folder (through any ``Subset`` around it)."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset, index = dataset.dataset, dataset.indices[index]
    samples = getattr(dataset, "samples", None)
    return str(samples[index][0]) if samples is not None else f"example {index}"


def _worker_message(exc: DataError) -> str:
    """A ``DataError`` raised in a DataLoader worker arrives wrapped in the worker's traceback:
    its own message is the traceback's last line."""
    text = str(exc).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


class FolderLoader:
    """A ``DataLoader`` over a map-style dataset, with the same ``set_epoch`` and sharding contract."""

    def __init__(self, dataset, batch_size: int, *, train: bool, seed: int = 0, device="cpu", num_workers: int = 4,
                 rank: int = 0, world_size: int = 1):
        self.dataset, self.batch_size, self.train, self.seed = dataset, batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.epoch = self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def global_batch_size(self, index: int) -> int:
        return min(self.batch_size, len(self.dataset) - index * self.batch_size)

    def __iter__(self):
        gen = _epoch_generator(self.seed, self.epoch) if self.train else None
        batches = _ShardedBatches(len(self.dataset), self.batch_size, gen, self.rank, self.world_size,
                                  self.start_batch)
        # The workers' base seed comes from this generator, not the global RNG, which training owns.
        workers = torch.Generator().manual_seed(derived_seed(self.seed, f"folder-workers-{self.epoch}"))
        loader = DataLoader(_SeededExamples(self.dataset, self.seed, self.epoch), batch_sampler=batches,
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False, generator=workers)
        try:
            for images, labels in loader:
                yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        except DataError as exc:
            raise DataError(_worker_message(exc)) from None


def make_loader(split: Split, info: DatasetInfo, batch_size: int, *, train: bool, seed: int = 0,
                device="cpu", num_workers: Optional[int] = None, rank: int = 0, world_size: int = 1):
    """Batches of ``split`` as ``(inputs, labels)`` on ``device``: the fast path every engine uses.

    An in-memory split (the bundled data, MNIST-like and CIFAR files) and a text split stay
    resident on the device and are batched there, normalised with ``info``'s mean and std and, with
    ``train``, shuffled per epoch from ``seed`` (call ``set_epoch(e)`` before each epoch) and
    augmented as ``info`` says; an image folder goes through a ``torch.utils.data.DataLoader``
    (``num_workers``). With ``world_size > 1``, this rank's shard of every global batch. The splits
    are also ``torch.utils.data.Dataset`` objects, for code of your own."""
    from .text import TokenSplit

    if isinstance(split, TokenSplit):
        return TokenLoader(split, batch_size, train=train, seed=seed, device=device, rank=rank, world_size=world_size)
    if isinstance(split, TensorSplit):
        return TensorLoader(split, info, batch_size, train=train, seed=seed, device=device, rank=rank,
                            world_size=world_size)
    return FolderLoader(split, batch_size, train=train, seed=seed, device=device,
                        num_workers=default_workers() if num_workers is None else num_workers, rank=rank,
                        world_size=world_size)
