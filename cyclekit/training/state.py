"""Training checkpoints: everything needed to continue a run exactly, as plain tensors/lists
so that ``torch.load(weights_only=True)`` can read it back."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cyclekit.files import FORMAT_VERSION, CheckpointError, atomic_save, safe_load
from cyclekit.generator_io import TRAIN_FORMAT
from cyclekit.training.cyclegan import CycleGAN
from cyclekit.training.distributed import unwrap


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch, CUDA, numpy, python) in weights_only-safe types."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": [version, list(py_state), gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # This process's device only: a resume may see fewer GPUs than the saving run did.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Unwrapped keys (no "module."/"_orig_mod." prefixes) on the CPU.
    module = unwrap(module)
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def models_payload(m: CycleGAN, config: dict, specs: dict) -> dict[str, Any]:
    """The four networks and what is needed to rebuild them (an epoch checkpoint)."""
    return {
        "format": TRAIN_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "specs": specs,
        "models": {name: _cpu_state_dict(net) for name, net in m.networks().items()},
    }


def rank_state(m: CycleGAN) -> dict[str, Any]:
    """What differs between ranks: the pools and the random streams."""
    return {
        "pools": {"a": m.pool_a.state_dict(), "b": m.pool_b.state_dict()},
        "rng": rng_state() | {"gp": m.gp_generator.get_state()},
    }


def save_train_state(
    path: Path,
    m: CycleGAN,
    schedule: dict[str, Any],
    scaler: torch.amp.GradScaler,
    config: dict,
    specs: dict,
    step: int,
    epoch: int,
    epoch_step: int,
    wandb_run_id: str | None,
    rank_states: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``last.pt`` atomically: nets, optimisers, schedulers, pools, RNGs, position.

    Data order needs no saved state: it is a pure function of (seed, epoch, epoch_step).
    """
    payload = models_payload(m, config, specs)
    rank_states = rank_states or [rank_state(m)]
    payload |= {
        "optimizers": {"G": m.opt_G.state_dict(), "D": m.opt_D.state_dict()},
        "schedulers": dict(schedule),  # the LR is a function of (epoch, epoch_step)
        "scaler": scaler.state_dict(),
        # Rank 0's pools and RNGs at the top level (what a single process resumes from);
        # under torch.distributed every rank's, so the same world size resumes exactly.
        **rank_states[0],
        "rank_states": rank_states if len(rank_states) > 1 else None,
        "step": step,
        "epoch": epoch,
        "epoch_step": epoch_step,
        "wandb_run_id": wandb_run_id,
    }
    return atomic_save(payload, path)


def load_train_state(path: Path) -> dict[str, Any]:
    """Read and sanity-check a ``last.pt`` (CPU tensors)."""
    state = safe_load(path)
    if not isinstance(state, dict) or state.get("format") != TRAIN_FORMAT:
        raise CheckpointError(f"{path}: not a cyclekit training checkpoint")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {version!r} is newer than this cyclekit")
    if not {"models", "config", "specs"} <= set(state):
        raise CheckpointError(f"{path}: training checkpoint is incomplete (no models/config)")
    missing = {"optimizers", "schedulers", "pools", "rng", "step"} - set(state)
    if missing:
        raise CheckpointError(
            f"{path}: holds networks only (an epoch checkpoint?), cannot resume from it; "
            "use last.pt"
        )
    return state


def restore_train_state(
    state: dict[str, Any],
    m: CycleGAN,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Load ``state`` into plain (not yet DDP-wrapped) modules and their optimisers.

    Pools and RNGs: this rank's saved ones when the world size is unchanged; otherwise rank 0
    takes the saved ones and other ranks keep their fresh, seeded ones.
    """
    per_rank = state.get("rank_states")
    if per_rank and len(per_rank) == world_size:
        mine = per_rank[rank]
    elif rank == 0:
        mine = {"pools": state["pools"], "rng": state["rng"]}
    else:
        mine = None
    for name, net in m.networks().items():
        net.load_state_dict(state["models"][name])
    m.opt_G.load_state_dict(state["optimizers"]["G"])
    m.opt_D.load_state_dict(state["optimizers"]["D"])
    if state["scaler"] and scaler.is_enabled():  # a disabled (fp32/bf16) scaler saved {}
        scaler.load_state_dict(state["scaler"])
    if mine is not None:
        m.pool_a.load_state_dict(mine["pools"]["a"], device)
        m.pool_b.load_state_dict(mine["pools"]["b"], device)
        m.gp_generator.set_state(mine["rng"]["gp"])
        set_rng_state(mine["rng"])
