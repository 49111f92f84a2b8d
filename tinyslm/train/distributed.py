"""Data-parallel training: the same entry points under `torchrun`, on one process or many.

    torchrun --nproc_per_node=2 -m tinyslm.cli train configs/ablation/llama-1m.toml --steps 500 --out runs/a

torchrun starts N processes and sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT;
`setup()` reads them and joins the process group (gloo on CPU, nccl on GPU). Every rank builds the
same model from the same seed and reads its own rows of every global batch
(`Batches(..., rank=r, world_size=N)`): N ranks together see exactly the batches one process
sees, so a run's result does not depend on how many processes ran it (up to the order in which
float gradients are summed).

Two wrappers, one flag apart:
    DDP    (PyTorch DistributedDataParallel) every rank holds the whole model and optimizer;
           gradients are averaged across ranks during backward.
    FSDP2  (`torch.distributed.fsdp.fully_shard`, Zhao et al. 2023, "PyTorch FSDP") every block's
           parameters, gradients and AdamW moments are split across ranks and gathered just in
           time: for models whose optimizer state does not fit one process.
Both average gradients, so the trainer's loss scaling is the same for both (trainer.py).
"""

from __future__ import annotations

import datetime
import inspect
import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class World:
    """Where this process sits: rank r of world_size processes, on `device`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_from_env() -> tuple[int, int]:
    """(rank, world_size) as torchrun set them (or as an initialised process group says); (0, 1) alone.

    What a caller needs to build its `Batches(..., rank=, world_size=)` before calling `train`.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str = "auto", fsdp: bool = False) -> World:
    """Join the process group torchrun describes (if any) and pick this rank's device.

    device "auto": cuda:LOCAL_RANK when CUDA is available, else cpu. A process group that the
    caller initialised already (a test spawning its own ranks) is used as it is. FSDP needs a
    group even in one process: a group of one is made for it.
    """
    rank, world_size = world_from_env()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(f"cuda:{local_rank}" if device == "cuda" else device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized() and (world_size > 1 or fsdp):
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if world_size > 1:
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return World(rank, world_size, local_rank, dev)


def wrap(model: nn.Module, world: World, fsdp: bool = False) -> nn.Module:
    """The module the training step calls: the model itself, DDP around it, or the model sharded by FSDP2.

    fully_shard is applied to every block and then to the whole model (which keeps the embedding,
    final norm and head), the layout the FSDP2 documentation recommends: one block's parameters
    are gathered at a time. It changes `model` in place; parameters become DTensor shards.
    """
    if fsdp:
        from torch.distributed.fsdp import fully_shard  # noqa: PLC0415  (1.3 s to import; only under --fsdp)

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    if world.distributed:
        device_ids = [world.device.index] if world.device.type == "cuda" else None
        # the buffers (RoPE tables, ALiBi slopes) are computed alike on every rank: no need to sync them
        # before each forward (the option's name changed in torch 2.13)
        params = inspect.signature(DistributedDataParallel).parameters
        sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
        return DistributedDataParallel(model, device_ids=device_ids, **sync)
    return model


def no_grad_sync(wrapped: nn.Module, sync: bool):
    """Context for one micro-batch: with gradient accumulation only the last one all-reduces."""
    if sync:
        return nullcontext()
    if hasattr(wrapped, "no_sync"):  # DDP
        return wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2: a setter, not a context
        wrapped.set_requires_gradient_sync(False)
        return _ResyncOnExit(wrapped)
    return nullcontext()


class _ResyncOnExit:
    def __init__(self, module):
        self.module = module

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.module.set_requires_gradient_sync(True)


def all_reduce_sum(values: list[float], world: World) -> list[float]:
    """Sum a few numbers over all ranks (float64, so token counts stay exact)."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast_object(value, world: World):
    """Rank 0's `value` on every rank (an error message, a decision)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
