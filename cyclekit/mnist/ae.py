"""The MNIST (denoising) autoencoder baseline: MSE between the clean image and the
reconstruction of a noisy copy (``noise=0``: a plain autoencoder). Images are in [0, 1].

Same run rules as the GAN (:mod:`cyclekit.mnist.gan`): randomness from generators seeded by
``cfg.seed`` only, one run per folder, ``--resume`` merges or refuses, Ctrl-C saves ``last.pt``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cyclekit.devices import resolve_device
from cyclekit.files import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    remove_stale_temporaries,
    write_yaml,
)
from cyclekit.mnist.common import (
    Resumed,
    epoch_batches,
    hold_run_folder,
    resume_position,
    run_folder,
    save_grid,
    start_run,
    writing,
)
from cyclekit.mnist.data import MnistArrays, digits_to_tensor, load_mnist, one_line
from cyclekit.mnist.gan import MAX_SEED, RESUMABLE, check_name
from cyclekit.mnist.nets import IMAGE_PIXELS, model_from_spec, model_spec
from cyclekit.training.config import ConfigError
from cyclekit.training.rundir import StopFlag, check_fresh

CHECKPOINT_FORMAT = "cyclekit-mnist-ae"
AE_ARCHS = ("mlp", "conv")
MAX_HIDDEN = {"mlp": 4096, "conv": 1024}  # far above useful sizes, below failing allocations


@dataclass
class AEConfig:
    """Options of ``cyclekit ae train``; saved as ``config.yaml`` beside the checkpoint."""

    arch: str = "mlp"  # mlp: 784 -> code -> 784; conv: strided convs to 7x7 maps and back
    code_dim: int = 32  # mlp code size
    hidden: int = 0  # mlp: extra hidden layer width (0: none); conv: base channels (0: 16)
    noise: float = 0.0  # std of Gaussian noise added to inputs (0.5: the classic denoising demo)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    max_steps: int | None = None  # stop after this many steps in total
    max_minutes: float | None = None  # stop (saving last.pt) after this much training time
    data_dir: str = "datasets/mnist"
    download: bool = True
    name: str | None = None  # run folder name; None: mnist_ae_<arch>
    checkpoints_dir: str = "checkpoints"
    wandb_mode: str = "auto"
    wandb_project: str = "cyclekit"
    wandb_entity: str | None = None

    def __post_init__(self) -> None:
        if self.arch not in AE_ARCHS:
            raise ConfigError(f"--arch {self.arch!r}: choose one of {', '.join(AE_ARCHS)}")
        if self.name is None:
            self.name = f"mnist_ae_{self.arch}"
        max_hidden = MAX_HIDDEN[self.arch]
        checks = [
            (1 <= self.code_dim <= IMAGE_PIXELS, f"--code-dim must be 1..{IMAGE_PIXELS}, got "
             f"{self.code_dim}"),
            (0 <= self.hidden <= max_hidden, f"--hidden must be 0..{max_hidden} with --arch "
             f"{self.arch}, got {self.hidden}"),
            (math.isfinite(self.noise) and self.noise >= 0, f"--noise must be a number >= 0, "
             f"got {self.noise}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (0 <= self.seed <= MAX_SEED, f"--seed must be 0..{MAX_SEED}, got {self.seed}"),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be >= 1, got "
             f"{self.max_steps}"),
            (self.max_minutes is None or self.max_minutes > 0, f"--max-minutes must be > 0, got "
             f"{self.max_minutes}"),
        ]  # fmt: skip
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        if why := check_name(self.name):
            raise ConfigError(why)

    def model_spec(self) -> dict[str, Any]:
        if self.arch == "conv":
            return model_spec("conv_ae", hidden=self.hidden or 16)
        return model_spec("mlp_ae", code_dim=self.code_dim, hidden=self.hidden)


@dataclass
class AEResult:
    run_dir: Path
    checkpoint: Path
    figure: Path
    test_mse: float
    step: int
    history: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C / SIGTERM: last.pt saved, resume with --resume auto
    finished: bool = True  # all --epochs done (False: stopped by a limit or interrupted)


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` in [0, 1] plus Gaussian noise of ``std``, clipped back to [0, 1]."""
    if std == 0:
        return x
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    return (x + std * noise).clamp_(0, 1)


