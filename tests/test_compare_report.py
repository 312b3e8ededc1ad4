"""supermask.report: compare tables, Welch tests, plots, damaged inputs; the per-level IMP table."""

import csv
import dataclasses
import json
import math

import pytest

from supermask.errors import RunError, SupermaskError
from supermask.report import (collect, compare, comparison_rows, imp_level_rows, imp_level_table, mean_std,
                              welch_p)
from supermask_imp import IMPConfig, run_imp


CONFIG_FIELDS = ("engine", "method", "init", "scope", "control", "arch", "dataset", "seed")


def write_result(path, config=None, **fields):
    """A result.json and the config.json beside it (the config's fields: those of the result that
    name the setting, plus ``config``)."""
    path.mkdir(parents=True, exist_ok=True)
    base = {"status": "finished", "arch": "lenet_300_100", "dataset": "mnist-5k", "seed": 0, "density": 1.0,
            "test_accuracy": 0.9, "min_val_loss_step": 100}
    result = {**base, **fields}
    (path / "result.json").write_text(json.dumps(result))
    settings = {k: result[k] for k in CONFIG_FIELDS if k in result}
    if result.get("engine") != "imp":
        settings["density"] = result["density"]
    (path / "config.json").write_text(json.dumps({**settings, "train": {"epochs": 10}, **(config or {})}))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "runs"
    for seed, (ep, rand, imp, reinit) in enumerate([(0.93, 0.12, 0.95, 0.90), (0.94, 0.10, 0.96, 0.91),
                                                     (0.95, 0.11, 0.97, 0.89)]):
        write_result(root / "search" / f"s{seed}", engine="search", method="edge-popup", init="signed-constant",
                     scope="layerwise", seed=seed, density=0.2, test_accuracy=ep, initial_test_accuracy=rand)
        write_result(root / "imp" / f"s{seed}" / "level-1", engine="imp", control="none", level=1, seed=seed,
                     density=0.2, test_accuracy=imp, min_val_loss_step=200)
        write_result(root / "imp" / f"r{seed}" / "level-1", engine="imp", control="reinit", level=1, seed=seed,
                     density=0.2, test_accuracy=reinit, min_val_loss_step=600)
        write_result(root / "train" / f"s{seed}", engine="train", method="dense", seed=seed, test_accuracy=0.96)
    (root / "imp" / "s0" / "result.json").write_text(json.dumps({"engine": "imp", "levels": []}))  # summary: skipped
    return root


def test_rows_carry_mean_std_seeds_dense_and_welch_tests(tree):
    rows = {(r["method"], r["density"]): r for r in comparison_rows(collect([tree]).points)}
    imp = rows[("imp", 0.2)]
    assert imp["mean"] == pytest.approx(0.96) and imp["std"] == pytest.approx(0.01) and imp["seeds"] == 3
    assert imp["dense"] == pytest.approx(0.96)
    (vs,) = imp["controls"]
    assert vs["control"] == "imp reinit" and vs["delta"] == pytest.approx(0.06)
    assert vs["p"] == pytest.approx(welch_p([0.95, 0.96, 0.97], [0.90, 0.91, 0.89]))
    assert vs["p"] < 0.01
    ep = rows[("edge-popup signed-constant", 0.2)]
    assert ep["controls"][0]["control"] == "edge-popup signed-constant random mask"
    assert ep["controls"][0]["delta"] == pytest.approx(0.94 - 0.11)
    assert imp["early_stop"] == (200, 0)


def test_welch_p_matches_scipy_and_is_nan_without_spread():
    from scipy import stats

    a, b = [1.0, 2.0, 3.0, 4.0], [2.5, 3.5, 4.5]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert math.isnan(welch_p([1.0], [2.0, 3.0]))


