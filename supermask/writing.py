"""The one rule every command that writes a user-named path follows.

- Nothing is written inside a run directory but by the run itself (and ``export`` into that run's
  own ``export/`` folder): a run's own files are never replaced, ``--force`` or not.
- A path that exists and is not a regular file (a folder, a device, a symlink) is never replaced.
- A regular file the command did not write is replaced only with ``--force``. What a command wrote is
  recognised by the command (an export's provenance, an option file's header, a report folder's
  manifest of what ``compare`` wrote there and has not been edited since).

:func:`publish` writes a whole set of files this way: they are made in a staging folder first and
moved into place only when every one of them may be, so a refusal leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

from .errors import SupermaskError
from .layout import CONFIG, RESULT, STATUS

#: The manifest a report folder keeps of the files ``compare`` wrote there (name -> SHA-256).
MANIFEST = ".supermask-written.json"


def run_directory_of(path: Path) -> Optional[Path]:
    """The run directory ``path`` is in (or is), if any: a folder holding a config.json with a
    status.json or result.json."""
    path = Path(path).resolve()
    for folder in (path, *path.parents):
        if (folder / CONFIG).is_file() and ((folder / STATUS).is_file() or (folder / RESULT).is_file()):
            return folder
    return None


def check_replaceable(target: Path, force: bool, written_by_us: Callable[[Path], bool], option: str,
                      allowed_run: Optional[Path] = None, remedy: str = "--force replaces it") -> None:
    """Refuse to write ``target`` (named by ``option``) when the rule forbids it; ``allowed_run``
    is a run directory whose ``export/`` folder may be written (export's own run)."""
    target = Path(target)
    run = run_directory_of(target.parent)
    if run is not None:
        if allowed_run is None or run != Path(allowed_run).resolve():
            raise SupermaskError(f"{option} {target} is inside a run directory ({run}): a run's files are its own; "
                                 f"choose another {option}")
        from .layout import EXPORT_FOLDER

        if target.resolve().parent != run / EXPORT_FOLDER and not str(target.resolve().parent).startswith(
                str(run / EXPORT_FOLDER) + os.sep):
            raise SupermaskError(f"{option} {target} would replace or add to the run's own files (only its "
                                 f"{EXPORT_FOLDER}/ folder takes exports), --force or not")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise SupermaskError(f"{option} {target} exists and is not a regular file: refusing to replace it")
    if target.exists() and not force and not written_by_us(target):
        raise SupermaskError(f"{option} {target} exists and was not written by supermask: refusing to replace it "
                             f"({remedy})")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(folder: Path) -> dict:
    try:
        value = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def publish(out: Path, make: Callable[[Path], object], force: bool = False, option: str = "--out"):
    """Run ``make(staging)`` (it writes its files into the staging folder and returns what it
    returns), then move every file it made into ``out`` if the rule allows each; else refuse with
    nothing moved. Returns ``(make's result, the files written in out)``; ``out`` keeps a manifest
    of them, so a later run of the same command replaces them while they are unedited."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SupermaskError(f"{option} {out} is a file; it must be a folder")
    run = run_directory_of(out)
    if run is not None:
        raise SupermaskError(f"{option} {out} is inside a run directory ({run}): a run's files are its own; "
                             f"choose another {option}")
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        result = make(staging)
        made = sorted(p for p in staging.rglob("*") if p.is_file())
        known = _manifest(out)
        ours = lambda target: known.get(target.relative_to(out).as_posix()) == _digest(target)  # noqa: E731
        targets = [out / p.relative_to(staging) for p in made]
        for target in targets:
            check_replaceable(target, force, ours, option)
        for source, target in zip(made, targets):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        known.update({t.relative_to(out).as_posix(): _digest(t) for t in targets})
        from .io import atomic_write_json

        atomic_write_json(out / MANIFEST, known)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result, targets
