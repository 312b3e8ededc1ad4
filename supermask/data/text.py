"""Character-level text data sets for language models.

- ``tinyshakespeare``: the 1,115,394-character corpus bundled with the package
  (``files/README.md`` says where it comes from and its licence).
- ``text:PATH``: any UTF-8 text file.

A corpus is split **by position**, never by shuffling characters: the first 90% of its characters
train, the next 5% validate, the last 5% test. The vocabulary is every distinct character of the
whole file, sorted by code point, so that each split is coded in the same alphabet; an index is a
character's place in it. Each split is cut into fixed-length contiguous windows of ``context``
characters that do not overlap; window ``i`` of a split predicts characters ``i*T+1 .. i*T+T``
from ``i*T .. i*T+T-1`` (its targets are its inputs shifted by one). The vocabulary, the context
and every split's characters enter the data's fingerprint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset as TorchDataset

from ..catalog import TEXT_PREFIX
from ..errors import DataError, SupermaskError
from .splits import Dataset, DatasetInfo

BUNDLED_TEXT = "tinyshakespeare"
#: The characters a window holds when --context is not given.
DEFAULT_CONTEXT = 64
#: The first 90% of the characters train, the next 5% validate, the rest test.
TRAIN_FRACTION, VAL_FRACTION = 0.90, 0.05
LANGUAGE_MODEL = "language-model"


def text_path(dataset: str) -> Optional[str]:
    """``text:<path>`` -> ``<path>``; None for any other data set name."""
    return dataset[len(TEXT_PREFIX):] if dataset.startswith(TEXT_PREFIX) else None


def is_text(dataset: str) -> bool:
    return dataset == BUNDLED_TEXT or text_path(dataset) is not None


@dataclass
class TokenSplit(TorchDataset):
    """One split of a corpus, resident: its characters as vocabulary indices (``tokens``, int64)
    cut into non-overlapping windows of ``context``. Item ``i`` is ``(inputs, targets)``, two
    int64 tensors of ``context`` indices, the targets shifted by one."""

    tokens: Tensor
    context: int

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1) // self.context)

    def starts(self) -> Tensor:
        return torch.arange(len(self)) * self.context

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} of {len(self)}")
        start = (index % len(self)) * self.context
        return self.tokens[start:start + self.context], self.tokens[start + 1:start + 1 + self.context]


def check_context(context, length: Optional[int] = None) -> int:
    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        raise SupermaskError(f"context must be a positive number of characters, got {context!r}")
    if length is not None and context >= length:
        raise SupermaskError(f"context {context} leaves no window in a split of {length} characters")
    return context


def split_by_position(tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(train, val, test): the first 90%, the next 5%, the rest."""
    n = len(tokens)
    train_end, val_end = int(n * TRAIN_FRACTION), int(n * (TRAIN_FRACTION + VAL_FRACTION))
    return tokens[:train_end], tokens[train_end:val_end], tokens[val_end:]


def corpus(text: str, name: str, context: int = DEFAULT_CONTEXT):
    """The data set of ``text``: its vocabulary and three windowed splits (``supermask.data.Dataset``)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    alphabet = np.unique(codes)  # sorted code points
    vocabulary = "".join(map(chr, alphabet))
    if len(vocabulary) < 2:
        raise DataError(f"{name}: a text needs at least two distinct characters, has {len(vocabulary)}")
    tokens = torch.from_numpy(np.searchsorted(alphabet, codes).astype(np.int64))
    splits = split_by_position(tokens)
    check_context(context, min(len(s) for s in splits))
    info = DatasetInfo(name, 0, 0, len(vocabulary), (), (), augment=False, task=LANGUAGE_MODEL,
                       vocabulary=vocabulary, context=context)
    return Dataset(info, *(TokenSplit(s, context) for s in splits))


def read_text(path: Path) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def load_bundled_text(root: Path, download: bool):
    """``tinyshakespeare``, from the package."""
    text = resources.files("supermask.data").joinpath("files/tinyshakespeare.txt").read_bytes().decode("utf-8")
    return corpus(text, BUNDLED_TEXT)


def load_text_file(path: str, context: int = DEFAULT_CONTEXT):
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{TEXT_PREFIX}{path}: no such file")
    return corpus(read_text(file), f"{TEXT_PREFIX}{path}", context)


def with_context(data, context: int):
    """``data`` (a text data set) cut into windows of ``context`` characters."""
    check_context(context, min(len(getattr(data, s).tokens) for s in ("train", "val", "test")))
    if context == data.info.context:
        return data
    return dataclasses.replace(data, info=dataclasses.replace(data.info, context=context),
                               **{s: TokenSplit(getattr(data, s).tokens, context) for s in ("train", "val", "test")})


def decode(vocabulary: str, indices) -> str:
    """The text of vocabulary ``indices``."""
    return "".join(vocabulary[int(i)] for i in indices)


def encode(vocabulary: str, text: str) -> Tensor:
    index = {ch: i for i, ch in enumerate(vocabulary)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise SupermaskError(f"characters outside the vocabulary: {''.join(unknown)[:20]!r}")
    return torch.tensor([index[ch] for ch in text], dtype=torch.int64)


def windows(split: TokenSplit, index: Tensor) -> tuple[Tensor, Tensor]:
    """The (inputs, targets) of windows ``index`` of ``split``, by one gather each."""
    offsets = index.to(split.tokens.device)[:, None] * split.context + torch.arange(split.context,
                                                                                   device=split.tokens.device)
    return split.tokens[offsets], split.tokens[offsets + 1]


def fingerprint_lines(split: TokenSplit) -> Iterator[bytes]:
    yield f"tokens{len(split.tokens)}|context{split.context}|".encode()
    yield split.tokens.contiguous().numpy().tobytes()