def test_report_files_and_damaged_inputs(tree, tmp_path):
    (tree / "broken").mkdir()
    (tree / "broken" / "result.json").write_text('{"status": "fin')
    (tree / "alien").mkdir()
    (tree / "alien" / "result.json").write_text('{"hello": 1}')
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    table, problems, written = compare([tree, unfinished, tmp_path / "missing"], tmp_path / "report")
    assert len(problems) == 4
    assert any("broken" in p and "unreadable" in p for p in problems)
    assert any("alien" in p and "not a supermask result" in p for p in problems)
    assert any("unfinished" in p for p in problems) and any("missing" in p for p in problems)
    assert {p.name for p in written} == {"comparison.md", "comparison.csv", "accuracy_vs_density.png",
                                          "accuracy_vs_density.pdf", "early_stop_vs_density.png",
                                          "early_stop_vs_density.pdf"}  # the PDFs: vector, for a paper
    for p in written:
        assert p.stat().st_size > 0
    assert (tmp_path / "report" / "accuracy_vs_density.png").read_bytes()[:4] == b"\x89PNG"
    assert "| imp | 0.2 | 0.2 | 96.0 ± 1.0 | 3 | 96.0 | imp reinit: +6.0" in table
    assert "Left out:" in table
    rows = list(csv.DictReader(open(tmp_path / "report" / "comparison.csv")))
    imp = next(r for r in rows if r["method"] == "imp")
    assert imp["control"] == "imp reinit" and float(imp["delta_to_control"]) == pytest.approx(0.06)


def test_nothing_to_compare_is_an_error(tmp_path):
    with pytest.raises(SupermaskError, match="no finished runs"):
        compare([tmp_path], tmp_path / "report")


def test_imp_table_averages_over_seeds(tmp_path):
    results = []
    for seed in (0, 1):
        cfg = IMPConfig.for_arch("lenet_300_100", out=str(tmp_path), device="cpu", levels=1, seed=seed)
        cfg.train = dataclasses.replace(cfg.train, epochs=1, batch_size=1000)
        results.append(run_imp(cfg))
    rows = imp_level_rows(tmp_path)
    assert [(r["control"], r["level"], r["seeds"]) for r in rows] == [("none", 0, 2), ("none", 1, 2)]
    accs = [res.levels[1]["test_accuracy"] for res in results]
    assert rows[1]["test_accuracy"] == pytest.approx(mean_std(accs))
    table = imp_level_table(tmp_path)
    assert table.splitlines()[0].startswith("| level | density | IMP test acc")
    assert f"{100 * mean_std(accs)[0]:.1f} ± {100 * mean_std(accs)[1]:.1f}" in table
    with pytest.raises(RunError):
        imp_level_table(tmp_path / "level-nothing")


def test_runs_of_different_configs_are_separate_rows_labelled_by_what_differs(tmp_path):
    root = tmp_path / "runs"
    for seed, acc in ((0, 0.70), (1, 0.72), (2, 0.74)):
        write_result(root / f"e1-{seed}", engine="search", method="edge-popup", init="signed-constant",
                     seed=seed, density=0.5, test_accuracy=acc, config={"train": {"epochs": 1}})
    for seed, acc in ((0, 0.80), (1, 0.81)):
        write_result(root / f"e2-{seed}", engine="search", method="edge-popup", init="signed-constant",
                     seed=seed, density=0.5, test_accuracy=acc, config={"train": {"epochs": 2}})
    rows = {r["method"]: r for r in comparison_rows(collect([root]).points)
            if "random mask" not in r["method"]}
    assert set(rows) == {"edge-popup signed-constant (epochs=1)", "edge-popup signed-constant (epochs=2)"}
    one, two = rows["edge-popup signed-constant (epochs=1)"], rows["edge-popup signed-constant (epochs=2)"]
    assert one["seeds"] == 3 and one["mean"] == pytest.approx(0.72)
    assert two["seeds"] == 2 and two["mean"] == pytest.approx(0.805)


