"""The MNIST GAN baselines: the lecture MLP GAN and a small DCGAN, trained with BCE and the
non-saturating generator loss. One training step reads like pytorch/examples' ``dcgan``.

Randomness: batch order and latent noise come from explicit ``torch.Generator``s seeded from
``seed``; weight init and DCGAN dropout use the global generator (``nn.Module`` offers no other),
which is seeded once here. All of their states go into ``last.pt``, so a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cyclekit.devices import resolve_device
from cyclekit.files import FORMAT_VERSION, CheckpointError, atomic_save, safe_load
from cyclekit.mnist.common import (
    batch_order,
    plain_config,
    resolve_resume,
    save_config_yaml,
    save_gif,
    save_grid,
)
from cyclekit.mnist.data import MnistArrays, load_mnist, to_tensor
from cyclekit.mnist.nets import GAN_ARCHS, model_from_spec, model_spec

CHECKPOINT_FORMAT = "cyclekit-mnist-gan"
DEFAULT_HIDDEN = {"mlp": 256, "dcgan": 32}  # MLP layer width / DCGAN base channels


@dataclass
class GanConfig:
    """Options of ``cyclekit gan train``; saved as ``config.yaml`` beside the checkpoints."""

    arch: str = "mlp"  # mlp: the lecture GAN; dcgan: transposed/strided convolutions
    latent_dim: int = 64  # size of the noise vector z
    hidden: int | None = None  # MLP width / DCGAN channels; None: 256 (mlp) or 32 (dcgan)
    epochs: int = 30
    # Defaults measured best for the MLP on MNIST (README): after 2,000 steps the lecture recipe
    # (2e-4, betas 0.9/0.999, batch 100) had Fréchet distance 1012 with 9 digits missing; betas
    # 0.5/0.999 gave 551 (4 missing), lr 5e-4 311 (none), lr 1e-3 with batch 128 117 (none).
    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)  # beta1 0.5: the DCGAN paper's fix for GAN jitter
    real_label: float = 1.0  # target for real images; 0.9 = one-sided label smoothing
    digits: tuple[int, ...] = ()  # train only on these classes; () = all ten
    full_batch: bool = False  # one batch = the whole training set
    seed: int = 0
    device: str = "auto"
    max_steps: int | None = None  # stop after this many steps in total (smoke tests)
    time_budget: float | None = None  # stop after this many seconds of training (benchmarks)
    data_dir: str = "datasets/mnist"
    download: bool = True  # use torchvision's download when data_dir holds no data
    name: str = "mnist_gan"
    checkpoints_dir: str = "checkpoints"
    grid_size: int = 64  # samples in each epoch's grid (from fixed noise)
    wandb_mode: str = "auto"
    wandb_project: str = "cyclekit"
    wandb_entity: str | None = None
    resume: str | None = None  # "auto" (last.pt of this run if any) or a checkpoint path

    def __post_init__(self) -> None:
        if self.arch not in GAN_ARCHS:
            raise ValueError(f"unknown --arch {self.arch!r}; choose one of {', '.join(GAN_ARCHS)}")
        if self.hidden is None:
            self.hidden = DEFAULT_HIDDEN[self.arch]
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.digits = tuple(sorted({int(d) for d in self.digits}))
        checks = [
            (self.latent_dim >= 1, f"--latent-dim must be >= 1, got {self.latent_dim}"),
            (self.hidden >= 1, f"--hidden must be >= 1, got {self.hidden}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (
                len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                f"--betas must be two numbers in [0, 1), got {self.betas}",
            ),
            (0 < self.real_label <= 1, f"--real-label must be in (0, 1], got {self.real_label}"),
            (all(0 <= d <= 9 for d in self.digits), f"--digits must be 0..9, got {self.digits}"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be >= 1"),
            (self.time_budget is None or self.time_budget > 0, "time_budget must be > 0"),
            (self.grid_size >= 1, f"grid_size must be >= 1, got {self.grid_size}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def model_specs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        g_kind, d_kind = GAN_ARCHS[self.arch]
        return (
            model_spec(g_kind, latent_dim=self.latent_dim, hidden=self.hidden),
            model_spec(d_kind, hidden=self.hidden),
        )


@dataclass
class GanResult:
    run_dir: Path
    checkpoint: Path
    step: int
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch
    gif: Path | None = None


def gan_step(
    G: nn.Module,
    D: nn.Module,
    opt_G: torch.optim.Optimizer,
    opt_D: torch.optim.Optimizer,
    real: torch.Tensor,
    z: torch.Tensor,
    real_label: float = 1.0,
) -> dict[str, float]:
    """One GAN step on ``real (B, 1, 28, 28)`` in [-1, 1] with noise ``z (B, latent)``."""
    b = real.size(0)
    real_target = torch.full((b,), real_label, device=real.device)
    fake_target = torch.zeros(b, device=real.device)

    # (1) update D: maximise log D(x) + log(1 - D(G(z)))
    fake = G(z)
    d_real = D(real)
    d_fake = D(fake.detach())  # detached: this half must not train G
    loss_D = F.binary_cross_entropy_with_logits(
        d_real, real_target
    ) + F.binary_cross_entropy_with_logits(d_fake, fake_target)
    opt_D.zero_grad(set_to_none=True)
    loss_D.backward()
    opt_D.step()

    # (2) update G: non-saturating loss, maximise log D(G(z)) (i.e. BCE against "real" = 1).
    # log(1 - D(G(z))) of the original minimax has no gradient early on, when D wins easily.
    D.requires_grad_(False)  # D is only a judge here; its gradients would be wasted work
    loss_G = F.binary_cross_entropy_with_logits(D(fake), torch.ones(b, device=real.device))
    opt_G.zero_grad(set_to_none=True)
    loss_G.backward()
    opt_G.step()
    D.requires_grad_(True)

    return {
        "loss_D": loss_D.item(),
        "loss_G": loss_G.item(),
        "D_x": torch.sigmoid(d_real).mean().item(),  # D's belief that real images are real
        "D_G_z": torch.sigmoid(d_fake).mean().item(),  # ... that fakes are real (before (1))
        "fooled": (d_fake > 0).float().mean().item(),  # fraction of fakes D calls real
    }


def build_gan(
    g_spec: dict[str, Any], d_spec: dict[str, Any], seed: int
) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)  # init + dropout draw from the global generator (see module doc)
    return model_from_spec(g_spec), model_from_spec(d_spec)


def fixed_noise(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """The noise behind every epoch's grid: the same digits-to-be, watched as training goes."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed + 2))


