"""The configs of the runs: what the user asked, as dataclasses, and how each is resolved.

:class:`ExperimentConfig` holds what every engine shares; each engine's config subclasses it
(:class:`SearchConfig` here, ``DenseConfig`` in :mod:`supermask.dense`, ``IMPConfig`` and
``PruneConfig`` in :mod:`supermask_imp`). ``supermask.resolve(config)`` returns the resolved,
frozen copy (:mod:`supermask.resolved`); its ``run_dir()`` is where the run lives.

Nothing here imports torch at import time: the command line resolves configs (``--dry-run``,
``list methods --verbose``) before any engine is imported.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from .catalog import DEFAULT_DENSITY, density_ramp_applies, imagefolder_path, torchvision_name
from .errors import SupermaskError
from .resolved import Resolvable, is_resolved, resolve, with_identity
from .structure import Structure
from .training.config import TrainConfig

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224
#: The architectures with fully connected layers to put dropout before.
DROPOUT_ARCHS = ("lenet_300_100", "conv2", "conv4", "conv6", "conv8", "vgg11", "vgg16", "vgg19")


@dataclass
class ExperimentConfig(Resolvable):
    """Fields every engine shares. Subclasses add their own (density, init, ...)."""

    arch: str = "conv6"
    dataset: str = "mnist-5k"
    classes: Optional[str] = None  # a class subset ("0-4", "0,2,5-9"), relabelled 0..n-1 (supermask.classes); None: all
    # a stratified part of the training split: a fraction in (0, 1) or a count (data.subsample_train); None: all
    train_subset: Optional[float] = None
    # the images converted to this shape ("3x32x32": channels repeated or reduced to luma, resized), so
    # that data of another shape can meet a network (a transferred ticket); None: as the data set has them
    input_shape: Optional[str] = None
    context: Optional[int] = None  # text data: the characters a window holds [64]; None for image data
    width: float = 1.0
    depth: Optional[int] = None  # transformer blocks (gpt_tiny, vit_tiny); None: the architecture's [4]
    # biases in the layers of builders that take them (lenet_300_100: True, open_lth's; conv2-8:
    # False, hidden-networks'); None: the architecture's own, except that a search resolves a
    # builder's True to False (strong tickets have no biases unless asked for, as in the references)
    bias: Optional[bool] = None
    dropout: float = 0.0  # before the fully connected layers (LeNet, Conv-N, VGG's classifier); 0: none
    image_size: Optional[int] = None  # image folders only: the crop size [224]; ignored (None) for other data
    seed: int = 0
    # What identifies the data's content (set when the data is first loaded; see data.fingerprint):
    # with it the hash holds no path, so moved data keeps its runs.
    data_fingerprint: Optional[str] = None
    train: TrainConfig = field(default_factory=TrainConfig)
    # Not part of the config hash: where things go and how they are read.
    out: str = "runs"
    device: str = "auto"
    data_root: Optional[str] = None
    download: bool = False
    num_workers: Optional[int] = None
    # Nor is how the training executes: same results (on the CPU, bit for bit).
    checkpoint_every: Optional[int] = None  # also checkpoint every N steps (besides every epoch)
    # keep checkpoint.prev.pt and the optimiser and RNG states when the run finishes (else removed)
    keep_checkpoints: bool = False
    channels_last: bool = False  # CUDA only
    compile: bool = False  # torch.compile the training forward
    tensorboard: bool = False  # also write TensorBoard scalars to <run>/tensorboard/
    wandb_project: Optional[str] = None  # also log to this Weights & Biases project (<run>/wandb/)

    ENGINE = "experiment"

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):  # train={"epochs": 1}: the fields of a TrainConfig
            import dataclasses

            known = {f.name for f in dataclasses.fields(TrainConfig)}
            unknown = sorted(set(self.train) - known)
            if unknown:
                raise SupermaskError(f"train: no training field {unknown[0]!r} (fields: {', '.join(sorted(known))})")
            self.train = TrainConfig(**self.train)
        elif not isinstance(self.train, TrainConfig):
            raise SupermaskError(f"train must be a TrainConfig or a dict of its fields, got {type(self.train).__name__}")

    def _resolve_fields(self) -> None:
        from .classes import canonical_classes
        from .data import DATASETS
        from .data.text import is_text
        from .models import MODELS

        self.classes = canonical_classes(self.classes)
        self.train_subset = check_train_subset(self.train_subset)
        if self.input_shape is not None:
            from .data.datasets import parse_input_shape

            channels, size = parse_input_shape(self.input_shape)
            self.input_shape = f"{channels}x{size}x{size}"
            if imagefolder_path(self.dataset) is not None:
                raise SupermaskError("--input-shape applies to in-memory data sets; an image folder takes --image-size")
        if torchvision_name(self.arch) is not None:
            from .models.torchvision_models import check_torchvision_name

            check_torchvision_name(torchvision_name(self.arch))
        else:
            MODELS.get(self.arch)
        if imagefolder_path(self.dataset) is not None:
            if self.image_size is None:
                self.image_size = DEFAULT_IMAGE_SIZE
            _positive_size(self.image_size)
            _check_batch_fits(self.image_size, self.train.batch_size)
        elif is_text(self.dataset):
            self._resolve_text()
        else:
            DATASETS.get(self.dataset)
            if self.context is not None:
                raise SupermaskError(f"--context applies to text data sets, not {self.dataset}")
            if self.image_size is not None:
                log.warning("--image-size applies to image folders only; ignored for %s", self.dataset)
                self.image_size = None
        self._check_task()
        if self.depth is not None:
            self._check_depth()
        if self.bias is not None:
            self._check_builder_option("bias", "--bias/--no-bias")
            if not isinstance(self.bias, bool):
                raise SupermaskError(f"bias must be true or false, got {self.bias!r}")
        if not (self.width > 0 and math.isfinite(self.width)):
            raise SupermaskError(f"width must be positive, got {self.width!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise SupermaskError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.dropout > 0 and self.arch not in DROPOUT_ARCHS:
            raise SupermaskError(f"--dropout applies to {', '.join(DROPOUT_ARCHS)}, not {self.arch}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise SupermaskError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.checkpoint_every is not None and (not isinstance(self.checkpoint_every, int)
                                                  or self.checkpoint_every <= 0):
            raise SupermaskError(f"checkpoint every must be a positive number of steps, got {self.checkpoint_every!r}")
        self.train = resolve(self.train)
        self._refuse_cuda_only_options()

    def _check_task(self) -> None:
        """The architecture models what the data holds: a classifier images, a language model text."""
        from .data.text import is_text
        from .models.registry import model_task

        data_task = "language-model" if is_text(self.dataset) else "image-classification"
        if model_task(self.arch) != data_task:
            if data_task == "language-model":
                raise SupermaskError(f"{self.arch} classifies images; {self.dataset} is text: give it a language "
                                     f"model (gpt_tiny)")
            raise SupermaskError(f"{self.arch} is a language model; {self.dataset} holds images: give it a text data "
                                 f"set (tinyshakespeare, text:PATH)")

    def _builder_parameters(self) -> dict:
        """The parameters of the architecture's builder (none for a torchvision model)."""
        import inspect

        from .models import MODELS

        if torchvision_name(self.arch) is not None:
            return {}
        return dict(inspect.signature(MODELS.get(self.arch)).parameters)

    def _check_builder_option(self, name: str, option: str) -> None:
        """``name`` is a parameter of the architecture's builder; else refused, naming those that take it."""
        import inspect

        from .models import MODELS

        if name not in self._builder_parameters():
            takes = [n for n in MODELS.names() if name in inspect.signature(MODELS.get(n)).parameters]
            raise SupermaskError(f"{option} applies to {', '.join(takes)}, not {self.arch}")

    def _builder_default(self, name: str):
        """The default of ``name`` in the architecture's builder (None: it takes no such parameter)."""
        import inspect

        parameter = self._builder_parameters().get(name)
        return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default

    def _check_depth(self) -> None:
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or not 1 <= self.depth <= 1000:
            raise SupermaskError(f"depth must be a number of blocks in 1..1000, got {self.depth!r}")
        self._check_builder_option("depth", "--depth")

    def _resolve_text(self) -> None:
        """A text data set: its window length (``--context``) resolved; options for images refused."""
        from .data.text import DEFAULT_CONTEXT, check_context, text_path

        if text_path(self.dataset) is None:
            from .data import DATASETS

            DATASETS.get(self.dataset)
        for option, value in (("--classes", self.classes), ("--input-shape", self.input_shape),
                              ("--image-size", self.image_size)):
            if value is not None:
                raise SupermaskError(f"{option} applies to image data sets, not the text {self.dataset}")
        self.context = check_context(DEFAULT_CONTEXT if self.context is None else self.context)

    def _refuse_cuda_only_options(self) -> None:
        """``--precision bf16|16`` and ``--channels-last`` run on CUDA only: on another device they are
        refused, so that a config never records an execution that did not happen."""
        from .training.device import device_type

        where = device_type(self.device)
        if where == "cuda":
            return
        if self.train.precision != "32":
            raise SupermaskError(f"--precision {self.train.precision} trains under CUDA autocast; on {where} a run "
                                 f"trains in float32: leave --precision out, or run on a GPU (--device cuda)")
        if self.channels_last:
            raise SupermaskError(f"--channels-last applies on CUDA only; on {where} leave it out")

    def model_kwargs(self) -> dict:
        return {**({"width": self.width} if self.width != 1.0 else {}),
                **({"depth": self.depth} if self.depth is not None else {}),
                **({"bias": self.bias} if self.bias is not None else {})}

    def layer_types(self, layers):
        """``layers`` (an engine's variant) with this config's dropout."""
        return layers.with_dropout(self.dropout)

    def execution(self) -> dict:
        """The keyword arguments of :func:`~supermask.training.train` that say how, not what."""
        return {"num_workers": self.num_workers, "checkpoint_every": self.checkpoint_every,
                "channels_last": self.channels_last, "compile": self.compile}

    def run_dir(self):
        """This config's run directory: the resolved config's (the data is read once to fingerprint
        it, if the config does not name its fingerprint yet)."""
        from .runs import RunDir, config_hash, run_path

        if not is_resolved(self):
            return resolve(self).run_dir()
        config = identify(self)
        return RunDir(run_path(Path(self.out), self.ENGINE, self.arch, self.dataset, config_hash(config), self.seed))


