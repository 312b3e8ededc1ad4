"""One writing rule for every command: never replace a file the command did not write without
--force, never a non-regular file, never a run's own files (--force or not)."""

import os
from pathlib import Path

import pytest

from supermask.cli import main

SMALL = ["--arch", "lenet_300_100", "--iterations", "2", "--batch-size", "500", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("writing")
    assert main(["search", *SMALL, "--out", str(out / "runs")]) == 0
    return next((out / "runs").rglob("result.json")).parent


def _one_line_refusal(capsys, code: int, fragment: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("supermask: error:") and err.count("\n") == 1 and fragment in err, err


def test_compare_never_replaces_a_users_file_and_moves_nothing_in_when_it_refuses(run, tmp_path, capsys):
    report = tmp_path / "report"
    report.mkdir()
    (report / "comparison.md").write_text("my own notes\n")
    _one_line_refusal(capsys, main(["compare", str(run), "--out", str(report)]), "was not written by supermask")
    assert (report / "comparison.md").read_text() == "my own notes\n"
    assert sorted(p.name for p in report.iterdir()) == ["comparison.md"]  # no csv, no plot, no staging
    assert main(["compare", str(run), "--out", str(report), "--force"]) == 0
    assert "my own notes" not in (report / "comparison.md").read_text()
    capsys.readouterr()


def test_compare_replaces_its_own_files_until_they_are_edited(run, tmp_path, capsys):
    report = tmp_path / "report"
    assert main(["compare", str(run), "--out", str(report)]) == 0
    assert main(["compare", str(run), "--out", str(report)]) == 0  # its own, unedited: replaced
    with open(report / "comparison.csv", "a") as f:
        f.write("my extra row\n")
    _one_line_refusal(capsys, main(["compare", str(run), "--out", str(report)]), "comparison.csv exists")
    assert (report / "comparison.csv").read_text().endswith("my extra row\n")


def test_compare_never_writes_into_a_run_directory(run, capsys):
    before = sorted(p.name for p in run.iterdir())
    _one_line_refusal(capsys, main(["compare", str(run), "--out", str(run), "--force"]), "inside a run directory")
    assert sorted(p.name for p in run.iterdir()) == before


def test_export_never_replaces_the_runs_own_files_even_with_force(run, capsys):
    result = (run / "result.json").read_bytes()
    for target in (run / "result.json", run / "ticket" / "mask.safetensors"):
        code = main(["export", str(run), "--format", "mask", "--out", str(target), "--force"])
        _one_line_refusal(capsys, code, "the run's own files")
    assert (run / "result.json").read_bytes() == result
    assert main(["export", str(run), "--format", "mask"]) == 0  # its export/ folder is the place for exports
    capsys.readouterr()


def test_save_config_replaces_only_an_option_file_it_wrote(tmp_path, capsys):
    mine = tmp_path / "mine.toml"
    mine.write_text("# my own file\n")
    args = ["search", *SMALL, "--dry-run", "--out", str(tmp_path / "runs")]
    _one_line_refusal(capsys, main([*args, "--save-config", str(mine)]), "not written by supermask")
    assert mine.read_text() == "# my own file\n"
    saved = tmp_path / "saved.toml"
    assert main([*args, "--save-config", str(saved)]) == 0
    assert main([*args, "--seed", "3", "--save-config", str(saved)]) == 0  # its own: replaced
    assert "seed = 3" in saved.read_text()
    capsys.readouterr()


def test_save_config_never_replaces_a_symlink(tmp_path, capsys):
    target = tmp_path / "real.toml"
    target.write_text("# real\n")
    link = tmp_path / "link.toml"
    os.symlink(target, link)
    code = main(["search", *SMALL, "--dry-run", "--out", str(tmp_path / "r"), "--save-config", str(link)])
    _one_line_refusal(capsys, code, "not a regular file")
    assert link.is_symlink() and target.read_text() == "# real\n"
