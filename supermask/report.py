"""Weak vs strong, side by side: tables and plots over finished runs of every engine.

``compare(paths, out)`` gathers ``result.json`` files (runs, IMP levels, or whole run trees) with
the ``config.json`` beside each, and groups them by *configuration*: architecture, data set,
method label, density and every other result-changing field of the config (the config hash
without the seed). A group is one row; its runs are distinct seeds of one config, never
different settings pooled. Groups that share a method label but differ in some fields are
labelled by those fields (``edge-popup signed-constant (epochs=1)`` / ``(epochs=2)``). It writes:

- ``comparison.md`` / ``comparison.csv``: test accuracy mean ± std over seeds (a single seed:
  its value, no spread and no test), the number of seeds, the dense baseline's accuracy, and
  for methods with a control of the same config at the same density the difference to it with
  a Welch t-test p-value (IMP vs its reinit and random-prune controls; edge-popup vs the random
  mask it started from, i.e. its epoch-0 accuracy); rows with a layer left without weights are
  marked; the Markdown embeds the plots;
- ``accuracy_vs_density.png``: one panel per (architecture, data set), accuracy against
  density on a log axis, a line and a ±std band per labelled method, the dense baseline as a line;
- ``early_stop_vs_density.png`` for IMP runs: the iteration of minimum validation loss.

Files that are missing, unreadable or duplicates of a run already counted (the same file
reached twice, or the same seed of the same config in two places) are reported and left
out; the rest is still written.

``imp_level_table(root)`` is the per-level view of IMP runs: one row per level, one column
group per control (test accuracy and early-stopping iteration, mean ± std over seeds), one
table per configuration.
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
from .layout import CONFIG, RESULT, STATUS
from .runs import NON_RESULT_FIELDS, find_runs, result_fields

#: Fields that tell runs of one config apart without changing the config itself.
RUN_FIELDS = NON_RESULT_FIELDS | {"level"}
#: Fields that are the x axis, not a difference between configs.
DENSITY_FIELDS = frozenset({"density"})


@dataclass(frozen=True)
class Point:
    arch: str
    dataset: str
    method: str  # the full label: family, then control
    density: float
    seed: int
    value: float  # the reported test metric: accuracy, or a language model's loss in nats per character
    early_stop_step: Optional[int] = None
    reached: Optional[float] = None  # the density the mask has (methods whose density is an outcome differ)
    config: str = ""  # canonical JSON of the run's result-changing config, seed and IMP level left out
    collapsed: tuple[str, ...] = ()  # layers the run left with no kept weight
    source: str = ""
    family: str = ""  # the method without its control (``imp channel``); the method itself if it is none
    control: str = ""  # "", or the control this point is: "reinit", "random-prune", "random mask"
    metric: str = "accuracy"  # what ``value`` is: "accuracy", or "loss" (language models)
    result: dict = field(default_factory=dict, compare=False, repr=False)  # the run's result.json (compare --select)


@dataclass(frozen=True)
class Metric:
    """How a report shows one kind of result: image classifiers by test accuracy (percent), language
    models by test loss (nats per character). A table and a figure hold one metric only."""

    name: str
    column: str  # the Markdown table's header of the value
    csv_prefix: str  # the CSV's column names: <prefix>_mean, <prefix>_std
    scale: float  # shown as value * scale
    digits: int
    axis: str  # the figure's y label
    figure: str  # the figure's file name
    csv: str  # the CSV's file name


ACCURACY = Metric("accuracy", "test acc % (mean ± std)", "test_accuracy", 100.0, 1, "test accuracy (%)",
                  "accuracy_vs_density.png", "comparison.csv")
LOSS = Metric("loss", "test loss, nats/char (mean ± std)", "test_loss", 1.0, 3, "test loss (nats per character)",
              "loss_vs_density.png", "comparison_text.csv")
METRICS = {m.name: m for m in (ACCURACY, LOSS)}


#: The controls a report sets beside their method, in the order it lists them.
CONTROL_ORDER = ("random mask", "reinit", "random-prune")


@dataclass
class Collection:
    points: list[Point] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "path: reason"
    # finished analyses (stability, transfer), by engine: each engine's report writes them
    analyses: dict[str, list[Path]] = field(default_factory=dict)


def _engine(result: dict):
    from .engines import engine
    from .errors import UnknownNameError

    try:
        return engine(result.get("engine"))
    except (UnknownNameError, TypeError):
        raise KeyError(f"engine {result.get('engine')!r} is none this supermask knows") from None


def method_parts(result: dict) -> tuple[str, str]:
    """(family, control) of a result: ``("edge-popup nm:2:4 signed-constant", "")``,
    ``("imp channel", "reinit")``, ``("snip kaiming-normal global", "")``, as the result's engine
    labels it from the result's fields; nothing reads a label back."""
    return _engine(result).result_parts(result)


