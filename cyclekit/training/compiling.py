"""Whether a run is compiled with ``torch.compile``, decided once from its plan.

Compiling costs a fixed time before the first step (about two minutes for CycleGAN's four
networks on a 2-core CPU) and then makes every step faster by a fraction that does not depend
much on the image size; the seconds saved per step grow with the pixels a step processes. So
``--compile`` left at ``auto`` turns it on only when the run's planned work (steps x pixels
per step) is far past the point where compiling has paid for itself, and only where it can
work at all (a C++ compiler for the CPU, Triton for CUDA). The decision uses the whole plan,
not the steps still to go, so a resumed run compiles exactly when the first part did: the
same kernels, the same numbers.

Break-even figures, measured with ``scripts/bench_train.py --precision bf16 --compile`` (see
README, Performance); the thresholds are several times those, since a slower laptop pays more
for compiling and the saving per step also varies with the machine's load.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass

import torch

from cyclekit.errors import UsageError

# Planned pixels x steps (batch x crop side^2 x steps) from which ``auto`` compiles.
# CPU: break-even measured at ~340 steps at 128^2 (5.6e6 pixel-steps) on a 2-core AMX Xeon;
# the threshold is ~10x that, i.e. ~3,500 steps at 128^2 or ~870 at 256^2.
# CUDA: not yet measured here (scripts/bench_gpu.sh will say); kernels are fast, so the saving
# per step is milliseconds and break-even is thousands of steps: 20,000 steps at 256^2.
AUTO_MIN_PIXEL_STEPS = {"cpu": 56e6, "cuda": 20_000 * 256 * 256}
# A time-limited run shorter than this spends too much of its budget compiling.
AUTO_MIN_MINUTES = 20.0


@dataclass(frozen=True)
class CompileChoice:
    enabled: bool
    reason: str  # one phrase for the run's start-up line


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot build kernels for ``device`` here, or None if it can."""
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed (pip install triton)"
        return None
    if device.type != "cpu":
        return f"torch.compile is not supported for {device.type} training"
    if sys.platform == "win32":
        return "torch.compile on a Windows CPU needs the MSVC toolchain set up by hand"
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    if not any(shutil.which(n) for n in names):
        return "no C++ compiler on PATH (install g++ or clang, or set CXX)"
    return None


def choose_compile(
    setting: bool | None,
    device: torch.device,
    planned_steps: int,
    pixels_per_step: int,
    max_minutes: float | None = None,
) -> CompileChoice:
    """``setting`` True/False is the user's word (True fails clearly where compiling cannot
    work); None (``auto``) compiles long runs where it pays back (see the module docstring)."""
    problem = compile_unavailable(device)
    if setting is True:
        if problem:
            raise UsageError(f"--compile cannot work here: {problem}; drop --compile")
        return CompileChoice(True, "asked for")
    if setting is False:
        return CompileChoice(False, "--no-compile")
    if problem:
        return CompileChoice(False, f"auto: {problem}")
    threshold = AUTO_MIN_PIXEL_STEPS.get(device.type)
    if threshold is None:
        return CompileChoice(False, f"auto: not used on {device.type}")
    work = planned_steps * pixels_per_step
    if work < threshold:
        return CompileChoice(
            False, f"auto: {planned_steps} planned steps are too few to pay back compiling"
        )
    if max_minutes is not None and max_minutes < AUTO_MIN_MINUTES:
        return CompileChoice(False, f"auto: --max-minutes {max_minutes:g} is too short")
    return CompileChoice(True, f"auto: {planned_steps} planned steps")


def fall_back_to_eager_on_compile_errors() -> None:
    """A compile that fails (a broken toolchain, an unsupported op) runs that code eagerly
    instead of stopping the run; used when ``auto`` chose to compile, not when asked for."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
