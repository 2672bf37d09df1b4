"""Where a process computes: its device, precision, process-wide settings and torch.distributed group.

On the ground floor, so the data, engine, eval and stage code all take these from one place. Nothing here
changes process-wide state on import or as a side effect of another call: a command that computes calls
`configure_process()` once, at its start (the CLI does it for every such command).
"""

from __future__ import annotations

import contextlib
import os
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from .errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def derive_seed(seed: int, domain: str, *keys: int) -> int:
    """A 32-bit seed for one draw of a run seeded by `seed`: the data order of an epoch ("order", epoch), one
    image's augmentation ("augment", epoch, index), one optimizer step ("step", step, rank).

    The domain is part of the key, so no two kinds of draw share a seed (without it, step s on rank 0 drew
    from the same seed as image 0's augmentation in epoch s).

    >>> derive_seed(0, "step", 3, 0) == derive_seed(0, "step", 3, 0)   # a function of its keys alone
    True
    >>> derive_seed(0, "step", 3, 0) == derive_seed(0, "augment", 3, 0)
    False
    """
    return int(np.random.SeedSequence([seed, zlib.crc32(domain.encode()), *keys]).generate_state(1)[0])


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA on a machine without it is a clear error."""
    try:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


def configure_process() -> None:
    """The process-wide settings every computing command starts with.

    Trained weights and activations drift into subnormal floats, which x86 CPUs process several times slower
    (a trained tiny model's forward: 129 ms -> 32 ms per batch when flushed); flushing them to zero moves
    results by less than 1e-38. CUDA kernels flush on their own, so this only concerns the CPU.
    """
    torch.set_flush_denormal(True)


def autocast_for(device: torch.device, precision: str):
    """Autocast to bf16 / fp16 on `device`, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 outside one) and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(device: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local, dev)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, d: Dist | None) -> torch.Tensor:
    """Sum `t` over the processes of `d` in place (nothing to do for one process or d None)."""
    if d is not None and d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_true(flag: bool, d: Dist) -> bool:
    """True on every process if it is true on any: all ranks stop at the same step."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
