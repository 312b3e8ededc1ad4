"""The report of instability analyses (``supermask stability``): the paper's two figures and a table.

``compare`` calls :func:`write` for the finished stability runs among its paths. Runs are grouped
by configuration (their result-changing config without the seed), never pooled across configs;
within a group, every (seed, pair of copies) is one replicate. It writes:

- ``stability.md`` / ``stability.csv``: per configuration, k and level: the test and train error
  barrier (mean ± std over replicates, in points), how many replicates are stable, and for IMP
  levels the level's density and whether it is matching; for strong tickets the two tickets'
  overlap (beside two random masks') and the mask path's barrier;
- ``stability_error_vs_alpha.png`` (and ``.pdf``): the test error along the path, one line per k,
  one panel per configuration and level (Frankle et al. 2020, Figure 2's form);
- ``stability_barrier_vs_k.png`` (and ``.pdf``): the test barrier against k, one line per level,
  with the stability threshold (Figure 3's form).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path

from .figures import save_figure
from .io import atomic_write_bytes
from .layout import CONFIG, STABILITY_PAIR_GLOB
from .runs import NON_RESULT_FIELDS, result_fields


def _group_key(config: dict) -> str:
    return json.dumps(result_fields(config, NON_RESULT_FIELDS), sort_keys=True, separators=(",", ":"))


def collect(roots: list[Path]) -> dict[str, dict]:
    """{config key: {"label", "threshold", "pairs": [every pair's interpolation]}} of finished runs."""
    groups: dict[str, dict] = {}
    for root in roots:
        config = json.loads((root / CONFIG).read_text())
        key = _group_key(config)
        group = groups.setdefault(key, {"label": _label(config), "threshold": config.get("threshold", 2.0),
                                        "subject": config.get("subject"), "pairs": []})
        for path in sorted(root.glob(STABILITY_PAIR_GLOB)):
            group["pairs"].append({**json.loads(path.read_text()), "seed": config.get("seed")})
    return groups


def _label(config: dict) -> str:
    """What tells a configuration apart in a table or a legend: architecture, data, subject, the
    recipe's optimiser, learning rate and length, the levels analysed."""
    train = config.get("train", {})
    what = "IMP" if config.get("subject") == "imp" else f"strong ({config.get('method')}, d={config.get('density'):g})"
    length = f"{train['iterations']} it" if train.get("iterations") else f"{train.get('epochs')} ep"
    levels = config.get("levels") or [0]
    analysed = "" if list(levels) == [0] else f", levels {','.join(map(str, levels))}"
    return (f"{config.get('arch')} on {config.get('dataset')}, {what}, {train.get('optimizer')} lr "
            f"{train.get('lr'):g}, {length}{analysed}")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def rows(groups: dict[str, dict]) -> list[dict]:
    out = []
    for key, group in sorted(groups.items(), key=lambda kv: kv[1]["label"]):
        cells = defaultdict(list)
        for pair in group["pairs"]:
            cells[(pair["k_step"], pair["k"], pair["level"])].append(pair)
        for (step, point, level), pairs in sorted(cells.items()):
            row = {"config": group["label"], "k": point, "k_step": step, "level": level,
                   "density": statistics.fmean(p["density"] for p in pairs), "replicates": len(pairs),
                   "barrier_test": _mean_std([p["barrier_test"] for p in pairs]),
                   "barrier_train": _mean_std([p["barrier_train"] for p in pairs]),
                   "stable": sum(p["stable"] for p in pairs), "config_key": key}
            if all("matching" in p for p in pairs):
                row["matching"] = sum(p["matching"] for p in pairs)
            if all("overlap" in p for p in pairs):
                row["overlap"] = _mean_std([p["overlap"] for p in pairs])
                row["overlap_random"] = statistics.fmean(p["overlap_random"] for p in pairs)
                row["mask_barrier_test"] = _mean_std([p["mask_barrier_test"] for p in pairs])
            out.append(row)
    return out


def _pm(value: tuple[float, float], digits: int = 2) -> str:
    return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"


def markdown(table: list[dict], plots: list[str]) -> str:
    lines = ["# Instability analysis", "",
             "Error barrier: max over α of the error of (1−α)·θA + α·θB minus the mean of the endpoints' errors, "
             "in points (Frankle et al. 2020); stable: below the threshold; mean ± std over seeds × pairs of copies.",
             "", "| configuration | k | level | density | test barrier | train barrier | stable | matching | "
                 "overlap (random) | mask-path barrier |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in table:
        n = r["replicates"]
        matching = f"{r['matching']}/{n}" if "matching" in r else ""
        overlap = f"{_pm(r['overlap'], 3)} ({r['overlap_random']:.3f})" if "overlap" in r else ""
        mask = _pm(r["mask_barrier_test"]) if "mask_barrier_test" in r else ""
        lines.append(f"| {r['config']} | {r['k']} | {r['level']} | {r['density']:.4f} | {_pm(r['barrier_test'])} | "
                     f"{_pm(r['barrier_train'])} | {r['stable']}/{n} | {matching} | {overlap} | {mask} |")
    lines += ["", *[f"![{p}]({p})" for p in plots]]
    return "\n".join(lines) + "\n"


def csv_text(table: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["config", "k", "k_step", "level", "density", "replicates", "barrier_test_mean", "barrier_test_std",
                     "barrier_train_mean", "barrier_train_std", "stable", "matching", "overlap_mean", "overlap_random",
                     "mask_barrier_test_mean", "config_key"])
    for r in table:
        writer.writerow([r["config"], r["k"], r["k_step"], r["level"], f"{r['density']:.6f}", r["replicates"],
                         *(f"{x:.4f}" for x in r["barrier_test"]), *(f"{x:.4f}" for x in r["barrier_train"]),
                         r["stable"], r.get("matching", ""),
                         f"{r['overlap'][0]:.4f}" if "overlap" in r else "",
                         f"{r['overlap_random']:.4f}" if "overlap" in r else "",
                         f"{r['mask_barrier_test'][0]:.4f}" if "mask_barrier_test" in r else "", r["config_key"]])
    return buffer.getvalue()


def _error_vs_alpha(groups: dict[str, dict], path: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(g["label"], p["level"]) for g in groups.values() for p in g["pairs"]})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    styles = ["-", "--", "-.", ":"]
    for ax, (label, level) in zip(axes[0], panels):
        pairs = [p for g in groups.values() if g["label"] == label for p in g["pairs"] if p["level"] == level]
        by_k = defaultdict(list)
        for p in pairs:
            by_k[(p["k_step"], p["k"])].append(p)
        for index, ((_, point), items) in enumerate(sorted(by_k.items())):
            path_key = "weight_path" if "weight_path" in items[0] else "score_path"
            alphas = items[0][path_key]["alphas"]
            curves = [[100 * e for e in p[path_key]["test"]["error"]] for p in items]
            mean = [statistics.fmean(c[i] for c in curves) for i in range(len(alphas))]
            ax.plot(alphas, mean, linestyle=styles[index % len(styles)], marker="o", markersize=3,
                    label=f"k={point} (n={len(items)})")
        ax.set_xlabel("interpolation α")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{label}\nlevel {level}" if level else f"{label}\ndense (level 0)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return save_figure(fig, path)


def _barrier_vs_k(table: list[dict], groups: dict[str, dict], path: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({r["config"] for r in table})
    fig, axes = plt.subplots(1, len(configs), figsize=(5.5 * len(configs), 3.8), squeeze=False)
    markers = ["o", "s", "^", "D", "v"]
    for ax, config in zip(axes[0], configs):
        part = [r for r in table if r["config"] == config]
        steps = sorted({r["k_step"] for r in part})
        position = {s: i for i, s in enumerate(steps)}  # k on an ordinal axis: 0 has no place on a log axis
        for index, level in enumerate(sorted({r["level"] for r in part})):
            series = sorted((r for r in part if r["level"] == level), key=lambda r: r["k_step"])
            xs = [position[r["k_step"]] for r in series]
            ys = [r["barrier_test"][0] for r in series]
            sd = [r["barrier_test"][1] for r in series]
            name = "dense" if level == 0 and "matching" in series[0] else f"level {level} (d={series[0]['density']:.2f})"
            ax.errorbar(xs, ys, yerr=sd, marker=markers[index % len(markers)], capsize=3,
                        label=f"{name}, n={series[0]['replicates']}")
        threshold = next(g["threshold"] for g in groups.values() if g["label"] == config)
        ax.axhline(threshold, color="grey", linestyle=":", label=f"threshold {threshold:g}")
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels([next(r["k"] for r in part if r["k_step"] == s) for s in steps])
        ax.set_xlabel("k: the step the copies start from")
        ax.set_ylabel("test error barrier (points, ± std)")
        ax.set_title(config, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return save_figure(fig, path)


def write(roots: list[Path], out: Path) -> tuple[str, list[Path]]:
    """Write the stability report of the finished runs ``roots`` into ``out``; (Markdown, files)."""
    groups = collect(roots)
    table = rows(groups)
    figures = _error_vs_alpha(groups, out / "stability_error_vs_alpha.png")
    figures += _barrier_vs_k(table, groups, out / "stability_barrier_vs_k.png")
    text = markdown(table, [p.name for p in figures if p.suffix == ".png"])
    atomic_write_bytes(out / "stability.md", text.encode())
    atomic_write_bytes(out / "stability.csv", csv_text(table).encode())
    return text, [out / "stability.md", out / "stability.csv", *figures]
