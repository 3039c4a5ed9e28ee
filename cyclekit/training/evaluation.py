"""FID and KID during training (``--eval-every``): fixed held-out images, ``best.pt``.

Every ``--eval-every`` epochs (and after the last one) rank 0 translates the first
``--eval-images`` test images of each domain (``DATA/testA``, ``DATA/testB``, sorted by path:
the same images every time) with each generator the model has, and scores them exactly as
``cyclekit eval`` does (:func:`cyclekit.evaluate.run.score_translations`: images resized to
256x256 bicubic, generators in fp32, Inception features, KID over 100 subsets with a fixed
seed), so ``cyclekit eval --checkpoint best.pt`` on those images prints the same numbers.
What does not change between evaluations (the real images' features and the scores of doing
nothing) is computed once, at the start.

``best.pt`` holds the generators (the format ``translate`` and ``eval`` read, like
``last.pt`` without the discriminators and optimiser state) of the evaluation with the lowest
``--eval-metric`` (averaged over the directions), with that evaluation under ``"best"``; the
best so far is saved in ``last.pt`` too, so a resumed run keeps it.

The evaluation never changes training: it draws no random number from the training streams
(all of them are saved before and restored after, in case a feature network ever does), runs
the generators in eval mode without gradients and puts them back in training mode, and reads
the test images itself (not through the training data loader).

Default: every :data:`DEFAULT_EVERY_CUDA` epochs on CUDA, off elsewhere (on a CPU one
evaluation of 100 + 100 images with the Inception network takes minutes). A default that
cannot run (no test split, Inception weights not downloadable) turns evaluation off with a
warning; an ``--eval-every`` the user gave fails at the start instead, before any step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cyclekit.errors import CyclekitError
from cyclekit.training.config import ConfigError
from cyclekit.training.rng import rng_state, set_rng_state

if TYPE_CHECKING:
    from cyclekit.evaluate.features import Extractor
    from cyclekit.evaluate.metrics import FeatureStats
    from cyclekit.training.model import TrainModel
    from cyclekit.training.run import Run

# An epoch of horse2zebra (1067 steps at batch 1) takes minutes on a GPU; one evaluation of
# 100 + 100 images takes seconds there, so every 10 epochs costs well under 1 % of the run and
# gives 20 points (and best.pt candidates) over the default 200 epochs.
DEFAULT_EVERY_CUDA = 10
BEST_FILE = "best.pt"
_DOMAINS = {"a2b": ("A", "B"), "b2a": ("B", "A")}


def resolve_every(value: int | None, device: torch.device) -> int:
    """``--eval-every`` as it runs: the given value, else the default for ``device``."""
    if value is not None:
        return value
    return DEFAULT_EVERY_CUDA if device.type == "cuda" else 0


@dataclass
class HeldOut:
    """One direction's fixed evaluation images and what does not change between runs."""

    inputs: np.ndarray  # (K, S, S, 3) uint8, the source domain's first K test images
    real_features: np.ndarray  # the target domain's first K test images' features
    real_stats: FeatureStats
    nothing: dict[str, Any]  # the scores of doing nothing (the inputs themselves)


def direction_scores(
    held: HeldOut, fakes: np.ndarray, fake_features: np.ndarray, kid_subsets: int
) -> dict[str, Any]:
    """What :func:`cyclekit.evaluate.run.score_translations` returns for ``held.inputs`` and
    their translations ``fakes`` (whose features are given), reusing the real images' features
    and the scores of doing nothing (a test keeps the two equal)."""
    from cyclekit.evaluate.metrics import fid, kid, ssim

    k = kid(fake_features, held.real_features, subsets=kid_subsets)
    ssims = ssim(held.inputs, fakes)
    return {
        "fid": fid(fake_features, held.real_stats),
        "kid_mean": k.mean,
        "kid_std": k.std,
        "kid_subset_size": k.subset_size,
        "ssim_mean": float(ssims.mean()),
        "ssim_std": float(ssims.std()),
        "doing_nothing": held.nothing,
    }


def _batches(images: np.ndarray, size: int, bar: Any) -> Iterator[np.ndarray]:
    for i in range(0, len(images), size):
        yield images[i : i + size]
        bar.update(len(images[i : i + size]))


def _nothing_scores(
    input_features: np.ndarray, held_real: np.ndarray, stats: FeatureStats, kid_subsets: int
) -> dict[str, Any]:
    from cyclekit.evaluate.metrics import fid, kid

    k = kid(input_features, held_real, subsets=kid_subsets)
    return {
        "fid": fid(input_features, stats),
        "kid_mean": k.mean,
        "kid_std": k.std,
        "kid_subset_size": k.subset_size,
        "ssim_mean": 1.0,
    }


