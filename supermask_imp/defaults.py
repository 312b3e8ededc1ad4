"""IMP defaults per architecture family, and where each comes from (one reference per family).

| family | optimiser | batch | schedule | pruning | BatchNorm γ | source |
| --- | --- | --- | --- | --- | --- | --- |
| lenet_300_100 | Adam 1.2e-3 | 60 | constant | layerwise: fc 0.2, output 0.1 | (none) | Frankle & Carbin 2019, Fig. 2 / App. G |
| conv2 | Adam 2e-4 | 60 | constant | layerwise: conv 0.1, fc 0.2, output 0.1 | (none) | Frankle & Carbin 2019, Fig. 2 |
| conv4 | Adam 3e-4 | 60 | constant | layerwise: conv 0.1, fc 0.2, output 0.1 | (none) | Frankle & Carbin 2019, Fig. 2 |
| conv6 | Adam 3e-4 | 60 | constant | layerwise: conv 0.15, fc 0.2, output 0.1 | (none) | Frankle & Carbin 2019, Fig. 2 |
| conv8 | Adam 3e-4 | 60 | constant | layerwise: conv 0.15, fc 0.2, output 0.1 | (none) | extrapolated from Conv-6 (not in the paper) |
| resnet18/20/56 | SGD 0.1, momentum 0.9, wd 1e-4 | 128 | ×0.1 at 50% and 75% (80/120 of 160 epochs), no warmup | global 0.2 | U(0, 1) | open_lth ``models/cifar_resnet.py`` default_hparams |
| vgg11/16/19 | as ResNet | 128 | as ResNet | global 0.2, the classifier unpruned | U(0, 1) | open_lth ``models/cifar_vgg.py`` (``pruning_layers_to_ignore='fc.weight'``) |
| gpt_tiny, gpt_tiny_untied | AdamW 1e-3, wd 0.1 | 64 | cosine | global 0.2 | (LayerNorm: ones) | nanoGPT ``config/train_shakespeare_char.py`` (without its 100 warm-up iterations and beta2 0.99) |
| torchvision/* | SGD 0.1 (0.4 at batch 1024, scaled), momentum 0.9, wd 1e-4 | 128 | 5 warmup epochs, then ×0.1 at 50% and 75% | global 0.2 | U(0, 1) | open_lth ``models/imagenet_resnet.py`` |

The papers train LeNet 50K iterations and Conv-2/4/6 20K/25K/30K iterations on the full data
sets; the default here is 20 epochs a level (``--iterations`` sets an exact count). Every
value is written out in ``config.json``, and any option given on the command line wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from supermask.catalog import LANGUAGE_MODEL_TRAIN_DEFAULTS
from supermask.training import TrainConfig


@dataclass(frozen=True)
class FamilyDefaults:
    optimizer: str
    lr: float
    batch_size: int
    scope: str
    conv_fraction: float
    fc_fraction: float
    output_fraction: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    keep_unpruned: tuple[str, ...] = ()  # weights never pruned (open_lth's pruning_layers_to_ignore)
    bn_init: str = "ones"  # BatchNorm γ at initialisation: "ones" (PyTorch) or "uniform" U(0, 1) (open_lth)


ADAM_CONV = dict(optimizer="adam", batch_size=60, scope="layerwise", fc_fraction=0.2, output_fraction=0.1)
FAMILIES = {
    "lenet_300_100": FamilyDefaults(lr=1.2e-3, conv_fraction=0.2, **ADAM_CONV),
    "conv2": FamilyDefaults(lr=2e-4, conv_fraction=0.1, **ADAM_CONV),
    "conv4": FamilyDefaults(lr=3e-4, conv_fraction=0.1, **ADAM_CONV),
    "conv6": FamilyDefaults(lr=3e-4, conv_fraction=0.15, **ADAM_CONV),
    "conv8": FamilyDefaults(lr=3e-4, conv_fraction=0.15, **ADAM_CONV),
}
CIFAR_DEEP = dict(optimizer="sgd", lr=0.1, batch_size=128, scope="global", conv_fraction=0.2, fc_fraction=0.2,
                  output_fraction=0.2, momentum=0.9, weight_decay=1e-4, schedule="step", bn_init="uniform")
FAMILIES.update({name: FamilyDefaults(**CIFAR_DEEP) for name in ("resnet18", "resnet20", "resnet56")})
FAMILIES.update({name: FamilyDefaults(**CIFAR_DEEP, keep_unpruned=("classifier.weight",))
                 for name in ("vgg11", "vgg16", "vgg19")})
#: Character-level GPTs: nanoGPT's optimiser (supermask.catalog.LANGUAGE_MODEL_TRAIN_DEFAULTS, the
#: dense baseline's too), global magnitude pruning 0.2 a level as for the deep nets.
FAMILIES.update({name: FamilyDefaults(**LANGUAGE_MODEL_TRAIN_DEFAULTS, scope="global", conv_fraction=0.2,
                                      fc_fraction=0.2, output_fraction=0.2) for name in ("gpt_tiny", "gpt_tiny_untied")})
DEEP = FamilyDefaults(**{**CIFAR_DEEP, "warmup_epochs": 5.0})  # torchvision models: open_lth's ImageNet ResNet

DEFAULT_EPOCHS = 20


def family_defaults(arch: str) -> FamilyDefaults:
    return FAMILIES.get(arch, DEEP)


def default_train_config(arch: str, epochs: int = DEFAULT_EPOCHS) -> TrainConfig:
    d = family_defaults(arch)
    milestones = (0.5 * epochs, 0.75 * epochs) if d.schedule == "step" else ()
    return TrainConfig(epochs=epochs, batch_size=d.batch_size, optimizer=d.optimizer, lr=d.lr, momentum=d.momentum,
                       weight_decay=d.weight_decay, schedule=d.schedule, warmup_epochs=d.warmup_epochs,
                       milestones=milestones)


def _collapse(names: list[str]) -> str:
    """``conv2, conv4, conv6`` -> ``conv2/4/6``: one family's sizes together."""
    groups: dict[str, list[str]] = {}
    for name in names:
        stem = name.rstrip("0123456789")
        groups.setdefault(stem if stem != name else name, []).append(name[len(stem):] if stem != name else "")
    return ", ".join(stem + "/".join(sizes) if sizes[0] else stem for stem, sizes in groups.items())


