"""Training checkpoints: everything needed to continue a run exactly, as plain tensors/lists
so that ``torch.load(weights_only=True)`` can read it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cyclekit.files import FORMAT_VERSION, CheckpointError, atomic_save, safe_load
from cyclekit.generator_io import TRAIN_FORMAT
from cyclekit.training.distributed import unwrap
from cyclekit.training.model import TrainModel
from cyclekit.training.rundir import check_checkpoint_format


def _cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Unwrapped keys (no "module."/"_orig_mod." prefixes) on the CPU.
    module = unwrap(module)
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def models_payload(m: TrainModel, config: dict, specs: dict) -> dict[str, Any]:
    """The four networks and what is needed to rebuild them (an epoch checkpoint)."""
    return {
        "format": TRAIN_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "specs": specs,
        "models": {name: _cpu_state_dict(net) for name, net in m.networks().items()},
    }


def save_train_state(
    path: Path,
    m: TrainModel,
    schedule: dict[str, Any],
    scaler: torch.amp.GradScaler,
    config: dict,
    specs: dict,
    step: int,
    epoch: int,
    epoch_step: int,
    wandb_run_id: str | None,
    rank_states: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``last.pt`` atomically: nets, optimisers, schedulers, pools, RNGs, position, and
    ``extra`` (weights_only-safe values, e.g. the best evaluation so far).

    Data order needs no saved state: it is a pure function of (seed, epoch, epoch_step).
    """
    payload = models_payload(m, config, specs)
    rank_states = rank_states or [m.rank_state()]
    payload |= {
        "optimizers": {name: opt.state_dict() for name, opt in m.optimizers().items()},
        "schedulers": dict(schedule),  # the LR is a function of (epoch, epoch_step)
        "scaler": scaler.state_dict(),
        # Rank 0's pools and RNGs at the top level (what a single process resumes from);
        # under torch.distributed every rank's, so the same world size resumes exactly.
        **rank_states[0],
        "rank_state_keys": list(rank_states[0]),
        "rank_states": rank_states if len(rank_states) > 1 else None,
        "step": step,
        "epoch": epoch,
        "epoch_step": epoch_step,
        "wandb_run_id": wandb_run_id,
        **(extra or {}),
    }
    return atomic_save(payload, path)


def _rank_keys(state: dict[str, Any]) -> list[str]:
    # Rank 0's per-rank state sits at the top level; checkpoints from before the model
    # interface did not list its keys (CycleGAN's were always these two).
    return list(state.get("rank_state_keys") or ["pools", "rng"])


def load_train_state(path: Path) -> dict[str, Any]:
    """Read and sanity-check a ``last.pt`` (CPU tensors)."""
    state = check_checkpoint_format(
        safe_load(path), path, TRAIN_FORMAT, FORMAT_VERSION, "cyclekit training checkpoint"
    )
    if not {"models", "config", "specs"} <= set(state):
        raise CheckpointError(f"{path}: training checkpoint is incomplete (no models/config)")
    missing = {"optimizers", "schedulers", "step", *_rank_keys(state)} - set(state)
    if missing:
        raise CheckpointError(
            f"{path}: holds networks only (an epoch checkpoint?), cannot resume from it; "
            "use last.pt"
        )
    return state


def restore_train_state(
    state: dict[str, Any],
    m: TrainModel,
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
        mine = {key: state[key] for key in _rank_keys(state)}
    else:
        mine = None
    m.prepare_restore(state["models"])
    for name, net in m.networks().items():
        net.load_state_dict(state["models"][name])
    for name, opt in m.optimizers().items():
        opt.load_state_dict(state["optimizers"][name])
    if state["scaler"] and scaler.is_enabled():  # a disabled (fp32/bf16) scaler saved {}
        scaler.load_state_dict(state["scaler"])
    if mine is not None:
        m.load_rank_state(mine, device)