def test_one_seed_shows_its_value_without_a_spread_or_a_test(tmp_path):
    root = tmp_path / "runs"
    write_result(root / "imp" / "level-1", engine="imp", control="none", level=1, density=0.2, test_accuracy=0.95)
    write_result(root / "reinit" / "level-1", engine="imp", control="reinit", level=1, density=0.2,
                 test_accuracy=0.90)
    table, _, written = compare([root], tmp_path / "report")
    assert "| imp | 0.2 | 0.2 | 95.0 | 1 |" in table and "imp reinit: +5.0 (p not computed: n < 3) |" in table
    data_rows = [line for line in table.splitlines() if line.startswith("| imp")]
    assert len(data_rows) == 2 and not any("±" in line or "p=" in line or "nan" in line for line in data_rows)
    md = (tmp_path / "report" / "comparison.md").read_text()
    assert "![accuracy vs density](accuracy_vs_density.png)" in md  # the report embeds its plots
    row = next(r for r in csv.DictReader(open(tmp_path / "report" / "comparison.csv")) if r["method"] == "imp")
    assert row["test_accuracy_std"] == "" and row["welch_p"] == ""


def test_the_same_run_given_twice_counts_once(tree):
    run = tree / "search" / "s0"
    found = collect([run, run, run / ".." / "s0", tree / "search"])
    assert sorted(p.seed for p in found.points if "random mask" not in p.method) == [0, 1, 2]
    assert sum("given already (its runs are counted once)" in p for p in found.problems) == 2  # run, run/../s0
    assert not any(str(tree / "search") + ":" in p for p in found.problems)  # it adds runs not given before


def test_the_same_seed_of_one_config_in_two_places_is_left_out_with_a_note(tree, tmp_path):
    import shutil

    shutil.copytree(tree / "search" / "s0", tmp_path / "copy")
    found = collect([tree, tmp_path / "copy"])
    assert any("seed 0 of this config is already counted" in p for p in found.problems)
    rows = [r for r in comparison_rows(found.points) if r["method"] == "edge-popup signed-constant"]
    assert rows[0]["seeds"] == 3


def test_collapsed_layers_mark_the_row(tmp_path):
    root = tmp_path / "runs"
    write_result(root / "a", engine="prune", method="snip", seed=0, density=0.0005, test_accuracy=0.1,
                 collapsed_layers=["2.weight"])
    table, _, _ = compare([root], tmp_path / "report")
    assert "⚠ collapsed: 2.weight" in table and "layer collapse" in table


def test_real_runs_differing_in_one_field_never_share_a_row(tmp_path):
    from supermask import SearchConfig, TrainConfig, search

    for iterations in (2, 3):
        for seed in (0, 1):
            search(SearchConfig(arch="lenet_300_100", out=str(tmp_path), device="cpu", seed=seed,
                                train=TrainConfig(iterations=iterations, batch_size=500)))
    rows = [r for r in comparison_rows(collect([tmp_path]).points) if "random mask" not in r["method"]]
    assert sorted((r["method"], r["seeds"]) for r in rows) == [
        ("edge-popup signed-constant (iterations=2)", 2), ("edge-popup signed-constant (iterations=3)", 2)]


def test_a_field_left_out_of_the_key_at_its_default_is_labelled_with_that_default(tmp_path):
    root = tmp_path / "runs"
    write_result(root / "a", engine="imp", control="none", level=1, density=0.5, test_accuracy=0.9)
    write_result(root / "b", engine="imp", control="none", level=1, density=0.5, test_accuracy=0.8,
                 config={"dropout": 0.5})
    labels = sorted(r["method"] for r in comparison_rows(collect([root]).points))
    assert labels == ["imp (dropout=0)", "imp (dropout=0.5)"]


def _with_random_prune(tree):
    for seed, acc in enumerate((0.85, 0.86, 0.84)):
        write_result(tree / "imp" / f"p{seed}" / "level-1", engine="imp", control="random-prune", level=1, seed=seed,
                     density=0.2, test_accuracy=acc, min_val_loss_step=500)
    return tree


