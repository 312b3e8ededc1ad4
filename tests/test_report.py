import dataclasses

import pytest

from supermask.errors import RunError
from supermask.report import imp_level_rows, imp_level_table, mean_std
from supermask_imp import IMPConfig, run_imp


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
