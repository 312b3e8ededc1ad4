"""Weak vs strong, side by side: tables and plots over finished runs of every engine.

``compare(paths, out)`` gathers ``result.json`` files (runs, IMP levels, or whole run trees),
groups them by (architecture, data set, method, density) and writes:

- ``comparison.md`` / ``comparison.csv``: test accuracy mean ± std over seeds, the number of
  seeds, the dense baseline's accuracy, and for methods with a control at the same density the
  difference to it with a Welch t-test p-value (IMP vs its reinit and random-prune controls;
  edge-popup vs the random mask it started from, i.e. its epoch-0 accuracy);
- ``accuracy_vs_density.png``: one panel per (architecture, data set), accuracy against
  density on a log axis, a line and a ±std band per method, the dense baseline as a line;
- ``early_stop_vs_density.png`` for IMP runs: the iteration of minimum validation loss.

Files that are missing or unreadable are reported and left out; the rest is still written.

``imp_level_table(root)`` is the per-level view of IMP runs: one row per level, one column
group per control (test accuracy and early-stopping iteration, mean ± std over seeds).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from .errors import RunError, SupermaskError
from .io import atomic_write_bytes
from .runs import find_runs

RESULT = "result.json"


@dataclass(frozen=True)
class Point:
    arch: str
    dataset: str
    method: str
    density: float
    seed: int
    test_accuracy: float
    early_stop_step: Optional[int] = None
    reached: Optional[float] = None  # the density the mask has (methods whose density is an outcome differ)


@dataclass
class Collection:
    points: list[Point] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "path: reason"


def method_label(result: dict) -> str:
    engine = result.get("engine")
    if engine == "train":
        return result.get("method", "dense")  # "dense", or "<method> fine-tuned" for a fine-tuned ticket
    if engine == "imp":
        control, method = result.get("control", "none"), result.get("method", "imp")
        return method if control == "none" else f"{method} {control}"
    label = f"{result.get('method', engine)} {result.get('init', '')}".strip()
    return label + (" global" if result.get("scope") == "global" else "")


CONTROLS_OF = {"imp": ("imp reinit", "imp random-prune")}


def controls_of(method: str) -> tuple[str, ...]:
    return CONTROLS_OF.get(method, () if method.startswith("imp") or method == "dense" else (f"{method} random mask",))


def _points_of(result: dict) -> list[Point]:
    if "levels" in result:  # an IMP summary: its levels are read from their own directories
        return []
    # Runs are grouped by the density asked for (a grid point); IMP levels by the density reached.
    requested = result.get("requested_density", result["density"])
    common = dict(arch=result["arch"], dataset=result["dataset"], density=round(float(requested), 4),
                  seed=int(result["seed"]), reached=float(result["density"]))
    method = method_label(result)
    points = [Point(method=method, test_accuracy=float(result["test_accuracy"]),
                    early_stop_step=result.get("min_val_loss_step") if result.get("engine") == "imp" else None,
                    **common)]
    if result.get("engine") == "search" and "initial_test_accuracy" in result:
        points.append(Point(method=f"{method} random mask", test_accuracy=float(result["initial_test_accuracy"]),
                            **common))
    return points


def collect(paths: Iterable[Path]) -> Collection:
    found = Collection()
    for path in map(Path, paths):
        if not path.exists():
            found.problems.append(f"{path}: no such file or directory")
            continue
        files = [path] if path.is_file() else sorted(path.rglob(RESULT))
        if path.is_dir() and not files:
            found.problems.append(f"{path}: no result.json (an unfinished run, or not a run directory)")
        for file in files:
            try:
                found.points += _points_of(json.loads(file.read_text()))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                found.problems.append(f"{file}: unreadable ({type(exc).__name__})")
            except (KeyError, TypeError, ValueError) as exc:
                found.problems.append(f"{file}: not a supermask result ({type(exc).__name__}: {exc})")
    return found


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided Welch t-test p-value (NaN with fewer than two values a side or no variance)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def comparison_rows(points: list[Point]) -> list[dict]:
    groups: dict[tuple, list[Point]] = defaultdict(list)
    for p in points:
        groups[(p.arch, p.dataset, p.method, p.density)].append(p)
    dense: dict[tuple, list[float]] = defaultdict(list)
    for p in points:
        if p.method == "dense":
            dense[(p.arch, p.dataset)].append(p.test_accuracy)
    rows = []
    for (arch, dataset, method, density), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], -kv[0][3])):
        accs = [p.test_accuracy for p in items]
        mean, std = mean_std(accs)
        base = dense.get((arch, dataset))
        reached = [p.reached for p in items if p.reached is not None]
        row = {"arch": arch, "dataset": dataset, "method": method, "density": density, "mean": mean, "std": std,
               "seeds": len(items), "dense": statistics.fmean(base) if base else math.nan, "controls": [],
               "reached": statistics.fmean(reached) if reached else density}
        for control in controls_of(method):
            other = groups.get((arch, dataset, control, density))
            if other:
                theirs = [p.test_accuracy for p in other]
                row["controls"].append({"control": control, "delta": mean - statistics.fmean(theirs),
                                        "p": welch_p(accs, theirs)})
        steps = [p.early_stop_step for p in items if p.early_stop_step is not None]
        row["early_stop"] = mean_std(steps) if steps else None
        rows.append(row)
    return rows


def _pct(x: float) -> str:
    return "" if math.isnan(x) else f"{100 * x:.1f}"


def markdown(rows: list[dict], problems: list[str]) -> str:
    lines = []
    for key in sorted({(r["arch"], r["dataset"]) for r in rows}):
        part = [r for r in rows if (r["arch"], r["dataset"]) == key]
        lines += [f"### {key[0]} on {key[1]}", "",
                  "| method | density | reached | test acc % (mean ± std) | seeds | dense % "
                  "| vs control: Δ points (Welch p) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in part:
            vs = "; ".join(f"{c['control']}: {100 * c['delta']:+.1f} (p={c['p']:.3g})" for c in r["controls"])
            lines.append(f"| {r['method']} | {r['density']:.4g} | {r['reached']:.4g} | {_pct(r['mean'])} ± "
                         f"{_pct(r['std'])} | {r['seeds']} | {_pct(r['dense'])} | {vs} |")
        lines.append("")
    if problems:
        lines += ["Left out:", ""] + [f"- {p}" for p in problems] + [""]
    return "\n".join(lines)


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["arch", "dataset", "method", "density", "density_reached", "test_accuracy_mean",
                     "test_accuracy_std", "seeds", "dense_accuracy", "control", "delta_to_control", "welch_p"])
    for r in rows:
        base = [r["arch"], r["dataset"], r["method"], r["density"], f"{r['reached']:.6f}", f"{r['mean']:.6f}",
                f"{r['std']:.6f}",
                r["seeds"], "" if math.isnan(r["dense"]) else f"{r['dense']:.6f}"]
        for c in r["controls"] or [None]:
            writer.writerow(base + ([c["control"], f"{c['delta']:.6f}", "" if math.isnan(c["p"]) else f"{c['p']:.6g}"]
                                    if c else ["", "", ""]))
    return buffer.getvalue()


def _panels(rows: list[dict], value: str, ylabel: str, path: Path, methods_filter=lambda m: True) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    keys = sorted({(r["arch"], r["dataset"]) for r in rows if methods_filter(r["method"])})
    if not keys:
        return False
    fig, axes = plt.subplots(1, len(keys), figsize=(9 * len(keys), 5), squeeze=False)
    palette = plt.get_cmap("tab20").colors  # enough distinct colours for every method of a sweep
    for ax, key in zip(axes[0], keys):
        part = [r for r in rows if (r["arch"], r["dataset"]) == key and methods_filter(r["method"])]
        for index, method in enumerate(sorted({r["method"] for r in part})):
            if method == "dense" and value == "mean":
                continue
            series = sorted((r for r in part if r["method"] == method), key=lambda r: r["reached"])
            if value == "mean":
                xs, ys, sd = [r["reached"] for r in series], [100 * r["mean"] for r in series], [100 * r["std"] for r in series]
            else:
                series = [r for r in series if r["early_stop"]]
                xs, ys, sd = [r["reached"] for r in series], [r["early_stop"][0] for r in series], [r["early_stop"][1] for r in series]
            control = "random mask" in method or "reinit" in method or "random-prune" in method
            line, = ax.plot(xs, ys, marker="o", label=method, linestyle="--" if control else "-",
                            color=palette[index % len(palette)])
            ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)], alpha=0.15,
                            color=line.get_color())
        dense = [r for r in part if r["method"] == "dense"]
        if dense and value == "mean":
            ax.axhline(100 * statistics.fmean(r["mean"] for r in dense), color="black", linestyle=":", label="dense (trained)")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.invert_xaxis()
        ax.set_xlabel("density (fraction of weights kept, log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{key[0]} on {key[1]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return True


def compare(paths: Iterable[Path], out: Path) -> tuple[str, list[str], list[Path]]:
    """Write the report to ``out``; returns (Markdown table, problems, files written)."""
    found = collect(paths)
    if not found.points:
        detail = f" ({found.problems[0]})" if found.problems else ""
        raise SupermaskError(f"no finished runs to compare{detail}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SupermaskError(f"{out} is a file; --out must be a directory")
    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(found.points)
    table = markdown(rows, found.problems)
    written = [out / "comparison.md", out / "comparison.csv"]
    atomic_write_bytes(written[0], table.encode())
    atomic_write_bytes(written[1], csv_text(rows).encode())
    if _panels(rows, "mean", "test accuracy (%)", out / "accuracy_vs_density.png"):
        written.append(out / "accuracy_vs_density.png")
    if _panels(rows, "early_stop", "iteration of minimum validation loss", out / "early_stop_vs_density.png",
               methods_filter=lambda m: m.startswith("imp")):
        written.append(out / "early_stop_vs_density.png")
    return table, found.problems, written


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