def _test_images(run: Run, limit: int) -> dict[str, tuple[list, str]]:
    """Domain -> (its first ``limit`` test image paths, the folder), or a ConfigError."""
    from cyclekit.data.images import list_images
    from cyclekit.training.prepare import domain_dirs

    _, _, test_a, test_b = domain_dirs(run.cfg)
    if test_a is None or test_b is None:
        where = (
            f"--data {run.cfg.data} has no testA/ and testB/"
            if run.cfg.data is not None
            else "--data-a/--data-b have no test split"
        )
        raise ConfigError(
            f"--eval-every needs held-out images: {where}; add DATA/testA and DATA/testB "
            "(a few dozen images each), or --eval-every 0"
        )
    found = {}
    for name, folder in (("A", test_a), ("B", test_b)):
        paths = list_images(folder)[:limit]
        if len(paths) < 2:
            raise ConfigError(
                f"--eval-every: {folder} has {len(paths)} image(s); FID and KID need at least 2"
            )
        found[name] = (paths, str(folder))
    return found


@dataclass
class TrainEval:
    """The evaluation of one run; ``every == 0``: off (every call does nothing)."""

    every: int = 0
    metric: str = "kid"
    extractor: Extractor | None = None
    held: dict[str, HeldOut] = field(default_factory=dict)
    batch_size: int = 8
    counts: dict[str, int] = field(default_factory=dict)  # images per domain
    progress: bool = False
    postfix: str = ""  # the latest score, for the progress bar

    @property
    def on(self) -> bool:
        return self.every > 0 and bool(self.held)

    def identity(self) -> dict[str, Any]:
        """What makes two evaluations comparable (a best-so-far with another is dropped)."""
        assert self.extractor is not None
        proto = self.extractor.protocol()
        return {
            "metric": self.metric,
            "images": dict(self.counts),
            "features": proto.get("weights_sha256") or proto["feature_extractor"],
        }

    def due(self, epoch: int, total_epochs: int) -> bool:
        return self.on and (epoch % self.every == 0 or epoch == total_epochs)

    def after_epoch(self, run: Run, model: TrainModel) -> None:
        """Evaluate (rank 0) when due, log it, keep best.pt. Called after ``run.epoch`` moved
        on, before last.pt is saved (which then holds the new best)."""
        from cyclekit.training.health import weights_finite

        if not run.main or not self.due(run.epoch, run.cfg.total_epochs):
            return
        if run.nan_watch.first_bad() is not None or not weights_finite(model):
            return  # save_last, next, stops the run and says why
        start = time.perf_counter()
        saved = rng_state()
        try:
            scores = self.score(model, run.device)
        finally:
            set_rng_state(saved)
        seconds = time.perf_counter() - start
        self.report(run, model, scores, seconds)

    def score(self, model: TrainModel, device: torch.device) -> dict[str, dict[str, Any]]:
        """Each direction's scores for the generators as they are now."""
        from tqdm import tqdm

        from cyclekit.evaluate.metrics import KID_SUBSETS
        from cyclekit.evaluate.run import Translator

        assert self.extractor is not None
        results = {}
        for net, spec, direction in model.generators().values():
            held = self.held.get(direction)
            if held is None:
                continue
            was_training = net.training
            bar = tqdm(
                total=len(held.inputs), desc=f"eval {direction}", unit="img", leave=False,
                disable=not self.progress,
            )  # fmt: skip
            try:
                translate = Translator(net, spec, device, "fp32")  # puts net in eval mode
                fakes, feats = [], []
                for batch in _batches(held.inputs, self.batch_size, bar):
                    fakes.append(translate(batch))
                    feats.append(self.extractor(fakes[-1]))
            finally:
                net.train(was_training)
                bar.close()
            results[direction] = direction_scores(
                held, np.concatenate(fakes), np.concatenate(feats), KID_SUBSETS
            )
        return results

    def value(self, scores: dict[str, dict[str, Any]]) -> float:
        """The number best.pt is kept by: ``--eval-metric`` averaged over the directions."""
        key = "kid_mean" if self.metric == "kid" else "fid"
        return float(np.mean([s[key] for s in scores.values()]))

    def report(
        self, run: Run, model: TrainModel, scores: dict[str, dict[str, Any]], seconds: float
    ) -> None:
        value = self.value(scores)
        record: dict[str, float] = {}
        parts = []
        for d, s in scores.items():
            n = s["doing_nothing"]
            record |= {
                f"eval/{d}/kid": s["kid_mean"], f"eval/{d}/kid_std": s["kid_std"],
                f"eval/{d}/fid": s["fid"], f"eval/{d}/ssim": s["ssim_mean"],
                f"eval/{d}/nothing_kid": n["kid_mean"], f"eval/{d}/nothing_fid": n["fid"],
            }  # fmt: skip
            parts.append(
                f"{d} KIDx100 {100 * s['kid_mean']:.2f} ± {100 * s['kid_std']:.2f} "
                f"(doing nothing {100 * n['kid_mean']:.2f}), FID {s['fid']:.1f} "
                f"({n['fid']:.1f}), SSIM {s['ssim_mean']:.3f}"
            )
        best = run.best
        # A score that is not a number never becomes the best (nor blocks a real one).
        improved = math.isfinite(value) and (best is None or not value >= best["value"])
        if improved:
            run.best = {**self.identity(), "value": value, "step": run.step, "epoch": run.epoch}
            save_best(run, model)
        record |= {"eval/score": value, "eval/seconds": seconds}
        if run.best is not None:
            record |= {"eval/best": run.best["value"], "eval/best_step": float(run.best["step"])}
        run.tracker.log(record, run.step)
        self.postfix = " " + _shown(self.metric, value)
        if improved:
            best_text = f"new best {_shown(self.metric, value)} -> {run.run_dir / BEST_FILE}"
        elif run.best is None:
            best_text = "no best yet (the score is not a number)"
        else:
            best_text = f"best {_shown(self.metric, run.best['value'])} at step {run.best['step']}"
        run.log(
            f"eval at epoch {run.epoch}, step {run.step} ({seconds:.1f}s): "
            + "; ".join(parts)
            + f"; {best_text}"
        )


