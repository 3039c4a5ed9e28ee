"""The MNIST quality report: Fréchet distance in a small classifier's feature space, class
coverage and classifier confidence.

The classifier is trained by cyclekit itself (so the numbers need no downloaded weights) and
cached in :func:`cyclekit.files.cache_dir` (``$CYCLEKIT_CACHE``, else
``$XDG_CACHE_HOME/cyclekit``, else ``~/.cache/cyclekit``), keyed by a hash of the data,
the seed, the epochs and the architecture: the same data and seed always give the same features,
which is what makes Fréchet distances comparable between runs.

Scores are refused rather than printed when they would mean nothing: fewer samples than
:data:`cyclekit.mnist.MIN_EVAL_SAMPLES` (the covariance of 128-d features is singular), a
classifier below :data:`cyclekit.mnist.MIN_CLASSIFIER_ACCURACY` test accuracy (its features do
not separate digits), or a generator that outputs NaN.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cyclekit.errors import CyclekitError, UsageError
from cyclekit.files import (
    CheckpointError,
    atomic_path,
    atomic_save,
    cache_dir,
    refuse_overwrite,
    safe_load,
)
from cyclekit.mnist import FEATURES, MAX_SAMPLES, MIN_CLASSIFIER_ACCURACY, MIN_EVAL_SAMPLES
from cyclekit.mnist.common import writing
from cyclekit.mnist.data import MnistArrays, MnistDataError, digits_to_tensor, load_mnist
from cyclekit.mnist.nets import model_from_spec, model_spec

CLASSIFIER_SPEC = model_spec("classifier", width=16, features=FEATURES)
CLASSIFIER_VERSION = 1  # bump when the training recipe changes, so old caches are not reused
MISSING_FRACTION = 0.01  # a digit is "missing" when fewer than 1% of samples are classified as it
REPORT_KEYS = ("frechet_distance", "class_histogram", "checkpoint")  # of a --json report


class EvalError(CyclekitError):
    """A score that would mean nothing (weak classifier, NaN samples); the message says why."""


def _data_key(train: MnistArrays, test: MnistArrays, seed: int, epochs: int) -> str:
    h = hashlib.sha256()
    for arr in (train.images, train.labels, test.images, test.labels):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(repr((seed, epochs, CLASSIFIER_VERSION, sorted(CLASSIFIER_SPEC.items()))).encode())
    return h.hexdigest()[:16]


def train_classifier(
    train: MnistArrays,
    test: MnistArrays,
    seed: int = 0,
    epochs: int = 2,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, float]:
    """Train the feature classifier (Adam 1e-3) and return it with its test accuracy."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = model_from_spec(CLASSIFIER_SPEC).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = digits_to_tensor(train.images), torch.from_numpy(train.labels)
    order_rng = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=order_rng).split(batch_size):
            loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    probs = classify(model, digits_to_tensor(test.images), device)
    acc = float((probs.argmax(1) == torch.from_numpy(test.labels)).float().mean())
    return model, acc


