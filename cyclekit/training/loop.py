"""``cyclekit train``: data, model, the loop, samples, checkpoints and tracking, top to bottom."""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from cyclekit.checkpoint import CheckpointError
from cyclekit.config import RESUMABLE_OVERRIDES, ConfigError, TrainConfig
from cyclekit.data.images import ImageDecodeError, decode_image, list_images
from cyclekit.data.unpaired import Domain, EpochSampler, UnpairedDataset, scan_domain
from cyclekit.devices import autocast as make_autocast
from cyclekit.devices import resolve_device, resolve_precision
from cyclekit.generator_io import save_generator
from cyclekit.models import side_multiple
from cyclekit.tracking import start_tracker
from cyclekit.training.cyclegan import (
    LOSS_NAMES,
    build_cyclegan,
    generator_specs,
    train_step,
    translate_samples,
)
from cyclekit.training.samples import save_sample_grid
from cyclekit.training.state import (
    load_train_state,
    models_payload,
    restore_train_state,
    save_train_state,
)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    interrupted: bool = False
    losses: dict[str, float] = field(default_factory=dict)  # means over the last log window
    history: list[dict[str, float]] = field(default_factory=list)


def lr_factor(step: int, total_steps: int, decay_steps: int) -> float:
    """Constant, then linear to exactly 0 after the last step (per iteration, not per epoch).

    The official per-epoch rule ends at lr/(n_epochs_decay + 1); this one reaches 0.
    """
    if decay_steps <= 0:
        return 1.0
    return max(0.0, min(1.0, (total_steps - step) / decay_steps))


def _domain_dirs(cfg: TrainConfig) -> tuple[Path, Path, Path | None, Path | None]:
    if cfg.data is not None:
        root = Path(cfg.data)
        if not root.is_dir():
            raise ConfigError(f"--data {root}: folder does not exist")
        for sub in ("trainA", "trainB"):
            if not (root / sub).is_dir():
                raise ConfigError(f"--data {root}: missing {sub}/ (expected trainA/ and trainB/)")
        test_a, test_b = root / "testA", root / "testB"
        return (
            root / "trainA",
            root / "trainB",
            test_a if test_a.is_dir() else None,
            test_b if test_b.is_dir() else None,
        )
    return Path(cfg.data_a), Path(cfg.data_b), None, None


def _report_domain(domain: Domain, cfg: TrainConfig) -> None:
    if domain.bad:
        print(
            f"skipping {len(domain.bad)} unreadable file(s) in domain {domain.name}:",
            file=sys.stderr,
        )
        for line in domain.bad:
            print(f"  {line}", file=sys.stderr)
    from cyclekit.data.transforms import needs_upscale

    small = [
        f
        for f, (w, h) in zip(domain.files, domain.sizes, strict=True)
        if needs_upscale(w, h, cfg.preprocess, cfg.load_size, cfg.crop_size)
    ]
    if small:
        print(
            f"warning: {len(small)} image(s) in domain {domain.name} are smaller than "
            f"--crop-size {cfg.crop_size} and will be upscaled (e.g. {small[0]})",
            file=sys.stderr,
        )


def _sample_batch(paths: list[Path], channels: int, cfg: TrainConfig) -> torch.Tensor | None:
    from cyclekit.data.transforms import eval_transform

    side = cfg.crop_size if cfg.preprocess != "none" else 256
    tensors = []
    for path in paths:
        try:
            pixels = decode_image(path, channels=channels).pixels
        except ImageDecodeError:
            continue
        tensors.append(eval_transform(pixels, side, side_multiple(cfg.netG)))
        if len(tensors) == cfg.n_samples:
            break
    return torch.stack(tensors) if tensors else None


def _resolve_resume(cfg: TrainConfig, resume: str | None) -> Path | None:
    if resume is None:
        return None
    if resume == "auto":
        last = cfg.run_dir / "last.pt"
        return last if last.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: no such file")
    return path


