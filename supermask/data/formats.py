"""Readers for the on-disk formats of the standard data sets, without a network.

Each returns ``(images, labels)``: a uint8 tensor (N, C, H, W) and an int64 tensor (N,).
The layouts are the ones torchvision's downloaders write under a root folder, so
``--download`` (which uses torchvision) and these readers meet on the same files.
"""

from __future__ import annotations

import gzip
import zlib
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open_maybe_gz(path: Path) -> bytes:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.exists():
            data = candidate.read_bytes()
            if candidate.suffix != ".gz":
                return data
            try:
                return gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(f"{candidate}: damaged gzip file ({exc})") from None
    raise FileNotFoundError(path)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), plain or ``.gz``."""
    data = _open_maybe_gz(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX header promises {dims} but the file holds {len(data) - header} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def read_mnist_folder(raw: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if train else "t10k"
    images = read_idx(raw / f"{prefix}-images-idx3-ubyte")
    labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte")
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{raw}: image and label files do not match")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: plain containers and NumPy arrays, no other code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except FileNotFoundError:
        raise
    except Exception as exc:  # corrupt pickles raise many kinds of errors
        raise DataError(f"{path}: not a CIFAR batch ({exc})") from None
    if len(data) != len(labels):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def read_cifar_folder(folder: Path, files: list[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [read_cifar_batch(folder / name, label_key) for name in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)


def read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
        images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)), dtype=np.uint8)
        labels = mat["y"].astype(np.int64).reshape(-1) % 10  # SVHN stores digit 0 as label 10
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not an SVHN .mat file ({exc})") from None
    return torch.from_numpy(images), torch.from_numpy(labels)