def method_label(result: dict) -> str:
    """The family and control of :func:`method_parts` as one label (``imp channel reinit``)."""
    return _joined(*method_parts(result))


def _joined(family: str, control: str) -> str:
    return f"{family} {control}" if control else family


def flatten(config: dict, prefix: str = "") -> dict:
    """``{"train": {"epochs": 2}}`` -> ``{"epochs": 2}`` (training fields by their own names)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, "" if key == "train" else f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_key(config: dict) -> str:
    """The canonical form of a run's result-changing config (seed and IMP level left out)."""
    return json.dumps(result_fields(config, RUN_FIELDS), sort_keys=True, separators=(",", ":"))


def _base_key(key: str) -> str:
    """A config key without the control: IMP and its controls share it."""
    fields = json.loads(key)
    fields.pop("control", None)
    return json.dumps(fields, sort_keys=True)


def _read_config(result_file: Path) -> dict:
    path = result_file.parent / CONFIG
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyError(f"no {CONFIG} beside it") from None
    if not isinstance(config, dict):
        raise TypeError(f"{CONFIG} is not a config")
    return config


def _points_of(result: dict, config: dict, source: str) -> list[Point]:
    # Runs are grouped by the density asked for (a grid point); IMP levels by the density reached.
    requested = result.get("requested_density", result["density"])
    common = dict(arch=result["arch"], dataset=result["dataset"], density=round(float(requested), 4),
                  seed=int(result["seed"]), reached=float(result["density"]), config=config_key(config),
                  collapsed=tuple(result.get("collapsed_layers") or ()), source=source, result=result)
    engine = _engine(result)
    family, control = engine.result_parts(result)
    loss = result.get("task") == "language-model"
    key = "test_loss" if loss else "test_accuracy"
    common["metric"] = "loss" if loss else "accuracy"
    points = [Point(method=_joined(family, control), value=float(result[key]),
                    early_stop_step=result.get("min_val_loss_step") if engine.early_stopping else None,
                    family=family, control=control, **common)]
    if engine.initial_is_control and f"initial_{key}" in result:  # the random mask it started from
        points.append(Point(method=_joined(family, "random mask"), value=float(result[f"initial_{key}"]),
                            family=family, control="random mask", **{**common, "collapsed": ()}))
    return points


def collect(paths: Iterable[Path]) -> Collection:
    found = Collection()
    seen_files: set[Path] = set()
    seen_runs: dict[tuple, str] = {}
    for path in map(Path, paths):
        if not path.exists():
            found.problems.append(f"{path}: no such file or directory")
            continue
        files = [path] if path.is_file() else sorted(path.rglob(RESULT))
        failed = _failed_runs(path) if path.is_dir() else []
        found.problems += failed
        if path.is_dir() and not files and not failed:
            found.problems.append(f"{path}: no result.json (an unfinished run, or not a run directory)")
        repeated = [file for file in files if file.resolve() in seen_files]
        if files and len(repeated) == len(files):
            found.problems.append(f"{path}: given already (its runs are counted once)")
        for file in files:
            resolved = file.resolve()
            if resolved in seen_files:
                continue  # the same run given twice (RUN and RUN/.., a link): counted once
            seen_files.add(resolved)
            try:
                result = json.loads(file.read_text())
                if isinstance(result, dict) and "levels" in result:
                    continue  # an IMP summary: its levels are read from their own directories
                if isinstance(result, dict) and "rows" in result and _engine(result).report is not None:
                    found.analyses.setdefault(result["engine"], []).append(file.parent)  # reported on its own
                    continue
                if not _engine(result).in_comparisons:
                    continue  # a stage of an analysis (a stability copy): not a run to compare
                points = _points_of(result, _read_config(file), str(file))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                found.problems.append(f"{file}: unreadable ({type(exc).__name__})")
                continue
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                found.problems.append(f"{file}: not a supermask result ({type(exc).__name__}: {exc})")
                continue
            for point in points:
                run = (point.arch, point.dataset, point.method, point.density, point.config, point.seed)
                if run in seen_runs:
                    found.problems.append(f"{file}: seed {point.seed} of this config is already counted "
                                          f"({seen_runs[run]}): left out")
                    break
                seen_runs[run] = str(file)
                found.points.append(point)
    return found


