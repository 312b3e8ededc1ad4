"""The report of ticket transfers (``supermask transfer``): a table and a plot per configuration.

``compare`` calls :func:`write` for the finished transfer runs among its paths. Runs are grouped by
configuration: their result-changing config without the seed and without the checksum of the
source's ticket (each seed transfers its own source run), never pooled across configurations,
source data sets or target data sets. It writes:

- ``transfer.md`` / ``transfer.csv``: per configuration and level, the density and the test accuracy
  on the target (mean ± std over seeds, n) of the ticket from the source ("ticket from A"), of the
  random mask of the same layerwise densities, and of the ticket found on the target itself, with
  the source ticket's own accuracy on the source data;
- ``transfer_accuracy_vs_density.png`` (and ``.pdf``): test accuracy on the target against density,
  one panel per configuration, one series per branch (Morcos et al. 2019, Figure 2's form).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import textwrap
from collections import defaultdict
from pathlib import Path

from .figures import save_figure
from .io import atomic_write_bytes, read_json
from .layout import CONFIG, RESULT
from .runs import NON_RESULT_FIELDS, result_fields

#: The branches of a transfer, in the order a table and a legend list them.
BRANCHES = ("transferred", "random-mask", "target")


#: Fields of a transfer that tell runs of one configuration apart without making them another one:
#: each seed transfers its own source run, and each source density is a point on one curve.
PER_RUN = {"source_checksum", "source_config_hash"}


def _group_key(config: dict, source: dict) -> str:
    fields = result_fields(config, NON_RESULT_FIELDS | PER_RUN)
    fields["source_config"] = result_fields(source, NON_RESULT_FIELDS | {"density", "data_fingerprint"})
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def _data(dataset: str, classes) -> str:
    return dataset + (f"[{classes}]" if classes else "")


def _label(config: dict, source: dict) -> str:
    train = config.get("train", {})
    weak = config.get("source_engine") == "imp"
    kind = "weak (IMP)" if weak else f"strong ({source.get('method')}, {source.get('init')})"
    length = f"{train['iterations']} it" if train.get("iterations") else f"{train.get('epochs')} ep"
    extra = f", output {config.get('output_layer')}" if weak else f", rescore {config.get('rescore')}"
    return (f"{config.get('arch')} {kind}: {config.get('source_dataset')} → "
            f"{_data(config.get('dataset'), config.get('classes'))}, {train.get('optimizer')} lr "
            f"{train.get('lr'):g}, {length}{extra}")


def collect(roots: list[Path]) -> dict[str, dict]:
    """{config key: {"label", "cells": {(level or density, branch): [rows]}}} of finished runs; a
    strong ticket's points are its source's densities (one curve per source configuration)."""
    groups: dict[str, dict] = {}
    for root in roots:
        config = read_json(Path(root) / CONFIG)
        result = read_json(Path(root) / RESULT)
        source = result.get("source_config") or {}
        group = groups.setdefault(_group_key(config, source), {"label": _label(config, source),
                                                                "cells": defaultdict(list)})
        for row in result["rows"]:
            point = row["level"] if row["level"] is not None else round(float(source.get("density", row["density"])), 4)
            group["cells"][(point, row["branch"])].append({**row, "seed": result.get("seed")})
    return groups


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def rows(groups: dict[str, dict]) -> list[dict]:
    """One row per (configuration, level, branch): density and target test accuracy over seeds."""
    out = []
    for key, group in sorted(groups.items(), key=lambda kv: kv[1]["label"]):
        weak = all(isinstance(point, int) for point, _ in group["cells"])
        points = sorted({point for point, _ in group["cells"]}, key=lambda x: x if weak else -x)
        for level in points:
            for branch in BRANCHES:
                cell = group["cells"].get((level, branch))
                if not cell:
                    continue
                sources = [r["source_test_accuracy"] for r in cell if r.get("source_test_accuracy") is not None]
                out.append({"config": group["label"], "level": level if weak else None, "branch": branch,
                            "n": len(cell),
                            "density": statistics.fmean(r["density"] for r in cell),
                            "accuracy": _mean_std([100 * r["test_accuracy"] for r in cell]),
                            "source_accuracy": 100 * statistics.fmean(sources) if sources else None,
                            "config_key": key})
    return out


_NAMES = {"transferred": "ticket from source", "random-mask": "random mask (same layerwise densities)",
          "target": "ticket found on target"}


def markdown(table: list[dict], plots: list[str]) -> str:
    lines = ["# Ticket transfer", "",
             "Test accuracy on the target data (%, mean ± std over seeds, n runs) of the ticket found on the source "
             "data and trained (weak) or re-searched (strong) on the target, beside a random mask of the same "
             "layerwise densities and the ticket found on the target itself; the source ticket's own test accuracy "
             "on the source data beside it.", "",
             "| configuration | level | branch | density | target test accuracy | n | source ticket on source |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in table:
        level = "" if r["level"] is None else r["level"]
        source = f"{r['source_accuracy']:.2f}" if r["source_accuracy"] is not None and r["branch"] == "transferred" \
            else ""
        lines.append(f"| {r['config']} | {level} | {_NAMES[r['branch']]} | {r['density']:.4f} | "
                     f"{r['accuracy'][0]:.2f} ± {r['accuracy'][1]:.2f} | {r['n']} | {source} |")
    lines += ["", *[f"![{p}]({p})" for p in plots]]
    return "\n".join(lines) + "\n"


def csv_text(table: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["config", "level", "branch", "density", "test_accuracy_mean", "test_accuracy_std", "n",
                     "source_test_accuracy", "config_key"])
    for r in table:
        writer.writerow([r["config"], "" if r["level"] is None else r["level"], r["branch"], f"{r['density']:.6f}",
                         f"{r['accuracy'][0]:.4f}", f"{r['accuracy'][1]:.4f}", r["n"],
                         "" if r["source_accuracy"] is None else f"{r['source_accuracy']:.4f}", r["config_key"]])
    return buffer.getvalue()


def _plot(table: list[dict], path: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    configs = sorted({r["config"] for r in table})
    fig, axes = plt.subplots(1, len(configs), figsize=(6 * len(configs), 4), squeeze=False)
    styles = {"transferred": ("C0", "o", "-"), "random-mask": ("C3", "s", "--"), "target": ("C2", "^", ":")}
    for ax, config in zip(axes[0], configs):
        for branch in BRANCHES:
            series = sorted((r for r in table if r["config"] == config and r["branch"] == branch),
                            key=lambda r: -r["density"])
            if not series:
                continue
            colour, marker, line = styles[branch]
            n = sorted({r["n"] for r in series})
            ax.errorbar([r["density"] for r in series], [r["accuracy"][0] for r in series],
                        yerr=[r["accuracy"][1] for r in series], color=colour, marker=marker, linestyle=line,
                        capsize=3, label=f"{_NAMES[branch]} (n={'/'.join(map(str, n))})")
        ax.set_xscale("log")
        densities = sorted({round(r["density"], 3) for r in table if r["config"] == config and
                            r["branch"] == "transferred"}, reverse=True)
        ax.set_xticks(densities, [f"{d:g}" for d in densities])  # the densities run, readable
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.invert_xaxis()
        ax.set_xlabel("density (log scale)")
        ax.set_ylabel("target test accuracy (%, ± 1 std)")
        ax.set_title(textwrap.fill(config, 60), fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def write(roots: list[Path], out: Path) -> tuple[str, list[Path]]:
    """Write the transfer report of the finished runs ``roots`` into ``out``; (Markdown, files)."""
    table = rows(collect(roots))
    figures = _plot(table, out / "transfer_accuracy_vs_density.png")
    text = markdown(table, [p.name for p in figures if p.suffix == ".png"])
    atomic_write_bytes(out / "transfer.md", text.encode())
    atomic_write_bytes(out / "transfer.csv", csv_text(table).encode())
    return text, [out / "transfer.md", out / "transfer.csv", *figures]
