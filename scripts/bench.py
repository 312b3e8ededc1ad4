"""Benchmarks, measured side by side in one run: a table on stdout and the numbers as JSON.

    python scripts/bench.py [--device cpu|cuda] [--rounds 7] [--json bench.json] [--quick]

1. mask selection: ``topk_mask`` / ``global_topk_masks`` against the full sort the edge-popup
   reference does on every forward pass, at every Conv6 layer (CIFAR shapes) and global over all;
2. edge-popup training step vs the dense step: Conv6, batch 128, 3x32x32, SGD;
3. IMP masked training step (density 0.2, masks re-applied after the step) vs the dense step;
   both also for the GPT (``--only gpt``: gpt_tiny, 32 windows of 128 characters, 65-character vocabulary);
4. data: batches per second of the resident ``TensorLoader`` (crop + flip + normalise on whole
   batches) vs torchvision's ``CIFAR10`` with PIL transforms in a ``DataLoader`` with workers, on
   CIFAR-format files this script writes (no download);
5. eval forward (no grad) of the supermask Conv6 with cached masks vs the dense Conv6;
6. one edge-popup epoch of Conv6 on the bundled mnist-5k, end to end through ``train`` (data,
   step, evaluation), vs one dense epoch;
7. ``supermask --help`` (a fresh interpreter: the CLI imports no torch for help and lists) vs
   ``python -c pass``;
8. the sparse export of LeNet-300-100 (masked Linear weights as CSR) vs the same network dense,
   at densities 0.5, 0.2, 0.05 and 0.01, batch 1 and 256 (inference, no grad);
9. deployment (``--only deploy``): for LeNet-300-100 (1x28x28) and Conv-6 (3x32x32) at densities
   0.5, 0.2, 0.05, 0.01 and batch 1 and 256, the masked edge-popup network (eval, cached masks)
   against its ``sparse`` export, and a channel ticket (channel density sqrt(density), so its
   weights' density is near the density) against its ``compact-dense`` export; and the memory
   each holds (every tensor its modules reference, caches included; CSR: its three parts);
   with ``--device cuda`` (compute capability 8.0+) also a 2:4 MLP (1024-4096-4096-1024, float16,
   batch 8 and 256) with its weights as semi-structured sparse tensors against the same MLP dense.

Every comparison alternates its two sides within each round, so machine noise hits both alike,
and reports the median ratio over rounds with its spread (min-max). Targets (issue 5, CPU):
selection >= 5x, edge-popup step <= 1.10x dense, IMP step <= 1.05x dense, resident data >= 5x,
cached-mask eval <= 1.02x dense; ``supermask --help`` under 1 s (issue 14).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from supermask.data import load_dataset, make_loader
from supermask.models import DENSE, InputSpec, create_model, masked_layer_types, supermask_layer_types
from supermask.nn import init_model, kept_count, topk_mask
from supermask.nn.masked import get_masks, mask_applier, set_masks
from supermask.nn.topk import global_topk_masks
from supermask.training import TrainConfig, train
from supermask_imp import magnitude_prune
from supermask.resolved import resolve

CONV6 = InputSpec(3, 32, 10)
TARGETS = {"selection_layerwise": (">=", 5.0), "selection_global": (">=", 5.0), "edge_popup_step": ("<=", 1.10),
           "imp_step": ("<=", 1.05), "gpt_edge_popup_step": ("<=", 1.10), "gpt_imp_step": ("<=", 1.05), "resident_data": (">=", 5.0), "cached_eval": ("<=", 1.02),
           "cli_help": ("a <=", 1000.0)}  # "a <=": a bound on side a's time (ms), not on the ratio


# -- timing -----------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_rounds(a: Callable[[], object], b: Callable[[], object], rounds: int, device: torch.device,
                  calls: int = 1) -> tuple[list[float], list[float]]:
    """Seconds per call of ``a`` and ``b``, alternating within each round (after one warm-up each)."""
    for fn in (a, b):
        fn()
    _sync(device)
    ta, tb = [], []
    for _ in range(rounds):
        for fn, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            _sync(device)
            out.append((time.perf_counter() - start) / calls)
    return ta, tb


def ratio_row(name: str, what: str, a_label: str, ta: list[float], b_label: str, tb: list[float],
              ratio_of: str = "a/b", unit: str = "ms") -> dict:
    """Median times and the median (min-max) of the per-round ratio."""
    ratios = [x / y for x, y in zip(ta, tb)] if ratio_of == "a/b" else [y / x for x, y in zip(ta, tb)]
    scale = 1e3 if unit == "ms" else 1.0  # other units are given as they are
    return {"name": name, "what": what, "a": a_label, "a_value": statistics.median(ta) * scale, "b": b_label,
            "b_value": statistics.median(tb) * scale, "unit": unit, "ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios), "ratio_of": ratio_of}


def sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, after_step: Callable[[], None] = lambda: None):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                          weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        after_step()

    return step


# -- 1. selection ---------------------------------------------------------------------------------
def reference_sort_mask(scores: torch.Tensor, density: float) -> torch.Tensor:
    """The edge-popup reference's selection: sort every score, zero the lowest (1 - k) part."""
    out = scores.clone()
    _, idx = scores.flatten().sort()
    j = int((1 - density) * scores.numel())
    flat = out.flatten()
    flat[idx[:j]] = 0
    flat[idx[j:]] = 1
    return out