def load_data(config: ExperimentConfig):
    """The config's data and the input it gives the model: ``(Dataset, InputSpec)``."""
    from .data import load_dataset

    data = load_dataset(config.dataset, config.data_root, config.download, config.image_size or DEFAULT_IMAGE_SIZE,
                        classes=config.classes, input_shape=config.input_shape, context=config.context,
                        train_subset=config.train_subset)
    return data, spec_of(data.info)


def _check_scaled_fan(value, density: float):
    """``scaled_fan`` in its canonical form: False, True (the paper's rule, also given as "paper") or
    "reference-code" (one minus the density: refused at density 1, where it scales the fan to 0)."""
    from .nn.init import SCALED_FAN_RULES

    if value == "paper":
        return True
    if isinstance(value, bool):
        return value
    if value not in SCALED_FAN_RULES:
        raise SupermaskError(f"--scaled-fan-rule must be one of {', '.join(SCALED_FAN_RULES)}, got {value!r}")
    if density >= 1.0:
        raise SupermaskError("--scaled-fan-rule reference-code scales the fan by 1 - density: at density 1 that is "
                             "0; use the paper's rule or no scaled fan")
    return value


def check_train_subset(value) -> Optional[float]:
    """``--train-subset``: None, a fraction in (0, 1), or a whole count of at least 1 (an int)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SupermaskError(f"--train-subset must be a fraction in (0, 1) or a count of examples, got "
                                 f"{value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0 \
            or (value >= 1 and not float(value).is_integer()):
        raise SupermaskError(f"--train-subset must be a fraction in (0, 1) or a count of examples, got {value!r}")
    return int(value) if value >= 1 else float(value)


def spec_of(info):
    """The :class:`~supermask.models.InputSpec` a data set's ``info`` gives the model."""
    from .models import InputSpec

    return InputSpec(info.in_channels, info.image_size, info.num_classes, task=info.task, context=info.context or 0)


