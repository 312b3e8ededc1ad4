"""Run directories: one experiment's config, metrics, checkpoint, result and ticket.

Layout: ``<out>/<engine>/<arch>-<dataset>/<config-hash-12>/seed-<s>/``. The hash covers
every config field that changes results and none that does not (see
``NON_RESULT_FIELDS``); the seed is in the path instead. ``result.json`` is written
last and atomically, so its presence means the run finished.

A run directory belongs to one process at a time: :meth:`RunDir.lock` holds an
``fcntl.flock`` on ``lock`` (which names the writer's host and pid) while a run writes; the
kernel drops it when the writer dies, so a stale lock is taken over by exactly one process. The last two checkpoints are kept (``checkpoint.pt`` and
``checkpoint.prev.pt``); a damaged latest one falls back to the one before.
``status.json`` says ``running`` while a process writes the run, then ``finished`` or
``failed`` (with the reason); :meth:`RunDir.tracking_status` keeps it so for every engine
and every IMP level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from .catalog import imagefolder_path
from .errors import RunError, RunLocked
from .layout import (CHECKPOINT, CONFIG, DAMAGED_METRICS, LOCK, METRICS, PREVIOUS_CHECKPOINT, RESULT,  # noqa: F401
                     SELECTED_PREFIX, STATUS, TICKET)
from .io import (atomic_write_bytes, atomic_write_json, checkpoint_bytes, load_checkpoint, read_json, read_tensors,
                 write_temporary)

log = logging.getLogger(__name__)

#: What a checkpoint holds only for a resume of unfinished training (a finished run drops them).
RESUME_ONLY_CHECKPOINT_KEYS = frozenset({"optimizer", "scaler", "rng"})

#: What every engine's result record holds (the summary a rerun prints reads them).
RESULT_KEYS = ("test_accuracy", "val_accuracy", "selected_epoch", "selection", "last_test_accuracy",
               "initial_test_accuracy", "density", "steps")

#: Fields that never change a result: where files go, how much is printed, how data is read.
NON_RESULT_FIELDS = frozenset({"out", "device", "data_root", "download", "quiet", "num_workers", "seed",
                               "checkpoint_every", "channels_last", "compile", "tensorboard", "wandb_project",
                               "keep_checkpoints",
                               "ticket",  # a fine-tuned ticket's path: its content is in ticket_checksum
                               "init_from",  # a starting point's path: its content is in init_from_checksum
                               "imp_run",  # an analysed IMP run's path: its config is in imp_config_hash
                               "source"})  # a transferred ticket's run: its config and ticket are in source_*



def config_dict(config: Any) -> dict:
    """A dataclass config as a JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


#: Fields added after runs were first written, left out of the hash at these values so that
#: the run directories written before them keep their names (dotted paths into the config).
HASH_OMITTED_AT = {"train.precision": "32", "rerandomize_every": None, "rerandomize_rate": None, "score_l2": None,
                   "early_bird": None, "eb_l1": None, "eb_epsilon": 0.1, "eb_window": 5, "freeze_every": None,
                   "bernoulli_eval": None, "rescale_weights": None, "bn_init": "ones",
                   "dropout": 0.0, "structure": "unstructured", "stop_when_unmatched": None, "classes": None,
                   "input_shape": None, "context": None, "depth": None, "train_subset": None, "bias": None,
                   "init_from_checksum": None, "train.test_every_epoch": False,
                   "method_revision": 1, "density_ramp_epochs": None,
                   "eb_retrain": None}


