"""What is built in, readable without importing torch.

``supermask --help`` and ``supermask list ...`` read this module only, so they answer at
once. The registries (``MODELS``, ``DATASETS``, ``METHODS``, ``PRUNERS``, the inits) hold the
implementations and import torch; ``tests/test_catalog.py`` checks that each holds exactly
the built-in names listed here. A built-in search method's card (its summary, defaults and
reference) lives here and only here: ``Method.builtin`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TORCHVISION_PREFIX = "torchvision/"
IMAGEFOLDER_PREFIX = "imagefolder:"
TEXT_PREFIX = "text:"  # any UTF-8 text file, character-level (supermask.data.text)


def torchvision_name(arch: str) -> "str | None":
    """``torchvision/<name>`` -> ``<name>``; None for an architecture of the zoo (the one reading of
    the prefix)."""
    return arch[len(TORCHVISION_PREFIX):] if arch.startswith(TORCHVISION_PREFIX) else None


def imagefolder_path(dataset: str) -> "str | None":
    """``imagefolder:<path>`` -> ``<path>``; None for a registered data set (the one reading of the prefix)."""
    return dataset[len(IMAGEFOLDER_PREFIX):] if dataset.startswith(IMAGEFOLDER_PREFIX) else None

ARCHITECTURES = ("conv2", "conv4", "conv6", "conv8", "gpt_tiny", "gpt_tiny_untied", "lenet_300_100", "resnet18", "resnet20", "resnet56",
                 "vgg11", "vgg16", "vgg19", "vit_tiny")
DATASETS = ("cifar10", "cifar100", "fashion-mnist", "kmnist", "mnist", "mnist-5k", "svhn", "tinyshakespeare")
WEIGHT_INITS = ("kaiming-normal", "kaiming-uniform", "signed-constant", "signed-constant-glorot",
                "unsigned-constant", "xavier-normal")
SCORE_INITS = ("kaiming-normal", "kaiming-uniform", "kaiming-uniform-relu", "uniform")


@dataclass(frozen=True)
class MethodCard:
    """What describes a search method without running it: the CLI's help and ``list`` show it."""

    summary: str
    reference: str = ""  # the paper and the reference code the defaults come from
    defaults: dict = field(default_factory=dict)  # SearchConfig fields, e.g. {"init": "kaiming-normal"}
    train_defaults: dict = field(default_factory=dict)  # TrainConfig fields, e.g. {"lr": 100.0}
    options: tuple[str, ...] = ()  # the SearchConfig fields that only this method reads
    density_is_outcome: bool = False  # the mask's density is learned, not imposed (Bernoulli)
    # mask structures it supports: "nm" (N:M, supermask.nn.nm), "channel" (supermask.nn.channels)
    structures: tuple[str, ...] = ("unstructured",)
    # bumped when the method computes something else under the same options (a config records it,
    # so its hash moves and no run directory of the old computation is taken for the new one)
    revision: int = 1
    # the lr default (train_defaults["lr"]) is tuned for this many epochs; a longer run takes
    # lr x lr_tuned_epochs / epochs (see scaled_lr); None: one lr at every length
    lr_tuned_epochs: "int | None" = None


#: What a training field left None resolves to when neither the engine nor the method sets it
#: (``TrainConfig``'s lr and weight decay: edge-popup's small-scale setting).
GENERIC_TRAIN_DEFAULTS = {"lr": 0.1, "weight_decay": 1e-4}

#: The search's defaults where a method sets none (edge-popup's: Ramanujan et al. 2020).
GENERIC_SEARCH_DEFAULTS = {"scope": "layerwise", "init": "signed-constant", "scaled_fan": False,
                           "score_init": "kaiming-uniform"}



DEFAULT_DENSITY = 0.5  # a search's kept fraction when none is given: k = 50%, the edge-popup paper's best Conv-6 point


