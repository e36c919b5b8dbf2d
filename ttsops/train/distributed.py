"""Device and process-group helpers: CPU, one GPU, or DDP under ``torchrun`` (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False  # a process group was joined (torchrun): DDP and the collectives are on

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda:<local_rank> when available, else cpu; a bare ``cuda`` -> cuda:<local_rank>
    (under torchrun each worker takes its own GPU; ``cuda:N`` pins every worker to N)."""
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(spec)


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (``TORCHELASTIC_RUN_ID`` set, or WORLD_SIZE > 1).

    ``torchrun --nproc_per_node=1`` joins a group of one: the same DDP and NCCL code paths as a
    multi-GPU run, on a machine with a single GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, enabled=True)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any: ranks must agree to skip a step or to stop,
    or the ones that go on wait forever in the next all-reduce. NCCL needs the tensor on the GPU."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def weights_checksum(model: torch.nn.Module) -> float:
    """Cheap fingerprint of all parameters (sum of |w| in float64)."""
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


def verify_replicas(model: torch.nn.Module, info: DistInfo) -> list[float]:
    """All ranks must hold identical weights after DDP training; raise if they drifted apart."""
    device = next(model.parameters()).device  # NCCL gathers GPU tensors only
    local = torch.tensor([weights_checksum(model)], dtype=torch.float64, device=device)
    if not info.enabled:
        return [float(local)]
    gathered = [torch.zeros_like(local) for _ in range(info.world_size)]
    dist.all_gather(gathered, local)
    sums = [float(g) for g in gathered]
    if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
        raise RuntimeError(f"DDP replicas diverged: weight checksums per rank {sums}")
    return sums
