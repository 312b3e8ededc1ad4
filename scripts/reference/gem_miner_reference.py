"""Run Gem-Miner's reference code (ksreenivasan/pruning_is_enough, ``main.py --algo hc_iter``) on
the CPU, on the bundled ``mnist-5k`` data, with LeNet-300-100 (its ``FC``), to compare with
``supermask search --method gem-miner`` (docs/fidelity.md, Gem-Miner).

    python scripts/reference/gem_miner_reference.py CHECKOUT --epochs 10 --lr 1.0 [--seed 0] [--density 0.2]

``CHECKOUT`` is a checkout of the reference repository (its files are not part of this project).
Nothing of the reference is changed on disk; in this process only:

- CUDA is pretended (``torch.cuda.is_available``, ``.cuda()`` of tensors and modules, ``set_device``,
  pinned memory):
  its ``set_gpu`` refuses a CPU, and every batch is moved with ``.cuda(args.gpu)``;
- ``torchvision.datasets.MNIST`` gives the bundled data: ``train=True`` the 4,000 training images,
  ``train=False`` the 500 test images (its "validation" loader is MNIST's test split), as uint8
  images that its own ``ToTensor`` and ``Normalize((0.1307,), (0.3081,))`` transform;
- its ``utils.net_utils.get_layers``, which lists the masked layers of each architecture it names and
  has no branch for ``FC`` (its LeNet-300-100, built of 1x1 ``SubnetConv`` layers), returns FC's three
  layers for ``FC`` (every other architecture as before);
- matplotlib styles it names that today's matplotlib no longer has (``seaborn-whitegrid``) are skipped;
- its YAML config is written here from the options given (the rest: its parser's defaults).

The last lines printed are the reference's own per-epoch records (test accuracy after rounding, the
sparsity of the rounded model); the summary line gives the last epoch's density (kept fraction) and
test accuracy.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import tempfile
from pathlib import Path

CONFIG = """\
algo: hc_iter
iter_period: 5
arch: FC
dataset: MNIST
name: lenet_gem_miner_reference
optimizer: sgd
lr: {lr}
lr_policy: cosine_lr
epochs: {epochs}
wd: 0.0
momentum: 0.9
batch_size: 128
conv_type: SubnetConv
bn_type: NonAffineBatchNorm
freeze_weights: True
prune_type: BottomK
target_sparsity: {target}
init: signed_constant
score_init: unif
scale_fan: False
round: naive
noise: True
noise_ratio: 0
hc_quantized: True
quantize_threshold: 0.5
regularization: L2
lmbda: {lmbda}
skip_sanity_checks: True
skip_fine_tune: True
gpu: 0
workers: 0
seed: {seed}
"""


def _pretend_cuda() -> None:
    import torch
    from torch import nn

    torch.cuda.is_available = lambda: True
    torch.cuda.set_device = lambda *a, **k: None
    torch.cuda.device_count = lambda: 1
    torch.cuda.manual_seed = torch.cuda.manual_seed_all = lambda *a, **k: None
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.Tensor.pin_memory = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self


def _skip_old_plot_styles() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.style.use = lambda *a, **k: None


def _bundled_mnist() -> None:
    import torch
    import torchvision
    from PIL import Image

    from supermask import load_dataset

    data = load_dataset("mnist-5k")

    class BundledMNIST(torch.utils.data.Dataset):
        def __init__(self, root, train=True, transform=None, download=False, **kwargs):
            split = data.train if train else data.test
            self.pixels = split.images[:, 0]  # uint8, as the files hold them
            self.labels, self.transform = split.labels.long(), transform

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            image = Image.fromarray(self.pixels[i].numpy(), mode="L")
            return (self.transform(image) if self.transform else image), int(self.labels[i])

    torchvision.datasets.MNIST = BundledMNIST


def _layers_of_fc() -> None:
    import utils.net_utils as net_utils  # the reference's module (the checkout is on sys.path)

    original = net_utils.get_layers

    def get_layers(arch, model):
        if arch == "FC":
            return [m for m in model.linear if isinstance(m, net_utils.SubnetConv)], []
        return original(arch, model)

    net_utils.get_layers = get_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--lmbda", type=float, default=1e-4)
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gem-miner-reference-"))
    config = work / "config.yml"
    config.write_text(CONFIG.format(lr=args.lr, epochs=args.epochs, target=100 * args.density, lmbda=args.lmbda,
                                    seed=args.seed))
    _pretend_cuda()
    _skip_old_plot_styles()
    _bundled_mnist()
    (work / "results").mkdir()
    os.chdir(work)  # it writes results/ under the working directory
    sys.path.insert(0, str(args.checkout.resolve()))
    # its seed is seed * trial_num (trial_num 1); seed 0 is its default "no seed": give 1 + seed
    sys.argv = ["main.py", "--config", str(config), "--data", str(work), "--seed", str(args.seed + 1)]
    _layers_of_fc()  # after sys.argv: importing its modules parses the command line
    runpy.run_path(str(args.checkout / "main.py"), run_name="__main__")
    results = sorted(work.rglob("acc_and_sparsity.csv"))
    if not results:
        raise SystemExit("the reference wrote no acc_and_sparsity.csv")
    import pandas

    last = pandas.read_csv(results[-1]).iloc[-1]
    # its model_sparsity is the percentage of weights kept (of the rounded model), its test_acc the
    # accuracy on the test split after rounding, at its last epoch (it selects no epoch)
    print(f"reference gem-miner: epochs {args.epochs} lr {args.lr:g} lambda {args.lmbda:g} seed {args.seed}: "
          f"density {last['model_sparsity'] / 100:.4f} test accuracy {last['test_acc']:.1f}%")


if __name__ == "__main__":
    main()
