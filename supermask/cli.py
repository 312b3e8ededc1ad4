"""The ``supermask`` command line: thin over the library.

Every command builds a config, calls the library and prints a summary. Errors the
user can fix (``SupermaskError``, bad options, unwritable paths) become one line on
stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
from typing import Callable, Optional

import click

from .errors import RunLocked, SupermaskError, TrainingDiverged
from .training import ProgressBar, TrainConfig, distributed

EXIT_USAGE = 2
EXIT_FAILED = 1  # a run that started and failed (diverged): not a usage error
EXIT_INTERRUPTED = 130


def _configure_logging(verbose: int, quiet: bool) -> None:
    quiet = quiet or not distributed.is_main()
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def output_options(f: Callable) -> Callable:
    for option in reversed([
        click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
                     help="Root folder of run directories."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N]."),
        click.option("--data-root", default=None, type=click.Path(file_okay=False),
                     help="Folder of downloaded data sets [default: $SUPERMASK_DATA or ~/.cache/supermask/data]."),
        click.option("--download", is_flag=True, help="Fetch the data set into --data-root if it is missing."),
        click.option("--num-workers", default=None, type=int,
                     help="DataLoader workers (image folders only) [default: 4, at most the CPUs less one]."),
        click.option("--checkpoint-every", default=None, type=int,
                     help="Also checkpoint every N steps (a checkpoint ends every epoch anyway)."),
        click.option("--channels-last", is_flag=True, help="CUDA: channels-last memory format for conv nets."),
        click.option("--compile", "compile", is_flag=True, help="torch.compile the training forward pass."),
        click.option("--tensorboard", is_flag=True, help="Also write TensorBoard scalars to <run>/tensorboard/."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar, warnings only."),
        click.option("--verbose", "-v", count=True, help="More log output (-vv for debug)."),
    ]):
        f = option(f)
    return f


def train_options(defaults: Optional[TrainConfig]) -> Callable:
    """The training options. With ``defaults=None`` every option defaults to None ("not given"),
    for commands whose defaults depend on the architecture."""
    d = defaults

    def default(name):
        return {"default": getattr(d, name), "show_default": True} if d is not None else {"default": None}

    def decorate(f: Callable) -> Callable:
        for option in reversed([
            click.option("--epochs", type=int, **default("epochs")),
            click.option("--iterations", default=None, type=int, help="Train this many steps instead of --epochs."),
            click.option("--batch-size", type=int, **default("batch_size")),
            click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), **default("optimizer")),
            click.option("--lr", type=float, **default("lr")),
            click.option("--momentum", type=float, **default("momentum")),
            click.option("--nesterov/--no-nesterov", **default("nesterov")),
            click.option("--weight-decay", type=float, **default("weight_decay")),
            click.option("--schedule", type=click.Choice(["cosine", "step", "constant"]), **default("schedule")),
            click.option("--warmup-epochs", type=float, **default("warmup_epochs")),
            click.option("--milestones", default=None,
                         help="Epochs where the step schedule multiplies lr by --gamma, e.g. 50,75."),
            click.option("--gamma", type=float, **default("gamma")),
            click.option("--label-smoothing", type=float, **default("label_smoothing")),
            click.option("--precision", type=click.Choice(["32", "bf16", "16"]), **default("precision"),
                         help="CUDA autocast precision (16: with a grad scaler); the CPU trains in 32."),
            click.option("--selection", type=click.Choice(["best-val", "last"]), **default("selection"),
                         help="The evaluation whose network is reported and kept as the ticket: the best "
                              "validation accuracy, or the last epoch." + ("" if d else " [default: best-val]")),
            click.option("--seed", default="0", show_default=True, help="A seed, or a list: 0,1,2."),
        ]):
            f = option(f)
        return f

    return decorate


TRAIN_FIELDS = ("epochs", "iterations", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
                "schedule", "warmup_epochs", "milestones", "gamma", "label_smoothing", "precision", "selection")


def _train_overrides(kw: dict) -> dict:
    """Pop the training options from ``kw``: the ones given (not None), as TrainConfig fields."""
    given = {name: kw.pop(name) for name in TRAIN_FIELDS}
    if given["milestones"] is not None:
        given["milestones"] = _floats(given["milestones"], "--milestones")
    return {k: v for k, v in given.items() if v is not None}


def _train_config(kw: dict, base: Optional[TrainConfig] = None) -> TrainConfig:
    return dataclasses.replace(base or TrainConfig(), **_train_overrides(kw))


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SupermaskError(f"{what} must be comma-separated numbers, got {text!r}") from None


def resolve_densities(density: Optional[str], sparsity: Optional[str], default: float) -> list[float]:
    """``--density`` or ``--sparsity`` (= 1 - density), each a number or a list; not both."""
    from .sweep import parse_list

    if density is not None and sparsity is not None:
        raise SupermaskError("give --density or --sparsity, not both")
    if sparsity is not None:
        values = parse_list(sparsity, float, "--sparsity")
        for value in values:
            if not (0.0 <= value < 1.0):
                raise SupermaskError(f"sparsity must be in [0, 1), got {value!r}")
        return [1.0 - value for value in values]
    return [default] if density is None else parse_list(density, float, "--density")


def _seeds(kw: dict) -> list[int]:
    from .sweep import parse_list

    return parse_list(kw.pop("seed"), int, "--seed")


def _run_points(configs: list, run_one: Callable, quiet: bool, label: Callable) -> list:
    """Run every config of a grid (skipping finished ones); an overall bar when there are several.
    Every point is validated before the first one runs."""
    from .training import distributed, resolve_device

    for config in configs:
        config.validate()
    resolve_device(configs[0].device)  # under torchrun: join the process group before anything runs
    quiet = quiet or not distributed.is_main()
    outer = None
    if len(configs) > 1 and not quiet:
        from tqdm.auto import tqdm

        outer = tqdm(total=len(configs), desc="sweep", unit="run", position=0, dynamic_ncols=True)
    results = []
    for config in configs:
        inner = [] if quiet else [ProgressBar(label(config))]
        try:
            results.append(run_one(config, inner))
        except RunLocked as exc:
            if len(configs) == 1:
                raise
            click.echo(f"supermask: warning: skipped: {exc}", err=True)  # another job of the sweep has it
        if outer is not None:
            outer.update(1)
    if outer is not None:
        outer.close()
    return results


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="supermask")
def cli() -> None:
    """Find lottery tickets: strong (edge-popup, untrained) and weak (IMP, trained)."""


def model_options(f: Callable) -> Callable:
    for option in reversed([
        click.option("--arch", default="conv6", show_default=True, help="Architecture (see `supermask list archs`)."),
        click.option("--dataset", default="mnist-5k", show_default=True, help="Data set (see `supermask list datasets`)."),
        click.option("--width", default=1.0, show_default=True, type=float, help="Width multiplier of the architecture."),
        click.option("--dropout", default=0.0, show_default=True, type=float,
                     help="Dropout rate before the fully connected layers (LeNet, Conv-N, VGG's classifier); "
                          "0.5 in Zhou et al.'s replication of Frankle & Carbin's Conv-N."),
        click.option("--image-size", default=None, type=int,
                     help="Crop size for image folders (ignored, with a warning, for other data). [default: 224]"),
    ]):
        f = option(f)
    return f


def _echo_result(result) -> None:
    if not distributed.is_main():
        return
    r = result.result
    click.echo(f"{'already finished' if result.skipped else 'finished'}: {result.run_dir}")
    click.echo(f"test accuracy {r['test_accuracy']:.4f} (epoch {r['selected_epoch']}, {r['selection']}, val "
               f"{r['val_accuracy']:.4f}); last epoch {r['last_test_accuracy']:.4f}; before training "
               f"{r['initial_test_accuracy']:.4f}; density {r['density']:.4f}")


@cli.command()
@model_options
@click.option("--method", default="edge-popup", show_default=True, help="Ticket finder (see `supermask list methods`).")
@click.option("--density", default=None, help="Fraction of weights kept, in (0, 1], or a list. [default: 0.5]")
@click.option("--sparsity", default=None, help="Fraction of weights removed (1 - density), or a list.")
@click.option("--scope", default=None, type=click.Choice(["layerwise", "global"]),
              help="One threshold per layer, or one over all layers. [default: the method's; layerwise]")
@click.option("--init", "init", default=None,
              help="Weight init, or a list (see `supermask list inits`). [default: the method's; signed-constant]")
@click.option("--score-init", default=None, help="Score init. [default: the method's; kaiming-uniform]")
@click.option("--scaled-fan/--no-scaled-fan", default=None,
              help="Scale the init's fan by the density (Ramanujan et al. 2020). [default: the method's; off]")
@click.option("--learned-bn", is_flag=True, help="Train BatchNorm's affine parameters with the scores.")
@click.option("--rerandomize-every", default=None, type=int, help="IteRand: re-draw period K in steps [300].")
@click.option("--rerandomize-rate", default=None, type=float, help="IteRand: re-draw probability r [0.1].")
@click.option("--score-l2", default=None, type=float,
              help="Gem-Miner: lambda of the penalty lambda * sum(scores^2) in the loss [1e-4].")
@click.option("--freeze-every", default=None, type=int, help="Gem-Miner: epochs between freezing rounds [5].")
@click.option("--bernoulli-eval", default=None, type=click.Choice(["sample", "threshold"]),
              help="Bernoulli: evaluate and keep a seeded sample of the mask, or sigmoid(s) > 0.5 [sample].")
@click.option("--rescale-weights/--no-rescale-weights", default=None,
              help="Bernoulli: Zhou et al.'s dynamic weight rescaling (weights x n / kept) [off].")
@train_options(None)
@output_options
def search(**kw) -> None:
    """Find a strong ticket: train a mask over a frozen random network (edge-popup and others).

    Training defaults: 10 epochs, batch 128, SGD lr 0.1 momentum 0.9, weight decay 1e-4, cosine;
    each method's own defaults (`supermask list methods --verbose`) take precedence."""
    from .search import SearchConfig, search as run_search

    from .sweep import expand_grid, parse_list

    quiet = kw.pop("quiet")
    _configure_logging(kw.pop("verbose"), quiet)
    _refuse_pruner(kw["method"])
    train_cfg = _train_config(kw)  # what is not given stays None: the method's defaults fill it
    densities = resolve_densities(kw.pop("density"), kw.pop("sparsity"), 0.5)
    seeds, inits = _seeds(kw), parse_list(kw.pop("init"), str, "--init")
    configs = expand_grid(SearchConfig(train=train_cfg, **kw), init=inits, density=densities, seed=seeds)
    results = _run_points(configs, lambda c, cb: run_search(c, callbacks=cb), quiet,
                          lambda c: f"{c.arch} {c.init} d={c.density:g} s={c.seed}")
    for result in results:
        _echo_result(result)


