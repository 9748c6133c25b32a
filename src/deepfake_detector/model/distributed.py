"""Data-parallel training with torch.distributed, launched by torchrun (one process per GPU).

    # one machine, N GPUs (NCCL); `train.batch_size` is per process, so the global batch is N x it
    torchrun --standalone --nproc_per_node N .venv/bin/dfd train artifacts/splits artifacts/model reports/train
    # several machines: the same command on each, with its --node_rank
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        .venv/bin/dfd train artifacts/splits artifacts/model reports/train
    # CPU processes (tests, CI): the gloo backend is picked when there is no GPU
    torchrun --standalone --nproc_per_node 2 .venv/bin/dfd train ... --run-log logs/train.json --log-seen

Without torchrun (WORLD_SIZE unset) everything here is a no-op and training is the single-process
run, bit for bit. Each epoch every rank draws the same permutation and takes every world-th image
of it (a disjoint shard); DDP all-reduces the gradients of the detector and the generator;
rank 0 alone evaluates, decides early stopping (broadcast to the others), logs, and writes
checkpoints, DVCLive files and the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)


def setup(device: str, backend: str = "auto") -> Dist:
    """Join the process group torchrun set up in the environment (or run alone without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=pick_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        chosen = backend if backend != "auto" else ("nccl" if dev.type == "cuda" else "gloo")
        # long timeout: rank 0 may decode a large dataset into the shared cache while others wait
        dist.init_process_group(chosen, timeout=timedelta(hours=3))
    return Dist(rank, world, local, dev)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shard(order: torch.Tensor, d: Dist) -> torch.Tensor:
    """This rank's disjoint share of an epoch's order; every rank gets the same length (up to
    world - 1 images of the permutation are left out, different ones each epoch)."""
    if not d.enabled:
        return order
    n = len(order) // d.world * d.world
    return order[d.rank:n:d.world]


def rank0_decides(flag: bool, d: Dist) -> bool:
    """Rank 0's value of flag, on every rank (e.g. early stopping, which only rank 0 evaluates)."""
    if not d.enabled:
        return flag
    t = torch.tensor([int(flag)], device=d.device if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def sync_batchnorm(module: torch.nn.Module, convert: bool) -> torch.nn.Module:
    """SyncBatchNorm in place of every BN module when convert (train.sync_bn under torchrun on CUDA).
    It replaces modules: call it before keeping references to any BN module (the frozen list)."""
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module) if convert else module


def wrap(module: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """DDP around module when distributed. BN: per-rank batch statistics with rank 0's running
    statistics broadcast each step (DDP's default), unless sync_batchnorm converted them first."""
    if not d.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[d.device.index] if d.device.type == "cuda" else None)
