"""supermask: strong and weak lottery tickets on one model zoo, data pipeline and trainer.

The public API, flat::

    import supermask
    model = supermask.convert(torchvision.models.resnet18(), density=0.3)
    result = supermask.search(supermask.SearchConfig(arch="conv6", density=0.5))
"""

from .data import DATASETS, load_dataset
from .errors import DataError, RunError, SupermaskError, UnknownNameError
from .methods import METHODS
from .models import MODELS, InputSpec, Layers, create_model, register_model, supermask_layer_types
from .nn import (
    SupermaskConv2d,
    SupermaskLinear,
    attach_global_scope,
    convert,
    density_report,
    init_model,
    kept_count,
    model_masks,
)
from .runs import RunDir, config_hash, find_runs
from .search import SearchConfig, SearchResult, search
from .tickets import export_run, load_masks, load_ticket, read_ticket, save_masks
from .training import Callback, ProgressBar, TrainConfig, TrainSummary, evaluate, train

__version__ = "0.2.0"

__all__ = [
    "DATASETS", "METHODS", "MODELS", "Callback", "DataError", "InputSpec", "Layers", "ProgressBar", "RunDir",
    "RunError", "SearchConfig", "SearchResult", "SupermaskConv2d", "SupermaskError", "SupermaskLinear",
    "TrainConfig", "TrainSummary", "UnknownNameError", "attach_global_scope", "config_hash", "convert",
    "create_model", "density_report", "evaluate", "export_run", "load_ticket", "find_runs", "init_model", "kept_count", "load_dataset",
    "load_masks", "model_masks", "read_ticket", "register_model", "save_masks", "search", "supermask_layer_types",
    "train",
]