def _omit_later_defaults(fields: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in fields.items():
        path = prefix + key
        if isinstance(value, dict):
            out[key] = _omit_later_defaults(value, path + ".")
        elif not (path in HASH_OMITTED_AT and HASH_OMITTED_AT[path] == value):
            out[key] = value
    return out




def dataset_identity(dataset: str) -> str:
    """A data set as results see it: its registry name; an image folder without its path (its
    content is identified by the config's ``data_fingerprint``, so moving it keeps the hash)."""
    return "imagefolder" if imagefolder_path(dataset) is not None else dataset


def result_fields(config: dict, exclude: Iterable[str] = NON_RESULT_FIELDS) -> dict:
    """The fields of a config dict that change results: the hash and the config check use these."""
    exclude = set(exclude)
    fields = _omit_later_defaults({k: v for k, v in config.items() if k not in exclude})
    if isinstance(fields.get("dataset"), str):
        fields["dataset"] = dataset_identity(fields["dataset"])
    return fields


def config_hash(config: Any, exclude: Iterable[str] = NON_RESULT_FIELDS) -> str:
    """12 hex digits of the SHA-256 of the result-affecting fields, canonically serialised."""
    return record_hash(config_dict(config), exclude)


def record_hash(record: dict, exclude: Iterable[str] = NON_RESULT_FIELDS) -> str:
    """:func:`config_hash` of a config already written as a dict (a ``config.json``)."""
    canonical = json.dumps(result_fields(record, exclude), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def run_path(out: Path, engine: str, arch: str, dataset: str, digest: str, seed: int) -> Path:
    return Path(out) / engine / f"{_slug(arch)}-{_slug(dataset_identity(dataset))}" / digest / f"seed-{seed}"


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
    previous_checkpoint_path = property(lambda self: self.path / PREVIOUS_CHECKPOINT)
    status_path = property(lambda self: self.path / STATUS)
    lock_path = property(lambda self: self.path / LOCK)
    ticket_dir = property(lambda self: self.path / TICKET)

    def is_finished(self) -> bool:
        return self.result_path.exists()

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists() or self.previous_checkpoint_path.exists()

    def save_checkpoint(self, state: dict) -> None:
        """Write ``state`` as the latest checkpoint; the one it replaces becomes the previous one.

        The new checkpoint is written (and fsynced) before anything moves, and the old one
        becomes the previous one through a hard link, so a kill at any instant leaves
        ``checkpoint.pt`` (the old or the new) in place: a resume never falls back further
        than it must."""
        owner = self.identity()
        tmp = write_temporary(self.checkpoint_path, checkpoint_bytes(state | ({"run": owner} if owner else {})))
        try:
            if self.checkpoint_path.exists():
                self._keep_as_previous()
            os.replace(tmp, self.checkpoint_path)
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise

    def _keep_as_previous(self) -> None:
        link = self.path / f".{PREVIOUS_CHECKPOINT}.link"
        try:
            if link.exists():
                link.unlink()
            os.link(self.checkpoint_path, link)
        except OSError:  # a file system without hard links: a plain rename (a short window without the latest)
            os.replace(self.checkpoint_path, self.previous_checkpoint_path)
            return
        os.replace(link, self.previous_checkpoint_path)

    def load_checkpoint(self, map_location="cpu") -> tuple[dict, Path]:
        """The latest readable checkpoint and its path; a damaged latest one falls back to the previous."""
        errors = []
        for path in (self.checkpoint_path, self.previous_checkpoint_path):
            if not path.exists():
                continue
            try:
                state = load_checkpoint(path, map_location)
            except RunError as exc:
                errors.append(str(exc))
                if path == self.checkpoint_path and self.previous_checkpoint_path.exists():
                    log.warning("%s; trying the previous checkpoint", exc)
                continue
            if not isinstance(state, dict) or "model" not in state:
                errors.append(f"{path}: not a supermask checkpoint")
                continue
            self.check_own(state, path)
            return state, path
        raise RunError("; ".join(errors) or f"{self.path}: no checkpoint")

    def remove_temporaries(self) -> None:
        """Delete the temporary files a killed writer left (``.<name>.*.tmp`` beside the file it was
        replacing, here and in ``ticket/``). Only while this run's lock is held: then none is being written."""
        for folder in (self.path, self.ticket_dir):
            for leftover in folder.glob(".*.tmp") if folder.is_dir() else ():
                if leftover.is_file() and not leftover.is_symlink():
                    log.info("removing %s (left by a writer that was stopped)", leftover)
                    leftover.unlink(missing_ok=True)

    def identity(self) -> Optional[str]:
        """The hash of this directory's ``config.json`` (an IMP level's names its level): what its
        checkpoints are of, recorded in each one. None without a readable config."""
        try:
            record = read_json(self.config_path) if self.config_path.exists() else None
        except RunError:
            return None
        return record_hash(record) if isinstance(record, dict) else None

    def check_own(self, state: dict, path: Path) -> None:
        """Refuse a checkpoint written for another run (copied or moved here: another level's, another
        config's). Checkpoints written before they recorded their run pass."""
        owner, own = state.get("run"), self.identity()
        if owner is not None and own is not None and owner != own:
            raise RunError(f"{path}: a checkpoint of another run (of config {owner}; this directory's is {own}): "
                           f"it was copied or moved here; delete {self.path} to rerun it")

    def last_checkpoint(self) -> Optional[Path]:
        for path in (self.checkpoint_path, self.previous_checkpoint_path):
            if path.exists():
                return path
        return None

    # -- the selected network (see supermask.training.loop) --------------------------------------

    def selected_path(self, step: int) -> Path:
        return self.path / f"{SELECTED_PREFIX}{step}.safetensors"

    def save_selected(self, state: dict, step: int) -> None:
        from safetensors.torch import save as st_save

        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
        atomic_write_bytes(self.selected_path(step), st_save(tensors, metadata={"step": str(step)}))

    def load_selected(self, step: int) -> dict:
        path = self.selected_path(step)
        return read_tensors(path, missing=f"{path}: the selected network of this run is missing; delete "
                                          f"{self.path} to rerun it")

    def discard_selected(self, keep: Optional[int]) -> None:
        """Remove the kept states of every evaluation but step ``keep``'s."""
        for path in self.path.glob(f"{SELECTED_PREFIX}*.safetensors"):
            if keep is None or path != self.selected_path(keep):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def keep_final_checkpoint(self) -> None:
        """A finished run keeps what is read after it (the ticket what it reports; ``checkpoint.pt``'s
        final network, which IMP's next level prunes and stability continues from, with its step and
        history) and drops what only a resume of unfinished training reads: ``checkpoint.prev.pt``
        and, in ``checkpoint.pt``, the optimiser, grad-scaler and RNG states (a third of a search's
        checkpoint: its momentum is as large as its scores)."""
        with contextlib.suppress(FileNotFoundError):
            self.previous_checkpoint_path.unlink()
        if not self.checkpoint_path.exists():
            return
        state = load_checkpoint(self.checkpoint_path)
        if not isinstance(state, dict) or "optimizer" not in state:
            return  # kept already (or not a checkpoint of this library: left as it is)
        final = {k: v for k, v in state.items() if k not in RESUME_ONLY_CHECKPOINT_KEYS} | {"final": True}
        os.replace(write_temporary(self.checkpoint_path, checkpoint_bytes(final)), self.checkpoint_path)

    def write_status(self, status: str, **info: Any) -> None:
        atomic_write_json(self.status_path, {"status": status, **info})

    def read_status(self) -> dict:
        status = read_json(self.status_path) if self.status_path.exists() else {"status": "new"}
        if self.is_finished() and status.get("status") != "finished":
            return {"status": "finished"}  # written by a version that left "running" behind
        return status

    @contextlib.contextmanager
    def tracking_status(self) -> Iterator[None]:
        """``running`` while the body runs; then ``finished`` if it wrote ``result.json``, else
        ``failed`` with the reason (an exception's message, or that no result was written)."""
        self.write_status("running")
        try:
            yield
        except BaseException as exc:
            status = getattr(exc, "status", None)  # what the failure says of itself (a diverged run: step, checkpoint)
            if isinstance(status, dict) and status.get("reason"):
                self.write_status("failed", **status)
            elif self.read_status().get("status") != "failed":  # a more precise record may be there already
                reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else (str(exc) or type(exc).__name__)
                self.write_status("failed", reason=reason)
            raise
        if self.is_finished():
            self.write_status("finished")
        else:
            self.write_status("failed", reason="ended without writing result.json")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this run directory for this process (see the module docstring).

        The lock is an ``fcntl.flock`` on ``lock`` (which names the holder): the kernel releases it
        when the holder dies, and of any number of processes taking over a stale lock at once
        exactly one gets it. After locking, the file must still be the one at the path (a holder
        unlinks it on release), else the attempt starts over."""
        self.path.mkdir(parents=True, exist_ok=True)
        owner = f"{socket.gethostname()} {os.getpid()}\n"
        while True:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                previous = _read_owner(fd)
                os.close(fd)
                raise RunLocked(self._locked_message(previous)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released (unlinked) between our open and our lock: try again
                os.close(fd)
                continue
            previous = _read_owner(fd)
            if previous and previous != owner.strip():
                host, _, pid = previous.partition(" ")
                if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                    os.close(fd)  # a holder that never took the flock (an older supermask): still alive
                    raise RunLocked(self._locked_message(previous))
                log.warning("%s: taking over the lock of process %s, which is gone", self.path, pid or "?")
            os.ftruncate(fd, 0)
            os.pwrite(fd, owner.encode(), 0)
            break
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()  # while still holding it: a waiter then sees another inode
            os.close(fd)

    def _locked_message(self, owner: str) -> str:
        host, _, pid = owner.partition(" ")
        holder = f"process {pid} on {host}" if pid else "an unknown process"
        return f"{self.path} is being written by {holder}; if it is gone, delete {self.lock_path}"

    def prepare(self, config: dict) -> None:
        """Create the directory and write ``config.json``, or check it matches the one there."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create run directory {self.path}: {exc.strerror}") from None
        if not os.access(self.path, os.W_OK):
            raise RunError(f"run directory {self.path} is not writable")
        self.check_config(config)
        if not (self.config_path.exists() and read_json(self.config_path) == config):
            atomic_write_json(self.config_path, config)  # new, or other paths (out, data root) recorded

    def check_config(self, config: dict) -> None:
        """Refuse a directory whose ``config.json`` is of another config (finished runs included:
        an edited or linked-in directory never passes for this config's results)."""
        if not self.config_path.exists():
            if self.is_finished():
                raise RunError(f"{self.path} holds a finished run without its config.json; move it away to rerun")
            return
        existing = read_json(self.config_path)
        if not isinstance(existing, dict):
            raise RunError(f"{self.config_path}: not a run config")
        diff = _differences(result_fields(existing), result_fields(config))
        if diff:
            raise RunError(f"{self.path} holds a run of another config (differs in: {', '.join(diff)})")

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _metric_lines(self) -> tuple[list[dict], list[bytes]]:
        """(the valid records, the damaged lines) of ``metrics.jsonl``: a line cut by a kill, bytes
        that are not UTF-8 or not a JSON object anywhere in the file."""
        if not self.metrics_path.exists():
            return [], []
        good, bad = [], []
        for raw in self.metrics_path.read_bytes().splitlines():
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                bad.append(raw)
                continue
            (good if isinstance(record, dict) else bad).append(record if isinstance(record, dict) else raw)
        return good, bad

    def read_metrics(self) -> list[dict]:
        """Every valid record, in order; damaged lines are skipped (``truncate_metrics`` sets them aside)."""
        return self._metric_lines()[0]

    def truncate_metrics(self, last_step: int, tested: Optional[set] = None) -> None:
        """Drop records written after the checkpoint of step ``last_step`` (work redone on resume),
        and, given the steps whose test evaluation the checkpoint holds (``tested``), the test records
        of other steps (a final test written after it). Damaged lines are never dropped silently:
        they move to ``metrics.damaged.jsonl``, said in one line."""
        good, bad = self._metric_lines()
        if bad:
            aside = self.path / DAMAGED_METRICS
            previous = aside.read_bytes() if aside.exists() else b""
            atomic_write_bytes(aside, previous + b"".join(line + b"\n" for line in bad))
            log.warning("%s: %d damaged line(s) set aside in %s", self.metrics_path, len(bad), aside.name)
        kept = [r for r in good if isinstance(r.get("step", 0), (int, float)) and r.get("step", 0) <= last_step
                and (tested is None or r.get("split") != "test" or r.get("step") in tested)]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())

    def write_result(self, result: dict) -> None:
        atomic_write_json(self.result_path, result)

    def read_result(self, required: Iterable[str] = ()) -> dict:
        """``result.json`` as a dict holding ``required`` keys; anything else is a ``RunError``."""
        result = read_json(self.result_path)
        if not isinstance(result, dict):
            raise RunError(f"{self.result_path}: not a result record (a JSON {type(result).__name__}); "
                           f"move the run away to rerun it")
        missing = [key for key in required if key not in result]
        if missing:
            raise RunError(f"{self.result_path}: a damaged result record (no {', '.join(missing)}); "
                           f"move the run away to rerun it")
        return result


def _read_owner(fd: int) -> str:
    """The "host pid" a lock file names ('' if empty or unreadable)."""
    try:
        return os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, owned by someone else
    return True


def find_runs(root: Path) -> list[RunDir]:
    """Every finished run under ``root`` (a run directory or any folder above them)."""
    root = Path(root)
    if not root.exists():
        raise RunError(f"{root}: no such directory")
    return [RunDir(p.parent) for p in sorted(root.rglob(RESULT))]
