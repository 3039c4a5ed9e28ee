"""The MNIST GAN baselines: the lecture MLP GAN and a small DCGAN, trained with BCE and the
non-saturating generator loss. One training step reads like pytorch/examples' ``dcgan``.

Randomness comes only from ``torch.Generator``s seeded from ``cfg.seed`` (torch's global
generator is never seeded, used or advanced): initial weights, batch order, latent noise, the
fixed grid noise and the DCGAN discriminator's dropout. Their states go into ``last.pt``, so a
resumed run continues exactly where it stopped, and the same seed on CPU gives the same run.

The run folder follows ``cyclekit train``'s rules (:mod:`cyclekit.training.rundir`): one run
at a time (lock), a rerun with the same ``--name`` needs ``--resume`` or ``--overwrite``,
``--resume`` merges or refuses changed settings, and Ctrl-C / SIGTERM save ``last.pt``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    clear_old_run,
    epoch_batches,
    grid_rows,
    hold_run_folder,
    load_run_checkpoint,
    resume_position,
    run_folder,
    save_gif,
    save_grid,
    start_run,
    writing,
)
from cyclekit.mnist.data import MnistArrays, digits_to_tensor, load_mnist, one_line, select_digits
from cyclekit.mnist.nets import GAN_ARCHS, model_from_spec, model_spec, use_generator
from cyclekit.training.config import ConfigError
from cyclekit.training.rundir import StopFlag, check_fresh

CHECKPOINT_FORMAT = "cyclekit-mnist-gan"
DEFAULT_HIDDEN = {"mlp": 256, "dcgan": 32}  # MLP layer width / DCGAN base channels
# Far above any useful size, below sizes whose allocation fails with a traceback.
MAX_HIDDEN = {"mlp": 4096, "dcgan": 1024}
MAX_LATENT = 1024
MAX_SEED = 2**32 - 1
# Settings that may change on --resume: how long, where, and what is logged. Any other one
# (architecture, data selection, optimiser, seed, grid) would make the checkpoint mean
# something else and is refused.
RESUMABLE = frozenset(
    {
        "epochs", "max_steps", "max_minutes", "device", "data_dir", "download", "name",
        "checkpoints_dir", "wandb_mode", "wandb_project", "wandb_entity",
    }
)  # fmt: skip


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be a run folder name (None: it can)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        return f"--name {name!r}: a run name is one folder name (no '/', not empty, '.' or '..')"
    return None


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
    max_minutes: float | None = None  # stop (saving last.pt) after this much training time
    data_dir: str = "datasets/mnist"
    download: bool = True  # use torchvision's download when data_dir holds no data
    name: str | None = None  # run folder name; None: mnist_gan_<arch>
    checkpoints_dir: str = "checkpoints"
    grid_size: int = 64  # samples in each epoch's grid (from fixed noise)
    wandb_mode: str = "auto"
    wandb_project: str = "cyclekit"
    wandb_entity: str | None = None

    def __post_init__(self) -> None:
        if self.arch not in GAN_ARCHS:
            raise ConfigError(f"--arch {self.arch!r}: choose one of {', '.join(GAN_ARCHS)}")
        if self.hidden is None:
            self.hidden = DEFAULT_HIDDEN[self.arch]
        if self.name is None:
            self.name = f"mnist_gan_{self.arch}"
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.digits = tuple(sorted({int(d) for d in self.digits}))
        finite = all(math.isfinite(v) for v in (self.lr, self.real_label, *self.betas))
        betas = " ".join(map(str, self.betas))
        max_hidden = MAX_HIDDEN[self.arch]
        checks = [
            (1 <= self.latent_dim <= MAX_LATENT, f"--latent-dim must be 1..{MAX_LATENT}, got "
             f"{self.latent_dim}"),
            (1 <= self.hidden <= max_hidden, f"--hidden must be 1..{max_hidden} with --arch "
             f"{self.arch}, got {self.hidden}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.arch != "dcgan" or self.batch_size >= 2, "--batch-size must be >= 2 with "
             "--arch dcgan (batch norm needs 2 images)"),
            (finite, f"--lr, --betas, --real-label must be finite; got {self.lr}, {betas}, "
             f"{self.real_label}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
             f"--betas must be two numbers in [0, 1), got {betas}"),
            (0 < self.real_label <= 1, f"--real-label must be in (0, 1], got {self.real_label}"),
            (all(0 <= d <= 9 for d in self.digits), f"--digits must be 0..9, got {self.digits}"),
            (0 <= self.seed <= MAX_SEED, f"--seed must be 0..{MAX_SEED}, got {self.seed}"),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be >= 1, got "
             f"{self.max_steps}"),
            (self.max_minutes is None or self.max_minutes > 0, f"--max-minutes must be > 0, got "
             f"{self.max_minutes}"),
            (1 <= self.grid_size <= 1024, f"grid_size must be 1..1024, got {self.grid_size}"),
        ]  # fmt: skip
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        if why := check_name(self.name):
            raise ConfigError(why)

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
    interrupted: bool = False  # Ctrl-C / SIGTERM: last.pt saved, resume with --resume auto
    finished: bool = True  # all --epochs done (False: stopped by a limit or interrupted)


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
    """G and D with initial weights drawn from a generator seeded with ``seed`` (on the CPU)."""
    g = torch.Generator().manual_seed(seed)
    return model_from_spec(g_spec, generator=g), model_from_spec(d_spec, generator=g)


def fixed_noise(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """The noise behind every epoch's grid: the same digits-to-be, watched as training goes."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed + 2))