def bench_selection(rounds: int, device: torch.device, density: float = 0.5) -> list[dict]:
    model = create_model("conv6", CONV6, supermask_layer_types(density))
    all_scores = [torch.randn(m.scores.shape, device=device).abs() for m in model.modules() if hasattr(m, "scores")]
    ours_total, sort_total = [0.0] * rounds, [0.0] * rounds
    for scores in all_scores:
        k = kept_count(scores.numel(), density)
        ta, tb = paired_rounds(lambda: reference_sort_mask(scores, density), lambda: topk_mask(scores, k), rounds,
                               device, calls=5)
        ours_total = [x + y for x, y in zip(ours_total, tb)]
        sort_total = [x + y for x, y in zip(sort_total, ta)]
    rows = [ratio_row("selection_layerwise", "selection, 9 Conv6 layers (2.26M scores), layerwise",
                      "full sort", sort_total, "topk_mask", ours_total)]
    flat = lambda: torch.cat([s.flatten() for s in all_scores])  # noqa: E731
    ta, tb = paired_rounds(lambda: reference_sort_mask(flat(), density), lambda: global_topk_masks(all_scores, density),
                           rounds, device, calls=3)
    rows.append(ratio_row("selection_global", "selection, global over all of Conv6", "full sort", ta,
                          "global_topk_masks", tb))
    return rows


# -- 2, 3, 5. steps and eval -------------------------------------------------------------------------
def conv6_models(device: torch.device):
    dense = init_model(create_model("conv6", CONV6, DENSE), "kaiming-normal", 0).to(device)
    strong = init_model(create_model("conv6", CONV6, supermask_layer_types(0.5)), "signed-constant", 0).to(device)
    weak = init_model(create_model("conv6", CONV6, masked_layer_types()), "kaiming-normal", 0).to(device)
    weights = {n: weak.state_dict()[n] for n in get_masks(weak)}
    set_masks(weak, magnitude_prune(weights, get_masks(weak), 0.8, scope="global"))
    return dense, strong, weak


def bench_steps(rounds: int, device: torch.device, batch: int = 128) -> list[dict]:
    dense, strong, weak = conv6_models(device)
    x, y = torch.randn(batch, 3, 32, 32, device=device), torch.randint(0, 10, (batch,), device=device)
    dense_step = sgd_step(dense, x, y)
    # two steps per side per round: single ~1 s steps on a shared 2-core machine are noisy
    tb, ta = paired_rounds(dense_step, sgd_step(strong, x, y), rounds, device, calls=2)
    rows = [ratio_row("edge_popup_step", f"Conv6 training step, batch {batch}: edge-popup / dense",
                      "edge-popup", ta, "dense", tb)]
    tb, ta = paired_rounds(dense_step, sgd_step(weak, x, y, mask_applier(weak)), rounds, device, calls=2)
    rows.append(ratio_row("imp_step", f"Conv6 training step, batch {batch}: IMP masked (density 0.2) / dense",
                          "IMP masked", ta, "dense", tb))
    return rows


