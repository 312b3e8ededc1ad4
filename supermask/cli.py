"""The ``supermask`` command line: thin over the library.

Every command builds a config, calls the library and prints a summary. Errors the
user can fix (``SupermaskError``, bad options, unwritable paths) become one line on
stderr and exit status 2. Nothing here imports torch at import time: ``--help`` and
``list`` answer at once; a command imports the engine it runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from typing import Callable, Optional

import click

from .cli_options import (PathOption, density_options, family_default, family_train_default, help_with_default, method_default,
                          plain_default, search_train_default, train_options, train_overrides, with_train_overrides)
from .catalog import EXPORT_FORMATS
from .errors import RunLocked, SupermaskError, TrainingDiverged

EXIT_USAGE = 2
EXIT_FAILED = 1  # a run that started and failed (diverged): not a usage error
EXIT_INTERRUPTED = 130


def _distributed():
    """The distributed helpers if a command has imported them (with torch), else None."""
    return sys.modules.get("supermask.training.distributed")


def _is_main() -> bool:
    """Whether this process prints (rank 0 under torchrun, or the only process)."""
    dist = _distributed()
    return dist.is_main() if dist is not None else int(os.environ.get("RANK", "0")) == 0


def _configure_logging(verbose: int, quiet: bool) -> None:
    quiet = quiet or not _is_main()
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def _load_plugins(ctx: click.Context, param: click.Parameter, modules: tuple[str, ...]) -> tuple[str, ...]:
    from .plugins import import_user_module, load_entry_points

    load_entry_points()
    for module in modules:
        import_user_module(module)
    ctx.meta["supermask.imports"] = modules  # for --save-config
    return modules


def plugin_option(f: Callable) -> Callable:
    return click.option("--import", "imports", multiple=True, callback=_load_plugins, expose_value=False,
                        help="Import this module (a name, or a .py file) first: it may register models, data sets "
                             "and methods. Repeatable; installed `supermask.plugins` entry points load too.")(f)


def _read_config(ctx: click.Context, param: click.Parameter, path: Optional[str]) -> Optional[str]:
    if path is not None:
        from .option_files import read_option_file

        ctx.default_map = {**(ctx.default_map or {}), **read_option_file(path, ctx.command)}
    return path


def run_options(f: Callable) -> Callable:
    """What every run command has besides its own options: where runs go, how they execute, and
    the invocation options (config files, dry run, logging)."""
    for option in reversed([
        click.option("--out", default="runs", show_default=True, type=PathOption(file_okay=False),
                     help="Root folder of run directories."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N]."),
        click.option("--data-root", default=None, type=PathOption(file_okay=False),
                     help="Folder of downloaded data sets [default: $SUPERMASK_DATA or ~/.cache/supermask/data]."),
        click.option("--download", is_flag=True, help="Fetch the data set into --data-root if it is missing."),
        click.option("--num-workers", default=None, type=int,
                     help="DataLoader workers (image folders only) [default: 4, at most the CPUs less one]."),
        click.option("--checkpoint-every", default=None, type=int,
                     help="Also checkpoint every N steps [default: off; a checkpoint ends every epoch anyway]."),
        click.option("--channels-last", is_flag=True, help="CUDA: channels-last memory format for conv nets."),
        click.option("--compile", "compile", is_flag=True, help="torch.compile the training forward pass."),
        click.option("--tensorboard", is_flag=True, help="Also write TensorBoard scalars to <run>/tensorboard/."),
        click.option("--keep-checkpoints", is_flag=True,
                     help="Keep the full checkpoints when a run finishes (checkpoint.prev.pt, and the optimiser and "
                          "RNG states); by default only the final network stays in checkpoint.pt, which IMP's next "
                          "level and stability read."),
        click.option("--wandb", "wandb_project", default=None, metavar="PROJECT",
                     help="Also log to this Weights & Biases project (needs the wandb extra; files in <run>/wandb/; "
                          "WANDB_MODE=offline logs locally). [default: off]"),
        plugin_option,
        click.option("--config", default=None, type=PathOption(dir_okay=False), is_eager=True, callback=_read_config,
                     help="A TOML file of options (keys: option names; lists sweep); the command line wins."),
        click.option("--save-config", default=None, type=PathOption(dir_okay=False),
                     help="Write every option as it resolved to a TOML file (for --config), then go on."),
        click.option("--dry-run", is_flag=True,
                     help="Check each run as it would be checked (data, plan, network) and print its run directory "
                          "and hash, one line each (with --verbose its resolved config); write nothing, run nothing."),
        click.option("--quiet", "-q", is_flag=True, help="No progress, warnings only."),
        click.option("--verbose", "-v", count=True, help="More log output (-vv for debug); --dry-run: each resolved "
                                                          "config."),
    ]):
        f = option(f)
    return f


def model_options(f: Callable) -> Callable:
    for option in reversed([
        click.option("--arch", default="conv6", show_default=True, help="Architecture (see `supermask list archs`)."),
        click.option("--dataset", default="mnist-5k", show_default=True, help="Data set (see `supermask list datasets`)."),
        click.option("--classes", default=None,
                     help="Only these classes of the data set, relabelled 0..n-1 in order: indices and ranges, "
                          "e.g. 0-4 or 0,2,5-9 (part of the data's identity and the hash). [default: all]"),
        click.option("--input-shape", default=None,
                     help="Convert the data's images to CxHxW first (1 channel repeated into 3, or 3 reduced to "
                          "luma; resized bilinearly), e.g. 3x32x32 for MNIST-like data on a CIFAR network. "
                          "[default: as the data set has them]"),
        click.option("--train-subset", default=None,
                     help="Train on part of the training split: a fraction in (0, 1) or a count of examples, "
                          "stratified by class, the same subset for every seed (part of the data's identity and "
                          "the hash; hidden-networks' --low-data, open_lth's subsample_fraction). [default: all]"),
        click.option("--context", default=None, type=int,
                     help="Text data: the characters of a window (the language model's context). [default: 64]"),
        click.option("--width", default=1.0, show_default=True, type=float, help="Width multiplier of the architecture."),
        click.option("--depth", default=None, type=int,
                     help="Transformer blocks (gpt_tiny, vit_tiny). [default: the architecture's, 4]"),
        click.option("--bias/--no-bias", default=None,
                     help="Biases in the layers of the architectures that take the option (lenet_300_100, "
                          "conv2-8); --no-bias builds LeNet as hidden-networks, biprop and Gem-Miner do. "
                          "[default: the architecture's: LeNet with (open_lth's), Conv-N without]"),
        click.option("--dropout", default=0.0, show_default=True, type=float,
                     help="Dropout rate before the fully connected layers (LeNet, Conv-N, VGG's classifier); "
                          "0.5 in Zhou et al.'s replication of Frankle & Carbin's Conv-N."),
        click.option("--image-size", default=None, type=int,
                     help="Crop size for image folders (ignored, with a warning, for other data). [default: 224]"),
    ]):
        f = option(f)
    return f


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


def _invocation(kw: dict) -> dict:
    """Pop the options about this invocation (not about the runs) and set up logging."""
    options = {name: kw.pop(name) for name in ("quiet", "verbose", "config", "save_config", "dry_run")}
    _configure_logging(options["verbose"], options["quiet"])
    return options


def _run_points(configs: list, invocation: dict) -> None:
    """Resolve every config of a grid (once: the engines take them resolved), then (unless a dry
    run) run each with its engine (finished ones are skipped) and echo its result; an overall
    progress line or bar when there are several."""
    from .engines import engine_for

    engine = engine_for(configs[0])
    configs = [engine.resolve(config) for config in configs]
    label = engine.label
    if invocation["save_config"] is not None:
        _save_config(invocation["save_config"], configs)
    if invocation["dry_run"]:
        for index, config in enumerate(configs, 1):
            _describe(engine, config, index, len(configs), verbose=bool(invocation["verbose"]))
        return
    from .training import ProgressBar, distributed, resolve_device

    resolve_device(configs[0].device)  # under torchrun: join the process group before anything runs
    quiet = invocation["quiet"] or not distributed.is_main()
    outer = _SweepProgress(len(configs)) if len(configs) > 1 and not quiet else None
    for config in configs:
        if outer is not None:
            outer.starting(label(config))
        try:
            result = engine.run(config, [] if quiet else [ProgressBar(label(config))])
        except RunLocked as exc:
            if len(configs) == 1:
                raise
            click.echo(f"supermask: warning: skipped: {exc}", err=True)  # another job of the sweep has it
            continue
        finally:
            if outer is not None:
                outer.done()
        if distributed.is_main():
            echo = _ECHOES.get(engine.name, _echo_levels if hasattr(result, "levels") else _echo_result)
            echo(result, label(config))
    if outer is not None:
        outer.close()


class _SweepProgress:
    """The sweep's progress: a tqdm bar on a terminal, one line per run elsewhere."""

    def __init__(self, total: int):
        self.total, self.index, self.bar = total, 0, None
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="sweep", unit="run", position=0, dynamic_ncols=True)

    def starting(self, label: str) -> None:
        self.index += 1
        if self.bar is None:
            click.echo(f"run {self.index}/{self.total}: {label}", err=True)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _save_config(path: str, configs: list) -> None:
    from .option_files import resolved_options, write_option_file

    ctx = click.get_current_context()
    params = {**ctx.params, "imports": ctx.meta.get("supermask.imports")}
    filled, varying = resolved_options(ctx.command, params, configs)
    header = [f"supermask {ctx.command.name} options: `supermask {ctx.command.name} --config "
              f"{os.path.basename(path)}` runs the same {len(configs)} config(s); options given on the command "
              f"line win.", "Every option is written as it resolved, defaults included, so a later release's "
              "defaults do not change what this file runs."]
    if varying:
        header.append(f"Left to each config's own default (they differ across the grid): {', '.join(varying)}.")
    write_option_file(path, ctx.command, filled, header=header)
    click.echo(f"wrote {path}", err=True)