def train_gan(
    cfg: GanConfig,
    data: MnistArrays | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> GanResult:
    """Train a GAN on MNIST (``data`` or ``cfg.data_dir``); checkpoints go to checkpoints/<name>."""
    from tqdm import tqdm

    from cyclekit.training.tracking import start_tracker

    device = resolve_device(cfg.device)
    run_dir = Path(cfg.checkpoints_dir) / cfg.name
    if data is None:
        data = load_mnist(cfg.data_dir, "train", cfg.digits or None, cfg.download)
    x = to_tensor(data.images).to(device)  # (N, 1, 28, 28) in [-1, 1]
    n = len(x)
    batch_size = n if cfg.full_batch else min(cfg.batch_size, n)
    n_batches = n // batch_size  # a short last batch is dropped: equal-weight steps

    g_spec, d_spec = cfg.model_specs()
    ckpt_path = resolve_resume(cfg.resume, run_dir)
    blob = _load_training_checkpoint(ckpt_path) if ckpt_path else None
    if blob is not None:
        g_spec, d_spec = blob["G_spec"], blob["D_spec"]  # the checkpoint decides the models
    G, D = build_gan(g_spec, d_spec, cfg.seed)
    G, D = G.to(device), D.to(device)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    noise_rng = torch.Generator().manual_seed(cfg.seed + 1)
    epoch, batch_in_epoch, step, run_id = 0, 0, 0, None
    if blob is not None:
        G.load_state_dict(blob["G"])
        D.load_state_dict(blob["D"])
        opt_G.load_state_dict(blob["opt_G"])
        opt_D.load_state_dict(blob["opt_D"])
        noise_rng.set_state(blob["noise_rng"])
        torch.set_rng_state(blob["torch_rng"])
        epoch, batch_in_epoch, step = blob["epoch"], blob["batch_in_epoch"], blob["step"]
        run_id = blob.get("wandb_run_id")
        log(f"resuming from {ckpt_path} at epoch {epoch + 1}, step {step}")

    run_dir.mkdir(parents=True, exist_ok=True)
    if blob is None:  # a fresh run: grids of an earlier run with this name would join the GIF
        for stale in (run_dir / "samples").glob("step_*.png"):
            stale.unlink()
    save_config_yaml(cfg, run_dir / "config.yaml")
    z_fixed = fixed_noise(cfg.grid_size, G.latent_dim, cfg.seed).to(device)
    tracker = start_tracker(
        cfg.wandb_mode, cfg.wandb_project, cfg.wandb_entity, cfg.name, plain_config(cfg), run_dir,
        tags=["mnist", "gan", cfg.arch], run_id=run_id,
    )  # fmt: skip
    total = (
        cfg.epochs * n_batches
        if cfg.max_steps is None
        else min(cfg.max_steps, cfg.epochs * n_batches)
    )
    bar = tqdm(total=total, initial=min(step, total), disable=not progress, desc="gan", unit="step")
    history: list[dict[str, float]] = []
    last = run_dir / "last.pt"
    deadline = time.monotonic() + cfg.time_budget if cfg.time_budget else math.inf
    out_of_time = False
    try:
        while epoch < cfg.epochs and step < total and not out_of_time:
            sums: dict[str, float] = {}
            count = 0
            batches = batch_order(cfg.seed, epoch, n)[: n_batches * batch_size].split(batch_size)
            G.train(), D.train()
            for idx in batches[batch_in_epoch:]:
                z = torch.randn(len(idx), G.latent_dim, generator=noise_rng).to(device)
                stats = gan_step(G, D, opt_G, opt_D, x[idx], z, cfg.real_label)
                step, batch_in_epoch, count = step + 1, batch_in_epoch + 1, count + 1
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.update(1)
                bar.set_postfix(D=f"{stats['loss_D']:.3f}", G=f"{stats['loss_G']:.3f}")
                out_of_time = time.monotonic() > deadline
                if step >= total or out_of_time:
                    break
            if batch_in_epoch == n_batches:
                epoch, batch_in_epoch = epoch + 1, 0
            # Epoch means; "epoch" counts fractions when --max-steps stops mid-epoch.
            metrics = {k: v / count for k, v in sums.items()}
            metrics.update(epoch=epoch + batch_in_epoch / n_batches, step=step)
            history.append(metrics)
            grid = run_dir / "samples" / f"step_{step:08d}.png"
            save_grid(generate_from(G, z_fixed), grid, nrow=math.ceil(math.sqrt(cfg.grid_size)))
            tracker.log(metrics, step=step)
            tracker.log_images({"samples": grid}, step=step)
            log(_epoch_line(metrics))
            state = {
                "G": G.state_dict(), "D": D.state_dict(),
                "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
                "noise_rng": noise_rng.get_state(), "torch_rng": torch.get_rng_state(),
                "epoch": epoch, "batch_in_epoch": batch_in_epoch, "step": step,
                "wandb_run_id": tracker.run_id,
            }  # fmt: skip
            atomic_save(_checkpoint(cfg, g_spec, d_spec, state), last)
        gif = save_gif(sorted((run_dir / "samples").glob("step_*.png")), run_dir / "samples.gif")
    finally:
        bar.close()
        tracker.finish()
    return GanResult(run_dir=run_dir, checkpoint=last, step=step, history=history, gif=gif)


def _checkpoint(
    cfg: GanConfig, g_spec: dict[str, Any], d_spec: dict[str, Any], state: dict[str, Any]
) -> dict[str, Any]:
    # Plain containers and tensors only: loadable with weights_only=True.
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "G_spec": g_spec,
        "D_spec": d_spec,
        "config": plain_config(cfg),
        **state,
    }