def family_default_text(field: str) -> str:
    """What ``--<field>`` defaults to in each family, for the CLI's help: ``adam lenet_300_100,
    conv2/4/6/8; sgd resnet18/20/56, vgg11/16/19, other models``."""
    by_value: dict[object, list[str]] = {}
    for arch, defaults in FAMILIES.items():
        by_value.setdefault(getattr(defaults, field), []).append(arch)
    deep = getattr(DEEP, field)
    parts = []
    for value, archs in by_value.items():
        others = ", other models" if value == deep else ""
        parts.append(f"{_format(value)} {_collapse(archs)}{others}")
    if deep not in by_value:
        parts.append(f"{_format(deep)} other models")
    return "; ".join(parts)


def _format(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def family_summary() -> str:
    """One clause per family for the CLI's help: ``lenet_300_100: adam 0.0012, batch 60, constant, ...``."""
    def clause(d: FamilyDefaults) -> str:
        momentum = f" momentum {d.momentum:g}, wd {d.weight_decay:g}," if d.optimizer == "sgd" else ""
        schedule = "x0.1 at 50% and 75%" if d.schedule == "step" else d.schedule
        warmup = f", {d.warmup_epochs:g} warmup epochs" if d.warmup_epochs else ""
        fractions = (f"layerwise conv {d.conv_fraction:g}, fc {d.fc_fraction:g}, output {d.output_fraction:g}"
                     if d.scope == "layerwise" else f"global {d.fc_fraction:g}")
        kept = f", {', '.join(d.keep_unpruned)} unpruned" if d.keep_unpruned else ""
        return (f"{d.optimizer} {d.lr:g},{momentum} batch {d.batch_size}, {schedule}{warmup}, prune {fractions}{kept}, "
                f"BatchNorm γ {d.bn_init}")

    by_clause: dict[str, list[str]] = {}
    for arch, defaults in FAMILIES.items():
        by_clause.setdefault(clause(defaults), []).append(arch)
    parts = [f"{_collapse(archs)}: {text}" for text, archs in by_clause.items()]
    parts.append(f"other models: {clause(DEEP)}")
    return f"{DEFAULT_EPOCHS} epochs a level; " + "; ".join(parts)