def bench_gpt_steps(rounds: int, device: torch.device, batch: int = 32, context: int = 128) -> list[dict]:
    """The GPT training step (gpt_tiny, 65 characters, ``batch`` windows of ``context``):
    edge-popup / dense and IMP masked (density 0.2) / dense, as for Conv6."""
    spec = InputSpec(0, 0, 65, task="language-model", context=context)
    torch.manual_seed(0)
    dense = init_model(create_model("gpt_tiny", spec, DENSE), "kaiming-normal", 0).to(device)
    strong = init_model(create_model("gpt_tiny", spec, supermask_layer_types(0.5)), "signed-constant", 0).to(device)
    weak = init_model(create_model("gpt_tiny", spec, masked_layer_types()), "kaiming-normal", 0).to(device)
    weights = {n: weak.state_dict()[n] for n in get_masks(weak)}
    set_masks(weak, magnitude_prune(weights, get_masks(weak), 0.8, scope="global"))
    x = torch.randint(0, 65, (batch, context), device=device)
    y = torch.randint(0, 65, (batch, context), device=device)

    def lm_step(model, after_step=lambda: None):
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x).reshape(-1, 65), y.reshape(-1)).backward()
            opt.step()
            after_step()

        return step

    dense_step = lm_step(dense)
    tb, ta = paired_rounds(dense_step, lm_step(strong), rounds, device, calls=2)
    rows = [ratio_row("gpt_edge_popup_step", f"gpt_tiny training step, {batch}x{context} characters: edge-popup / "
                      f"dense", "edge-popup", ta, "dense", tb)]
    tb, ta = paired_rounds(dense_step, lm_step(weak, mask_applier(weak)), rounds, device, calls=2)
    rows.append(ratio_row("gpt_imp_step", f"gpt_tiny training step, {batch}x{context} characters: IMP masked "
                          f"(density 0.2) / dense", "IMP masked", ta, "dense", tb))
    return rows


def bench_eval(rounds: int, device: torch.device, batch: int = 256) -> dict:
    dense, strong, _ = conv6_models(device)
    dense.eval(), strong.eval()
    x = torch.randn(batch, 3, 32, 32, device=device)

    def forward(model):
        def run():
            with torch.no_grad():
                model(x)
        return run

    tb, ta = paired_rounds(forward(dense), forward(strong), rounds, device)
    return ratio_row("cached_eval", f"Conv6 eval forward, batch {batch}: cached masks / dense", "cached masks", ta,
                     "dense", tb)


# -- 4. data --------------------------------------------------------------------------------------
def write_cifar10(root: Path, n_train: int, n_test: int = 1000) -> Path:
    """CIFAR-10's python pickle layout (cifar-10-batches-py/data_batch_1..5, test_batch), random pixels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per_batch = n_train // 5
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist(), "batch_label": name,
                 "filenames": [f"{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)], "num_cases_per_batch": per_batch,
                     "num_vis": 3072}, f)
    return root


def _unchecked_cifar10():
    import torchvision

    class UncheckedCIFAR10(torchvision.datasets.CIFAR10):
        """torchvision's CIFAR10, minus the MD5 check of the real files (these are written here)."""

        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            self.classes = [str(i) for i in range(10)]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return UncheckedCIFAR10