def identified(config: ExperimentConfig, data) -> ExperimentConfig:
    """``config`` naming the fingerprint of ``data`` (refusing data whose content differs from the
    fingerprint the config already names)."""
    from .data import fingerprint

    found = fingerprint(data)
    if config.data_fingerprint is None:
        return with_identity(config, data_fingerprint=found)
    if config.data_fingerprint != found:
        raise SupermaskError(f"{config.dataset}: the data's content (fingerprint {found}) is not the data this "
                             f"config names ({config.data_fingerprint})")
    return config


def config_from_record(cls: type, data, what: str):
    """A resolved ``cls`` from a run's ``config.json`` (``data``); a damaged or foreign one is a
    ``SupermaskError`` naming what is wrong (``what``: "a search run's config")."""
    import dataclasses

    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        raise SupermaskError(f"config.json is not {what}")
    data = dict(data)
    train_fields = dict(data.pop("train"))
    known = {f.name for f in dataclasses.fields(cls)}
    known_train = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        train_fields["milestones"] = tuple(train_fields.get("milestones") or ())
        train = TrainConfig(**{k: v for k, v in train_fields.items() if k in known_train})
        return resolve(cls(**{k: v for k, v in data.items() if k in known}, train=train))
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, SupermaskError):
            raise SupermaskError(f"config.json: {exc}") from None
        raise SupermaskError(f"config.json is not {what} ({type(exc).__name__}: {exc})") from None