@cli.command(name="train")
@model_options
@click.option("--init", "init", default="kaiming-normal", show_default=True,
              help="Weight init, or a list (see `supermask list inits`).")
@click.option("--ticket", default=None, type=click.Path(file_okay=False),
              help="Fine-tune this finished search run's ticket (its weights under its mask) instead.")
@train_options(TrainConfig(lr=0.01))
@output_options
def train_cmd(**kw) -> None:
    """Train the dense baseline (or, with --ticket, fine-tune a strong ticket): weights trained."""
    from .dense import DenseConfig, _ticket_config, train_dense

    from .sweep import expand_grid, parse_list

    quiet = kw.pop("quiet")
    _configure_logging(kw.pop("verbose"), quiet)
    if kw["ticket"] is not None:  # the architecture and data are the ticket's
        found = _ticket_config(kw["ticket"])
        kw.update(arch=found.arch, dataset=found.dataset, width=found.width)
    seeds, inits = _seeds(kw), parse_list(kw.pop("init"), str, "--init")
    configs = expand_grid(DenseConfig(train=_train_config(kw), **kw), init=inits, seed=seeds)
    for result in _run_points(configs, lambda c, cb: train_dense(c, callbacks=cb), quiet,
                              lambda c: f"{c.arch} {'fine-tune' if c.ticket else 'dense'} s={c.seed}"):
        _echo_result(result)