def load_or_train_classifier(
    train: MnistArrays,
    test: MnistArrays,
    seed: int = 0,
    epochs: int = 2,
    device: torch.device | str = "cpu",
    directory: Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[nn.Module, float]:
    """The cached classifier for this data and seed, training (and caching) it when absent."""
    key = _data_key(train, test, seed, epochs)
    path = (directory or cache_dir()) / f"mnist-classifier-{key}.pt"
    if path.is_file():
        try:
            blob = safe_load(path)
            model = model_from_spec(blob["spec"], generator=torch.Generator().manual_seed(0))
            model.load_state_dict(blob["state_dict"])
            return model.to(device).eval(), float(blob["test_accuracy"])
        except (CheckpointError, KeyError, RuntimeError, TypeError, ValueError) as e:
            log(f"ignoring unusable classifier cache ({e}); retraining")
    log(f"training the evaluation classifier on {len(train)} images (cached at {path}) ...")
    model, acc = train_classifier(train, test, seed=seed, epochs=epochs, device=device)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    try:
        atomic_save({"spec": CLASSIFIER_SPEC, "state_dict": state, "test_accuracy": acc}, path)
    except OSError as e:  # a read-only or full cache only costs the retraining next time
        log(f"could not cache the classifier at {path} ({e.strerror or e}); continuing")
    return model, acc


@torch.no_grad()
def classify(
    model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu", batch: int = 1000
) -> torch.Tensor:
    """Softmax probabilities ``(N, 10)`` for images ``(N, 1, 28, 28)`` in [-1, 1]."""
    out = [F.softmax(model(x.to(device)), 1).cpu() for x in images.split(batch)]
    return torch.cat(out)


@torch.no_grad()
def features(
    model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu", batch: int = 1000
) -> torch.Tensor:
    """Penultimate-layer features ``(N, 128)`` for images in [-1, 1], as float64."""
    return torch.cat([model.features(x.to(device)).double().cpu() for x in images.split(batch)])


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a (N, F)`` and ``b (M, F)``.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``; the trace of the square root is the
    sum of the square roots of the eigenvalues of ``S_a S_b`` (real and >= 0 for covariances).
    """
    if len(a) < 2 or len(b) < 2:  # torch.cov of one row is NaN, and eigvals of NaN crash
        raise ValueError(f"need at least 2 feature vectors on each side, got {len(a)}, {len(b)}")
    a, b = a.double(), b.double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("features contain NaN or infinite values")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eig = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0)
    fd = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * eig.sqrt().sum()
    return float(fd.clamp(min=0))


def class_coverage(
    probs: torch.Tensor, min_fraction: float = MISSING_FRACTION
) -> tuple[list[int], list[int]]:
    """Histogram of predicted digits and the digits with fewer than ``min_fraction`` of samples."""
    hist = torch.bincount(probs.argmax(1), minlength=10).tolist()
    missing = [d for d, n in enumerate(hist) if n < min_fraction * len(probs)]
    return hist, missing


def quality_report(
    fakes: torch.Tensor,
    classifier: nn.Module,
    reference: torch.Tensor,
    real_train: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Score generated images ``(N, 1, 28, 28)`` in [-1, 1] against ``reference`` (test set).

    ``real_train`` (as many training images as fakes) gives the floor: the distance real
    training digits reach, the best a generator can hope for with this many samples.
    """
    if not torch.isfinite(fakes).all():
        raise EvalError("the generated images contain NaN or infinite values: nothing to score")
    probs = classify(classifier, fakes, device)
    hist, missing = class_coverage(probs)
    ref_feats = features(classifier, reference, device)
    report: dict[str, Any] = {
        "n_samples": len(fakes),
        "frechet_distance": frechet_distance(features(classifier, fakes, device), ref_feats),
        "class_histogram": hist,
        "missing_digits": missing,
        "n_missing": len(missing),
        "mean_confidence": float(probs.max(1).values.mean()),
    }
    if real_train is not None and len(real_train) >= MIN_EVAL_SAMPLES:
        report["frechet_distance_real"] = frechet_distance(
            features(classifier, real_train, device), ref_feats
        )
    return report


def format_report(report: dict[str, Any]) -> str:
    """A human-readable version of :func:`quality_report` (plus any extra keys)."""
    lines = [
        f"classifier test accuracy: {report.get('classifier_test_accuracy', float('nan')):.4f}",
        f"Fréchet distance ({report['n_samples']} samples vs test set): "
        f"{report['frechet_distance']:.3f}",
    ]
    if "frechet_distance_real" in report:
        lines.append(f"  real training digits reach: {report['frechet_distance_real']:.3f}")
    lines.append(f"mean classifier confidence: {report['mean_confidence']:.4f}")
    lines.append("class coverage (digit: count):")
    hist = report["class_histogram"]
    top = max(hist) or 1
    for d, n in enumerate(hist):
        lines.append(f"  {d}: {n:6d} {'#' * round(40 * n / top)}")
    missing = report["missing_digits"]
    lines.append(f"missing digits (< {MISSING_FRACTION:.0%} of samples): {len(missing)} {missing}")
    return "\n".join(lines)


def evaluate_checkpoint(
    checkpoint: Path,
    data_dir: str | None = None,
    download: bool = True,
    n: int = 10_000,
    seed: int = 0,
    classifier_epochs: int = 2,
    device: str = "cpu",
    json_path: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The ``gan eval`` report for a checkpoint: refused where it would mean nothing."""
    from cyclekit.devices import resolve_device
    from cyclekit.mnist.gan import check_finite, generate, load_gan_generator

    checkpoint = Path(checkpoint)
    if not MIN_EVAL_SAMPLES <= n <= MAX_SAMPLES:
        raise UsageError(
            f"-n {n}: score {MIN_EVAL_SAMPLES}..{MAX_SAMPLES} samples (a Fréchet distance on "
            f"{FEATURES}-d features needs more samples than features; 10,000 is usual)"
        )
    if classifier_epochs < 1:
        raise UsageError(f"--classifier-epochs {classifier_epochs}: must be >= 1")
    if json_path is not None:
        check_report_target(Path(json_path), checkpoint)
    device = str(resolve_device(device))
    G, blob = load_gan_generator(checkpoint, device)
    data_dir = data_dir or blob["config"].get("data_dir", "datasets/mnist")
    train = load_mnist(data_dir, "train", download=download)
    test = load_mnist(data_dir, "test", download=download)
    # Compare with the classes the run was trained on (--digits 3: the test set's 3s).
    digits = blob["config"].get("digits") or list(range(10))
    ref = digits_to_tensor(test.images[np.isin(test.labels, digits)])
    if len(ref) < MIN_EVAL_SAMPLES:
        raise MnistDataError(
            f"{test.source}: {len(ref)} test images of digits {list(digits)}; the Fréchet "
            f"distance needs at least {MIN_EVAL_SAMPLES} (more than its {FEATURES} features)"
        )
    clf, acc = load_or_train_classifier(train, test, seed, classifier_epochs, device, log=log)
    if acc < MIN_CLASSIFIER_ACCURACY:
        raise EvalError(
            f"the evaluation classifier reaches only {acc:.1%} test accuracy on {test.source} "
            f"(at least {MIN_CLASSIFIER_ACCURACY:.0%} needed for meaningful scores); train it "
            "longer with --classifier-epochs, or check --data-dir"
        )
    real = digits_to_tensor(train.images[np.isin(train.labels, digits)])
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n]
    fakes = check_finite(generate(G, n, seed, device), checkpoint)
    report = quality_report(fakes, clf, ref, real[pick], device)
    report = {"classifier_test_accuracy": acc, **report, "checkpoint": str(checkpoint)}
    if json_path is not None:
        with writing(Path(json_path)), atomic_path(json_path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    return report


def check_report_target(path: Path, checkpoint: Path) -> None:
    """``--json`` may replace an earlier report, never the checkpoint or any other file."""
    refuse_overwrite(
        path, "--json", inputs=[checkpoint], suffixes=(".json",), is_own=_is_report,
        own_kind="an earlier `gan eval` report",
    )  # fmt: skip


def _is_report(path: Path) -> bool:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):  # unreadable, not UTF-8 or not JSON: not ours
        return False
    return isinstance(old, dict) and all(k in old for k in REPORT_KEYS)