def _failed_runs(root: Path) -> list[str]:
    """A note for every run under ``root`` whose status says failed: never in the statistics."""
    notes = []
    for status in sorted(root.rglob(STATUS)):
        try:
            record = json.loads(status.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and record.get("status") == "failed" and not (status.parent / RESULT).exists():
            notes.append(f"{status.parent}: failed ({record.get('reason', 'no reason recorded')}): not counted")
    return notes


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


#: A p-value is computed only with at least this many seeds on each side; with fewer it is marked
#: as not computed (two seeds a side give a t-test with about two degrees of freedom).
MIN_SEEDS_FOR_TEST = 3


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided Welch t-test p-value (NaN with fewer than :data:`MIN_SEEDS_FOR_TEST` values a side
    or no variance)."""
    from scipy import stats

    if len(a) < MIN_SEEDS_FOR_TEST or len(b) < MIN_SEEDS_FOR_TEST:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _omitted_default(name: str):
    """The value a field has where the config key leaves it out (a default added after runs were
    first written, see ``runs.HASH_OMITTED_AT``), so labels read ``dropout=0``, not ``None``."""
    from .runs import HASH_OMITTED_AT

    return HASH_OMITTED_AT.get(name, HASH_OMITTED_AT.get(f"train.{name}"))


def config_suffixes(points: list[Point]) -> dict[tuple, str]:
    """(arch, dataset, method, config) -> the fields in which its config differs from the other
    configs of the same method (density aside: it is the x axis), ``epochs=2``; "" if none."""
    configs: dict[tuple, set[str]] = defaultdict(set)
    for p in points:
        configs[(p.arch, p.dataset, p.method)].add(p.config)
    labels = {}
    for (arch, dataset, method), keys in configs.items():
        flat = {key: flatten(json.loads(key)) for key in keys}
        names = sorted({n for f in flat.values() for n in f} - DENSITY_FIELDS)
        varying = [n for n in names if len({json.dumps(f.get(n), sort_keys=True) for f in flat.values()}) > 1]
        for key, fields in flat.items():
            labels[(arch, dataset, method, key)] = ", ".join(
                f"{n}={_format_value(fields.get(n, _omitted_default(n)))}" for n in varying)
    return labels


def _with_suffix(label: str, suffix: str) -> str:
    return f"{label} ({suffix})" if suffix else label


def comparison_rows(points: list[Point], problems: Optional[list[str]] = None) -> list[dict]:
    groups: dict[tuple, list[Point]] = defaultdict(list)
    for p in points:
        groups[(p.arch, p.dataset, p.method, p.density, p.config)].append(p)
    suffixes = config_suffixes(points)
    parts = {(p.arch, p.dataset, p.method, p.config): (p.family or p.method, p.control) for p in points}
    labels = {key: _with_suffix(key[2], suffix) for key, suffix in suffixes.items()}
    dense: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        if p.method == "dense":
            dense[(p.arch, p.dataset)][p.config].append(p.value)
    baseline = {}
    for key, by_config in dense.items():
        if len(by_config) == 1:
            baseline[key] = statistics.fmean(next(iter(by_config.values())))
        elif problems is not None:
            problems.append(f"{key[0]} on {key[1]}: {len(by_config)} dense baselines of different configs; "
                            f"the dense column is left empty (see their rows)")
    by_base: dict[tuple, list[tuple]] = defaultdict(list)
    for key in groups:
        arch, dataset, method, density, config = key
        by_base[(arch, dataset, density, _base_key(config))].append(key)
    rows = []
    order = sorted(groups, key=lambda k: (k[0], k[1], labels[(k[0], k[1], k[2], k[4])], -k[3]))
    for key in order:
        arch, dataset, method, density, config = key
        items = groups[key]
        accs = [p.value for p in items]
        mean, std = mean_std(accs)
        reached = [p.reached for p in items if p.reached is not None]
        collapsed = sorted({layer for p in items for layer in p.collapsed})
        family, control = parts[(arch, dataset, method, config)]
        row = {"arch": arch, "dataset": dataset, "method": labels[(arch, dataset, method, config)],
               "method_name": method, "family": _with_suffix(family, suffixes[(arch, dataset, method, config)]),
               "control": control, "density": density, "mean": mean, "std": std if len(items) > 1 else None,
               "seeds": len(items), "dense": baseline.get((arch, dataset), math.nan), "controls": [],
               "reached": statistics.fmean(reached) if reached else density, "collapsed": collapsed,
               "config": config, "metric": items[0].metric,
               "config_hashes": sorted({str(p.result.get("config_hash")) for p in items if p.result.get("config_hash")}),
               "runs": sorted({str(Path(p.source).parent) for p in items if p.source})}
        if not control:  # a method beside its controls: the runs of its config and family that are controls
            mine = [k for k in by_base[(arch, dataset, density, _base_key(config))]
                    if parts[(k[0], k[1], k[2], k[4])][0] == family and parts[(k[0], k[1], k[2], k[4])][1]]
            for k in sorted(mine, key=lambda k: CONTROL_ORDER.index(parts[(k[0], k[1], k[2], k[4])][1])):
                theirs = [p.value for p in groups[k]]
                row["controls"].append({"control": k[2], "delta": mean - statistics.fmean(theirs),
                                        "p": welch_p(accs, theirs)})
        steps = [p.early_stop_step for p in items if p.early_stop_step is not None]
        row["early_stop"] = mean_std(steps) if steps else None
        rows.append(row)
    return rows


def _shown(x: float, metric: Metric = ACCURACY) -> str:
    return "" if math.isnan(x) else f"{metric.scale * x:.{metric.digits}f}"


def _value_cell(row: dict, metric: Metric) -> str:
    mean = _shown(row["mean"], metric)
    return mean if row["std"] is None else f"{mean} ± {_shown(row['std'], metric)}"


def _control_cell(control: dict, metric: Metric = ACCURACY) -> str:
    test = " (p not computed: n < 3)" if math.isnan(control["p"]) else f" (p={control['p']:.3g})"
    return f"{control['control']}: {metric.scale * control['delta']:+.{metric.digits}f}{test}"


def markdown(rows: list[dict], problems: list[str], plots: Iterable[str] = ()) -> str:
    lines = []
    for key in sorted({(r["arch"], r["dataset"]) for r in rows}):
        part = [r for r in rows if (r["arch"], r["dataset"]) == key]
        metric = METRICS[part[0]["metric"]]  # a panel is one data set: one task, one metric
        unit = "points" if metric is ACCURACY else "nats/char"
        lines += [f"### {key[0]} on {key[1]}", "",
                  f"| method | density | reached | {metric.column} | seeds | {'dense %' if metric is ACCURACY else 'dense'} "
                  f"| vs control: Δ {unit} (Welch p) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in part:
            vs = "; ".join(_control_cell(c, metric) for c in r["controls"])
            warn = f" ⚠ collapsed: {', '.join(r['collapsed'])}" if r["collapsed"] else ""
            lines.append(f"| {r['method']}{warn} | {r['density']:.4g} | {r['reached']:.4g} | {_value_cell(r, metric)} "
                         f"| {r['seeds']} | {_shown(r['dense'], metric)} | {vs} |")
        lines.append("")
    if any(r["std"] is None for r in rows):
        lines += ["A value without ± is a single seed: no spread, no test.", ""]
    lines += [f"± is one standard deviation over seeds; Welch's p-value only with at least {MIN_SEEDS_FOR_TEST} seeds "
              f"a side.", ""]
    if any(r["collapsed"] for r in rows):
        lines += ["⚠ collapsed: a layer of the ticket keeps no weight, so the network cannot pass a signal "
                  "through it (layer collapse, Tanaka et al. 2020).", ""]
    for plot in plots:
        lines += [f"![{Path(plot).stem.replace('_', ' ')}]({Path(plot).name})", ""]
    if problems:
        lines += ["Left out:", ""] + [f"- {p}" for p in problems] + [""]
    return "\n".join(lines)


def csv_text(rows: list[dict], metric: Metric = ACCURACY) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    dense = "dense_accuracy" if metric is ACCURACY else "dense_loss"
    writer.writerow(["arch", "dataset", "method", "density", "density_reached", f"{metric.csv_prefix}_mean",
                     f"{metric.csv_prefix}_std", "seeds", dense, "collapsed_layers", "control",
                     "delta_to_control", "welch_p", "config_hash", "runs"])
    for r in rows:
        base = [r["arch"], r["dataset"], r["method"], r["density"], f"{r['reached']:.6f}", f"{r['mean']:.6f}",
                "" if r["std"] is None else f"{r['std']:.6f}",
                r["seeds"], "" if math.isnan(r["dense"]) else f"{r['dense']:.6f}", " ".join(r["collapsed"])]
        where = [" ".join(r.get("config_hashes", [])), ";".join(r.get("runs", []))]
        for c in r["controls"] or [None]:
            writer.writerow(base + ([c["control"], f"{c['delta']:.6f}", "" if math.isnan(c["p"]) else f"{c['p']:.6g}"]
                                    if c else ["", "", ""]) + where)
    return buffer.getvalue()


#: A control's line style in the figures (the method itself: solid); every series of a family shares
#: its colour pair (dark: the method, light: its controls) and its marker.
CONTROL_STYLES = {"": "-", "random mask": "-.", "reinit": "--", "random-prune": ":"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


@dataclass(frozen=True)
class FigureStyle:
    """How compare draws its figures: the formats written, each panel's size in inches, the font size."""

    formats: tuple[str, ...] = ("png", "pdf")
    panel_size: tuple[float, float] = (9.0, 5.0)
    font_size: float = 8.0


FIGURE_FORMATS = ("png", "pdf", "svg")


def series_styles(rows: list[dict]) -> dict[str, dict]:
    """Each non-dense series' label, colour, marker and line style (keyed by its method label): a
    family's colour pair and marker, a control's line style; no two series share all three."""
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab20").colors
    families = sorted({r["family"] for r in rows if r["method_name"] != "dense"})
    styles = {}
    for method in sorted({r["method"] for r in rows if r["method_name"] != "dense"}):
        mine = [r for r in rows if r["method"] == method]
        family, control = mine[0]["family"], mine[0]["control"]
        index = families.index(family)
        seeds = sorted({r["seeds"] for r in mine})
        n = f"n={seeds[0]}" if len(seeds) == 1 else f"n={seeds[0]}-{seeds[-1]}"
        styles[method] = {"label": f"{method} ({n})", "color": palette[(2 * index + bool(control)) % len(palette)],
                          "marker": MARKERS[index % len(MARKERS)],
                          "linestyle": CONTROL_STYLES.get(control, (0, (3, 1, 1, 1, 1, 1)))}
    return styles


def _panels(rows: list[dict], value: str, ylabel: str, path: Path, keep=lambda row: True, scale: float = 100.0,
            style: FigureStyle = FigureStyle()) -> list[Path]:
    """One panel per (architecture, data set) of ``rows``' ``value`` ("mean" or "early_stop") vs
    density, written in ``style``'s formats (``path`` with each suffix); the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from .figures import save_figure

    keys = sorted({(r["arch"], r["dataset"]) for r in rows if keep(r)})
    if not keys:
        return []
    width, height = style.panel_size
    with plt.rc_context({"font.size": style.font_size}):
        fig, axes = plt.subplots(1, len(keys), figsize=(width * len(keys), height), squeeze=False)
        styles = series_styles([r for r in rows if keep(r)])
        for ax, key in zip(axes[0], keys):
            part = [r for r in rows if (r["arch"], r["dataset"]) == key and keep(r)]
            for method in sorted({r["method"] for r in part}):
                series = sorted((r for r in part if r["method"] == method), key=lambda r: r["reached"])
                if series[0]["method_name"] == "dense":
                    if value == "mean":  # one line per dense baseline config
                        ax.axhline(scale * statistics.fmean(r["mean"] for r in series), color="black", linestyle=":",
                                   label=f"{method.replace('dense', 'dense (trained)', 1)} (n={series[0]['seeds']})")
                    continue
                if value == "mean":
                    xs, ys = [r["reached"] for r in series], [scale * r["mean"] for r in series]
                    sd = [scale * (r["std"] or 0.0) for r in series]
                    low = [y - s for y, s in zip(ys, sd)]
                else:
                    series = [r for r in series if r["early_stop"]]
                    xs, ys = [r["reached"] for r in series], [r["early_stop"][0] for r in series]
                    sd = [r["early_stop"][1] for r in series]
                    low = [max(0.0, y - s) for y, s in zip(ys, sd)]  # an iteration is never negative
                look = styles[method]
                ax.plot(xs, ys, label=look["label"], color=look["color"], marker=look["marker"],
                        linestyle=look["linestyle"], markersize=max(3.0, style.font_size * 0.6))
                ax.fill_between(xs, low, [y + s for y, s in zip(ys, sd)], alpha=0.15, color=look["color"])
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(_minor_density_label))
            ax.tick_params(axis="x", which="minor", labelsize=style.font_size * 0.8)
            ax.invert_xaxis()
            ax.set_xlabel("density (fraction of weights kept, log scale)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{key[0]} on {key[1]}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=style.font_size * 0.85, loc="center left", bbox_to_anchor=(1.01, 0.5),
                      title="band: ±1 std over seeds", title_fontsize=style.font_size * 0.85)
        fig.tight_layout()
        return save_figure(fig, path, style.formats)


def _minor_density_label(x: float, _position) -> str:
    """Minor ticks of the log density axis: labelled only at 2, 3 and 5 of a decade, so they never
    crowd each other (0.2, 0.3, 0.5; 0.02, ...)."""
    mantissa = x / 10 ** math.floor(math.log10(x) + 1e-9)
    return f"{x:g}" if round(mantissa, 6) in (2.0, 3.0, 5.0) else ""


def compare(paths: Iterable[Path], out: Path, force: bool = False, select: Optional[dict] = None,
            style: FigureStyle = FigureStyle()) -> tuple[str, list[str], list[Path]]:
    """Write the report to ``out``; returns (Markdown table, problems, files written). The files are
    made aside and moved in only if none would replace a file compare did not write (without
    ``force``) or anything in a run directory (:func:`supermask.writing.publish`)."""
    from .writing import publish

    found = collect(paths)
    if select:
        found = selected(found, select)
    if not found.points and not found.analyses:
        detail = f" ({found.problems[0]})" if found.problems else ""
        chosen = f" matching {', '.join(f'{k}={v}' for k, v in select.items())}" if select else ""
        raise SupermaskError(f"no finished runs{chosen} to compare{detail}")
    (table, problems, _), written = publish(Path(out), lambda folder: _write_report(found, folder, style), force)
    return table, problems, written


def selected(found: "Collection", select: dict) -> "Collection":
    """The runs of ``found`` whose result has every ``field: value`` of ``select`` (values compared
    as text: ``engine=imp``, ``structure=head``, ``arch=conv4``, ``control=none``); analyses are
    left out when anything is selected."""
    def matches(point: Point) -> bool:
        return all(str(point.result.get(k)) == str(v) for k, v in select.items())

    return Collection([p for p in found.points if matches(p)], list(found.problems), {})


def _write_report(found, out: Path, style: FigureStyle = FigureStyle()) -> tuple[str, list[str], list[Path]]:
    if not found.points:  # analyses only
        text, files = _analysis_reports(found.analyses, out)
        return text, list(found.problems), files
    problems = list(found.problems)
    rows = comparison_rows(found.points, problems)
    written, plots = [out / "comparison.md"], []
    for metric in METRICS.values():  # one CSV and one figure per metric: tasks never share a table
        mine = [r for r in rows if r["metric"] == metric.name]
        if not mine:
            continue
        written.append(out / metric.csv)
        atomic_write_bytes(out / metric.csv, csv_text(mine, metric).encode())
        plots += _panels(mine, "mean", metric.axis, out / metric.figure, scale=metric.scale, style=style)
    plots += _panels(rows, "early_stop", "iteration of minimum validation loss", out / "early_stop_vs_density.png",
                     keep=lambda row: row["early_stop"] is not None, style=style)  # the engines that report it (IMP)
    table = markdown(rows, problems)
    shown = [p.name for p in plots if p.suffix in (".png", ".svg")]  # what the Markdown report embeds
    shown = [n for n in shown if not (n.endswith(".svg") and n[:-4] + ".png" in shown)]
    atomic_write_bytes(written[0], markdown(rows, problems, shown).encode())
    if found.analyses:
        text, files = _analysis_reports(found.analyses, out)
        table, written = f"{table}\n{text}", written + files
    return table, problems, written + plots


def _analysis_reports(analyses: dict[str, list[Path]], out: Path) -> tuple[str, list[Path]]:
    """Each analysis engine's own report of its finished runs (stability, transfer)."""
    from .engines import engine

    texts, files = [], []
    for name in sorted(analyses):
        text, written = engine(name).report(analyses[name], out)
        texts.append(text)
        files += written
    return "\n".join(texts), files


def imp_level_rows(root: Path) -> list[dict]:
    """One row per (configuration, control, level) of the finished IMP runs under ``root``; the
    configuration (``config``) leaves out the seed and the control, so controls share IMP's."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in find_runs(root):
        result = run.read_result()
        if "levels" not in result:  # a run of levels (IMP and its controls)
            continue
        base = _base_key(config_key(_read_config(run.result_path)))
        for row in result["levels"]:
            groups[(result["arch"], result["dataset"], base, result["control"], row["level"])].append(row)
    if not groups:
        raise RunError(f"{root}: no finished IMP runs")
    rows = []
    for (arch, dataset, base, control, level), items in sorted(groups.items()):
        rows.append({
            "arch": arch, "dataset": dataset, "config": base, "control": control, "level": level,
            "seeds": len(items), "density": mean_std([r["density"] for r in items]),
            "test_accuracy": mean_std([r["test_accuracy"] for r in items]),
            "early_stop_step": mean_std([r["min_val_loss_step"] for r in items]),
        })
    return rows


def _level_table(rows: list[dict]) -> list[str]:
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
            if r["seeds"] > 1:
                cells += [f"{100 * acc[0]:.1f} ± {100 * acc[1]:.1f}", f"{es[0]:.0f} ± {es[1]:.0f}"]
            else:
                cells += [f"{100 * acc[0]:.1f}", f"{es[0]:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({r["seeds"] for r in rows})
    lines.append(f"\n{'/'.join(map(str, seeds))} seeds per cell; accuracy in %, over the test split.")
    return lines


def imp_level_table(root: Path) -> str:
    """Markdown: one row per level, one column group per control; one table per configuration
    (headed by the fields in which it differs from the others)."""
    rows = imp_level_rows(root)
    configs = sorted({(r["arch"], r["dataset"], r["config"]) for r in rows})
    if len(configs) == 1:
        return "\n".join(_level_table(rows))
    flat = {c: flatten(json.loads(c[2])) for c in configs}
    names = sorted({n for f in flat.values() for n in f})
    varying = [n for n in names if len({json.dumps(f.get(n), sort_keys=True) for f in flat.values()}) > 1]
    parts = []
    for c in configs:
        title = ", ".join(f"{n}={_format_value(flat[c].get(n))}" for n in varying)
        parts += [f"### {c[0]} on {c[1]}: {title}", "", *_level_table([r for r in rows if (r["arch"], r["dataset"],
                                                                                        r["config"]) == c]), ""]
    return "\n".join(parts)