@torch.no_grad()
def eval_mse(model: nn.Module, x: torch.Tensor, std: float, seed: int, batch: int = 1000) -> float:
    """Mean squared error (per pixel, [0, 1] scale) of reconstructing clean ``x`` from noisy."""
    g = torch.Generator().manual_seed(seed + 3)
    total = sum(
        F.mse_loss(model(add_noise(xb, std, g)), xb, reduction="sum").item()
        for xb in x.split(batch)
    )
    return total / x.numel()


def train_ae(
    cfg: AEConfig,
    train: MnistArrays | None = None,
    test: MnistArrays | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    *,
    resume: str | None = None,
    overwrite: bool = False,
    explicit: set[str] | None = None,
) -> AEResult:
    """Train the autoencoder, then write the test MSE and a noisy/reconstructed/original figure.

    ``resume``, ``overwrite`` and ``explicit`` as in :func:`cyclekit.mnist.gan.train_gan`.
    """
    from tqdm import tqdm

    from cyclekit.training.tracking import start_tracker

    cfg, resumed = start_run(cfg, CHECKPOINT_FORMAT, resume, overwrite, explicit, RESUMABLE)
    device = resolve_device(cfg.device)
    if train is None:
        train = load_mnist(cfg.data_dir, "train", download=cfg.download)
    if test is None:
        test = load_mnist(cfg.data_dir, "test", download=cfg.download)
    x = digits_to_tensor(train.images, "unit").to(device)  # (N, 1, 28, 28) in [0, 1]
    x_test = digits_to_tensor(test.images, "unit").to(device)
    n = len(x)
    batch_size = min(cfg.batch_size, n)
    steps_per_epoch = n // batch_size

    spec = cfg.model_spec()
    model = model_from_spec(spec, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    noise_rng = torch.Generator().manual_seed(cfg.seed + 1)
    epoch = epoch_step = step = 0
    run_id = None
    if resumed is not None:
        epoch, epoch_step, step, run_id = _restore(
            resumed, model, opt, noise_rng, cfg, steps_per_epoch
        )
        log(f"resuming from {resumed.path} at epoch {epoch + 1}, step {step}")

    run_dir = run_folder(cfg)
    last = run_dir / "last.pt"
    # The step this invocation ends at: the end of --epochs, or --max-steps (a total) if sooner.
    total = step + max(0, (cfg.epochs - epoch) * steps_per_epoch - epoch_step)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    history: list[dict[str, float]] = []
    stopped = False
    config = asdict(cfg)

    with hold_run_folder(run_dir), StopFlag() as stop:
        if resumed is None:
            check_fresh(run_dir, None, overwrite)  # again, now that the folder is ours
        remove_stale_temporaries(run_dir)
        with writing(run_dir / "config.yaml"):
            write_yaml(run_dir / "config.yaml", config)
        tracker = start_tracker(
            cfg.wandb_mode, cfg.wandb_project, cfg.wandb_entity, cfg.name, config, run_dir,
            tags=["mnist", "ae", cfg.arch], run_id=run_id,
        )  # fmt: skip
        # Training time only: W&B's start-up does not count against --max-minutes.
        deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes else math.inf
        bar = tqdm(total=total, initial=min(step, total), disable=not progress, desc="ae")

        def save_last(extra: dict[str, Any] | None = None) -> None:
            state = {
                "format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "spec": spec,
                "config": config, "model": model.state_dict(), "opt": opt.state_dict(),
                "rng": {"noise": noise_rng.get_state()}, "epoch": epoch,
                "epoch_step": epoch_step, "steps_per_epoch": steps_per_epoch, "step": step,
                "wandb_run_id": tracker.run_id, **(extra or {}),
            }  # fmt: skip
            with writing(last):
                atomic_save(state, last)

        try:
            while epoch < cfg.epochs and step < total and not stopped:
                model.train()
                loss_sum, count = 0.0, 0
                for idx in epoch_batches(cfg.seed, epoch, n, batch_size)[epoch_step:]:
                    clean = x[idx]
                    loss = F.mse_loss(model(add_noise(clean, cfg.noise, noise_rng)), clean)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step, epoch_step, count = step + 1, epoch_step + 1, count + 1
                    loss_sum += loss.item()
                    bar.update(1)
                    bar.set_postfix(mse=f"{loss.item():.4f}")
                    stopped = stop.requested or time.monotonic() > deadline
                    if step >= total or stopped:
                        break
                if epoch_step == steps_per_epoch:
                    epoch, epoch_step = epoch + 1, 0
                if count:
                    metrics = {
                        "epoch": epoch + epoch_step / steps_per_epoch,
                        "step": step,
                        "train_mse": loss_sum / count,
                    }
                    history.append(metrics)
                    tracker.log(metrics, step=step)
                    mean = metrics["train_mse"]
                    log(f"epoch {metrics['epoch']:.2f} step {step}: train MSE {mean:.5f}")
                save_last()
            model.eval()
            mse = eval_mse(model, x_test, cfg.noise, cfg.seed)
            figure = save_figure(model, x_test, test.labels, cfg.noise, cfg.seed, run_dir)
            tracker.log({"test_mse": mse}, step=step)
            tracker.log_images({"reconstructions": figure}, step=step)
            log(f"test MSE ({len(x_test)} images, noise {cfg.noise}): {mse:.5f}; figure: {figure}")
            save_last({"test_mse": mse})
        finally:
            bar.close()
            tracker.finish()
        interrupted = stop.requested
    return AEResult(
        run_dir, last, figure, mse, step, history, interrupted, finished=epoch >= cfg.epochs
    )


def _restore(
    resumed: Resumed,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    noise_rng: torch.Generator,
    cfg: AEConfig,
    steps_per_epoch: int,
) -> tuple[int, int, int, str | None]:
    """Load the checkpoint's weights, optimiser and noise stream; return its position."""
    s = resumed.state
    try:
        model.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        step = int(s["step"])
        if "epoch" in s:
            noise_rng.set_state(s["rng"]["noise"])
            epoch, epoch_step = int(s["epoch"]), int(s["epoch_step"])
            saved_spe = int(s["steps_per_epoch"])
        else:  # written before ae train could resume: at the end of its last epoch
            epoch, epoch_step, saved_spe = -(-step // steps_per_epoch), 0, steps_per_epoch
    except (KeyError, RuntimeError, ValueError, TypeError) as e:  # a damaged or foreign file
        why = f"incomplete or damaged checkpoint ({one_line(e)})"
        raise CheckpointError(f"{resumed.path}: {why}") from None
    for group in opt.param_groups:  # the optimiser runs with the config's lr (config.yaml)
        group["lr"] = cfg.lr
    return (
        epoch,
        resume_position(epoch_step, saved_spe, steps_per_epoch),
        step,
        s.get("wandb_run_id"),
    )


@torch.no_grad()
def save_figure(
    model: nn.Module,
    x_test: torch.Tensor,
    labels: np.ndarray,
    std: float,
    seed: int,
    run_dir: Path,
) -> Path:
    """Rows: noisy input, reconstruction, original; one column per digit present (up to 10)."""
    cols = [int(np.flatnonzero(labels == d)[0]) for d in range(10) if (labels == d).any()]
    clean = x_test[cols]
    noisy = add_noise(clean, std, torch.Generator().manual_seed(seed + 4))
    rows = torch.cat([noisy, model(noisy), clean]).cpu()
    return save_grid(rows, run_dir / "reconstructions.png", nrow=len(cols), value_range="unit")
