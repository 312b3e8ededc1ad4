"""Tables over finished runs: mean ± std across seeds.

``imp_level_table(root)`` gathers every finished IMP run under ``root`` and gives one row per
(control, level): density, test accuracy at the best-validation epoch, and the early-stopping
iteration (the step of minimum validation loss), each as mean ± std over seeds.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from .errors import RunError
from .runs import find_runs


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def imp_level_rows(root: Path) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in find_runs(root):
        result = run.read_result()
        if result.get("engine") != "imp" or "levels" not in result:
            continue
        for row in result["levels"]:
            groups[(result["arch"], result["dataset"], result["control"], row["level"])].append(row)
    if not groups:
        raise RunError(f"{root}: no finished IMP runs")
    rows = []
    for (arch, dataset, control, level), items in sorted(groups.items()):
        rows.append({
            "arch": arch, "dataset": dataset, "control": control, "level": level, "seeds": len(items),
            "density": mean_std([r["density"] for r in items]),
            "test_accuracy": mean_std([r["test_accuracy"] for r in items]),
            "early_stop_step": mean_std([r["min_val_loss_step"] for r in items]),
        })
    return rows


def imp_level_table(root: Path) -> str:
    """Markdown: one row per level, one column group per control."""
    rows = imp_level_rows(root)
    controls = sorted({r["control"] for r in rows}, key=lambda c: (c != "none", c))
    levels = sorted({r["level"] for r in rows})
    by = {(r["control"], r["level"]): r for r in rows}
    head = "| level | density | " + " | ".join(
        f"{c if c != 'none' else 'IMP'} test acc | {c if c != 'none' else 'IMP'} early-stop it" for c in controls) + " |"
    lines = [head, "|" + " --- |" * (2 + 2 * len(controls))]
    for level in levels:
        ref = by.get(("none", level)) or next(by[(c, level)] for c in controls if (c, level) in by)
        cells = [str(level), f"{ref['density'][0]:.3f}"]
        for c in controls:
            r = by.get((c, level))
            if r is None:
                cells += ["", ""]
                continue
            acc, es = r["test_accuracy"], r["early_stop_step"]
            cells += [f"{100 * acc[0]:.1f} ± {100 * acc[1]:.1f}", f"{es[0]:.0f} ± {es[1]:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({r["seeds"] for r in rows})
    lines.append(f"\n{'/'.join(map(str, seeds))} seeds per cell; accuracy in %, over the test split.")
    return "\n".join(lines)