def test_every_series_has_its_own_style_and_the_legend_says_n_and_the_band(tree, tmp_path):
    from supermask.report import FigureStyle, series_styles

    rows = comparison_rows(collect([_with_random_prune(tree)]).points)
    styles = series_styles(rows)
    assert set(styles) == {"imp", "imp reinit", "imp random-prune", "edge-popup signed-constant",
                           "edge-popup signed-constant random mask"}
    looks = [(s["color"], s["marker"], s["linestyle"]) for s in styles.values()]
    assert len(set(looks)) == len(looks)  # no two series alike
    assert styles["imp reinit"]["linestyle"] != styles["imp random-prune"]["linestyle"]
    assert styles["imp"]["color"] != styles["imp reinit"]["color"] and all(s["label"].endswith("(n=3)")
                                                                           for s in styles.values())
    out = tmp_path / "report"
    _, _, written = compare([tree], out, style=FigureStyle(formats=("png", "pdf", "svg"), panel_size=(3.3, 2.5),
                                                           font_size=6))
    names = {p.name for p in written}
    assert {"accuracy_vs_density.png", "accuracy_vs_density.pdf", "accuracy_vs_density.svg",
            "early_stop_vs_density.svg"} <= names
    svg = (out / "accuracy_vs_density.svg").read_text()
    for text in ("band: ±1 std over seeds", "imp random-prune (n=3)", "dense (trained) (n=3)"):
        assert text in svg, text
    assert (out / "accuracy_vs_density.pdf").read_bytes().startswith(b"%PDF")
    assert "accuracy_vs_density.png" in (out / "comparison.md").read_text()


def test_p_values_need_three_seeds_a_side(tmp_path):
    root = tmp_path / "runs"
    for seed, (imp, reinit) in enumerate([(0.95, 0.90), (0.96, 0.91)]):
        write_result(root / f"s{seed}" / "level-1", engine="imp", control="none", level=1, seed=seed, density=0.2,
                     test_accuracy=imp)
        write_result(root / f"r{seed}" / "level-1", engine="imp", control="reinit", level=1, seed=seed, density=0.2,
                     test_accuracy=reinit)
    rows = {r["method"]: r for r in comparison_rows(collect([root]).points)}
    assert math.isnan(rows["imp"]["controls"][0]["p"])
    table, _, _ = compare([root], tmp_path / "report")
    assert "(p not computed: n < 3)" in table and "p=" not in table


def test_select_keeps_the_runs_with_the_given_result_fields(tree, tmp_path, capsys):
    from supermask.cli import main

    assert main(["compare", str(tree), "--out", str(tmp_path / "a"), "--select", "engine=imp",
                 "--select", "control=reinit"]) == 0
    table = capsys.readouterr().out
    assert "imp reinit" in table and "edge-popup" not in table and "| dense |" not in table
    for args, message in ((["--select", "engine"], "--select takes FIELD=VALUE"),
                          (["--select", "engine=nothing"], "no finished runs matching engine=nothing"),
                          (["--figure-formats", "png,jpg"], "--figure-formats takes png, pdf, svg"),
                          (["--panel-size", "3"], "--panel-size takes a width and a height"),
                          (["--font-size", "100"], "--font-size takes points in 2-72")):
        assert main(["compare", str(tree), "--out", str(tmp_path / "b"), *args]) == 2
        assert message in capsys.readouterr().err


def test_the_csv_names_each_rows_config_hash_and_run_directories(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write_result(root / f"s{seed}", engine="search", method="edge-popup", init="signed-constant",
                     scope="layerwise", seed=seed, density=0.2, config_hash="abc123def456")
    compare([root], tmp_path / "report")
    rows = [r for r in csv.DictReader(open(tmp_path / "report" / "comparison.csv"))
            if r["method"] == "edge-popup signed-constant"]
    assert rows and rows[0]["config_hash"] == "abc123def456"
    assert rows[0]["runs"].split(";") == [str(root / "s0"), str(root / "s1")]