def _load_training_checkpoint(path: Path) -> dict[str, Any]:
    blob = safe_load(path)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cyclekit MNIST GAN checkpoint (from `gan train`)")
    if blob.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer cyclekit (format {blob['format_version']}); upgrade"
        )
    return blob


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The generator of a ``gan train`` checkpoint, in eval mode, and the checkpoint itself."""
    blob = _load_training_checkpoint(Path(path))
    G = model_from_spec(blob["G_spec"])
    G.load_state_dict(blob["G"])
    return G.to(device).eval(), blob


@torch.no_grad()
def generate_from(G: nn.Module, z: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Images ``(N, 1, 28, 28)`` in [-1, 1] (on the CPU) for noise ``z (N, latent)``.

    Runs in eval mode (batch norm uses its running statistics) and restores the mode after.
    """
    was_training = G.training
    G.eval()
    out = torch.cat([G(chunk).cpu() for chunk in z.split(batch)])
    G.train(was_training)
    return out


def generate(
    G: nn.Module, n: int, seed: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``n`` samples from ``G`` with noise drawn from a generator seeded with ``seed``."""
    z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed))
    return generate_from(G, z.to(device))


def _epoch_line(m: dict[str, float]) -> str:
    return (
        f"epoch {m['epoch']:.2f} step {int(m['step'])}: loss_D {m['loss_D']:.3f} "
        f"loss_G {m['loss_G']:.3f} D(x) {m['D_x']:.3f} D(G(z)) {m['D_G_z']:.3f} "
        f"fooled {m['fooled']:.1%}"
    )
