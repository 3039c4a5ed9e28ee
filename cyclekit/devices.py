"""Device and precision, decided once and passed around as values."""

from __future__ import annotations

import contextlib
import glob
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cyclekit.choices import DEVICES, PRECISIONS
from cyclekit.errors import UsageError

if TYPE_CHECKING:  # torch is imported where it is used: translate may run without it
    import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; asking for a missing device is a clear error."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible to PyTorch")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps was asked for but MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported --device {name!r}; choose one of {', '.join(DEVICES)}")
    return device


# The CPU features that decide speed here, for benchmark reports.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> set[str]:
    """The kernel's CPU feature flags (``/proc/cpuinfo``; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def speed_flags() -> list[str]:
    """Which of :data:`SPEED_FLAGS` this CPU has, sorted: the line a benchmark records."""
    return sorted(cpu_flags() & set(SPEED_FLAGS))


def cpu_has_native_bf16() -> bool:
    """The CPU computes bf16 natively (AVX-512 BF16 or AMX), read off the kernel's CPU flags.

    Elsewhere (older x86, Apple silicon, no /proc) bf16 is emulated and slower than fp32.
    """
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def gpu_may_be_present() -> bool:
    """Whether ``--device auto`` might find a GPU, judged without importing torch (which takes
    seconds): False only on Linux with no NVIDIA (desktop or Jetson), AMD (ROCm) or WSL GPU
    device node, where torch would pick the CPU too. Anywhere else (macOS with MPS, Windows)
    it says True."""
    if not sys.platform.startswith("linux"):
        return True
    nodes = ("/dev/nvidia[0-9]*", "/dev/nvhost-*", "/dev/nvgpu*", "/dev/kfd", "/dev/dxg")
    return any(glob.glob(p) for p in nodes)


def device_type(device: torch.device | str) -> str:
    """``cpu``, ``cuda`` or ``mps``, from a device or its name (``cuda:1``)."""
    return device.split(":")[0] if isinstance(device, str) else device.type


def resolve_precision(name: str, device: torch.device | str) -> str:
    """``auto`` -> bf16 where it runs natively (CUDA with bf16, CPUs with AVX-512 BF16 or AMX),
    fp16 on older GPUs, else fp32."""
    if name not in PRECISIONS:
        raise UsageError(f"unknown --precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    kind = device_type(device)
    if name == "auto":
        if kind == "cuda":
            import torch

            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if kind == "cpu":
            return "bf16" if cpu_has_native_bf16() else "fp32"
        return "fp32"
    if name == "fp16" and kind == "cpu":
        raise UsageError("--precision fp16 is not supported on CPU; use bf16 or fp32")
    return name


def autocast(device: torch.device, precision: str) -> Callable[[], Any]:
    """A factory of context managers: ``with autocast(dev, prec)(): ...``.

    fp32 gives a null context, so the same training step serves every precision.
    """
    import torch

    if precision == "fp32":
        return contextlib.nullcontext
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
