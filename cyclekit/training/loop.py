"""``cyclekit train``: data, model, the loop, samples, checkpoints and tracking, top to bottom.

One process trains on one device; under ``torchrun`` each process is one rank of a
DistributedDataParallel run (rank 0 alone writes files and talks to W&B).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from cyclekit.data.images import list_images
from cyclekit.data.unpaired import EpochSampler, UnpairedDataset, scan_domain
from cyclekit.devices import autocast as make_autocast
from cyclekit.devices import resolve_device, resolve_precision
from cyclekit.files import atomic_save
from cyclekit.generator_io import save_generator
from cyclekit.models import side_multiple
from cyclekit.training.config import ConfigError, TrainConfig
from cyclekit.training.cyclegan import (
    LOSS_NAMES,
    build_cyclegan,
    generator_specs,
    train_step,
    translate_samples,
)
from cyclekit.training.distributed import (
    any_rank,
    gather_objects,
    init_distributed,
    shutdown,
    unwrap,
    weights_fingerprint,
)
from cyclekit.training.prepare import (
    StopFlag,
    check_uncropped_sizes,
    domain_dirs,
    merge_resumed_config,
    report_domain,
    resolve_resume,
    sample_batch,
    write_yaml,
)
from cyclekit.training.samples import save_sample_grid
from cyclekit.training.state import (
    load_train_state,
    models_payload,
    rank_state,
    restore_train_state,
    save_train_state,
)
from cyclekit.training.tracking import NullTracker, start_tracker


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    interrupted: bool = False
    losses: dict[str, float] = field(default_factory=dict)  # means over the last log window
    history: list[dict[str, float]] = field(default_factory=list)
    world_size: int = 1
    is_main: bool = True  # rank 0 (the only rank without torch.distributed)
    total_epochs: int = 0

    @property
    def finished(self) -> bool:
        """Ran to the end of the schedule (not stopped by a signal or a step/time limit)."""
        return self.epoch >= self.total_epochs

    ranks_in_sync: bool | None = None  # DDP: were the weights identical on every rank at the end


def lr_factor(step: int, total_steps: int, decay_steps: int) -> float:
    """Constant, then linear to exactly 0 after the last step (per iteration, not per epoch).

    The official per-epoch rule ends at lr/(n_epochs_decay + 1); this one reaches 0.
    """
    if decay_steps <= 0:
        return 1.0
    return max(0.0, min(1.0, (total_steps - step) / decay_steps))


def set_lr(cfg: TrainConfig, optimizers: list, epoch: int, epoch_step: int, spe: int) -> float:
    """Learning rate for the step at (epoch, epoch_step), from the position in the schedule.

    Computed from epochs, not from a step counter, so a run resumed with another number of
    steps per epoch (other processes count, another dataset size) keeps its schedule.
    """
    pos = epoch * spe + epoch_step
    lr = cfg.lr * lr_factor(pos, cfg.total_epochs * spe, cfg.epochs_decay * spe)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr
    return lr


def _log(msg: str, main: bool) -> None:
    if main:
        print(msg, file=sys.stderr, flush=True)


def train(
    cfg: TrainConfig,
    resume: str | None = None,
    explicit: set[str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train (or continue) a CycleGAN run in ``cfg.run_dir``. See ``cyclekit train --help``.

    Without ``resume``, a run folder that already holds a ``last.pt`` is refused unless
    ``overwrite``: forgetting ``--resume auto`` must not wipe out a long run.
    """
    from tqdm import tqdm

    existing = cfg.run_dir / "last.pt"
    if resume is None and existing.exists() and not overwrite:
        raise ConfigError(
            f"{existing} already holds a run; continue it with --resume auto, pick another "
            "--name, or pass --overwrite to start afresh"
        )
    resume_path = resolve_resume(cfg, resume)
    state = load_train_state(resume_path) if resume_path else None
    if state is not None:
        cfg = merge_resumed_config(state["config"], cfg, explicit)
    dist_info, device = init_distributed(resolve_device(cfg.device))
    main, world = dist_info.is_main, dist_info.world_size
    precision = resolve_precision(cfg.precision, device)
    autocast = make_autocast(device, precision)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: pick the fastest conv kernels

    # Data: scan both domains up front so bad folders fail before any model is built.
    dir_a, dir_b, test_a, test_b = domain_dirs(cfg)
    domain_a, domain_b = scan_domain("A", dir_a), scan_domain("B", dir_b)
    for domain in (domain_a, domain_b):
        check_uncropped_sizes(domain, cfg)
    if main:
        for domain in (domain_a, domain_b):
            report_domain(domain, cfg)
    from cyclekit.data.transforms import TrainTransform

    transform = TrainTransform(
        cfg.preprocess, cfg.load_size, cfg.crop_size, not cfg.no_flip, side_multiple(cfg.netG)
    )
    dataset = UnpairedDataset(domain_a, domain_b, transform, cfg.input_nc, cfg.output_nc)
    sampler = EpochSampler(
        len(domain_a.files), len(domain_b.files), cfg.seed, dist_info.rank, world
    )
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
    steps_per_epoch = math.ceil(sampler.per_rank / cfg.batch_size)
    files_a = list_images(test_a) if test_a else domain_a.files
    files_b = list_images(test_b) if test_b else domain_b.files
    samples_a = sample_batch(files_a, cfg.input_nc, cfg) if main else None
    samples_b = sample_batch(files_b, cfg.output_nc, cfg) if main else None

    # Model, optimisers, schedule. Global RNGs are seeded too (dropout draws from them).
    torch.manual_seed(cfg.seed + dist_info.rank)
    m = build_cyclegan(cfg, device, dist_info.rank)
    specs = generator_specs(cfg)
    optimizers = [m.opt_G, m.opt_D]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step = epoch = epoch_step = 0
    wandb_id = None
    if state is not None:
        restore_train_state(state, m, scaler, device, dist_info.rank, world)
        step, epoch, epoch_step = state["step"], state["epoch"], state["epoch_step"]
        saved_spe = state["schedulers"].get("steps_per_epoch", steps_per_epoch)
        if saved_spe != steps_per_epoch:  # other world size or dataset: same epoch fraction
            epoch_step = min(steps_per_epoch - 1, round(epoch_step * steps_per_epoch / saved_spe))
        wandb_id = state.get("wandb_run_id")
        _log(f"resuming {resume_path} at step {step} (epoch {epoch + 1})", main)
        del state
    if dist_info.enabled:
        # Wrap after loading: checkpoints hold the plain modules' keys.
        ids = [device.index] if device.type == "cuda" else None
        for name in ("G_ab", "G_ba", "D_a", "D_b"):
            setattr(m, name, DistributedDataParallel(getattr(m, name), device_ids=ids))
    if cfg.compile:
        for name in ("G_ab", "G_ba", "D_a", "D_b"):
            setattr(m, name, torch.compile(getattr(m, name)))

    set_lr(cfg, optimizers, epoch, epoch_step, steps_per_epoch)

    def schedule_state() -> dict[str, float]:
        return {"steps_per_epoch": steps_per_epoch, "lr": m.opt_G.param_groups[0]["lr"]}

    # Signals are caught from before the run folder exists: from then on a Ctrl-C or
    # SIGTERM always ends in a saved last.pt.
    with StopFlag() as stop:
        run_dir = cfg.run_dir
        config = cfg.to_dict()
        tracker = NullTracker()
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            for stale in run_dir.glob(".*.tmp"):  # left by a save that was killed mid-write
                stale.unlink(missing_ok=True)
            write_yaml(run_dir / "config.yaml", config)
            tracker = start_tracker(
                cfg.wandb_mode, cfg.wandb_project, cfg.wandb_entity, cfg.name, config, run_dir,
                cfg.tags, wandb_id,
            )  # fmt: skip
        _log(
            f"training {cfg.name}: {len(domain_a.files)} A / {len(domain_b.files)} B images, "
            f"{steps_per_epoch} steps/epoch x {cfg.total_epochs} epochs, batch {cfg.batch_size}"
            + (
                f" per process x {world} processes = {cfg.batch_size * world} global"
                if world > 1
                else ""
            )
            + f", {device.type} {precision}; run folder {run_dir}",
            main,
        )

        def save_last() -> None:
            # Every rank takes part (the gather); rank 0 writes.
            ranks = gather_objects(rank_state(m), dist_info)
            if not main:
                return
            save_train_state(
                run_dir / "last.pt", m, schedule_state(), scaler, config, specs, step, epoch,
                epoch_step, tracker.run_id, ranks,
            )  # fmt: skip
            for name, direction in (("G_ab", "a2b"), ("G_ba", "b2a")):
                meta = {"run": cfg.name, "step": step}
                save_generator(
                    run_dir / f"{name}.pt", unwrap(getattr(m, name)), specs[name], direction, meta
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

        result = TrainResult(
            run_dir=run_dir,
            step=step,
            epoch=epoch,
            world_size=world,
            is_main=main,
            total_epochs=cfg.total_epochs,
        )
        window: dict[str, torch.Tensor] = {}
        window_steps, window_start = 0, time.perf_counter()
        epoch_sums: dict[str, float] = {}
        done = epoch >= cfg.total_epochs or (cfg.max_steps is not None and step >= cfg.max_steps)
        deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes else None
        while not done and epoch < cfg.total_epochs:
            sampler.set_epoch(epoch, epoch_step * cfg.batch_size)
            epoch_start = time.perf_counter()
            bar = tqdm(
                total=steps_per_epoch,
                initial=epoch_step,
                desc=f"epoch {epoch + 1}/{cfg.total_epochs}",
                unit="it",
                disable=not (progress and main),
                dynamic_ncols=True,
                leave=False,
                file=sys.stderr,
            )
            for batch in loader:
                real_a = batch["a"].to(device, non_blocking=True)
                real_b = batch["b"].to(device, non_blocking=True)
                losses = train_step(m, real_a, real_b, cfg, autocast, scaler)
                step += 1
                epoch_step += 1
                set_lr(cfg, optimizers, epoch, epoch_step, steps_per_epoch)  # for the next step
                window_steps += 1
                for k, v in losses.items():
                    window[k] = window.get(k, 0) + v  # stays on the device: no sync
                bar.update(1)
                log_now = step % cfg.log_every == 0 or step == cfg.max_steps
                if log_now:
                    elapsed = time.perf_counter() - window_start
                    means = {k: float(v) / window_steps for k, v in window.items()}
                    rate = window_steps * cfg.batch_size * world / max(elapsed, 1e-9)
                    record = {f"loss/{k}": means[k] for k in LOSS_NAMES}
                    record["lr/G"] = m.opt_G.param_groups[0]["lr"]
                    record["lr/D"] = m.opt_D.param_groups[0]["lr"]
                    record["perf/images_per_s"] = rate
                    record["epoch"] = epoch + epoch_step / steps_per_epoch
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
                # Under DDP the stop decision is shared (one all-reduce per log window), so
                # every rank leaves the loop at the same step.
                stopping = stop.requested
                out_of_time = deadline is not None and time.monotonic() >= deadline
                if dist_info.enabled:
                    # Shared decisions, polled every few steps (cheap, and quick enough for a
                    # scheduler's SIGTERM grace period).
                    poll = step % min(cfg.log_every, 10) == 0 or log_now
                    out_of_time = any_rank(out_of_time, dist_info, device) if poll else False
                    stopping = any_rank(stopping, dist_info, device) if poll else False
                if stopping or out_of_time or (cfg.max_steps is not None and step >= cfg.max_steps):
                    done = True
                    stop.requested = stop.requested or stopping
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
            _log(
                f"epoch {epoch + 1}/{cfg.total_epochs} done: step {step}, {summary}, "
                f"lr {m.opt_G.param_groups[0]['lr']:.2e}, "
                f"{time.perf_counter() - epoch_start:.0f}s",
                main,
            )
            epoch_sums = {}
            epoch, epoch_step = epoch + 1, 0
            save_last()
            if main and epoch % cfg.save_every == 0:
                atomic_save(models_payload(m, config, specs), run_dir / f"epoch_{epoch:04d}.pt")
        result.interrupted = stop.requested
    save_last()
    write_samples()
    if dist_info.enabled:
        prints = gather_objects(weights_fingerprint(m.networks()), dist_info)
        result.ranks_in_sync = all(p == prints[0] for p in prints)
        _log(
            f"weights identical on all {world} ranks: {'yes' if result.ranks_in_sync else 'NO'}",
            main,
        )
    tracker.finish()
    shutdown()
    result.step, result.epoch = step, epoch
    return result
