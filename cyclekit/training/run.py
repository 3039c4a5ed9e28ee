"""One training run, shared by every model: set-up, loss windows, saving, samples, stopping.

:func:`open_run` does everything that comes before the first step and does not depend on the
model (resume, config merge, device, precision, the run-folder lock, data, sample images);
:func:`build_trained_model` makes the model and puts it where the run left off. The loop in
:mod:`cyclekit.training.loop` then calls the small functions below.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from cyclekit.data.images import list_images
from cyclekit.data.unpaired import EpochSampler, UnpairedDataset, scan_domain
from cyclekit.devices import autocast as make_autocast
from cyclekit.devices import resolve_device, resolve_precision
from cyclekit.files import atomic_save, remove_stale_temporaries, write_yaml
from cyclekit.generator_io import save_generator
from cyclekit.models import side_multiple
from cyclekit.training.compiling import (
    CompileChoice,
    choose_compile,
    fall_back_to_eager_on_compile_errors,
)
from cyclekit.training.config import TrainConfig
from cyclekit.training.distributed import (
    DistInfo,
    any_rank,
    gather_objects,
    init_distributed,
    shutdown,
)
from cyclekit.training.health import NanWatch, check_finite
from cyclekit.training.model import TrainModel, build_model
from cyclekit.training.prepare import (
    check_distributed_config,
    check_uncropped_sizes,
    domain_dirs,
    merge_resumed_config,
    report_domain,
    sample_batch,
)
from cyclekit.training.rundir import RunLock, StopFlag, check_fresh, resolve_resume
from cyclekit.training.samples import save_sample_grid
from cyclekit.training.state import (
    load_train_state,
    models_payload,
    restore_train_state,
    save_train_state,
)
from cyclekit.training.tracking import NullTracker, Tracker, check_wandb_mode, start_tracker


@dataclass
class Run:
    """Everything the loop needs besides the model, built once by :func:`open_run`."""

    cfg: TrainConfig
    dist: DistInfo
    device: torch.device
    precision: str
    autocast: Callable[[], Any]
    scaler: torch.amp.GradScaler
    loader: DataLoader
    sampler: EpochSampler
    steps_per_epoch: int
    n_images: tuple[int, int]
    samples: tuple[torch.Tensor, torch.Tensor] | None  # rank 0's fixed sample images
    lock: RunLock | None
    resume_path: Path | None = None
    tracker: Tracker = field(default_factory=NullTracker)
    step: int = 0
    epoch: int = 0
    epoch_step: int = 0
    wandb_id: str | None = None
    sampled_at: int = -1
    deadline: float | None = None
    nan_watch: NanWatch = field(default_factory=NanWatch)
    saved_step: int | None = None  # the step of the last.pt on disk (a good state)
    # The best evaluation so far (see cyclekit.training.evaluation), kept in last.pt.
    best: dict[str, Any] | None = None
    compiled: CompileChoice = CompileChoice(False, "not decided")

    @property
    def main(self) -> bool:
        return self.dist.is_main

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    @property
    def config(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def log(self, msg: str) -> None:
        if self.main:
            print(msg, file=sys.stderr, flush=True)

    def close(self, finished: bool = False) -> None:
        """Release the run folder and the process group (``finished``: the run ended normally
        on this rank; see :func:`~cyclekit.training.distributed.shutdown`)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        shutdown(finished)


def lr_factor(step: int, total_steps: int, decay_steps: int) -> float:
    """Constant, then linear to exactly 0 after the last step (per iteration, not per epoch).

    The official per-epoch rule ends at lr/(n_epochs_decay + 1); this one reaches 0.
    """
    if decay_steps <= 0:
        return 1.0
    return max(0.0, min(1.0, (total_steps - step) / decay_steps))