def _describe(engine, config, index: int, total: int, verbose: bool = False) -> None:
    """A dry run's account of one config: its run directory and hash, after every check the run
    makes before it writes anything (the data, the plan's length, the network for the data and the
    structure); with ``verbose`` the resolved config too."""
    from .configs import identified, load_data
    from .errors import DataError
    from .runs import config_dict, config_hash
    from .stage import planned_steps

    try:
        data, spec = load_data(config)  # fingerprints the data (reads it; writes nothing)
    except DataError as exc:
        where = f"hash and run directory unknown until the data is present ({exc})"
    else:
        config = identified(config, data)
        planned_steps(config, data)
        if engine.check is not None:
            engine.check(config, spec)
        run = config.run_dir()
        state = ("finished" if run.is_finished() else "would resume") if run.path.exists() else "new"
        where = f"run directory {run.path} (hash {config_hash(config)}; {state})"
    click.echo(f"# {index}/{total}: {where}")
    if verbose:
        click.echo(json.dumps(config_dict(config), indent=2, sort_keys=True))


class _Interrupted(Exception):
    """Ctrl-C inside a command: raised instead of KeyboardInterrupt, which click would answer with
    a blank line of its own before ours."""


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="supermask")
def cli() -> None:
    """Find lottery tickets: strong (edge-popup, untrained) and weak (IMP, trained)."""