class _Rngs:
    """The run's random streams besides batch order (which is derived from seed and epoch)."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.noise = torch.Generator().manual_seed(seed + 1)  # latent z, drawn on the CPU
        # Dropout masks are drawn where the activations are (a CUDA generator on a GPU).
        self.device = device.type
        self.dropout = torch.Generator(device=device).manual_seed(seed + 3)

    def state(self) -> dict[str, Any]:
        return {
            "noise": self.noise.get_state(),
            "dropout": self.dropout.get_state(),
            "dropout_device": self.device,
        }

    def restore(self, saved: dict[str, Any], log: Callable[[str], None]) -> None:
        self.noise.set_state(saved["noise"])
        if saved.get("dropout_device") == self.device and "dropout" in saved:
            self.dropout.set_state(saved["dropout"])
        else:
            log(
                f"note: the run moved from {saved.get('dropout_device')} to {self.device}; "
                "dropout masks restart from the seed (the run continues, not bit for bit)"
            )


def train_gan(
    cfg: GanConfig,
    data: MnistArrays | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    *,
    resume: str | None = None,
    overwrite: bool = False,
    explicit: set[str] | None = None,
) -> GanResult:
    """Train a GAN on MNIST (``data`` or ``cfg.data_dir``); files go to checkpoints/<name>.

    ``resume``: None (a fresh run; an existing one needs ``overwrite``), ``"auto"`` or a
    ``last.pt`` path. On resume the checkpoint's settings are kept except the ones in
    ``explicit`` (the flags the user gave; None: every field of ``cfg``) that may change;
    a changed architecture, data selection or optimiser setting is refused.
    """
    from tqdm import tqdm

    from cyclekit.training.tracking import start_tracker

    cfg, resumed = start_run(cfg, CHECKPOINT_FORMAT, resume, overwrite, explicit, RESUMABLE)
    device = resolve_device(cfg.device)
    if data is None:
        data = load_mnist(cfg.data_dir, "train", cfg.digits or None, cfg.download)
    else:
        data = select_digits(data, cfg.digits)
    x = digits_to_tensor(data.images).to(device)  # (N, 1, 28, 28) in [-1, 1]
    n = len(x)
    batch_size = n if cfg.full_batch else min(cfg.batch_size, n)
    if cfg.arch == "dcgan" and batch_size < 2:
        raise ConfigError(f"--arch dcgan needs at least 2 training images; {data.source} has {n}")
    steps_per_epoch = n // batch_size

    g_spec, d_spec = cfg.model_specs()
    G, D = build_gan(g_spec, d_spec, cfg.seed)
    G, D = G.to(device), D.to(device)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    rngs = _Rngs(cfg.seed, device)
    use_generator(D, rngs.dropout)
    epoch = epoch_step = step = 0
    run_id = None
    if resumed is not None:
        epoch, epoch_step, step, run_id = _restore(
            resumed, G, D, opt_G, opt_D, rngs, cfg, steps_per_epoch, log
        )
        log(f"resuming from {resumed.path} at epoch {epoch + 1}, step {step}")

    run_dir = run_folder(cfg)
    last = run_dir / "last.pt"
    # The step this invocation ends at: the end of --epochs, or --max-steps (a total) if sooner.
    total = step + max(0, (cfg.epochs - epoch) * steps_per_epoch - epoch_step)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    history: list[dict[str, float]] = []
    saved_step = -1
    stopped = False
    z_fixed = fixed_noise(cfg.grid_size, cfg.latent_dim, cfg.seed).to(device)
    config = asdict(cfg)

    with hold_run_folder(run_dir), StopFlag() as stop:
        if resumed is None:
            check_fresh(run_dir, None, overwrite)  # again, now that the folder is ours
            if overwrite:
                clear_old_run(run_dir)
        for folder in (run_dir, run_dir / "samples"):
            if folder.is_dir():
                remove_stale_temporaries(folder)
        with writing(run_dir / "config.yaml"):
            write_yaml(run_dir / "config.yaml", config)
        tracker = start_tracker(
            cfg.wandb_mode, cfg.wandb_project, cfg.wandb_entity, cfg.name, config, run_dir,
            tags=["mnist", "gan", cfg.arch], run_id=run_id,
        )  # fmt: skip
        # Training time only: W&B's start-up does not count against --max-minutes.
        deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes else math.inf
        bar = tqdm(total=total, initial=min(step, total), disable=not progress, desc="gan")

        def save_last() -> None:
            nonlocal saved_step
            state = {
                "G": G.state_dict(), "D": D.state_dict(),
                "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(), "rng": rngs.state(),
                "epoch": epoch, "epoch_step": epoch_step, "steps_per_epoch": steps_per_epoch,
                "step": step, "wandb_run_id": tracker.run_id,
            }  # fmt: skip
            with writing(last):
                atomic_save(_checkpoint(config, g_spec, d_spec, state), last)
            saved_step = step

        try:
            while epoch < cfg.epochs and step < total and not stopped:
                sums: dict[str, float] = {}
                count = 0
                G.train(), D.train()
                for idx in epoch_batches(cfg.seed, epoch, n, batch_size)[epoch_step:]:
                    z = torch.randn(len(idx), cfg.latent_dim, generator=rngs.noise).to(device)
                    stats = gan_step(G, D, opt_G, opt_D, x[idx], z, cfg.real_label)
                    step, epoch_step, count = step + 1, epoch_step + 1, count + 1
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v
                    bar.update(1)
                    bar.set_postfix(D=f"{stats['loss_D']:.3f}", G=f"{stats['loss_G']:.3f}")
                    stopped = stop.requested or time.monotonic() > deadline
                    if step >= total or stopped:
                        break
                if epoch_step == steps_per_epoch:
                    epoch, epoch_step = epoch + 1, 0
                if count:  # means over this epoch's steps ("epoch" counts fractions)
                    metrics = {k: v / count for k, v in sums.items()}
                    metrics.update(epoch=epoch + epoch_step / steps_per_epoch, step=step)
                    history.append(metrics)
                    grid = run_dir / "samples" / f"step_{step:08d}.png"
                    save_grid(generate_from(G, z_fixed), grid, nrow=grid_rows(cfg.grid_size))
                    tracker.log(metrics, step=step)
                    tracker.log_images({"samples": grid}, step=step)
                    log(_epoch_line(metrics))
                save_last()
            if resumed is not None and not history:
                log(f"nothing to train: the run is at step {step} (epoch {epoch}), which "
                    "--epochs/--max-steps do not go beyond")  # fmt: skip
            if saved_step != step or not last.exists():  # e.g. resumed into a new --name
                save_last()
            grids = sorted((run_dir / "samples").glob("step_*.png"))
            gif = save_gif(grids, run_dir / "samples.gif")
        finally:
            bar.close()
            tracker.finish()
        interrupted = stop.requested
    return GanResult(
        run_dir=run_dir, checkpoint=last, step=step, history=history, gif=gif,
        interrupted=interrupted, finished=epoch >= cfg.epochs,
    )  # fmt: skip


def _restore(
    resumed: Resumed,
    G: nn.Module,
    D: nn.Module,
    opt_G: torch.optim.Optimizer,
    opt_D: torch.optim.Optimizer,
    rngs: _Rngs,
    cfg: GanConfig,
    steps_per_epoch: int,
    log: Callable[[str], None],
) -> tuple[int, int, int, str | None]:
    """Load the checkpoint's weights, optimisers and random streams; return its position."""
    s = resumed.state
    try:
        G.load_state_dict(s["G"])
        D.load_state_dict(s["D"])
        opt_G.load_state_dict(s["opt_G"])
        opt_D.load_state_dict(s["opt_D"])
        # Files from before the "rng" entry: the noise stream only, and batch_in_epoch.
        rngs.restore(s.get("rng") or {"noise": s["noise_rng"]}, log)
        epoch, step = int(s["epoch"]), int(s["step"])
        epoch_step = int(s["epoch_step"] if "epoch_step" in s else s["batch_in_epoch"])
        saved_spe = int(s.get("steps_per_epoch", steps_per_epoch))
    except (KeyError, RuntimeError, ValueError, TypeError) as e:  # a damaged or foreign file
        why = f"incomplete or damaged checkpoint ({one_line(e)})"
        raise CheckpointError(f"{resumed.path}: {why}") from None
    # The optimisers run with the config's settings, which config.yaml records.
    for opt in (opt_G, opt_D):
        for group in opt.param_groups:
            group["lr"], group["betas"] = cfg.lr, cfg.betas
    return (
        epoch,
        resume_position(epoch_step, saved_spe, steps_per_epoch),
        step,
        s.get("wandb_run_id"),
    )


