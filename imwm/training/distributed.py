"""Data-parallel training over several processes (``torchrun``), with averaged gradients.

Launched as ``torchrun --nproc_per_node N scripts/train.py ...``, every process (rank) runs the
whole training loop on its own envs (seeded ``seed + 1000 * rank``) and its own replay, so the
batch per update grows N-fold; after each backward pass the gradients of the phase are averaged
over all ranks with one all-reduce (PyTorch ``torch.distributed``: ``gloo`` on CPU, ``nccl`` on
CUDA), so every rank takes the same optimiser step and the weights stay identical (rank 0's
initial weights are broadcast once). Rank 0 alone logs, evaluates and writes checkpoints; on a
resume every rank reads rank 0's checkpoint.

Written instead of wrapping the networks in ``DistributedDataParallel``: an imwm update has
two backward passes over different parameter groups (world model; actor and critic) and runs
parts of them inside compiled programs, which DDP's per-module gradient hooks would have to be
told about; averaging the flat gradient of each group after its backward is the same arithmetic.

Example:
    >>> ctx = DistributedContext.from_env({})          # not under torchrun: one process
    >>> ctx.world_size, ctx.is_main
    (1, True)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DistributedContext", "parameter_digest"]


@dataclass
class DistributedContext:
    """Rank and world size of this process (``torchrun`` sets ``RANK`` / ``WORLD_SIZE``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistributedContext:
        env = os.environ if environ is None else environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        """Joins the process group (``nccl`` for CUDA devices, ``gloo`` otherwise)."""
        import torch.distributed as dist

        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def broadcast_parameters(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers to every rank."""
        if not self.enabled:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Replaces each gradient by its mean over the ranks (one all-reduce of the flat group).

        A parameter without a gradient on this rank counts as a zero gradient, so the ranks
        always reduce buffers of the same size.
        """
        if not self.enabled:
            return
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def close(self) -> None:
        import torch.distributed as dist

        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def parameter_digest(module: nn.Module) -> str:
    """A short hash of all parameters (the same on every rank of a data-parallel run).

    Example:
        >>> a, b = nn.Linear(2, 1), nn.Linear(2, 1)
        >>> _ = b.load_state_dict(a.state_dict())
        >>> parameter_digest(a) == parameter_digest(b), len(parameter_digest(a))
        (True, 16)
        >>> with torch.no_grad():
        ...     _ = b.bias.add_(1.0)
        >>> parameter_digest(a) == parameter_digest(b)
        False
        >>> len(parameter_digest(nn.Linear(2, 1).to(torch.bfloat16)))  # NumPy has no bfloat16: hashed as bytes
        16
    """
    h = hashlib.sha256()
    for p in module.parameters():
        # the raw bytes, viewed as uint8: NumPy cannot hold every torch dtype (bfloat16)
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
