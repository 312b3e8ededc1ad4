"""What a data set is made of: its description (:class:`DatasetInfo`) and its three splits.

Shared by the image data sets (:mod:`supermask.data.datasets`) and the text ones
(:mod:`supermask.data.text`), which both build them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch.utils.data import Dataset as TorchDataset


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # random crop (4-pixel padding) + horizontal flip on the training split
    classes: Optional[str] = None  # a class subset of the data set (supermask.classes): its canonical text
    # What the data asks of a model: "image-classification", or "language-model" (text: num_classes
    # is the vocabulary's size, in_channels and image_size are 0; see supermask.data.text).
    task: str = "image-classification"
    vocabulary: Optional[str] = None  # text: every character of the corpus, sorted
    context: Optional[int] = None  # text: the characters of a window


@dataclass
class TensorSplit(TorchDataset):
    """A split held in memory: uint8 images (N, C, H, W) and int64 labels (N,).

    It is also a ``torch.utils.data.Dataset``: item ``i`` is ``(image, label)`` with the image as
    float32 in [0, 1] (torchvision's ``ToTensor``; normalising and augmenting are the loader's,
    ``supermask.data.make_loader``, the fast path that batches on the device without per-item
    calls)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float().div(255.0), self.labels[index]


Split = Union[TensorSplit, TorchDataset]


@dataclass
class Dataset:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split
