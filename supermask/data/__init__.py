"""Data sets (a registry) and the loaders that batch them."""

from .datasets import (
    DATASETS,
    Dataset,
    DatasetInfo,
    TensorSplit,
    default_data_root,
    fingerprint,
    list_datasets,
    load_dataset,
    stratified_holdout,
)
from .loader import FolderLoader, TensorLoader, make_loader

__all__ = ["DATASETS", "Dataset", "DatasetInfo", "FolderLoader", "TensorLoader", "TensorSplit",
           "default_data_root", "fingerprint", "list_datasets", "load_dataset", "make_loader", "stratified_holdout"]