@cli.command(name="imp")
@model_options
@click.option("--levels", default=10, show_default=True, type=int, help="Pruning levels after the dense level 0.")
@click.option("--target-density", default=None, type=float, help="Prune until this density (overrides --levels).")
@click.option("--one-shot", is_flag=True, help="Prune straight to the final density in one level.")
@click.option("--scope", default=None, type=click.Choice(["global", "layerwise"]),
              help="[default: the family's: layerwise for LeNet/Conv-N, global otherwise]")
@click.option("--prune-fraction", default=None, type=float,
              help="Fraction of the survivors removed per level (global; layerwise: FC layers). [default: 0.2]")
@click.option("--conv-prune-fraction", default=None, type=float, help="Layerwise: for convolutions.")
@click.option("--output-prune-fraction", default=None, type=float, help="Layerwise: for the output layer.")
@click.option("--keep-unpruned", default=None,
              help="Comma-separated weight names never pruned. [default: the family's; VGG: classifier.weight]")
@click.option("--bn-init", default=None, type=click.Choice(["ones", "uniform"]),
              help="BatchNorm γ at initialisation. [default: the family's; ResNet/VGG: uniform, as open_lth]")
@click.option("--rewind", default="0", show_default=True, help="Rewind to step 0, <N>it or <N>ep (late rewinding).")
@click.option("--control", default="none", show_default=True,
              help="none, reinit or random-prune, or a list (controls run after the IMP run they use).")