def set_lr(run: Run, model: TrainModel) -> float:
    """Learning rate for the next step, from the position (epoch, epoch_step) in the schedule.

    Computed from epochs, not from a step counter, so a run resumed with another number of
    steps per epoch (other processes count, another dataset size) keeps its schedule.
    """
    cfg, spe = run.cfg, run.steps_per_epoch
    pos = run.epoch * spe + run.epoch_step
    lr = cfg.lr * lr_factor(pos, cfg.total_epochs * spe, cfg.epochs_decay * spe)
    for opt in model.optimizers().values():
        for group in opt.param_groups:
            group["lr"] = lr
    return lr


def open_run(
    cfg: TrainConfig, resume: str | None, explicit: set[str] | None, overwrite: bool
) -> tuple[Run, dict[str, Any] | None]:
    """Resume state, merged config, device, lock and data; returns the run and the saved state.

    Without ``resume``, a run folder that already holds a ``last.pt`` is refused unless
    ``overwrite``. The run folder is locked (rank 0) before anything else looks at it, so a
    second run started with the same name stops here with a clear message.
    """
    # torch.distributed is not up yet (the device comes from the merged config): under
    # torchrun, RANK tells which process is rank 0.
    main = int(os.environ.get("RANK", "0")) == 0
    lock = RunLock(cfg.run_dir).acquire() if main else None
    try:
        check_fresh(cfg.run_dir, resume, overwrite)
        resume_path = resolve_resume(cfg.run_dir, resume, log=main)
        state = load_train_state(resume_path) if resume_path else None
        if state is not None:
            cfg = merge_resumed_config(state["config"], cfg, explicit)
            # A run saved as --wandb-mode online needs credentials now too: say so before
            # anything in the run folder is rewritten.
            check_wandb_mode(cfg.wandb_mode)
        dist, device = init_distributed(resolve_device(cfg.device))
        check_distributed_config(cfg, dist.world_size)  # the merged config, as it will run
        return _build_run(cfg, dist, device, lock, resume_path), state
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _build_run(
    cfg: TrainConfig,
    dist: DistInfo,
    device: torch.device,
    lock: RunLock | None,
    resume_path: Path | None,
) -> Run:
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: pick the fastest conv kernels

    # Data: scan both domains up front so bad folders fail before any model is built.
    dir_a, dir_b, test_a, test_b = domain_dirs(cfg)
    domain_a, domain_b = scan_domain("A", dir_a), scan_domain("B", dir_b)
    for domain in (domain_a, domain_b):
        check_uncropped_sizes(domain, cfg)
        if dist.is_main:
            report_domain(domain, cfg)
    from cyclekit.data.transforms import TrainTransform

    transform = TrainTransform(
        cfg.preprocess, cfg.load_size, cfg.crop_size, not cfg.no_flip, side_multiple(cfg.netG)
    )
    dataset = UnpairedDataset(domain_a, domain_b, transform, cfg.input_nc, cfg.output_nc)
    sampler = EpochSampler(
        len(domain_a.files), len(domain_b.files), cfg.seed, dist.rank, dist.world_size
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
    samples = None
    if dist.is_main:
        files_a = list_images(test_a) if test_a else domain_a.files
        files_b = list_images(test_b) if test_b else domain_b.files
        batch_a = sample_batch(files_a, cfg.input_nc, cfg)
        batch_b = sample_batch(files_b, cfg.output_nc, cfg)
        if batch_a is not None and batch_b is not None:
            n = min(len(batch_a), len(batch_b))
            samples = (batch_a[:n], batch_b[:n])
    steps_per_epoch = math.ceil(sampler.per_rank / cfg.batch_size)
    planned_steps = cfg.total_epochs * steps_per_epoch
    if cfg.max_steps is not None:
        planned_steps = min(planned_steps, cfg.max_steps)
    compiled = choose_compile(
        cfg.compile, device, planned_steps, cfg.batch_size * cfg.crop_size**2, cfg.max_minutes
    )
    return Run(
        cfg=cfg,
        dist=dist,
        device=device,
        precision=precision,
        autocast=make_autocast(device, precision),
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        loader=loader,
        sampler=sampler,
        steps_per_epoch=steps_per_epoch,
        n_images=(len(domain_a.files), len(domain_b.files)),
        samples=samples,
        lock=lock,
        resume_path=resume_path,
        deadline=time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes else None,
        compiled=compiled,
    )


def build_trained_model(run: Run, state: dict[str, Any] | None) -> TrainModel:
    """The model, restored to where ``state`` left off, wrapped for DDP/compile if asked."""
    # Global RNGs are seeded too (dropout draws from them).
    torch.manual_seed(run.cfg.seed + run.dist.rank)
    model = build_model(run.cfg, run.device, run.dist.rank)
    if state is not None:
        restore_train_state(
            state, model, run.scaler, run.device, run.dist.rank, run.dist.world_size
        )
        run.step, run.epoch, run.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        saved_spe = state["schedulers"].get("steps_per_epoch", run.steps_per_epoch)
        if saved_spe != run.steps_per_epoch:  # other world size or dataset: same epoch fraction
            run.epoch_step = min(
                run.steps_per_epoch - 1, round(run.epoch_step * run.steps_per_epoch / saved_spe)
            )
        run.wandb_id = state.get("wandb_run_id")
        run.saved_step = state["step"]
        run.best = state.get("best")  # absent in checkpoints from before evaluation
        run.log(f"resuming {run.resume_path} at step {run.step} (epoch {run.epoch + 1})")
    if run.dist.enabled:
        # Wrap after loading: checkpoints hold the plain modules' keys.
        ids = [run.device.index] if run.device.type == "cuda" else None
        model.wrap_networks(lambda _, net: DistributedDataParallel(net, device_ids=ids))
    if run.compiled.enabled:
        if run.cfg.compile is None:  # auto: a failed compile must not end a long run
            fall_back_to_eager_on_compile_errors()
        model.wrap_networks(lambda _, net: torch.compile(net))
    set_lr(run, model)
    return model


def start_writing(run: Run) -> None:
    """Create the run folder, its config.yaml and the tracker (rank 0), and say what runs."""
    cfg, world = run.cfg, run.dist.world_size
    if run.main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run.run_dir)  # left by a save that was killed mid-write
        write_yaml(run.run_dir / "config.yaml", run.config)
        run.tracker = start_tracker(
            cfg.wandb_mode, cfg.wandb_project, cfg.wandb_entity, cfg.name, run.config,
            run.run_dir, cfg.tags, run.wandb_id,
        )  # fmt: skip
    per_process = f" per process x {world} processes = {cfg.batch_size * world} global"
    run.log(
        f"training {cfg.name}: {run.n_images[0]} A / {run.n_images[1]} B images, "
        f"{run.steps_per_epoch} steps/epoch x {cfg.total_epochs} epochs, batch {cfg.batch_size}"
        + (per_process if world > 1 else "")
        + f", {run.device.type} {run.precision}, torch.compile "
        + ("on" if run.compiled.enabled else "off")
        + f" ({run.compiled.reason}); run folder {run.run_dir}"
    )


