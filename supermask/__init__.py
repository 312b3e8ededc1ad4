"""supermask: strong and weak lottery tickets on one model zoo, data pipeline and trainer.

The public API, flat (each name is imported on first use, so ``import supermask`` is instant)::

    import supermask
    model = supermask.convert(torchvision.models.resnet18(), density=0.3)
    result = supermask.search(supermask.SearchConfig(arch="conv6", density=0.5))
"""

from .lazy import lazy_exports

__version__ = "0.2.0"

_EXPORTS = {
    **dict.fromkeys(["DATASETS", "load_dataset"], ".data"),
    **dict.fromkeys(["DataError", "RunError", "SupermaskError", "UnknownNameError"], ".errors"),
    "METHODS": ".methods",
    **dict.fromkeys(["MODELS", "InputSpec", "Layers", "create_model", "register_model", "supermask_layer_types"],
                    ".models"),
    **dict.fromkeys(["SupermaskConv2d", "SupermaskLinear", "attach_global_scope", "convert", "density_report",
                     "init_model", "kept_count", "model_masks"], ".nn"),
    **dict.fromkeys(["RunDir", "config_hash", "find_runs"], ".runs"),
    "SearchConfig": ".configs",
    **dict.fromkeys(["SearchResult", "search"], ".search"),
    "ExperimentResult": ".stage",
    **dict.fromkeys(["ENGINES", "engine"], ".engines"),
    "resolve": ".resolved",
    "Structure": ".structure",
    **dict.fromkeys(["EXPORTS", "export_run", "load_export", "load_ticket"], ".exports"),
    **dict.fromkeys(["load_masks", "read_ticket", "save_masks"], ".ticket_files"),
    **dict.fromkeys(["Callback", "ProgressBar", "TrainConfig", "TrainSummary", "evaluate", "train"], ".training"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
