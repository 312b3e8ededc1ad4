"""Data-parallel training through ``torchrun``: one process per device, DDP over them.

``torchrun --nproc_per_node=N -m supermask search ...`` starts N copies of the command
with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. :func:`setup`
(called by :func:`~supermask.training.device.resolve_device`) joins them in a process
group: NCCL on CUDA (one GPU per local rank), gloo on the CPU.

What stays the same as one process with the same global batch:

- every rank builds the same model from the same seed (DDP also broadcasts rank 0's);
- every rank draws the same order and augmentation of each global batch and trains on
  its own contiguous shard of it (:class:`~supermask.data.loader.TensorLoader`);
- the loss on a shard is ``sum / global_batch * world_size``, so DDP's gradient mean is
  the gradient of the global batch's mean loss, also for a ragged last batch;
- scores' (or weights') gradients are all-reduced, so every rank takes the same
  optimiser step and holds the same mask;
- every rank evaluates the whole validation and test splits (identical numbers);
- only rank 0 (:func:`is_main`) writes the run directory; :func:`barrier` orders reads
  of what it wrote (IMP's next level reads the previous level's checkpoint).

BatchNorm statistics are per rank on the CPU (``SyncBatchNorm`` needs CUDA): nets with
BatchNorm match the single-process run exactly only on CUDA, where they are converted.
"""

from __future__ import annotations

import logging
import math
import os

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (before the group is joined: the one ``torchrun`` gave it)."""
    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def setup(device: torch.device) -> torch.device:
    """Join the ``torchrun`` process group if launched by one; return this rank's device."""
    if not launched():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        log.info("rank %d of %d on %s", dist.get_rank(), dist.get_world_size(), device)
    return device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the training step calls: ``model`` itself, or a DDP wrapper of it."""
    if not active():
        return model
    if device.type == "cuda" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_finite(value: float) -> bool:
    """Whether ``value`` is finite on every rank (one all-reduce when distributed)."""
    finite = math.isfinite(value)
    if not active():
        return finite
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor(int(finite), dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