class LossWindow:
    """Sums each loss over steps on the device (no host sync per step); ``flush`` syncs once."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.steps += 1

    def flush(self) -> tuple[dict[str, float], int, float]:
        """Means since the last flush, the number of steps and the seconds they took."""
        means = {k: float(v) / self.steps for k, v in self.sums.items()} if self.steps else {}
        steps, seconds = self.steps, time.perf_counter() - self.start
        self.sums, self.steps, self.start = {}, 0, time.perf_counter()
        return means, steps, seconds


def log_record(
    run: Run, model: TrainModel, means: dict[str, float], steps: int, seconds: float
) -> dict[str, float]:
    """The W&B record of one log window: losses, learning rates, throughput, epoch."""
    record = {f"loss/{k}": means[k] for k in model.loss_names if k in means}
    for name, opt in model.optimizers().items():
        record[f"lr/{name}"] = opt.param_groups[0]["lr"]
    world = run.dist.world_size
    record["perf/images_per_s"] = steps * run.cfg.batch_size * world / max(seconds, 1e-9)
    record["epoch"] = run.epoch + run.epoch_step / run.steps_per_epoch
    run.tracker.log(record, run.step)
    return record


def summary(model: TrainModel, means: dict[str, float]) -> str:
    return " ".join(f"{k} {means[k]:.3f}" for k in model.summary_names if k in means)


def save_last(run: Run, model: TrainModel) -> None:
    """``last.pt`` (everything, every rank's pools and RNGs) and the generators for translate.

    Every rank must call it (the gather); rank 0 writes. A NaN or infinite loss since the
    start (or non-finite weights) stops the run here instead: a broken state is never saved.
    """
    check_finite(run, model)
    ranks = gather_objects(model.rank_state(), run.dist)
    if not run.main:
        return
    first_opt = next(iter(model.optimizers().values()))
    schedule = {"steps_per_epoch": run.steps_per_epoch, "lr": first_opt.param_groups[0]["lr"]}
    save_train_state(
        run.run_dir / "last.pt", model, schedule, run.scaler, run.config, model.specs, run.step,
        run.epoch, run.epoch_step, run.tracker.run_id, ranks, {"best": run.best},
    )  # fmt: skip
    run.saved_step = run.step
    for name, (net, spec, direction) in model.generators().items():
        meta = {"run": run.cfg.name, "step": run.step}
        save_generator(run.run_dir / f"{name}.pt", net, spec, direction, meta)


def save_epoch(run: Run, model: TrainModel) -> None:
    """``epoch_NNNN.pt``: the networks only, every ``--save-every`` epochs (rank 0)."""
    if run.main and run.epoch % run.cfg.save_every == 0:
        path = run.run_dir / f"epoch_{run.epoch:04d}.pt"
        atomic_save(models_payload(model, run.config, model.specs), path)


def write_samples(run: Run, model: TrainModel) -> dict[str, torch.Tensor] | None:
    """The sample grid for this step (once per step), also sent to the tracker; returns its
    images (None when there are none or they were made at this step already)."""
    if run.samples is None or run.sampled_at == run.step:
        return None
    run.sampled_at = run.step
    real_a, real_b = (t.to(run.device) for t in run.samples)
    images = model.sample(real_a, real_b, run.autocast)
    path = save_sample_grid(images, run.run_dir / "samples" / f"step_{run.step:08d}.png")
    run.tracker.log_images({"samples": path}, run.step)
    return images


def reached_limit(run: Run) -> bool:
    """The schedule's end or ``--max-steps``."""
    max_steps = run.cfg.max_steps
    return run.epoch >= run.cfg.total_epochs or (max_steps is not None and run.step >= max_steps)


def should_stop(run: Run, stop: StopFlag, log_now: bool) -> bool:
    """After a step: a signal, ``--max-minutes`` or ``--max-steps``.

    Under DDP the decision is shared (an all-reduce every few steps, cheap and quick enough
    for a scheduler's SIGTERM grace period), so every rank leaves the loop at the same step.
    """
    stopping = stop.requested
    out_of_time = run.deadline is not None and time.monotonic() >= run.deadline
    if run.dist.enabled:
        poll = run.step % min(run.cfg.log_every, 10) == 0 or log_now
        out_of_time = any_rank(out_of_time, run.dist, run.device) if poll else False
        stopping = any_rank(stopping, run.dist, run.device) if poll else False
        stop.requested = stop.requested or stopping  # another rank's Ctrl-C stops this one too
    max_steps = run.cfg.max_steps
    return stopping or out_of_time or (max_steps is not None and run.step >= max_steps)