def identify(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` (resolved) naming its data's fingerprint: the data is read to compute it."""
    return config if config.data_fingerprint is not None else identified(config, load_data(config)[0])


def _positive_size(size) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise SupermaskError(f"image size must be a positive integer, got {size!r}")


def _physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_batch_fits(image_size: int, batch_size) -> None:
    """Refuse an image size whose one batch of RGB float32 images outgrows this machine's memory."""
    memory = _physical_memory()
    batch = batch_size if isinstance(batch_size, int) and batch_size > 0 else 1
    needed = batch * 3 * image_size * image_size * 4
    if memory is not None and needed > memory:
        raise SupermaskError(f"image size {image_size}: one batch of {batch} images takes {needed / 2**30:,.1f} GiB "
                             f"as float32, more than this machine's {memory / 2**30:.0f} GiB of memory")


# -- the strong-ticket search ----------------------------------------------------------------------

#: Below this starting density Bernoulli's sampled network rarely learns (measured: docs/fidelity.md).
BERNOULLI_LOW_START = 0.1
#: Fields that only some methods read: None unless the chosen method uses them.
METHOD_OPTIONS = ("rerandomize_every", "rerandomize_rate", "score_l2", "freeze_every", "bernoulli_eval",
                  "rescale_weights", "density_ramp_epochs")


@dataclass
class SearchConfig(ExperimentConfig):
    """A strong-ticket search. Fields left None take the method's default (see
    ``supermask list methods --verbose``), then the search's generic ones
    (:data:`supermask.catalog.GENERIC_SEARCH_DEFAULTS`); resolving writes them into the config, so
    they are in ``config.json`` and the hash."""

    method: str = "edge-popup"
    density: Optional[float] = None  # None: DEFAULT_DENSITY, or N/M with an N:M structure
    structure: str = "unstructured"  # "nm:N:M" (supermask.nn.nm): N kept in every group of M; "channel"
    # (supermask.nn.channels): whole output channels, density = the fraction of each layer's channels kept
    scope: Optional[str] = None  # layerwise | global
    init: Optional[str] = None  # weight initialiser (supermask list inits)
    # scale the init's fan: False; True, the density (Ramanujan et al. 2020's text; "paper" resolves to
    # True); "reference-code", one minus the density (hidden-networks' and biprop's builder.py)
    scaled_fan: Optional[Union[bool, str]] = None
    score_init: Optional[str] = None
    learned_bn: bool = False
    # Method options (None: the method's default; refused for a method that does not read them).
    rerandomize_every: Optional[int] = None  # IteRand: K, in steps
    rerandomize_rate: Optional[float] = None  # IteRand: r
    score_l2: Optional[float] = None  # Gem-Miner: lambda of the penalty lambda * sum(s^2) in the loss
    freeze_every: Optional[int] = None  # Gem-Miner: epochs between two freezing rounds
    bernoulli_eval: Optional[str] = None  # Bernoulli: "sample" (a seeded sample of the mask) or "threshold"
    rescale_weights: Optional[bool] = None  # Bernoulli: Zhou et al.'s dynamic weight rescaling
    # biprop with --scope global at density <= 0.5: the kept fraction falls from 0.5 to the density
    # over these first epochs (its main.py, cubic; 0: the density from the first step); None otherwise
    density_ramp_epochs: Optional[int] = None
    # the method's revision (Method.revision), written by resolving: a method that computes something
    # else under the same options moves the hash
    method_revision: Optional[int] = None

    ENGINE = "search"

    def _resolve_density_ramp(self, given: bool) -> None:
        """The ramp counts where it can act (global scope, density at most 0.5): elsewhere a given one
        is refused and the method's default is dropped (None: out of the hash)."""
        ramp = self.density_ramp_epochs
        if ramp is None:
            return
        if not isinstance(ramp, int) or isinstance(ramp, bool) or ramp < 0:
            raise SupermaskError(f"density ramp epochs must be a whole number >= 0, got {ramp!r}")
        if not density_ramp_applies(self.scope, self.density) or ramp == 0:
            if given and ramp:
                raise SupermaskError("--density-ramp-epochs applies with --scope global at a density of at most "
                                     f"0.5 (this search: scope {self.scope}, density {self.density:g})")
            self.density_ramp_epochs = None

    def _resolve_fields(self) -> None:
        from .methods import METHODS
        from .nn import SCORE_INITS, WEIGHT_INITS, check_density, check_scope
        from .nn.init import canonical

        method = METHODS.get(self.method)
        structure = Structure.parse(self.structure)
        if structure.structured and structure.kind not in method.structures:
            owners = [m for m in METHODS if structure.kind in METHODS.get(m).structures]
            raise SupermaskError(f"--structure {structure} applies to {', '.join(owners)}, not {self.method}")
        self.structure = str(structure)
        # channel: the density is the fraction of each layer's channels; the chain is checked when the
        # model is built (before any file is written)
        self.density = check_density(structure.density(self.density, DEFAULT_DENSITY))
        if structure.structured:  # refuses what the structure cannot select; None: the method's default
            structure.scope(self.scope, comparable_scores=True)
        for name in METHOD_OPTIONS:
            if getattr(self, name) is not None and name not in method.options:
                owners = [m for m in METHODS if name in METHODS.get(m).options]
                raise SupermaskError(f"--{name.replace('_', '-')} applies to {' and '.join(owners)} only, "
                                     f"not {self.method}")
        ramp_given = self.density_ramp_epochs is not None
        for name, value in method.search_defaults().items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.train = self.train.with_defaults(**method.train_defaults_for(self.train.epochs, self.train.iterations))
        if self.method_revision is not None and self.method_revision != method.revision:
            raise SupermaskError(f"this config was written for revision {self.method_revision} of {self.method}; "
                                 f"this version computes revision {method.revision} (see docs/fidelity.md): "
                                 f"leave method_revision out to run the current one")
        self.method_revision = method.revision
        check_scope(self.scope)
        if self.rerandomize_every is not None and (not isinstance(self.rerandomize_every, int)
                                                   or self.rerandomize_every <= 0):
            raise SupermaskError(f"rerandomize every must be a positive number of steps, got {self.rerandomize_every!r}")
        if self.rerandomize_rate is not None and not (0.0 < self.rerandomize_rate <= 1.0):
            raise SupermaskError(f"rerandomize rate must be in (0, 1], got {self.rerandomize_rate!r}")
        if self.score_l2 is not None and not (math.isfinite(self.score_l2) and self.score_l2 >= 0):
            raise SupermaskError(f"score L2 must be >= 0, got {self.score_l2!r}")
        if self.freeze_every is not None and (not isinstance(self.freeze_every, int) or self.freeze_every <= 0):
            raise SupermaskError(f"freeze every must be a positive number of epochs, got {self.freeze_every!r}")
        if self.bernoulli_eval is not None and self.bernoulli_eval not in ("sample", "threshold"):
            raise SupermaskError(f"bernoulli eval must be sample or threshold, got {self.bernoulli_eval!r}")
        self._resolve_density_ramp(ramp_given)
        self.scaled_fan = _check_scaled_fan(self.scaled_fan, self.density)
        self.init = canonical(self.init)
        WEIGHT_INITS.get(self.init)
        self.score_init = canonical(self.score_init)
        SCORE_INITS.get(self.score_init)
        super()._resolve_fields()
        if self.bias is None and self._builder_default("bias") is True:
            # a strong ticket's network has no biases unless asked for (--bias): the references' have
            # none (hidden-networks', biprop's and Gem-Miner's FC nets; Zhou et al.'s are zero and
            # frozen); a builder with biases by default (lenet_300_100, open_lth's: IMP and dense
            # training keep them) is built without them
            self.bias = False
        if self.method == "bernoulli" and self.density < BERNOULLI_LOW_START:
            log.warning("bernoulli starts its masks at density %g: the sampled network passes almost no signal "
                        "and may never learn (LeNet at 0.05: 10%%); the reference starts at 0.5 (--density 0.5)",
                        self.density)