def density_ramp_applies(scope: str, density: float) -> bool:
    """biprop's density ramp acts with one threshold over all layers at a density of at most one half
    (its main.py); elsewhere a search resolves it to None."""
    return scope == "global" and density <= 0.5


def scaled_lr(lr: float, tuned_epochs: "int | None", epochs: int, iterations: "int | None") -> float:
    """A method's lr default for a run of ``epochs``: ``lr`` up to ``tuned_epochs``, beyond them
    ``lr * tuned_epochs / epochs`` (lr times epochs held: how far the scores move over the run, which
    for Gem-Miner decides whether the rounded mask stays at its target after the last freezing
    round). A run given ``iterations`` (its epochs' length unknown here) keeps ``lr``."""
    if tuned_epochs is None or iterations is not None or epochs <= tuned_epochs:
        return lr
    return lr * tuned_epochs / epochs


def default_settings(defaults: dict, train_defaults: dict) -> tuple[dict, dict]:
    """(search fields, training fields) that a method with these ``defaults`` and ``train_defaults``
    resolves fields left None to: its own, then the search's generic ones, then the training
    loop's. The resolver and ``list methods --verbose`` both read them here."""
    return {**GENERIC_SEARCH_DEFAULTS, **defaults}, {**GENERIC_TRAIN_DEFAULTS, **train_defaults}


SEARCH_METHODS = {
    "edge-popup": MethodCard(
        "Ramanujan et al. 2020: learned scores, top-k mask, straight-through gradient",
        reference="Ramanujan et al. 2020, 'What's Hidden in a Randomly Weighted Neural Network?'; "
                  "allenai/hidden-networks (configs for Conv-2/4/6/8: signed constant, SGD lr 0.1, wd 1e-4, cosine)",
        structures=("unstructured", "nm", "channel", "head"),
    ),
    "bernoulli": MethodCard(
        "Zhou et al. 2019: Bernoulli(sigmoid(scores)) masks sampled each step and at evaluation; the density is "
        "an outcome",
        reference="Zhou et al. 2019, 'Deconstructing Lottery Tickets: Zeros, Signs, and the Supermask'; "
                  "uber-research/deconstructing-lottery-tickets (README's train_supermask.py command: SGD lr 100, "
                  "constant, batch 250; masked_networks.py: glorot_normal weights; l2 on weights only)",
        defaults={"init": "xavier-normal", "bernoulli_eval": "sample", "rescale_weights": False},
        train_defaults={"lr": 100.0, "weight_decay": 0.0},
        options=("bernoulli_eval", "rescale_weights"),
        density_is_outcome=True,
        revision=2,  # 2: --rescale-weights takes the gradient through the mask's sum, as the reference
    ),
    "biprop": MethodCard(
        "Diffenderfer & Kailkhura 2021: edge-popup mask over binarised weights sign(w)*alpha per layer",
        reference="Diffenderfer & Kailkhura 2021, 'Multi-Prize Lottery Ticket Hypothesis'; chrundle/biprop "
                  "(smallscale configs: kaiming_normal, scale_fan (builder.py: the fan times one minus its rate, "
                  "which is the kept fraction), SGD lr 0.1, wd 1e-4, cosine; main.py: with global pruning "
                  "at most half kept, the kept fraction falls from 0.5 to the target over 10 epochs)",
        defaults={"init": "kaiming-normal", "scaled_fan": "reference-code", "density_ramp_epochs": 10},
        options=("density_ramp_epochs",),
        structures=("unstructured", "nm"),
    ),
    "gem-miner": MethodCard(
        "Sreenivasan et al. 2022: [0, 1] scores rounded at 0.5, lambda*sum(s^2) in the loss, periodic global "
        "freezing",
        reference="Sreenivasan et al. 2022, 'Rare Gems: Finding Lottery Tickets at Initialization'; "
                  "ksreenivasan/pruning_is_enough (hc_iter, BottomK, L2 lmbda, iter_period 5, wd 0, SGD lr 0.1)",
        defaults={"scope": "global", "score_l2": 1e-4, "freeze_every": 5},
        # lr 1.0 for 10 epochs, lr x 10 / epochs beyond, is ours, measured on the bundled data
        # (supermask.methods.gem_miner); the reference's configs use 0.01-0.1 over 150+ CIFAR epochs.
        train_defaults={"lr": 1.0, "weight_decay": 0.0},
        lr_tuned_epochs=10,
        options=("score_l2", "freeze_every"),
    ),
    "iterand": MethodCard(
        "Chijiwa et al. 2021: edge-popup, pruned weights re-drawn with probability r every K steps",
        reference="Chijiwa et al. 2021, 'Pruning Randomly Initialized Neural Networks with Iterative Randomization'; "
                  "dchiji-ntt/iterand (config.yaml: kaiming_uniform weights and scores, rerand_freq 300 "
                  "iterations, rerand_lambda 0.1)",
        defaults={"init": "kaiming-uniform", "score_init": "kaiming-uniform-relu", "rerandomize_every": 300,
                  "rerandomize_rate": 0.1},
        options=("rerandomize_every", "rerandomize_rate"),
        structures=("unstructured", "nm"),
        revision=2,  # 2: the re-draws after steps K-1, 2K-1, ... (before steps K, 2K), as the reference
    ),
}