def merge_resumed_config(
    saved: dict[str, Any], cfg: TrainConfig, explicit: set[str] | None
) -> TrainConfig:
    """The saved config, with the explicitly given settings that may change on resume.

    ``explicit``: names of settings the user gave (None: all of ``cfg``).
    """
    current = cfg.to_dict()
    names = set(current) if explicit is None else explicit
    merged = dict(saved)
    conflicts = []
    for name in sorted(names):
        if name not in saved or saved[name] == current[name]:
            continue
        if name in RESUMABLE_OVERRIDES:
            merged[name] = current[name]
        else:
            conflicts.append(
                f"--{name.replace('_', '-')} {current[name]!r} (run has {saved[name]!r})"
            )
    if conflicts:
        raise ConfigError(
            "cannot resume with changed settings: "
            + "; ".join(conflicts)
            + ". Drop these flags, or start a new run with another --name"
        )
    return TrainConfig.from_dict(merged, "checkpoint config")


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves at the next step boundary and returns."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstopping after this step (saving last.pt); press Ctrl-C again to abort",
            file=sys.stderr,
        )

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _write_yaml(path: Path, values: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(values, f, sort_keys=False)
    os.replace(tmp, path)


def train(
    cfg: TrainConfig,
    resume: str | None = None,
    explicit: set[str] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue) a CycleGAN run in ``cfg.run_dir``. See ``cyclekit train --help``."""
    from tqdm import tqdm

    resume_path = _resolve_resume(cfg, resume)
    state = load_train_state(resume_path) if resume_path else None
    if state is not None:
        cfg = merge_resumed_config(state["config"], cfg, explicit)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    autocast = make_autocast(device, precision)

    # Data: scan both domains up front so bad folders fail before any model is built.
    dir_a, dir_b, test_a, test_b = _domain_dirs(cfg)
    domain_a, domain_b = scan_domain("A", dir_a), scan_domain("B", dir_b)
    for domain in (domain_a, domain_b):
        _report_domain(domain, cfg)
    from cyclekit.data.transforms import TrainTransform

    transform = TrainTransform(
        cfg.preprocess, cfg.load_size, cfg.crop_size, not cfg.no_flip, side_multiple(cfg.netG)
    )
    dataset = UnpairedDataset(domain_a, domain_b, transform, cfg.input_nc, cfg.output_nc)
    sampler = EpochSampler(len(domain_a.files), len(domain_b.files), cfg.seed)
    workers = min(cfg.num_workers, os.cpu_count() or 1)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        # Its own generator: otherwise each new iterator draws a worker seed from the global
        # RNG, which shifts dropout's random stream and breaks exact resume.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    steps_per_epoch = math.ceil(len(dataset) / cfg.batch_size)
    total_steps = cfg.total_epochs * steps_per_epoch
    decay_steps = cfg.epochs_decay * steps_per_epoch
    samples_a = _sample_batch(list_images(test_a) if test_a else domain_a.files, cfg.input_nc, cfg)
    samples_b = _sample_batch(list_images(test_b) if test_b else domain_b.files, cfg.output_nc, cfg)

    # Model, optimisers, schedule. Global RNGs are seeded too (dropout draws from them).
    torch.manual_seed(cfg.seed)
    m = build_cyclegan(cfg, device)
    specs = generator_specs(cfg)
    schedulers = {
        name: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, total_steps, decay_steps)
        )
        for name, opt in (("G", m.opt_G), ("D", m.opt_D))
    }
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step = epoch = epoch_step = 0
    wandb_id = None
    if state is not None:
        restore_train_state(state, m, schedulers, scaler, device)
        step, epoch, epoch_step = state["step"], state["epoch"], state["epoch_step"]
        wandb_id = state.get("wandb_run_id")
        print(f"resuming {resume_path} at step {step} (epoch {epoch + 1})", file=sys.stderr)
        del state

    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp"):  # left by a save that was killed mid-write
        stale.unlink(missing_ok=True)
    config = cfg.to_dict()
    _write_yaml(run_dir / "config.yaml", config)
    tracker = start_tracker(
        cfg.wandb_mode, cfg.wandb_project, cfg.wandb_entity, cfg.name, config, run_dir,
        cfg.tags, wandb_id,
    )  # fmt: skip
    print(
        f"training {cfg.name}: {len(domain_a.files)} A / {len(domain_b.files)} B images, "
        f"{steps_per_epoch} steps/epoch x {cfg.total_epochs} epochs, batch {cfg.batch_size}, "
        f"{device.type} {precision}; run folder {run_dir}",
        file=sys.stderr,
    )

    def save_last() -> None:
        save_train_state(
            run_dir / "last.pt", m, schedulers, scaler, config, specs, step, epoch,
            epoch_step, tracker.run_id,
        )  # fmt: skip
        for name, direction in (("G_ab", "a2b"), ("G_ba", "b2a")):
            net = getattr(m, name)
            save_generator(
                run_dir / f"{name}.pt", net, specs[name], direction, {"run": cfg.name, "step": step}
            )

    sampled_at = [-1]

    def write_samples() -> None:
        if samples_a is None or samples_b is None or sampled_at[0] == step:
            return
        sampled_at[0] = step
        n = min(len(samples_a), len(samples_b))
        out = translate_samples(m, samples_a[:n].to(device), samples_b[:n].to(device), autocast)
        path = save_sample_grid(out, run_dir / "samples" / f"step_{step:08d}.png")
        tracker.log_images({"samples": path}, step)

    result = TrainResult(run_dir=run_dir, step=step, epoch=epoch)
    window: dict[str, torch.Tensor] = {}
    window_steps, window_start = 0, time.perf_counter()
    epoch_sums: dict[str, float] = {}
    done = step >= total_steps or (cfg.max_steps is not None and step >= cfg.max_steps)
    with _StopFlag() as stop:
        while not done and epoch < cfg.total_epochs:
            sampler.set_epoch(epoch, epoch_step * cfg.batch_size)
            epoch_start = time.perf_counter()
            bar = tqdm(
                total=steps_per_epoch,
                initial=epoch_step,
                desc=f"epoch {epoch + 1}/{cfg.total_epochs}",
                unit="it",
                disable=not progress,
                dynamic_ncols=True,
                leave=False,
                file=sys.stderr,
            )
            for batch in loader:
                real_a = batch["a"].to(device, non_blocking=True)
                real_b = batch["b"].to(device, non_blocking=True)
                losses = train_step(m, real_a, real_b, cfg, autocast, scaler)
                for s in schedulers.values():
                    s.step()
                step += 1
                epoch_step += 1
                window_steps += 1
                for k, v in losses.items():
                    window[k] = window.get(k, 0) + v  # stays on the device: no sync
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    elapsed = time.perf_counter() - window_start
                    means = {k: float(v) / window_steps for k, v in window.items()}
                    rate = window_steps * cfg.batch_size / max(elapsed, 1e-9)
                    record = {f"loss/{k}": means[k] for k in LOSS_NAMES}
                    record |= {
                        "lr/G": m.opt_G.param_groups[0]["lr"],
                        "lr/D": m.opt_D.param_groups[0]["lr"],
                    }
                    record |= {
                        "perf/images_per_s": rate,
                        "epoch": epoch + epoch_step / steps_per_epoch,
                    }
                    tracker.log(record, step)
                    result.history.append({"step": step, **record})
                    result.losses = means
                    for k, v in means.items():
                        epoch_sums[k] = epoch_sums.get(k, 0.0) + v * window_steps
                    epoch_sums["_n"] = epoch_sums.get("_n", 0.0) + window_steps
                    bar.set_postfix_str(
                        f"G {means['G']:.3f} D_a {means['D_a']:.3f} D_b {means['D_b']:.3f} "
                        f"cyc {means['cycle_a'] + means['cycle_b']:.3f} {rate:.1f} img/s"
                    )
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                if step % cfg.sample_every == 0:
                    write_samples()
                if step % cfg.save_latest_every == 0:
                    save_last()
                if stop.requested or (cfg.max_steps is not None and step >= cfg.max_steps):
                    done = True
                    break
            bar.close()
            if epoch_step < steps_per_epoch:
                break  # stopped mid-epoch
            n = max(epoch_sums.pop("_n", 0.0), 1.0)
            summary = " ".join(
                f"{k} {epoch_sums[k] / n:.3f}"
                for k in ("G", "D_a", "D_b", "cycle_a", "cycle_b")
                if k in epoch_sums
            )
            took = time.perf_counter() - epoch_start
            print(
                f"epoch {epoch + 1}/{cfg.total_epochs} done: step {step}, {summary}, "
                f"lr {m.opt_G.param_groups[0]['lr']:.2e}, {took:.0f}s",
                file=sys.stderr,
            )
            epoch_sums = {}
            epoch, epoch_step = epoch + 1, 0
            save_last()
            if epoch % cfg.save_every == 0:
                from cyclekit.checkpoint import atomic_save

                atomic_save(models_payload(m, config, specs), run_dir / f"epoch_{epoch:04d}.pt")
        result.interrupted = stop.requested
    save_last()
    write_samples()
    tracker.finish()
    result.step, result.epoch = step, epoch
    return result