def _echo_result(result, label: str) -> None:
    r = result.result
    click.echo(f"{'already finished' if result.skipped else 'finished'}: {result.run_dir}")
    heads = f" ({r['heads_kept']} of {r['heads_total']} heads)" if "heads_kept" in r else ""
    if r.get("task") == "language-model":
        click.echo(f"{label}: test loss {r['test_loss']:.4f} nats/char, perplexity {r['test_perplexity']:.2f}, "
                   f"next-character accuracy {r['test_accuracy']:.4f} (epoch {r['selected_epoch']}, "
                   f"{'lowest val loss' if r['selection'] == 'best-val' else r['selection']}, val loss "
                   f"{r['val_loss']:.4f}); last epoch {r['last_test_loss']:.4f}; before training "
                   f"{r['initial_test_loss']:.4f}; density {r['density']:.4f}{heads}")
        return
    click.echo(f"{label}: test accuracy {r['test_accuracy']:.4f} (epoch {r['selected_epoch']}, {r['selection']}, "
               f"val {r['val_accuracy']:.4f}); last epoch {r['last_test_accuracy']:.4f}; before training "
               f"{r['initial_test_accuracy']:.4f}; density {r['density']:.4f}{heads}")


def _method_option_help(text: str, field: str) -> str:
    return help_with_default(text, method_default(field))


@cli.command()
@model_options
@click.option("--method", default="edge-popup", show_default=True, help="Ticket finder (see `supermask list methods`).")
@density_options("0.5", "Mask structure: unstructured (top-k over the layer), nm:N:M (N kept in every group of M "
                        "consecutive weights along the input dimension; density N/M; e.g. nm:2:4; nm:2:4:asp leaves dense "
                        "the weights NVIDIA ASP skips), channel (a score "
                        "per output channel, --density of each layer's channels kept; edge-popup, chain networks) "
                        "or head (a score per attention head, --density of each block's heads kept, every other "
                        "layer kept whole; edge-popup).")
@click.option("--scope", default=None, type=click.Choice(["layerwise", "global"]),
              help=_method_option_help("One top-k threshold per layer, or one over all layers.", "scope"))
@click.option("--init", "init", default=None,
              help=_method_option_help("Frozen weight init, or a list (see `supermask list inits`).", "init"))
@click.option("--score-init", default=None,
              help=_method_option_help("Score init (see `supermask list inits`).", "score_init"))
@click.option("--scaled-fan/--no-scaled-fan", default=None,
              help=_method_option_help("Scale the init's fan by the density (Ramanujan et al. 2020).", "scaled_fan"))
@click.option("--scaled-fan-rule", default=None, type=click.Choice(["paper", "reference-code"]),
              help="With --scaled-fan: the fan times the density (paper: Ramanujan et al. 2020, Sec. 4) or times "
                   "one minus it (reference-code: hidden-networks' and biprop's builder.py, whose rate argument is "
                   "the kept fraction; the two agree at density 0.5). Given alone it turns the scaled fan on. "
                   "[default: paper]")
@click.option("--learned-bn", is_flag=True, help="Train BatchNorm's affine parameters with the scores.")
@click.option("--rerandomize-every", default=None, type=int,
              help=_method_option_help("IteRand: re-draw period K in steps.", "rerandomize_every"))
@click.option("--rerandomize-rate", default=None, type=float,
              help=_method_option_help("IteRand: re-draw probability r.", "rerandomize_rate"))
@click.option("--score-l2", default=None, type=float,
              help=_method_option_help("Gem-Miner: lambda of the penalty lambda * sum(scores^2) in the loss.",
                                       "score_l2"))
@click.option("--freeze-every", default=None, type=int,
              help=_method_option_help("Gem-Miner: epochs between freezing rounds.", "freeze_every"))
@click.option("--bernoulli-eval", default=None, type=click.Choice(["sample", "threshold"]),
              help=_method_option_help("Bernoulli: evaluate and keep a seeded sample of the mask, or "
                                       "sigmoid(s) > 0.5.", "bernoulli_eval"))
@click.option("--rescale-weights/--no-rescale-weights", default=None,
              help=_method_option_help("Bernoulli: Zhou et al.'s dynamic weight rescaling (weights x n / kept).",
                                       "rescale_weights"))
@click.option("--density-ramp-epochs", default=None, type=int,
              help=_method_option_help("biprop with --scope global at density <= 0.5: the kept fraction falls from "
                                       "0.5 to the density over these first epochs (its main.py; 0: off).",
                                       "density_ramp_epochs"))
@train_options(search_train_default)
@run_options
def search(**kw) -> None:
    """Find a strong ticket: train a mask over a frozen random network (edge-popup and others).

    Each method's defaults (`supermask list methods --verbose`) fill what is not given."""
    from .configs import SearchConfig
    from .sweep import expand_grid, parse_list
    from .training import TrainConfig

    invocation = _invocation(kw)
    _refuse_pruner(kw["method"])
    train_cfg = with_train_overrides(TrainConfig(), kw)  # what is not given stays None: the method's defaults fill it
    densities = resolve_densities(kw.pop("density"), kw.pop("sparsity"), None)  # None: the library's default
    seeds, inits = _seeds(kw), parse_list(kw.pop("init"), str, "--init")
    rule = kw.pop("scaled_fan_rule")
    if rule is not None:
        if kw["scaled_fan"] is False:
            raise SupermaskError(f"--scaled-fan-rule {rule} with --no-scaled-fan: a rule for a fan that is not "
                                 f"scaled; leave one out")
        kw["scaled_fan"] = True if rule == "paper" else rule
    configs = expand_grid(SearchConfig(train=train_cfg, **kw), init=inits, density=densities, seed=seeds)
    _run_points(configs, invocation)


