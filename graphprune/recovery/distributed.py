"""Running under `torchrun --nproc_per_node N`: one process per rank, DistributedDataParallel.

Every rank walks the same global batches (same data, same shuffle seed) and takes its own
contiguous slice of each: rank r of W gets rows [r n / W, (r + 1) n / W) of a batch of n. Its
loss, a mean over its n_r rows, is scaled by n_r W / n before backward; DDP averages the W
gradients, so the step uses

    (1 / W) sum_r (n_r W / n) grad(mean_r) = grad(sum over all n rows) / n,

the gradient of the single-process batch mean: the runs agree up to float rounding (for
models without batch statistics: batch norm sees each rank's slice, as in plain DDP, and
dropout masks differ). A batch smaller than W is skipped by every rank alike. Validation
sums are all-reduced. Only rank 0 prints and writes files.

Backend: gloo on CPU, NCCL on CUDA (each rank on cuda:LOCAL_RANK).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from graphprune.errors import InputError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _device(name: str, world: World) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA device is available; pass --device cpu")
        if world.size > 1:
            return torch.device("cuda", world.local_rank)
    return torch.device(name)


def setup(device: str) -> tuple[World, torch.device]:
    """This process's rank and device; joins the process group when torchrun started several."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 and not (dist.is_available() and dist.is_initialized()):
        return World(), _device(device, World())
    if not dist.is_initialized():
        world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
        dev = _device(device, world)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return world, dev
    world = World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return world, _device(device, world)


def shard(batch, world: World, device: torch.device):
    """(this rank's slice of `batch` on `device`, its loss scale), or None if the batch is too small."""
    n = batch.size
    if n < world.size:
        return None
    lo, hi = world.rank * n // world.size, (world.rank + 1) * n // world.size

    def cut(t):
        if isinstance(t, torch.Tensor):
            t = t[lo:hi] if t.dim() and t.shape[0] == n else t
            return t.to(device)
        return t

    local = replace(batch, args=tuple(cut(a) for a in batch.args), kwargs={k: cut(v) for k, v in batch.kwargs.items()},
                    labels=None if batch.labels is None else cut(batch.labels))
    return local, (hi - lo) * world.size / n


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    if world.size == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