def bench_data(rounds: int, device: torch.device, n_train: int = 10000, batch: int = 128,
               workers: int | None = None) -> dict:
    from torchvision import transforms

    _UncheckedCIFAR10 = _unchecked_cifar10()
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_cifar10(Path(tmp), n_train)
        data = load_dataset("cifar10", root)
        info = data.info
        resident = make_loader(data.train, info, batch, train=True, seed=0, device=device)
        pipeline = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                       transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
        reference = _UncheckedCIFAR10(str(root), train=True, transform=pipeline, download=False)
        loader = torch.utils.data.DataLoader(reference, batch_size=batch, shuffle=True, num_workers=workers,
                                             pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        epoch = [0]

        def run_resident():
            resident.set_epoch(epoch[0])
            epoch[0] += 1
            for images, labels in resident:
                pass

        def run_reference():
            for images, labels in loader:
                images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

        ta, tb = paired_rounds(run_resident, run_reference, rounds, device)
    n_batches = -(-len(data.train) // batch)
    row = ratio_row("resident_data", f"data, {len(data.train):,} CIFAR-format images, batch {batch}: "
                    f"resident vs PIL DataLoader ({workers} workers), batches/s",
                    "resident", [t / n_batches for t in ta], "PIL DataLoader", [t / n_batches for t in tb],
                    ratio_of="b/a")
    row.update(unit="batches/s", a_value=n_batches / statistics.median(ta), b_value=n_batches / statistics.median(tb))
    return row


# -- 6. one epoch end to end ---------------------------------------------------------------------------
def bench_epoch(rounds: int, device: torch.device) -> dict:
    data = load_dataset("mnist-5k")
    spec = InputSpec(1, 28, 10)
    def epoch(layers, init, lr):  # each with its engine's default lr (dense SGD at 0.1 diverges on Conv6)
        cfg = TrainConfig(epochs=1, batch_size=128, lr=lr)

        def run():
            model = init_model(create_model("conv6", spec, layers), init, 0)
            train(model, [p for p in model.parameters() if p.requires_grad], data, cfg, device=device)
        return run

    ta, tb = paired_rounds(epoch(supermask_layer_types(0.5), "signed-constant", 0.1),
                           epoch(DENSE, "kaiming-normal", 0.01), rounds, device)
    row = ratio_row("epoch", "one Conv6 epoch on mnist-5k (4,000 images, 32 steps + eval), through train(): "
                    "edge-popup / dense", "edge-popup", ta, "dense", tb, unit="s")
    return row


# -- report ---------------------------------------------------------------------------------------
def bench_cli(rounds: int) -> dict:
    """``supermask --help`` in a fresh interpreter against ``python -c pass`` (the floor)."""
    import subprocess

    def command(args):
        return lambda: subprocess.run([sys.executable, *args], check=True, capture_output=True)

    ta, tb = paired_rounds(command(["-m", "supermask", "--help"]), command(["-c", "pass"]), rounds,
                           torch.device("cpu"))
    return ratio_row("cli_help", "`supermask --help` (fresh process) / `python -c pass`", "help", ta, "pass", tb)


def bench_sparse(rounds: int) -> list[dict]:
    """Inference of LeNet-300-100's sparse export (CSR Linear layers) against the dense network."""
    from supermask.sparse import sparse_model, sparse_state_dict
    from supermask.ticket_files import folded_state_dict

    spec = InputSpec(1, 28, 10)
    rows = []
    for density in (0.5, 0.2, 0.05, 0.01):
        torch.manual_seed(0)
        dense = create_model("lenet_300_100", spec, DENSE).eval()
        state = dense.state_dict()
        masks = {k: (torch.rand_like(v) < density).float() for k, v in state.items() if k.endswith("weight")}
        folded = folded_state_dict(state, masks)
        dense.load_state_dict(folded)
        sparse = sparse_model(create_model("lenet_300_100", spec, DENSE), sparse_state_dict(folded, masks),
                              "bench").eval()
        for batch in (1, 256):
            x = torch.randn(batch, 1, 28, 28)

            def forward(model):
                def run():
                    with torch.no_grad():
                        model(x)
                return run

            ta, tb = paired_rounds(forward(sparse), forward(dense), rounds, torch.device("cpu"),
                                   calls=200 if batch == 1 else 20)
            rows.append(ratio_row(f"sparse_lenet_d{density:g}_b{batch}",
                                  f"LeNet-300-100 inference, density {density:g}, batch {batch}: sparse (CSR) / dense",
                                  "sparse", ta, "dense", tb))
    return rows


def _model_bytes(model: nn.Module) -> int:
    """Bytes of every distinct tensor the model's modules hold: parameters, buffers and the tensors
    kept as attributes (a supermask layer's eval caches, a CSR weight's parts)."""
    seen, total = set(), 0

    def add(t: torch.Tensor) -> None:
        nonlocal total
        if t.layout == torch.sparse_csr:
            for part in (t.crow_indices(), t.col_indices(), t.values()):
                add(part)
            return
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()

    for module in model.modules():
        for value in list(module._parameters.values()) + list(module._buffers.values()) + list(vars(module).values()):
            if isinstance(value, torch.Tensor):
                add(value)
    return total


def _search_model(arch: str, spec: InputSpec, density: float, structure: str = "unstructured") -> nn.Module:
    from supermask.methods import METHODS
    from supermask.search import SearchConfig

    config = resolve(SearchConfig(arch=arch, density=density, structure=structure))
    return METHODS.get("edge-popup").build(config, spec).eval()


def _plain_of(arch: str, spec: InputSpec, masked: nn.Module) -> nn.Module:
    from supermask.nn import model_masks
    from supermask.ticket_files import folded_state_dict

    plain = create_model(arch, spec, DENSE)
    plain.load_state_dict(folded_state_dict(masked.state_dict(), model_masks(masked)))
    return plain.eval()


def bench_deploy(rounds: int) -> list[dict]:
    """The masked network against what export writes, for LeNet-300-100 and Conv-6 on the CPU."""
    from supermask.nn import density_report, model_masks
    from supermask.nn.channels import compact_dense
    from supermask.sparse import sparse_model, sparse_state_dict

    rows = []
    cpu = torch.device("cpu")
    for arch, spec in (("lenet_300_100", InputSpec(1, 28, 10)), ("conv6", CONV6)):
        shape = (spec.in_channels, spec.image_size, spec.image_size)
        for density in (0.5, 0.2, 0.05, 0.01):
            torch.manual_seed(0)
            masked = _search_model(arch, spec, density)
            masks = model_masks(masked)
            plain = _plain_of(arch, spec, masked)
            sparse = sparse_model(create_model(arch, spec, DENSE), sparse_state_dict(plain.state_dict(), masks),
                                  "bench").eval()
            channel = _search_model(arch, spec, density ** 0.5, "channel")
            reached = density_report(model_masks(channel))[0]
            small = compact_dense(_plain_of(arch, spec, channel), shape).eval()
            for batch in (1, 256):
                x = torch.randn(batch, *shape)

                def forward(model):
                    def run():
                        with torch.no_grad():
                            model(x)
                    return run

                calls = (200 if arch == "lenet_300_100" else 10) if batch == 1 else (20 if arch == "lenet_300_100" else 1)
                ta, tb = paired_rounds(forward(sparse), forward(masked), rounds, cpu, calls=calls)
                rows.append(ratio_row(f"deploy_{arch}_d{density:g}_b{batch}_sparse",
                                      f"{arch} inference, density {density:g}, batch {batch}: sparse export / masked",
                                      "sparse", ta, "masked", tb))
                ta, tb = paired_rounds(forward(small), forward(channel), rounds, cpu, calls=calls)
                rows.append(ratio_row(f"deploy_{arch}_d{density:g}_b{batch}_compact",
                                      f"{arch} inference, channel ticket at density {reached:.3g}, batch {batch}: "
                                      f"compact-dense / masked", "compact-dense", ta, "masked", tb))
            for label, a, b in (("sparse", sparse, masked), ("compact-dense", small, channel)):
                rows.append(ratio_row(f"deploy_{arch}_d{density:g}_memory_{label}",
                                      f"{arch} memory held, density {density:g}: {label} / masked (eval, caches)",
                                      label, [_model_bytes(a) / 2**20], "masked", [_model_bytes(b) / 2**20],
                                      unit="MiB"))
    return rows


def bench_semi_structured(rounds: int, device: torch.device) -> list[dict]:
    """2:4 Linear weights as semi-structured sparse tensors (sparse tensor cores) vs dense, float16."""
    from supermask.nn.nm import nm_mask
    from supermask.sparse import to_semi_structured

    if device.type != "cuda":
        return []
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1024))
    with torch.no_grad():
        for layer in dense[::2]:
            layer.weight.mul_(nm_mask(layer.weight.abs(), 2, 4))
    fast, converted = to_semi_structured(copy.deepcopy(dense))
    dense = dense.to(device, torch.float16).eval()
    rows = []
    for batch in (8, 256):
        x = torch.randn(batch, 1024, device=device, dtype=torch.float16)

        def forward(model):
            def run():
                with torch.no_grad():
                    model(x)
            return run

        ta, tb = paired_rounds(forward(fast), forward(dense), rounds, device, calls=50)
        rows.append(ratio_row(f"semi_structured_mlp_b{batch}",
                              f"2:4 MLP 1024-4096-4096-1024 fp16, batch {batch}, {len(converted)} layers semi-structured: "
                              f"semi-structured / dense", "2:4", ta, "dense", tb))
    return rows


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def verdict(row: dict) -> str:
    if row["name"] not in TARGETS:
        return ""
    op, target = TARGETS[row["name"]]
    if op == "a <=":
        return f"{row['a']} <= {target:g} {row['unit']} {'met' if row['a_value'] <= target else 'MISSED'}"
    ok = row["ratio"] >= target if op == ">=" else row["ratio"] <= target
    return f"{op} {target:g} {'met' if ok else 'MISSED'}"