def _dense_default(field: str) -> str:
    from .catalog import DENSE_TRAIN_DEFAULTS, LANGUAGE_MODEL_TRAIN_DEFAULTS, LANGUAGE_MODELS

    image = plain_default(field, DENSE_TRAIN_DEFAULTS)
    text = plain_default(field, LANGUAGE_MODEL_TRAIN_DEFAULTS)
    return image if text == image else f"{image}; {', '.join(LANGUAGE_MODELS)}: {text}"


@cli.command(name="train")
@model_options
@click.option("--init", "init", default=None,
              help="Weight init, or a list (see `supermask list inits`). [default: kaiming-normal; with --ticket, "
                   "the ticket's own]")
@click.option("--init-from", default=None, type=PathOption(dir_okay=False),
              help="Start from these weights: a state dict of the same architecture (safetensors, e.g. a state-dict "
                   "export, or torch.save); IMP rewinds to them (θ0). Its checksum, not its path, enters the hash. "
                   "[default: off: the random init]")
@click.option("--ticket", default=None, type=PathOption(file_okay=False),
              help="Fine-tune this finished search run's ticket (its weights under its mask) instead. "
                   "[default: off: train the dense network from its init]")
@train_options(_dense_default)
@run_options
def train_cmd(**kw) -> None:
    """Train the dense baseline (or, with --ticket, fine-tune a strong ticket): weights trained."""
    from .dense import DenseConfig, ticket_source
    from .sweep import expand_grid, parse_list

    invocation = _invocation(kw)
    if kw["ticket"] is not None:  # the architecture and data are the ticket's: given others are refused
        found = ticket_source(kw["ticket"])
        ctx = click.get_current_context()
        for name in ("arch", "dataset", "classes", "input_shape", "context", "width", "depth", "bias", "dropout"):
            given = ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)
            if given and kw[name] != getattr(found, name):
                raise SupermaskError(f"--{name} {kw[name]}: --ticket fine-tunes the ticket on what it was found with "
                                     f"({name} {getattr(found, name)}); transfer to other data is not built yet")
            kw[name] = getattr(found, name)
    seeds, inits = _seeds(kw), parse_list(kw.pop("init"), str, "--init")
    train_cfg = with_train_overrides(DenseConfig(arch=kw["arch"]).train, kw)  # the defaults of its task
    configs = expand_grid(DenseConfig(train=train_cfg, **kw), init=inits, seed=seeds)
    _run_points(configs, invocation)


def _imp_default(field: str) -> str:
    from supermask_imp.defaults import DEFAULT_EPOCHS

    return family_train_default(field, f"{DEFAULT_EPOCHS} a level")


def _family_help(text: str, field: str) -> str:
    return help_with_default(text, family_default(field))


def _family_table() -> str:
    from supermask_imp.defaults import family_summary

    return family_summary()


@cli.command(name="imp", help=f"""Find weak tickets: iterative magnitude pruning with rewinding (and its controls).

Training and pruning defaults follow each family's reference (every value lands in config.json;
options given win): {_family_table()}.""")
@model_options
@click.option("--levels", default=10, show_default=True, type=int, help="Pruning levels after the dense level 0.")
@click.option("--target-density", default=None, type=float,
              help="Prune until this density (overrides --levels; --structure channel: the fraction of "
                   "channels kept). [default: off]")
@click.option("--one-shot", is_flag=True, help="Prune straight to the final density in one level.")
@click.option("--scope", default=None, type=click.Choice(["global", "layerwise"]),
              help=_family_help("One magnitude threshold over all layers, or per-layer fractions.", "scope"))
@click.option("--prune-fraction", default=None, type=float,
              help=_family_help("Fraction of the survivors removed per level (global; layerwise: FC layers).",
                                "fc_fraction"))
@click.option("--conv-prune-fraction", default=None, type=float,
              help=_family_help("Layerwise: for convolutions.", "conv_fraction"))
@click.option("--output-prune-fraction", default=None, type=float,
              help=_family_help("Layerwise: for the output layer.", "output_fraction"))
@click.option("--keep-unpruned", default=None,
              help=_family_help("Comma-separated weight names never pruned.", "keep_unpruned"))
@click.option("--bn-init", default=None, type=click.Choice(["ones", "uniform", "half"]),
              help=_family_help("BatchNorm γ at initialisation (uniform: U(0, 1), as open_lth; half: 0.5, as the "
                                "early-bird reference and the default of --early-bird channel).", "bn_init"))
@click.option("--structure", default="unstructured", show_default=True,
              help="Mask structure: unstructured, nm:N:M (one level: the N largest |w| of every group of M "
                   "inputs; nm:N:M:asp leaves dense the weights NVIDIA ASP skips), channel (each level removes the filters of smallest L1 norm, the next layer's "
                   "inputs with them; layerwise fractions) or head (each level removes --prune-fraction of every "
                   "block's heads, at least one, those of smallest L1 norm; every other layer kept whole).")
@click.option("--rewind", default="0", show_default=True, help="Rewind to step 0, <N>it or <N>ep (late rewinding).")
@click.option("--control", default="none", show_default=True,
              help="none, reinit or random-prune, or a list (controls run after the IMP run they use).")
@click.option("--init", "init", default="kaiming-normal", show_default=True,
              help="Weight init of the dense network (see `supermask list inits`).")
@click.option("--init-from", default=None, type=PathOption(dir_okay=False),
              help="Start from these weights: a state dict of the same architecture (safetensors, e.g. a state-dict "
                   "export, or torch.save); IMP rewinds to them (θ0). Its checksum, not its path, enters the hash. "
                   "[default: off: the random init]")