def _shown(metric: str, value: float) -> str:
    # KID x100, as CycleGAN-family papers and `cyclekit eval` print it.
    return f"KIDx100 {100 * value:.2f}" if metric == "kid" else f"FID {value:.1f}"


def save_best(run: Run, model: TrainModel) -> None:
    """``best.pt``: the generators and their specs (what translate and eval read), written
    atomically, with the evaluation that chose them under ``"best"``."""
    from cyclekit.files import FORMAT_VERSION, atomic_save
    from cyclekit.generator_io import TRAIN_FORMAT

    gens = model.generators()
    payload = {
        "format": TRAIN_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": run.config,
        "specs": {name: spec for name, (_, spec, _) in gens.items()},
        "models": {
            name: {k: v.detach().cpu() for k, v in net.state_dict().items()}
            for name, (net, _, _) in gens.items()
        },
        "best": dict(run.best or {}),
        "step": run.step,
        "epoch": run.epoch,
    }
    atomic_save(payload, run.run_dir / BEST_FILE)


def start_eval(run: Run, progress: bool = True) -> TrainEval:
    """Everything the evaluations need, prepared before the first step (rank 0): the test
    images, the feature network, the real images' features. A missing piece fails here, in
    seconds, when the user asked for evaluation; the default turns evaluation off instead."""
    cfg = run.cfg
    every = resolve_every(cfg.eval_every, run.device)
    if every == 0 or not run.main:
        return TrainEval(every=every if run.main else 0)
    try:
        evals = _prepare(run, every, progress)
    except CyclekitError as e:
        if cfg.eval_every is not None:
            raise
        run.log(
            f"warning: evaluation during training is off ({e}); give --eval-every 0 to "
            "silence this, or fix it to have FID/KID and best.pt"
        )
        return TrainEval()
    if run.best is not None and {k: run.best.get(k) for k in ("metric", "images", "features")} != (
        evals.identity()
    ):
        run.log(
            f"note: the best so far ({run.best.get('metric')} on {run.best.get('images')} "
            "images) is not comparable with this run's evaluation; best.pt is chosen afresh"
        )
        run.best = None
    return evals


def _prepare(run: Run, every: int, progress: bool) -> TrainEval:
    from tqdm import tqdm

    from cyclekit.evaluate import features
    from cyclekit.evaluate.metrics import KID_SUBSETS, feature_stats
    from cyclekit.evaluate.run import DEFAULT_SIZE, load_resized

    cfg = run.cfg
    found = _test_images(run, cfg.eval_images)
    extractor = features.load_inception(run.device, progress)
    batch = 16 if run.device.type == "cuda" else 8
    images, feats = {}, {}
    for name, (paths, folder) in found.items():
        images[name] = np.stack([load_resized(p, DEFAULT_SIZE) for p in paths])
        with tqdm(
            total=len(paths), desc=f"eval set: {folder}", unit="img", leave=False,
            disable=not progress,
        ) as bar:  # fmt: skip
            feats[name] = np.concatenate([extractor(b) for b in _batches(images[name], batch, bar)])
    held = {}
    for d in ("a2b",) if cfg.one_sided else ("a2b", "b2a"):
        src, dst = _DOMAINS[d]
        stats = feature_stats(feats[dst])
        held[d] = HeldOut(
            images[src],
            feats[dst],
            stats,
            _nothing_scores(feats[src], feats[dst], stats, KID_SUBSETS),
        )
    counts = {name: len(found[name][0]) for name in found}
    run.log(
        f"evaluating every {every} epoch(s) and after the last: {cfg.eval_metric} picks best.pt; "
        f"{counts['A']} A / {counts['B']} B test images ({', '.join(sorted(held))}), "
        f"{DEFAULT_SIZE} px, features: {extractor.protocol()['feature_extractor']}"
    )
    return TrainEval(every, cfg.eval_metric, extractor, held, batch, counts, progress)
