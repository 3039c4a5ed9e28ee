"""The MNIST (denoising) autoencoder baseline: MSE between the clean image and the
reconstruction of a noisy copy (``noise=0``: a plain autoencoder). Images are in [0, 1]."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cyclekit.devices import resolve_device
from cyclekit.files import FORMAT_VERSION, atomic_save
from cyclekit.mnist.common import batch_order, plain_config, save_config_yaml, save_grid
from cyclekit.mnist.data import MnistArrays, load_mnist, to_tensor
from cyclekit.mnist.nets import model_from_spec, model_spec

CHECKPOINT_FORMAT = "cyclekit-mnist-ae"
AE_ARCHS = ("mlp", "conv")


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
    max_steps: int | None = None
    time_budget: float | None = None  # stop after this many seconds of training
    data_dir: str = "datasets/mnist"
    download: bool = True
    name: str = "mnist_ae"
    checkpoints_dir: str = "checkpoints"
    wandb_mode: str = "auto"
    wandb_project: str = "cyclekit"
    wandb_entity: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.arch in AE_ARCHS, f"unknown --arch {self.arch!r}; choose mlp or conv"),
            (self.code_dim >= 1, f"--code-dim must be >= 1, got {self.code_dim}"),
            (self.hidden >= 0, f"--hidden must be >= 0, got {self.hidden}"),
            (self.noise >= 0, f"--noise must be >= 0, got {self.noise}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be >= 1"),
            (self.time_budget is None or self.time_budget > 0, "time_budget must be > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

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


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` in [0, 1] plus Gaussian noise of ``std``, clipped back to [0, 1]."""
    if std == 0:
        return x
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    return (x + std * noise).clamp_(0, 1)


@torch.no_grad()
def test_mse(model: nn.Module, x: torch.Tensor, std: float, seed: int, batch: int = 1000) -> float:
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
) -> AEResult:
    """Train the autoencoder, then write the test MSE and a noisy/reconstructed/original figure."""
    from tqdm import tqdm

    from cyclekit.training.tracking import start_tracker

    device = resolve_device(cfg.device)
    run_dir = Path(cfg.checkpoints_dir) / cfg.name
    if train is None:
        train = load_mnist(cfg.data_dir, "train", download=cfg.download)
    if test is None:
        test = load_mnist(cfg.data_dir, "test", download=cfg.download)
    x = to_tensor(train.images, "unit").to(device)  # (N, 1, 28, 28) in [0, 1]
    x_test = to_tensor(test.images, "unit").to(device)
    batch_size = min(cfg.batch_size, len(x))
    n_batches = len(x) // batch_size

    spec = cfg.model_spec()
    torch.manual_seed(cfg.seed)  # weight init uses the global generator
    model = model_from_spec(spec).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    noise_rng = torch.Generator().manual_seed(cfg.seed + 1)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config_yaml(cfg, run_dir / "config.yaml")
    tracker = start_tracker(
        cfg.wandb_mode, cfg.wandb_project, cfg.wandb_entity, cfg.name, plain_config(cfg),
        run_dir, tags=["mnist", "ae", cfg.arch],
    )  # fmt: skip
    total = cfg.epochs * n_batches
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    step, history = 0, []
    deadline = time.monotonic() + cfg.time_budget if cfg.time_budget else float("inf")
    bar = tqdm(total=total, disable=not progress, desc="ae", unit="step")
    try:
        for epoch in range(cfg.epochs):
            model.train()
            loss_sum, count = 0.0, 0
            for idx in batch_order(cfg.seed, epoch, len(x))[: n_batches * batch_size].split(
                batch_size
            ):
                clean = x[idx]
                loss = F.mse_loss(model(add_noise(clean, cfg.noise, noise_rng)), clean)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step, count, loss_sum = step + 1, count + 1, loss_sum + loss.item()
                bar.update(1)
                bar.set_postfix(mse=f"{loss.item():.4f}")
                if step >= total or time.monotonic() > deadline:
                    break
            metrics = {"epoch": epoch + 1, "step": step, "train_mse": loss_sum / count}
            history.append(metrics)
            tracker.log(metrics, step=step)
            log(f"epoch {epoch + 1} step {step}: train MSE {metrics['train_mse']:.5f}")
            if step >= total or time.monotonic() > deadline:
                break
        model.eval()
        mse = test_mse(model, x_test, cfg.noise, cfg.seed)
        figure = save_figure(model, x_test, test.labels, cfg.noise, cfg.seed, run_dir)
        tracker.log({"test_mse": mse}, step=step)
        tracker.log_images({"reconstructions": figure}, step=step)
        log(f"test MSE ({len(x_test)} images, noise {cfg.noise}): {mse:.5f}; figure: {figure}")
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        last = atomic_save(
            {
                "format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "spec": spec,
                "model": state, "opt": opt.state_dict(), "step": step, "test_mse": mse,
                "config": plain_config(cfg), "wandb_run_id": tracker.run_id,
            },
            run_dir / "last.pt",
        )  # fmt: skip
    finally:
        bar.close()
        tracker.finish()
    return AEResult(run_dir, last, figure, mse, step, history)


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