@click.option("--early-bird", default=None, type=click.Choice(["magnitude", "channel"]),
              help="Early-bird tickets (You et al. 2020): magnitude (IMP's weight mask settles, dense training "
                   "stops, IMP goes on) or channel (the paper's BatchNorm-γ channel ticket, VGG/ResNet; the "
                   "physically smaller network is trained). [default: off]")
@click.option("--eb-l1", default=None, type=float, help="Early-bird channel: L1 penalty on BatchNorm γ [default: 1e-4].")
@click.option("--eb-retrain", default=None, type=click.Choice(["early-bird-weights", "reference"]),
              help="Early-bird channel: train the smaller network from the early-bird weights over the full "
                   "schedule without the penalty (early-bird-weights), or as the reference's main_c.py: fresh "
                   "weights, from the drawing epoch on, the L1 penalty on (reference). [default: early-bird-weights]")
@click.option("--eb-epsilon", default=None, type=float, help="Early-bird: mask distance threshold [default: 0.1].")
@click.option("--eb-window", default=None, type=int,
              help="Early-bird: epochs the distance must stay below it [default: 5].")
@click.option("--stop-when-unmatched", default=None, type=float,
              help="Stop after the first level whose test accuracy falls more than this many points below "
                   "level 0's; the result names the sparsest matching level (within 0.2 points). [default: off]")
@train_options(_imp_default)
@run_options
def imp_cmd(**kw) -> None:
    from supermask_imp import IMPConfig

    from .sweep import expand_grid, parse_list

    invocation = _invocation(kw)
    overrides = train_overrides(kw)
    seeds, controls = _seeds(kw), parse_list(kw.pop("control"), str, "--control")
    keep = kw.pop("keep_unpruned")
    kw["keep_unpruned"] = None if keep is None else tuple(x for x in keep.split(",") if x)
    config = IMPConfig.for_arch(kw.pop("arch"), epochs=overrides.pop("epochs", None), **kw)
    config.train = dataclasses.replace(config.train, **overrides)
    configs = expand_grid(config, control=controls, seed=seeds)
    _run_points(configs, invocation)


@cli.command(name="stability")
@model_options
@click.option("--subject", default="imp", show_default=True, type=click.Choice(["imp", "search"]),
              help="imp: IMP's levels (level 0 is the dense network), from an IMP run rewinding to each k; "
                   "search: strong tickets, two searches finishing from step k of one.")
@click.option("--points", default="0", show_default=True,
              help="The steps k the two copies start from: 0, <N>it, <N>ep, or a list (0,100it,2ep).")
@click.option("--levels", "analysed_levels", default="0", show_default=True,
              help="imp: the IMP levels to analyse, a list (0 is the dense network).")
@click.option("--prune-levels", default=None, type=int,
              help="imp: the IMP run's --levels [default: the largest analysed level].")
@click.option("--noise-pairs", default=1, show_default=True, type=int,
              help="Pairs of copies (two data orders each) per k and level; the paper uses 3 (with 3 seeds).")
@click.option("--alphas", default=30, show_default=True, type=int,
              help="Points on the interpolation path, both ends included.")
@click.option("--threshold", default=2.0, show_default=True, type=float,
              help="Stable when the error barrier (points) is below this (Frankle et al. 2020).")
@click.option("--matching-margin", default=0.2, show_default=True, type=float,
              help="imp: a level is matching within this many points of the dense network's accuracy.")
@click.option("--bn", default="interpolate", show_default=True, type=click.Choice(["interpolate", "recompute"]),
              help="BatchNorm running statistics along the path: interpolated with the weights, or recomputed "
                   "on training batches at each point (Jordan et al. 2022).")
@click.option("--init", "init", default=None,
              help="Weight init [default: the subject's: kaiming-normal for imp, the method's for search].")
@click.option("--method", default="edge-popup", show_default=True, help="search: the ticket finder.")
@click.option("--density", default=None, type=float, help="search: the density [default: the method's].")
@click.option("--imp-run", default=None, type=PathOption(file_okay=False),
              help="imp: analyse this finished IMP run (its seed folder): its architecture, data, recipe, "
                   "pruning options and rewind point. [default: off: run IMP with the family's defaults]")
@train_options(_imp_default)
@run_options
def stability_cmd(**kw) -> None:
    """Instability analysis: are IMP's subnetworks (and the dense network, and strong tickets) stable to
    SGD noise? Two copies from step k, different data orders, their final weights interpolated.

    Training defaults are the subject's: IMP's family recipe (`supermask imp -h`) or the search method's."""
    from supermask_imp.stability import StabilityConfig

    from .sweep import expand_grid, parse_list

    invocation = _invocation(kw)
    overrides = train_overrides(kw)
    if kw["imp_run"] is not None:  # the run's architecture, data and recipe
        from supermask_imp.stability import imp_run_identity

        if overrides:
            raise SupermaskError(f"--imp-run: the copies train with the IMP run's recipe; "
                                 f"--{next(iter(overrides)).replace('_', '-')} does not apply")
        identity = imp_run_identity(kw["imp_run"])
        ctx = click.get_current_context()
        for name, value in identity.items():  # what the user gave must be the run's, not replaced by it
            given = ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)
            if given and str(kw[name]) != str(value):
                raise SupermaskError(f"--imp-run {kw['imp_run']} is a {name} {value!r} run, not {kw[name]!r}: "
                                     f"leave --{name.replace('_', '-')} out")
        kw.update(identity)
    seeds = _seeds(kw)
    kw["points"] = tuple(parse_list(kw.pop("points"), str, "--points"))
    kw["levels"] = tuple(parse_list(kw.pop("analysed_levels"), int, "--levels"))
    config = StabilityConfig.for_arch(kw.pop("arch"), kw.pop("subject"), epochs=overrides.pop("epochs", None), **kw)
    config.train = dataclasses.replace(config.train, **overrides)
    _run_points(expand_grid(config, seed=seeds), invocation)


