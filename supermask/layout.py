"""The names of the files and folders of a run directory, in one place (see DESIGN.md, "Run
directory"). Every module that reads or writes a run takes its names from here."""

CONFIG = "config.json"  # the full resolved config
METRICS = "metrics.jsonl"  # one JSON object per evaluation
DAMAGED_METRICS = "metrics.damaged.jsonl"  # lines of metrics.jsonl that could not be read, set aside
RESULT = "result.json"  # written last: its presence means the run finished
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
STATUS = "status.json"  # running, finished or failed
LOCK = "lock"
SELECTED_PREFIX = "selected-"  # snapshots of the selected evaluation's network while training

TICKET = "ticket"  # the folder of the network the run reports
MASK_FILE = "mask.safetensors"  # in ticket/: one uint8 {0, 1} tensor per prunable weight
MODEL_FILE = "model.safetensors"  # in ticket/: the reported network's whole state dict
META_FILE = "ticket.json"  # in ticket/: provenance and what rebuilds the network
WEIGHTS_FILE = "weights.safetensors"  # in an IMP level's ticket/: the weights the level started from

LEVEL_PREFIX = "level-"  # IMP: one sub-run per level, level-<L>/
REWIND_FILE = "rewind.safetensors"  # IMP: the θ0/θk snapshot every level rewinds to

EXPORT_FOLDER = "export"  # supermask export's default destination inside the run


def level_dir_name(level: int) -> str:
    return f"{LEVEL_PREFIX}{level}"

# A stability analysis: k-<k>/level-<L>/copy-<n>/ (run stages) and, beside the copies, the
# interpolation of each pair of them.
STABILITY_POINT_PREFIX = "k-"
STABILITY_COPY_PREFIX = "copy-"
STABILITY_PAIR_GLOB = "k-*/level-*/pair-*.json"


def stability_pair_name(pair: int) -> str:
    return f"pair-{pair}.json"
