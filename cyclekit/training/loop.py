"""``cyclekit train``: the training loop, top to bottom, for any model.

One process trains on one device; under ``torchrun`` each process is one rank of a
DistributedDataParallel run (rank 0 alone writes files and talks to W&B). Set-up, saving and
stopping live in :mod:`cyclekit.training.run`; the model behind the interface of
:mod:`cyclekit.training.model`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from cyclekit.training.config import TrainConfig
from cyclekit.training.distributed import gather_objects, weights_fingerprint
from cyclekit.training.evaluation import start_eval
from cyclekit.training.health import Health
from cyclekit.training.run import (
    LossWindow,
    build_trained_model,
    log_record,
    open_run,
    reached_limit,
    save_epoch,
    save_last,
    set_lr,
    should_stop,
    start_writing,
    summary,
    write_samples,
)
from cyclekit.training.rundir import StopFlag


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
    ranks_in_sync: bool | None = None  # DDP: were the weights identical on every rank at the end

    @property
    def finished(self) -> bool:
        """Ran to the end of the schedule (not stopped by a signal or a step/time limit)."""
        return self.epoch >= self.total_epochs


def train(
    cfg: TrainConfig,
    resume: str | None = None,
    explicit: set[str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train (or continue, with ``resume``) a run in ``cfg.run_dir``. See ``cyclekit train -h``.

    ``explicit``: the settings the user gave (the only ones that may change on resume).
    """
    from tqdm import tqdm

    run, state = open_run(cfg, resume, explicit, overwrite)
    finished = False
    try:
        model = build_trained_model(run, state)
        del state
        cfg = run.cfg
        result = TrainResult(
            run.run_dir, run.step, run.epoch, world_size=run.dist.world_size,
            is_main=run.main, total_epochs=cfg.total_epochs,
        )  # fmt: skip
        # Before anything is written: evaluation asked for but impossible fails in seconds.
        evals = start_eval(run, progress)
        health = Health.start(run, model)
        # Signals are caught from before the run folder exists: from then on a Ctrl-C or
        # SIGTERM always ends in a saved last.pt.
        with StopFlag() as stop:
            start_writing(run)
            window, epoch_window = LossWindow(), LossWindow()
            stopped = False
            while not stopped and not reached_limit(run):
                run.sampler.set_epoch(run.epoch, run.epoch_step * cfg.batch_size)
                bar = tqdm(
                    total=run.steps_per_epoch, initial=run.epoch_step, unit="it",
                    desc=f"epoch {run.epoch + 1}/{cfg.total_epochs}", leave=False,
                    disable=not (progress and run.main), dynamic_ncols=True, file=sys.stderr,
                )  # fmt: skip
                for batch in run.loader:
                    batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
                    losses = model.train_step(batch, run.autocast, run.scaler)
                    run.step += 1
                    health.after_step(losses)  # NaN watch, on the device
                    run.epoch_step += 1
                    set_lr(run, model)  # for the next step
                    window.add(losses)
                    epoch_window.add(losses)
                    bar.update(1)
                    log_now = run.step % cfg.log_every == 0 or run.step == cfg.max_steps
                    if log_now:
                        result.losses, steps, seconds = window.flush()
                        record = log_record(run, model, result.losses, steps, seconds)
                        result.history.append({"step": run.step, **record})
                        rate = record["perf/images_per_s"]
                        losses_text = summary(model, result.losses)
                        bar.set_postfix_str(f"{losses_text} {rate:.1f} img/s{evals.postfix}")
                        health.on_log(result.losses)  # a NaN stops the run here
                    if run.step % cfg.sample_every == 0:
                        health.on_samples(write_samples(run, model))
                    if run.step % cfg.save_latest_every == 0:
                        save_last(run, model)
                    if should_stop(run, stop, log_now) or health.stop_requested(log_now):
                        stopped = True
                        break
                bar.close()
                if run.epoch_step < run.steps_per_epoch:
                    break  # stopped mid-epoch
                # The epoch's means come from every step it ran, whatever the log windows.
                means, _, seconds = epoch_window.flush()
                lr = next(iter(model.optimizers().values())).param_groups[0]["lr"]
                run.log(
                    f"epoch {run.epoch + 1}/{cfg.total_epochs} done: step {run.step}, "
                    f"{summary(model, means)}, lr {lr:.2e}, {seconds:.0f}s"
                )
                run.epoch, run.epoch_step = run.epoch + 1, 0
                evals.after_epoch(run, model)  # when due: FID/KID, best.pt
                save_last(run, model)
                save_epoch(run, model)
            if window.steps:  # steps since the last log: record them too (e.g. a Ctrl-C)
                result.losses, steps, seconds = window.flush()
                result.history.append(
                    {"step": run.step, **log_record(run, model, result.losses, steps, seconds)}
                )
            result.interrupted = stop.requested
        save_last(run, model)
        health.on_samples(write_samples(run, model))
        if run.dist.enabled:
            prints = gather_objects(weights_fingerprint(model.networks()), run.dist)
            result.ranks_in_sync = all(p == prints[0] for p in prints)
            world = run.dist.world_size
            run.log(
                f"weights identical on all {world} ranks: {'yes' if result.ranks_in_sync else 'NO'}"
            )
        run.tracker.finish()
        result.step, result.epoch = run.step, run.epoch
        finished = True  # every rank got here (the fingerprints above are a collective)
        health.raise_if_stopped()  # --stop-on-alarm: last.pt is saved, exit with the reason
        return result
    finally:
        run.close(finished)