@cli.command(name="transfer")
@click.option("--source", "sources", multiple=True, type=PathOption(file_okay=False),
              help="A finished IMP run (weak tickets) or search run (a strong ticket) on the source data: its seed "
                   "folder. Repeatable: one transfer per source, each with the source's seed.")
@click.option("--dataset", default="mnist-5k", show_default=True, help="The target data set (see `supermask list "
                                                                       "datasets`).")
@click.option("--classes", default=None,
              help="Only these classes of the target data set, relabelled 0..n-1: indices and ranges, e.g. 5-9. "
                   "[default: all]")
@click.option("--image-size", default=None, type=int, help="Crop size for an image folder target. [default: 224]")
@click.option("--input-shape", default=None,
              help="Convert the target's images to CxHxW first (as the source's, e.g. 3x32x32 for Fashion-MNIST "
                   "under a CIFAR ticket). [default: as the target has them]")
@click.option("--levels", "transfer_levels", default=None,
              help="Weak: the source's IMP levels to transfer, a list. [default: every level it ran]")
@click.option("--output-layer", default="dense", show_default=True, type=click.Choice(["dense", "pruned"]),
              help="Weak: the target's new output layer dense, or randomly pruned to the level's output density.")
@click.option("--rescore", default="output", show_default=True, type=click.Choice(["output", "all"]),
              help="Strong: search only the new output layer's scores (the hidden masks stay the source's), or "
                   "fine-search every layer's scores from the source's.")
@click.option("--controls", default="random-mask,target", show_default=True,
              help="Controls run beside: random-mask (the same layerwise densities), target (the ticket found on "
                   "the target itself: IMP, or a search from scratch); a list, or none.")
@train_options(lambda field: "the source's", seed=False)
@run_options
def transfer_cmd(**kw) -> None:
    """Ticket transfer: train a weak ticket (an IMP level's mask and rewind weights), or re-search a strong
    ticket's output layer, found on one data set on another (Morcos et al. 2019), beside its controls.

    Architecture, width, dropout and init are the source's; the training recipe is the source's unless
    options here change it (the target's recipe may differ from the source's). The seed is the source's:
    give one --source per seed."""
    from supermask_imp.transfer import TransferConfig, source_config

    from .sweep import parse_list

    invocation = _invocation(kw)
    sources = kw.pop("sources")
    if not sources:
        raise SupermaskError("give --source: a finished IMP or search run on the source data (its seed folder)")
    levels = kw.pop("transfer_levels")
    kw["levels"] = None if levels is None else tuple(parse_list(levels, int, "--levels"))
    controls = kw.pop("controls").strip()
    kw["controls"] = () if controls in ("", "none") else tuple(parse_list(controls, str, "--controls"))
    overrides = train_overrides(kw)
    configs = []
    for path in sources:
        source = source_config(path)
        configs.append(TransferConfig(source=path, arch=source.arch, width=source.width, dropout=source.dropout,
                                      seed=source.seed, train=dataclasses.replace(source.train, **overrides), **kw))
    _run_points(configs, invocation)


def _echo_transfer(result, label: str) -> None:
    click.echo(f"{'already finished' if result.skipped else 'finished'}: {result.run_dir}")
    click.echo(f"{label}:")
    click.echo(f"{'level':>5} {'branch':>12} {'density':>8} {'test acc':>9} {'source acc':>11}")
    for row in result.rows:
        level = "" if row["level"] is None else row["level"]
        source = "" if row["source_test_accuracy"] is None or row["branch"] != "transferred" else \
            f"{row['source_test_accuracy']:.4f}"
        click.echo(f"{level:>5} {row['branch']:>12} {row['density']:>8.4f} {row['test_accuracy']:>9.4f} {source:>11}")


def _echo_stability(result, label: str) -> None:
    click.echo(f"{'already finished' if result.skipped else 'finished'}: {result.run_dir}")
    click.echo(f"{label}:")
    click.echo(f"{'k':>8} {'level':>5} {'density':>8} {'test barrier':>13} {'train barrier':>14}  verdict")
    for row in result.rows:
        verdict = "stable" if row["stable"] else "unstable"
        if "matching" in row:
            verdict += ", matching" if row["matching"] else ", not matching"
        if "overlap" in row:
            verdict += f", overlap {row['overlap']:.3f} (random {row['overlap_random']:.3f})"
        click.echo(f"{row['k']:>8} {row['level']:>5} {row['density']:>8.4f} {row['barrier_test']:>13.2f} "
                   f"{row['barrier_train']:>14.2f}  {verdict}")


def _echo_levels(result, label: str) -> None:
    click.echo(f"{'already finished' if result.skipped else 'finished'}: {result.run_dir}")
    click.echo(f"{label}:")
    heads = bool(result.levels) and "heads_kept" in result.levels[0]
    head_title = f" {'heads':>7}" if heads else ""
    head_cell = lambda row: f" {row['heads_kept']:>3}/{row['heads_total']:<3}" if heads else ""  # noqa: E731
    if result.levels and result.levels[0].get("task") == "language-model":
        click.echo(f"{'level':>5} {'density':>8}{head_title} {'test loss':>10} {'val loss':>9} {'next-char acc':>14}")
        for row in result.levels:
            click.echo(f"{row['level']:>5} {row['density']:>8.4f}{head_cell(row)} {row['test_loss']:>10.4f} "
                       f"{row['val_loss']:>9.4f} {row['test_accuracy']:>14.4f}")
        return
    click.echo(f"{'level':>5} {'density':>8}{head_title} {'test acc':>9} {'best val':>9} {'early-stop it':>14}")
    for row in result.levels:
        click.echo(f"{row['level']:>5} {row['density']:>8.4f}{head_cell(row)} {row['test_accuracy']:>9.4f} "
                   f"{row['best_val_accuracy']:>9.4f} {row['min_val_loss_step']:>14}")