#: The dense baseline's training defaults beside TrainConfig's (``supermask train``): SGD lr 0.01,
#: the edge-popup reference's dense baselines for Conv-2/4/6/8.
DENSE_TRAIN_DEFAULTS = {"lr": 0.01}
#: How a language model trains, dense or under IMP: nanoGPT's ``config/train_shakespeare_char.py``
#: optimiser (AdamW, lr 1e-3, weight decay 0.1, batch 64, cosine decay; its 100 warm-up iterations
#: and beta2 0.99 are not taken: torch's AdamW betas).
LANGUAGE_MODEL_TRAIN_DEFAULTS = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1, "batch_size": 64,
                                 "momentum": 0.0, "schedule": "cosine"}
#: The built-in language models (the registry knows a user's: ``register_model(..., task=...)``).
LANGUAGE_MODELS = ("gpt_tiny", "gpt_tiny_untied")

#: Pruning at initialisation (``supermask prune``): weak tickets, trained.
PRUNERS = {
    "random": "a uniformly random mask of the density, then training",
    "magnitude": "the largest |w| at initialisation, then training",
    "snip": "Lee et al. 2019: |g * w| on one batch, then training",
    "grasp": "Wang et al. 2020: keep the highest w * Hg (gradient-flow preserving), then training",
    "synflow": "Tanaka et al. 2020: iterative, data-free synaptic flow, then training",
}

#: The other ticket finders: (name, command, summary).
OTHER_FINDERS = (
    ("imp", "imp", "Frankle & Carbin 2019: iterative magnitude pruning with rewinding"),
    ("imp-early-bird-magnitude", "imp --early-bird magnitude",
     "You et al. 2020, unstructured: dense training stops once IMP's mask settles"),
    ("early-bird-channel", "imp --early-bird channel",
     "You et al. 2020: BatchNorm-γ channel ticket under L1, trained as a smaller network"),
    ("dense", "train", "the dense baseline, weights trained"),
)

#: The export formats (``supermask export --format``), in the order the help lists them, and what
#: each holds; :data:`supermask.exports.EXPORTS` implements exactly these (a test checks it).
EXPORT_FORMATS = {
    "mask": "the {0,1} masks",
    "state-dict": "the plain network, weights x mask",
    "torch-prune": "torch.nn.utils.prune's weight_orig + weight_mask",
    "ticket": "a strong ticket's seed and packed mask",
    "sparse": "as state-dict, masked Linear weights as CSR",
    "compact-dense": "a channel ticket as the smaller plain network (removed channels gone)",
}
