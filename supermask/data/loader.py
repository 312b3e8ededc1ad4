"""Batches for training and evaluation.

In-memory splits (:class:`TensorSplit`) use :class:`TensorLoader`: the uint8 images live
on the training device once, and shuffling, augmentation (random crop with 4-pixel
zero padding, horizontal flip) and normalisation run as tensor operations on whole
batches, with no per-sample Python and no worker processes. The order and the
augmentation of epoch ``e`` depend only on ``(seed, e)``, so a run resumed at an
epoch boundary sees exactly the batches it would have seen.

Other splits (image folders) go through a ``DataLoader`` with workers.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..nn.init import derived_seed
from .datasets import DatasetInfo, Split, TensorSplit

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CROP_PADDING = 4


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, f"data-epoch-{epoch}"))


def random_crop(images: Tensor, padding: int, gen: torch.Generator) -> Tensor:
    """Per-image random crop of a zero-padded batch back to its size, by one gather."""
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def random_flip(images: Tensor, gen: torch.Generator) -> Tensor:
    flip = (torch.rand(images.shape[0], generator=gen) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


class TensorLoader:
    """Batches of a resident split: ``(float images normalised, int64 labels)`` on ``device``."""

    def __init__(self, split: TensorSplit, info: DatasetInfo, batch_size: int, *, train: bool, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.augment = train and info.augment
        self.seed = seed
        self.epoch = 0
        self.mean = torch.tensor(info.mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(info.std, device=self.device).view(1, -1, 1, 1) * 255

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        gen = _epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=gen).to(self.device) if self.train else None
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size] if order is not None else slice(start, start + self.batch_size)
            images, labels = self.images[idx], self.labels[idx]
            if self.augment:
                images = random_flip(random_crop(images, CROP_PADDING, gen), gen)
            yield (images.float() - self.mean) / self.std, labels


class FolderLoader:
    """A ``DataLoader`` over a map-style dataset, with the same ``set_epoch`` contract."""

    def __init__(self, dataset, batch_size: int, *, train: bool, seed: int = 0, device="cpu", num_workers: int = 4):
        self.dataset, self.batch_size, self.train, self.seed = dataset, batch_size, train, seed
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        gen = _epoch_generator(self.seed, self.epoch) if self.train else None
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=self.train, generator=gen,
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def make_loader(split: Split, info: DatasetInfo, batch_size: int, *, train: bool, seed: int = 0,
                device="cpu", num_workers: Optional[int] = None):
    if isinstance(split, TensorSplit):
        return TensorLoader(split, info, batch_size, train=train, seed=seed, device=device)
    return FolderLoader(split, batch_size, train=train, seed=seed, device=device,
                        num_workers=4 if num_workers is None else num_workers)