#: How a run command prints an analysis's result (the others: their levels, or their one result).
_ECHOES = {"stability": lambda result, label: _echo_stability(result, label),
           "transfer": lambda result, label: _echo_transfer(result, label)}


def _refuse_pruner(method: str) -> None:
    from .catalog import PRUNERS

    if method in PRUNERS:
        raise SupermaskError(f"{method!r} prunes at initialisation and trains the weights: "
                             f"use `supermask prune --method {method}`")


def _prune_default(field: str) -> str:
    from supermask_imp.defaults import DEFAULT_EPOCHS

    return family_train_default(field, str(DEFAULT_EPOCHS))


@cli.command(name="prune")
@model_options
@click.option("--method", default="snip", show_default=True,
              help="random, magnitude, snip, grasp or synflow, or a list.")
@density_options("0.1", "Mask structure: unstructured, nm:N:M (the N of largest score in every group of M inputs; "
                        "nm:N:M:asp: the weights NVIDIA ASP skips stay dense), "
                        "channel (output channels by summed score, the next layer's inputs with them) or head (a block's heads "
                        "by summed score over their q/k/v rows and output columns).")
@click.option("--scope", default=None, type=click.Choice(["global", "layerwise"]),
              help="One score threshold over all layers, or one per layer. [default: global; layerwise with "
                   "--structure]")
@click.option("--init", "init", default="kaiming-normal", show_default=True,
              help="Weight init (see `supermask list inits`).")
@train_options(_prune_default)
@run_options
def prune_cmd(**kw) -> None:
    """Prune at initialisation (SNIP, GraSP, SynFlow, magnitude, random), then train the survivors.

    Training defaults are IMP's for the architecture's family (see `supermask imp -h`)."""
    from supermask_imp import PruneConfig

    from .sweep import expand_grid, parse_list

    invocation = _invocation(kw)
    overrides = train_overrides(kw)
    densities = resolve_densities(kw.pop("density"), kw.pop("sparsity"), None)  # None: the library's default
    seeds, methods = _seeds(kw), parse_list(kw.pop("method"), str, "--method")
    config = PruneConfig.for_arch(kw.pop("arch"), epochs=overrides.pop("epochs", None), **kw)
    config.train = dataclasses.replace(config.train, **overrides)
    configs = expand_grid(config, method=methods, density=densities, seed=seeds)
    _run_points(configs, invocation)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=PathOption())
@click.option("--out", default="report", show_default=True, type=PathOption(), help="Folder for the report files.")
@click.option("--force", is_flag=True, help="Replace files in --out that compare did not write (or that were edited).")
@click.option("--select", "select", multiple=True, metavar="FIELD=VALUE",
              help="Only the runs whose result.json has this value (repeatable; e.g. engine=imp, arch=conv4, "
                   "structure=head, control=none, method=edge-popup).")
@click.option("--figure-formats", default="png,pdf", show_default=True,
              help="The figures' formats, a list of png, pdf and svg (PDF and SVG are vector, for a paper).")
@click.option("--panel-size", default="9,5", show_default=True, metavar="W,H",
              help="Each panel's width and height in inches (a paper column: about 3.3,2.5).")
@click.option("--font-size", default=8.0, show_default=True, type=float, help="The figures' font size in points.")
def compare(paths: tuple[str, ...], out: str, force: bool, select: tuple[str, ...], figure_formats: str,
            panel_size: str, font_size: float) -> None:
    """Compare finished runs (run directories or whole run trees): tables and plots vs density."""
    from .report import FIGURE_FORMATS, FigureStyle
    from .report import compare as run_compare
    from .sweep import parse_list

    chosen = {}
    for item in select:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise SupermaskError(f"--select takes FIELD=VALUE (e.g. engine=imp), got {item!r}")
        chosen[field.strip()] = value.strip()
    formats = tuple(parse_list(figure_formats, str, "--figure-formats"))
    unknown = [f for f in formats if f not in FIGURE_FORMATS]
    if unknown or not formats:
        raise SupermaskError(f"--figure-formats takes {', '.join(FIGURE_FORMATS)}, got {figure_formats!r}")
    size = parse_list(panel_size, float, "--panel-size")
    if len(size) != 2 or not all(0.5 <= x <= 100 for x in size):
        raise SupermaskError(f"--panel-size takes a width and a height in inches (0.5-100), e.g. 3.3,2.5; got "
                             f"{panel_size!r}")
    if not 2 <= font_size <= 72:
        raise SupermaskError(f"--font-size takes points in 2-72, got {font_size:g}")
    style = FigureStyle(formats=formats, panel_size=(size[0], size[1]), font_size=font_size)
    table, problems, written = run_compare(paths, out, force=force, select=chosen, style=style)
    for problem in problems:
        click.echo(f"supermask: warning: left out {problem}", err=True)
    click.echo(table)
    click.echo("wrote " + ", ".join(str(p) for p in written))


@cli.command()
@click.argument("run_dir", type=PathOption(exists=True, file_okay=False))
@plugin_option
@click.option("--format", "fmt", required=True,
              type=click.Choice(list(EXPORT_FORMATS)),
              help="; ".join(f"{name}: {summary}" for name, summary in EXPORT_FORMATS.items()) + ".")