def table(rows: list[dict]) -> str:
    lines = ["| measurement | a | b | ratio: median (min-max) | target |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        fmt = "{:.3g}" if r["unit"] != "batches/s" else "{:.0f}"
        a = f"{r['a']} {fmt.format(r['a_value'])} {r['unit']}"
        b = f"{r['b']} {fmt.format(r['b_value'])} {r['unit']}"
        lines.append(f"| {r['what']} | {a} | {b} | {r['ratio']:.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f}) "
                     f"| {verdict(r)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=7, help="Alternating rounds per comparison.")
    parser.add_argument("--step-rounds", type=int, default=15,
                        help="Rounds for the training-step comparisons (the noisiest: ~1 s steps).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's].")
    parser.add_argument("--only", default=None, help="Comma-separated subset: selection,steps,gpt,data,eval,epoch,cli,sparse,"
                        "deploy [default: all but deploy].")
    parser.add_argument("--quick", action="store_true", help="2 rounds and a small data set (a smoke test).")
    parser.add_argument("--json", default=None, help="Also write the rows and the machine to this JSON file.")
    parser.add_argument("--markdown", default=None, help="Also write the table, machine and command as Markdown.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench: error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    rounds = 2 if args.quick else args.rounds
    parts = set((args.only or "selection,steps,gpt,data,eval,epoch,cli,sparse").split(","))
    torch.manual_seed(0)
    rows: list[dict] = []
    if "selection" in parts:
        rows += bench_selection(rounds, device)
    if "steps" in parts:
        rows += bench_steps(2 if args.quick else args.step_rounds, device)
    if "gpt" in parts:
        rows += bench_gpt_steps(2 if args.quick else args.step_rounds, device)
    if "data" in parts:
        rows.append(bench_data(rounds, device, n_train=1000 if args.quick else 10000))
    if "eval" in parts:
        rows.append(bench_eval(rounds, device))
    if "epoch" in parts:
        rows.append(bench_epoch(1 if args.quick else max(1, rounds // 2), device))
    if "cli" in parts:
        rows.append(bench_cli(rounds))
    if "sparse" in parts:
        rows += bench_sparse(rounds)
    if "deploy" in parts:
        rows += bench_deploy(rounds)
        rows += bench_semi_structured(rounds, device)
    info = machine()
    header = (f"supermask benchmarks on {args.device}: {info.get('cpu', info['processor'])}, {info['cpus']} CPUs, "
              f"{info['threads']} threads, torch {info['torch']}, Python {info['python']}"
              + (f", {info['gpu']}" if "gpu" in info else ""))
    print(header)
    print(f"{rounds} alternating rounds per comparison ({args.step_rounds} for the training steps)\n")
    print(table(rows))
    if args.markdown:
        command = "python scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.markdown).write_text(f"`{command.strip()}`\n\n{header}; {rounds} alternating rounds per "
                                       f"comparison ({args.step_rounds} of two steps each for the training steps); "
                                       f"ratios: median (min-max) over the rounds.\n\n{table(rows)}\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "rounds": rounds, "machine": info,
                                               "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