@click.option("--init", "init", default="kaiming-normal", show_default=True)
@click.option("--early-bird", default=None, type=click.Choice(["magnitude", "channel"]),
              help="Early-bird tickets (You et al. 2020): magnitude (IMP's weight mask settles, dense training "
                   "stops, IMP goes on) or channel (the paper's BatchNorm-γ channel ticket, VGG/ResNet; the "
                   "physically smaller network is trained).")
@click.option("--eb-l1", default=None, type=float, help="Early-bird channel: L1 penalty on BatchNorm γ [1e-4].")
@click.option("--eb-epsilon", default=None, type=float, help="Early-bird: mask distance threshold [0.1].")
@click.option("--eb-window", default=None, type=int, help="Early-bird: epochs the distance must stay below it [5].")
@train_options(None)
@output_options
def imp_cmd(**kw) -> None:
    """Find weak tickets: iterative magnitude pruning with rewinding (and its controls)."""
    from supermask_imp import IMPConfig, run_imp

    from .sweep import expand_grid, parse_list

    quiet = kw.pop("quiet")
    _configure_logging(kw.pop("verbose"), quiet)
    overrides = _train_overrides(kw)
    seeds, controls = _seeds(kw), parse_list(kw.pop("control"), str, "--control")
    keep = kw.pop("keep_unpruned")
    kw["keep_unpruned"] = None if keep is None else tuple(x for x in keep.split(",") if x)
    config = IMPConfig.for_arch(kw.pop("arch"), epochs=overrides.pop("epochs", None), **kw)
    config.train = dataclasses.replace(config.train, **overrides)
    configs = expand_grid(config, control=controls, seed=seeds)
    for result in _run_points(configs, lambda c, cb: run_imp(c, callbacks=cb), quiet,
                              lambda c: f"{c.arch} imp {c.control} s={c.seed}"):
        if not distributed.is_main():
            continue
        click.echo(f"{'already finished' if result.skipped else 'finished'}: {result.run_dir}")
        click.echo(f"{'level':>5} {'density':>8} {'test acc':>9} {'best val':>9} {'early-stop it':>14}")
        for row in result.levels:
            click.echo(f"{row['level']:>5} {row['density']:>8.4f} {row['test_accuracy']:>9.4f} "
                       f"{row['best_val_accuracy']:>9.4f} {row['min_val_loss_step']:>14}")


def _refuse_pruner(method: str) -> None:
    from supermask_imp import PRUNERS

    if method in PRUNERS:
        raise SupermaskError(f"{method!r} prunes at initialisation and trains the weights: "
                             f"use `supermask prune --method {method}`")


@cli.command(name="prune")
@model_options
@click.option("--method", default="snip", show_default=True,
              help="random, magnitude, snip, grasp or synflow, or a list.")
@click.option("--density", default=None, help="Fraction of weights kept, in (0, 1], or a list. [default: 0.1]")
@click.option("--sparsity", default=None, help="Fraction of weights removed (1 - density), or a list.")
@click.option("--scope", default="global", show_default=True, type=click.Choice(["global", "layerwise"]))
@click.option("--init", "init", default="kaiming-normal", show_default=True)
@train_options(None)
@output_options
def prune_cmd(**kw) -> None:
    """Prune at initialisation (SNIP, GraSP, SynFlow, magnitude, random), then train the survivors."""
    from supermask_imp import PruneConfig, prune_and_train

    from .sweep import expand_grid, parse_list

    quiet = kw.pop("quiet")
    _configure_logging(kw.pop("verbose"), quiet)
    overrides = _train_overrides(kw)
    densities = resolve_densities(kw.pop("density"), kw.pop("sparsity"), 0.1)
    seeds, methods = _seeds(kw), parse_list(kw.pop("method"), str, "--method")
    config = PruneConfig.for_arch(kw.pop("arch"), epochs=overrides.pop("epochs", None), **kw)
    config.train = dataclasses.replace(config.train, **overrides)
    configs = expand_grid(config, method=methods, density=densities, seed=seeds)
    for result in _run_points(configs, lambda c, cb: prune_and_train(c, callbacks=cb), quiet,
                              lambda c: f"{c.arch} {c.method} d={c.density:g} s={c.seed}"):
        _echo_result(result)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", default="report", show_default=True, type=click.Path(), help="Folder for the report files.")