@click.option("--out", default=None, type=PathOption(),
              help="Output file, or a folder for <format>.safetensors [default: RUN_DIR/export/<format>.safetensors].")
@click.option("--force", is_flag=True, help="Replace an existing regular file that export did not write.")
@click.option("--data-root", default=None, type=PathOption(file_okay=False),
              help="Folder of downloaded data sets, for the round trip [default: the run's, else $SUPERMASK_DATA "
                   "or ~/.cache/supermask/data].")
def export(run_dir: str, fmt: str, out: Optional[str], force: bool, data_root: Optional[str]) -> None:
    """Export a finished run's ticket (for IMP: a level-<L> directory). The file is loaded back and
    re-evaluated on the test split before it is kept: it must reach the run's reported accuracy."""
    from pathlib import Path

    from .exports import export_run

    info = export_run(Path(run_dir), fmt, out, force=force, data_root=data_root)
    state_bytes = info["float32_state_dict_bytes"]
    ratio = info["bytes"] / state_bytes if state_bytes else float("inf")
    size = (f"{1 / ratio:.1f}x smaller than" if ratio < 1 else "as large as" if ratio == 1
            else f"{ratio:.1f}x the size of")
    checked = info["round_trip_accuracy"]
    checked = ("; masks loaded back identical" if checked is None
               else f"; loaded back: test accuracy {checked:.4f}")
    click.echo(f"wrote {info['path']}: {info['bytes']:,} bytes, {size} the float32 state dict "
               f"({state_bytes:,} bytes){checked}")


@cli.command(name="evaluate")
@click.argument("path", type=PathOption(exists=True, dir_okay=False))
@click.option("--data-root", default=None, type=PathOption(file_okay=False),
              help="Folder of downloaded data sets [default: $SUPERMASK_DATA or ~/.cache/supermask/data].")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda[:N].")
@plugin_option
def evaluate_cmd(path: str, data_root: Optional[str], device: str) -> None:
    """Re-evaluate an export (ticket, state-dict, torch-prune or sparse) on its data set's test split."""
    from pathlib import Path

    from .exports import evaluate_export

    r = evaluate_export(Path(path), data_root, device)
    reported = r["reported_test_accuracy"]
    same = "" if reported is None else f"; the run reported {reported:.4f}" + (
        " (the same)" if reported == r["test_accuracy"] else " (DIFFERENT)")
    if r.get("context"):  # a language model: per character
        click.echo(f"test loss {r['test_loss']:.4f} nats/char, next-character accuracy {r['test_accuracy']:.4f} on "
                   f"{r['dataset']} ({r['examples']} windows of {r['context']} characters){same}")
        return
    click.echo(f"test accuracy {r['test_accuracy']:.4f} on {r['dataset']} ({r['examples']} examples){same}")


@cli.command(name="generate")
@click.argument("path", type=PathOption(exists=True, dir_okay=False))
@click.option("--prompt", default="\n", show_default="a newline", help="The text to continue.")
@click.option("--chars", default=300, show_default=True, type=int, help="Characters to write.")
@click.option("--temperature", default=0.8, show_default=True, type=float,
              help="Sampling temperature; 0: always the most likely character.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sampling.")
@click.option("--data-root", default=None, type=PathOption(file_okay=False),
              help="Folder of downloaded data sets [default: $SUPERMASK_DATA or ~/.cache/supermask/data].")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda[:N].")
@plugin_option
def generate_cmd(path: str, prompt: str, chars: int, temperature: float, seed: int, data_root: Optional[str],
                 device: str) -> None:
    """Write text with a language model's export (ticket, state-dict, torch-prune or sparse)."""
    from pathlib import Path

    from .generation import generate_from_export

    r = generate_from_export(Path(path), prompt, chars, temperature, seed, data_root, device)
    click.echo(r["text"])


@cli.command(name="list")
@click.argument("what", required=False, type=click.Choice(["archs", "datasets", "methods", "inits"]))
@click.option("--verbose", "-v", is_flag=True, help="methods: also each search method's defaults and reference.")
@plugin_option
def list_(what: str, verbose: bool) -> None:
    """List the architectures, data sets, methods or initialisers (built in, and what --import registered);
    every kind when none is named."""
    from . import listing

    for kind in [what] if what else ["archs", "datasets", "methods", "inits"]:
        if what is None:
            click.echo(f"{kind}:")
        for item in listing.items(kind, verbose):
            click.echo(item if what else f"  {item}")


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
    except click.UsageError as exc:  # click's "Try ... for help" hint, kept on the one line
        if isinstance(exc, click.NoSuchOption) and exc.option_name == "--prune-rate":
            return _fail("there is no --prune-rate (a name the reference code uses for the kept fraction in one "
                         "place and the pruned one in another): --density is the fraction kept, --sparsity the "
                         "fraction removed")
        hint = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
        return _fail(exc.format_message() + hint)
    except click.ClickException as exc:
        return _fail(exc.format_message())
    except TrainingDiverged as exc:
        return _fail(f"run failed: {exc}", EXIT_FAILED)
    except SupermaskError as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except (_Interrupted, KeyboardInterrupt, click.exceptions.Abort):
        click.echo("supermask: interrupted; run the same command again to resume", err=True)
        return EXIT_INTERRUPTED
    finally:
        dist = _distributed()
        if dist is not None:
            dist.teardown()
    return 0


def _fail(message: str, status: int = EXIT_USAGE) -> int:
    if _is_main():
        click.echo(f"supermask: error: {message}", err=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
