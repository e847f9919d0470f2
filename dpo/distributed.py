"""Process layout of a run: device, process group (torchrun's env vars), FSDP2 sharding, collectives.

One process: every collective here is a no-op. ``torchrun``: gloo on CPU, nccl on CUDA; ``fsdp: full_shard`` shards
each DiT block and the root with FSDP2 ``fully_shard`` on a 1-D mesh of all ranks (else the trainer wraps DDP).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class Distributed:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    fsdp: bool  # FSDP2 full_shard (only with world_size > 1)
    mixed_precision: bool  # bf16 autocast (and FSDP2 bf16 params) on CUDA
    _mesh: Any = field(default=None, repr=False)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on one of them."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (pickled), in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks of a CPU tensor (reduced on the run's device)."""
        if not self.distributed:
            return tensor
        reduced = tensor.to(self.device)
        torch.distributed.all_reduce(reduced)
        return reduced.cpu()

    def shard(self, module: nn.Module, blocks: Iterable[nn.Module]) -> None:
        """FSDP2: ``fully_shard`` every block, then the root (bf16 params / fp32 reduce on CUDA)."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if self._mesh is None:
            self._mesh = init_device_mesh(self.device.type, (self.world_size,))
        mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if self.mixed_precision
              else MixedPrecisionPolicy())
        for block in blocks:
            fully_shard(block, mesh=self._mesh, mp_policy=mp)
        fully_shard(module, mesh=self._mesh, mp_policy=mp)

    def reshard(self, module: nn.Module) -> None:
        """FSDP2 keeps the root unsharded after a forward outside backward; the optimizer needs the shards."""
        if self.fsdp:
            from torch.distributed.fsdp import FSDPModule

            for m in module.modules():
                if isinstance(m, FSDPModule):
                    m.reshard()

    def wrap_ddp(self, module: nn.Module) -> nn.Module:
        if not self.distributed or self.fsdp:
            return module
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def grad_sync(self, module: nn.Module, sync: bool):
        """Skip the gradient all-reduce on all but the last backward of an optimizer step."""
        if not self.distributed or sync:
            return contextlib.nullcontext()
        if self.fsdp:
            return _FSDPNoSync(module)
        return module.no_sync()

    def destroy(self, synchronize: bool = False) -> None:
        """Tear the process group down; ``synchronize`` waits for every rank first (a run that ended normally)."""
        self._mesh = None  # the mesh holds the group
        if self.distributed and torch.distributed.is_initialized():
            if synchronize:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()


class _FSDPNoSync:
    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.module.set_requires_gradient_sync(False)

    def __exit__(self, *exc):
        self.module.set_requires_gradient_sync(True)


def init_distributed(device: str | torch.device | None = None, *, fsdp: str = "", bf16: bool = True) -> Distributed:
    """Read torchrun's ``WORLD_SIZE/RANK/LOCAL_RANK``, pick the device (default ``cuda:LOCAL_RANK`` when CUDA is
    available, else CPU) and init the process group when there is more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif torch.cuda.is_available():
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Distributed(rank=rank, local_rank=local_rank, world_size=world_size, device=dev,
                       fsdp=world_size > 1 and fsdp == "full_shard", mixed_precision=bf16 and dev.type == "cuda")