def compare(paths: tuple[str, ...], out: str) -> None:
    """Compare finished runs (run directories or whole run trees): tables and plots vs density."""
    from .report import compare as run_compare

    table, problems, written = run_compare(paths, out)
    for problem in problems:
        click.echo(f"supermask: warning: left out {problem}", err=True)
    click.echo(table)
    click.echo("wrote " + ", ".join(str(p) for p in written))


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", required=True, type=click.Choice(["mask", "state-dict", "torch-prune", "ticket"]))
@click.option("--out", default=None, type=click.Path(),
              help="Output file, or a folder for <format>.safetensors [default: RUN_DIR/export/<format>.safetensors].")
@click.option("--force", is_flag=True, help="Replace an existing regular file that export did not write.")
def export(run_dir: str, fmt: str, out: Optional[str], force: bool) -> None:
    """Export a finished run's ticket (for IMP: a level-<L> directory)."""
    from pathlib import Path

    from .tickets import export_run

    info = export_run(Path(run_dir), fmt, out, force=force)
    ratio = info["float32_state_dict_bytes"] / info["bytes"]
    click.echo(f"wrote {info['path']}: {info['bytes']:,} bytes "
               f"(float32 state dict {info['float32_state_dict_bytes']:,} bytes, {ratio:.1f}x)")


@cli.command(name="evaluate")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="Folder of downloaded data sets [default: $SUPERMASK_DATA or ~/.cache/supermask/data].")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
def evaluate_cmd(path: str, data_root: Optional[str], device: str) -> None:
    """Re-evaluate an export (ticket, state-dict or torch-prune) on its data set's test split."""
    from pathlib import Path

    from .tickets import evaluate_export

    r = evaluate_export(Path(path), data_root, device)
    reported = r["reported_test_accuracy"]
    same = "" if reported is None else f"; the run reported {reported:.4f}" + (
        " (the same)" if reported == r["test_accuracy"] else " (DIFFERENT)")
    click.echo(f"test accuracy {r['test_accuracy']:.4f} on {r['dataset']} ({r['examples']} examples){same}")


@cli.command(name="list")
@click.argument("what", type=click.Choice(["archs", "datasets", "methods", "inits"]))
@click.option("--verbose", "-v", is_flag=True, help="methods: also each search method's defaults and reference.")
def list_(what: str, verbose: bool) -> None:
    """List the registered architectures, data sets, methods or initialisers."""
    if what == "archs":
        from .models import list_models

        items = list_models()
    elif what == "datasets":
        from .data import list_datasets

        items = list_datasets()
    elif what == "methods":
        from supermask_imp import PRUNERS
        from supermask_imp.pai import PRUNER_SUMMARIES

        from .methods import METHODS

        items = []
        for name in METHODS:
            items.append(f"{name} (search): {METHODS.get(name).summary}")
            if verbose:
                from .search import resolved_defaults

                defaults = ", ".join(f"{k} {v}" for k, v in resolved_defaults(name).items())
                items += [f"    defaults: {defaults}", f"    reference: {METHODS.get(name).reference}"]
        items += [f"{name} (prune): {PRUNER_SUMMARIES[name]}" for name in PRUNERS]
        items += ["imp (imp): Frankle & Carbin 2019: iterative magnitude pruning with rewinding",
                  "imp-early-bird-magnitude (imp --early-bird magnitude): You et al. 2020, unstructured: dense training "
                  "stops once IMP's mask settles",
                  "early-bird-channel (imp --early-bird channel): You et al. 2020: BatchNorm-γ channel ticket "
                  "under L1, trained as a smaller network",
                  "dense (train): the dense baseline, weights trained"]
    else:
        from .nn import SCORE_INITS, WEIGHT_INITS

        items = [f"{name}" for name in WEIGHT_INITS] + [f"score: {name}" for name in SCORE_INITS]
    for item in items:
        click.echo(item)


def _interrupted_once(signum, frame) -> None:
    """The first Ctrl-C interrupts; later ones are ignored while the run records its state and exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: run the CLI and return the exit status; user errors become one line on stderr and 2."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _interrupted_once)
    status = _main(argv)
    if previous is not None and status != EXIT_INTERRUPTED:  # interrupted: keep ignoring Ctrl-C until exit
        signal.signal(signal.SIGINT, previous)
    return status


def _main(argv: Optional[list[str]]) -> int:
    try:
        cli.main(args=argv, prog_name="supermask", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        return _fail(exc.format_message())
    except TrainingDiverged as exc:
        return _fail(f"run failed: {exc}", EXIT_FAILED)
    except SupermaskError as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("supermask: interrupted; run the same command again to resume", err=True)
        return EXIT_INTERRUPTED
    finally:
        distributed.teardown()
    return 0


def _fail(message: str, status: int = EXIT_USAGE) -> int:
    if distributed.is_main():
        click.echo(f"supermask: error: {message}", err=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
