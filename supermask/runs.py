"""Run directories: one experiment's config, metrics, checkpoint, result and ticket.

Layout: ``<out>/<engine>/<arch>-<dataset>/<config-hash-12>/seed-<s>/``. The hash covers
every config field that changes results and none that does not (see
``NON_RESULT_FIELDS``); the seed is in the path instead. ``result.json`` is written
last and atomically, so its presence means the run finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from .errors import RunError
from .io import atomic_write_bytes, atomic_write_json, read_json

#: Fields that never change a result: where files go, how much is printed, how data is read.
NON_RESULT_FIELDS = frozenset({"out", "device", "data_root", "download", "quiet", "num_workers", "seed"})

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
TICKET = "ticket"


def config_dict(config: Any) -> dict:
    """A dataclass config as a JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_hash(config: Any, exclude: Iterable[str] = NON_RESULT_FIELDS) -> str:
    """12 hex digits of the SHA-256 of the result-affecting fields, canonically serialised."""
    fields = {k: v for k, v in config_dict(config).items() if k not in set(exclude)}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def run_path(out: Path, engine: str, arch: str, dataset: str, digest: str, seed: int) -> Path:
    return Path(out) / engine / f"{_slug(arch)}-{_slug(dataset)}" / digest / f"seed-{seed}"


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    names = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            names.append(f"{prefix}{key}")
    return names


class RunDir:
    """One run's directory and the files in it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / CONFIG)
    metrics_path = property(lambda self: self.path / METRICS)
    result_path = property(lambda self: self.path / RESULT)
    checkpoint_path = property(lambda self: self.path / CHECKPOINT)
    ticket_dir = property(lambda self: self.path / TICKET)

    def is_finished(self) -> bool:
        return self.result_path.exists()

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    def prepare(self, config: dict) -> None:
        """Create the directory and write ``config.json``, or check it matches the one there."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create run directory {self.path}: {exc.strerror}") from None
        if not os.access(self.path, os.W_OK):
            raise RunError(f"run directory {self.path} is not writable")
        compared = {k: v for k, v in config.items() if k not in NON_RESULT_FIELDS}
        if self.config_path.exists():
            existing = read_json(self.config_path)
            existing = {k: v for k, v in existing.items() if k not in NON_RESULT_FIELDS}
            diff = _differences(existing, compared)
            if diff:
                raise RunError(f"{self.path} holds a run of another config (differs in: {', '.join(diff)})")
        atomic_write_json(self.config_path, config)

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is lost work
        return records

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop records written after the checkpoint of ``last_epoch`` (work redone on resume)."""
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) <= last_epoch]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())

    def write_result(self, result: dict) -> None:
        atomic_write_json(self.result_path, result)

    def read_result(self) -> dict:
        return read_json(self.result_path)


def find_runs(root: Path) -> list[RunDir]:
    """Every finished run under ``root`` (a run directory or any folder above them)."""
    root = Path(root)
    if not root.exists():
        raise RunError(f"{root}: no such directory")
    return [RunDir(p.parent) for p in sorted(root.rglob(RESULT))]
