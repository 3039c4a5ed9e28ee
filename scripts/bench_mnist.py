#!/usr/bin/env python
"""Benchmark the MNIST baselines: train each with its defaults on the full training set for a
fixed wall-clock budget, then score it; prints one JSON list.

    python scripts/bench_mnist.py --data-dir datasets/mnist --budgets 60 180

GANs are scored with the ``cyclekit gan eval`` protocol (see README); the autoencoder by its
test MSE. ``--set key=value`` overrides a GAN config field (e.g. ``--set lr=1e-3``,
``--set betas=0.9,0.999``) to compare alternatives under the same budget.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import torch

from cyclekit.mnist.ae import AEConfig, train_ae
from cyclekit.mnist.common import save_grid
from cyclekit.mnist.data import digits_to_tensor, load_mnist
from cyclekit.mnist.evaluate import load_or_train_classifier, quality_report
from cyclekit.mnist.gan import GanConfig, generate, load_gan_generator, train_gan


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, _, raw = item.partition("=")
        parts = [_value(p) for p in raw.split(",")]
        out[key] = tuple(parts) if len(parts) > 1 else parts[0]
    return out


@click.command()
@click.option("--data-dir", default="datasets/mnist", show_default=True)
@click.option("--budgets", type=float, multiple=True, default=(60, 180), show_default=True,
              help="Wall-clock seconds of training per run; repeat for several.")  # fmt: skip
@click.option("--models", default="mlp,dcgan,ae", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Keep runs here (default: temp).")
@click.option("--overwrite", is_flag=True, help="Replace runs of the same name in --out.")
@click.option("--set", "overrides", multiple=True, help="GAN config field=value.")
@click.option("--n-samples", default=10_000, show_default=True)
@click.option(
    "--threads",
    type=int,
    help="torch intra-op threads. On a shared, oversubscribed CPU 1 thread ran ~5x faster than 2 "
    "(spinning OpenMP workers fight other jobs for the cores).",
)
def main(
    data_dir: str, budgets: tuple[float, ...], models: str, out: Path | None,
    overrides: tuple[str, ...], n_samples: int, threads: int | None, overwrite: bool,
) -> None:  # fmt: skip
    if threads:
        torch.set_num_threads(threads)
    out = out or Path(tempfile.mkdtemp(prefix="bench_mnist_"))
    train = load_mnist(data_dir, "train", download=False)
    test = load_mnist(data_dir, "test", download=False)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731 - JSON alone goes to stdout
    clf, acc = load_or_train_classifier(train, test, log=log)
    ref, real = digits_to_tensor(test.images), digits_to_tensor(train.images)
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:n_samples]
    extra = _parse_set(overrides)
    results = []
    for model in models.split(","):
        for budget in budgets:
            name = f"{model}_{int(budget)}s" + ("_" + "_".join(overrides) if overrides else "")
            common = dict(
                device="cpu", wandb_mode="disabled", checkpoints_dir=str(out), name=name,
                epochs=10**6, max_minutes=budget / 60,
            )  # fmt: skip
            t0 = time.monotonic()
            if model == "ae":
                r = train_ae(
                    AEConfig(**common), train, test, log=log, progress=False, overwrite=overwrite
                )
                t_train = time.monotonic() - t0
                row = {"test_mse": r.test_mse, "figure": str(r.figure)}
            else:
                cfg = GanConfig(arch=model, **{**common, **extra})
                r = train_gan(cfg, data=train, log=log, progress=False, overwrite=overwrite)
                t_train = time.monotonic() - t0
                G, _ = load_gan_generator(r.checkpoint)
                fakes = generate(G, n_samples, seed=0)
                row = quality_report(fakes, clf, ref, real[pick])
                row["classifier_test_accuracy"] = acc
                row["grid"] = str(r.run_dir / "final_100.png")
                save_grid(fakes[:100], Path(row["grid"]), nrow=10)
            elapsed = time.monotonic() - t0
            row = {
                "model": model, "budget_s": budget, "steps": r.step,
                "steps_per_s": round(r.step / t_train, 1), "wall_s": round(elapsed, 1),
                "threads": torch.get_num_threads(), "overrides": list(overrides), **row,
            }  # fmt: skip
            log(json.dumps(row))
            results.append(row)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