def _checkpoint(
    config: dict[str, Any], g_spec: dict[str, Any], d_spec: dict[str, Any], state: dict[str, Any]
) -> dict[str, Any]:
    # Plain containers and tensors only: loadable with weights_only=True.
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "G_spec": g_spec,
        "D_spec": d_spec,
        "config": config,
        **state,
    }


def load_gan_generator(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The generator of a ``gan train`` checkpoint, in eval mode, and the checkpoint itself."""
    path = Path(path)
    blob = load_run_checkpoint(path, CHECKPOINT_FORMAT)
    try:
        # A throwaway generator for the initial weights: loading must not touch global RNG.
        G = model_from_spec(blob["G_spec"], generator=torch.Generator().manual_seed(0))
        G.load_state_dict(blob["G"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:  # a damaged or foreign file
        raise CheckpointError(f"{path}: incomplete or damaged checkpoint ({one_line(e)})") from None
    if not isinstance(blob.get("config"), dict):
        raise CheckpointError(f"{path}: holds no run config")
    return G.to(device).eval(), blob


def check_finite(images: torch.Tensor, checkpoint: Path) -> torch.Tensor:
    """Samples of a generator whose training diverged are NaN: say so instead of saving them."""
    if not torch.isfinite(images).all():
        raise CheckpointError(
            f"{checkpoint}: the generator outputs NaN or infinite values (its training "
            "diverged); use an earlier checkpoint or train again"
        )
    return images


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
