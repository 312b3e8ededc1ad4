"""Property: whatever happens to a file of a run directory (deleted, cut short, garbage, JSON of
another type, one byte flipped), every command that reads it works or fails with one line on
stderr and exit status 2 (1 for a run that started and failed), never a traceback, and nothing
outside that run directory changes."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from supermask.cli import main

SEARCH = ["search", "--arch", "lenet_300_100", "--iterations", "2", "--batch-size", "500", "--quiet",
          "--device", "cpu"]
IMP = ["imp", "--arch", "lenet_300_100", "--levels", "1", "--iterations", "2", "--batch-size", "500", "--quiet",
       "--device", "cpu"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    assert main([*SEARCH, "--out", str(root / "runs")]) == 0
    assert main([*IMP, "--out", str(root / "runs")]) == 0
    return root


def _snapshot(root: Path, skip: Path) -> dict:
    """Every file under ``root`` outside ``skip``, with its content hash."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and skip not in p.parents}


def _files(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob("*") if p.is_file() and p.name != ".lock")


MUTATIONS = ["delete", "truncate", "garbage", "list", "string", "number", "empty-object", "flip"]


def _mutate(path: Path, how: str, where: float) -> None:
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[:int(len(data) * where)])
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 3)
    elif how in ("list", "string", "number", "empty-object"):
        path.write_text(json.dumps({"list": [1, 2], "string": "x", "number": 3, "empty-object": {}}[how]))
    elif how == "flip" and data:
        i = min(len(data) - 1, int(len(data) * where))
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])


def _commands(work: Path, run: Path, engine: str) -> list[list[str]]:
    out = str(work / "runs")
    rerun = [*(SEARCH if engine == "search" else IMP), "--out", out]
    exportable = run if engine == "search" else run / "level-1"
    commands = [rerun, ["compare", out, "--out", str(work / "report")]]
    for fmt in ("mask", "state-dict", "ticket" if engine == "search" else "torch-prune"):
        commands.append(["export", str(exportable), "--format", fmt, "--out", str(work / f"export-{fmt}.safetensors"),
                         "--force"])
    if engine == "search":
        commands.append(["train", "--ticket", str(run), "--iterations", "1", "--batch-size", "500", "--quiet",
                         "--device", "cpu", "--out", out])
    return commands


# No shrinking: an example is a handful of commands (seconds); the failing one is reported as drawn.
@settings(max_examples=20, deadline=None, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(engine=st.sampled_from(["search", "imp"]), pick=st.floats(0, 1, exclude_max=True),
       how=st.sampled_from(MUTATIONS), where=st.floats(0, 1))
def test_any_damage_to_a_run_directory_is_one_line_or_harmless(pristine, tmp_path_factory, capsys, engine, pick,
                                                               how, where):
    work = tmp_path_factory.mktemp("work")
    shutil.copytree(pristine / "runs", work / "runs")
    run = next((work / "runs" / engine).glob("*/*/seed-0"))
    files = _files(run)
    target = files[int(pick * len(files))]
    _mutate(target, how, where)
    capsys.readouterr()
    for command in _commands(work, run, engine):
        outside = _snapshot(work, run)
        code = main(command)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in err, (target.name, how, command[0], err)
        if code != 0:
            assert code in (1, 2) and len(lines) == 1 and lines[0].startswith("supermask: error:"), \
                (target.relative_to(run), how, command, err)
        after = _snapshot(work, run)
        written = {k for k in after if k not in outside or after[k] != outside[k]}
        allowed = ("report/", "export-", "runs/train/")  # what compare, export and train --ticket write
        assert all(k.startswith(allowed) for k in written), (target.relative_to(run), how, command, written)
        assert all(outside[k] == after.get(k) for k in outside if not k.startswith(allowed)), \
            (target.relative_to(run), how, command)


@pytest.mark.parametrize("engine", ["search", "imp"])
def test_every_command_of_the_property_works_on_an_undamaged_run(pristine, tmp_path, capsys, engine):
    """The control: without damage each command succeeds (so the property above is not met by
    commands that always fail)."""
    shutil.copytree(pristine / "runs", tmp_path / "runs")
    run = next((tmp_path / "runs" / engine).glob("*/*/seed-0"))
    for command in _commands(tmp_path, run, engine):
        assert main(command) == 0, (command, capsys.readouterr().err)


def test_a_level_whose_checkpoint_is_another_levels_is_refused(tmp_path, capsys):
    """Level 1's final checkpoint replaced by level 0's (both final, at the same step): resuming must
    not prune level 2 from the dense weights. Every checkpoint names the run it is of."""
    args = ["imp", "--arch", "lenet_300_100", "--levels", "2", "--iterations", "2", "--batch-size", "500",
            "--quiet", "--device", "cpu", "--out", str(tmp_path / "runs")]
    assert main(args) == 0
    root = next((tmp_path / "runs").rglob("rewind.safetensors")).parent
    shutil.rmtree(root / "level-2")  # as if killed before level 2 finished
    (root / "result.json").unlink()
    shutil.copy(root / "level-0" / "checkpoint.pt", root / "level-1" / "checkpoint.pt")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "level-1/checkpoint.pt: a checkpoint of another run" in err, err
    assert not (root / "level-2" / "result.json").exists()
