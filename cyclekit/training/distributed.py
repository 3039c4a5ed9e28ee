"""torch.distributed set-up for runs started by ``torchrun`` (one process per GPU or CPU slot).

Nothing here launches processes: ``torchrun`` does, and sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT, which ``init_process_group`` reads from the environment.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cyclekit.errors import UsageError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when started by torchrun; returns (info, this rank's device).

    nccl on CUDA, gloo on the CPU. A plain ``cyclekit train`` returns a world of one.
    """
    world_size = _env_int("WORLD_SIZE", "1")
    if world_size <= 1:
        return DistInfo(), device
    rank, local_rank = _env_int("RANK", None), _env_int("LOCAL_RANK", "0")
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank), device


def _env_int(name: str, default: str | None) -> int:
    # torchrun always sets these; a hand-set WORLD_SIZE without RANK gets one clear line.
    text = os.environ.get(name, default)
    if text is None or not text.strip().isdigit():
        found = "is not set" if text is None else f"is {text!r}, not a number"
        raise UsageError(
            f"{name} {found}: start multi-process runs with torchrun (it sets WORLD_SIZE, RANK "
            "and LOCAL_RANK), or unset WORLD_SIZE for one process"
        )
    return int(text)


def shutdown(finished: bool = False) -> None:
    """Leave the process group. ``finished``: every rank ended the run normally, so all wait
    for each other first (a rank that failed must not: its peers may be inside a collective)."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            # A rank that destroys the group while a peer's gloo thread still talks to it can
            # abort at exit ("terminate called without an active exception"; seen once in the
            # 2-process CPU test).
            with contextlib.suppress(RuntimeError):
                dist.barrier()
        dist.destroy_process_group()


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under torch.compile (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        inner = getattr(module, "_orig_mod", None) or getattr(module, "module", None)
        if not isinstance(inner, nn.Module):
            return module
        module = inner


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. one rank was asked to stop)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (a list of one without torch.distributed)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def weights_fingerprint(modules: dict[str, nn.Module]) -> list[float]:
    """One float64 sum per parameter: equal lists mean (practically) identical weights.

    Parameters only: batch-norm running statistics legitimately differ between ranks (each
    updates them from its own batches; DDP re-broadcasts rank 0's at every forward).
    """
    return [
        float(p.detach().double().sum())
        for name in sorted(modules)
        for p in unwrap(modules[name]).parameters()
    ]
