"""``cyclekit gan`` and ``cyclekit ae``: the MNIST baselines' thin click layer.

Each command builds a config (validated by its dataclass) and calls one importable function;
user errors (missing data, bad checkpoints, bad values) become one-line click errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DATA_HELP = (
    "MNIST folder: the four official .gz files (here, in raw/ or in MNIST/raw/; no unpacking), "
    "or PNGs as <digit>/*.png. Downloaded here with torchvision when empty and online."
)


def _user_errors() -> tuple[type[Exception], ...]:
    from cyclekit.files import CheckpointError
    from cyclekit.mnist.data import MnistDataError

    return (CheckpointError, MnistDataError, ValueError)


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a user error becomes ``Error: <one line>`` and exit code 1, no traceback."""
    try:
        return fn(*args, **kwargs)
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None


def _digits(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        digits = tuple(int(d) for d in value.replace(" ", "").split(",") if d)
    except ValueError:
        raise click.BadParameter(f"expected digits like 3 or 3,5,8; got {value!r}") from None
    if not all(0 <= d <= 9 for d in digits):
        raise click.BadParameter(f"digits must be 0..9; got {value!r}")
    return digits


def _common_train_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--data-dir", default="datasets/mnist", show_default=True, help=DATA_HELP),
        click.option(
            "--download/--no-download",
            default=True,
            show_default=True,
            help="Try torchvision's download when --data-dir holds no MNIST.",
        ),
        click.option("--epochs", type=int, help="Passes over the training set."),
        click.option("--batch-size", type=int, help="Images per step."),
        click.option("--lr", type=float, help="Adam learning rate."),
        click.option("--seed", default=0, show_default=True, help="Same seed on CPU: same run."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, mps."),
        click.option("--max-steps", type=int, help="Stop after this many steps (smoke tests)."),
        click.option("--name", help="Run name: files go to <checkpoints-dir>/<name>/."),
        click.option("--checkpoints-dir", default="checkpoints", show_default=True),
        click.option(
            "--wandb-mode",
            type=click.Choice(["auto", "online", "offline", "disabled"]),
            default="auto",
            show_default=True,
            help="auto: online when W&B credentials are configured, else offline.",
        ),
        click.option("--wandb-project", default="cyclekit", show_default=True),
        click.option("--wandb-entity", default=None),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _config(cls: type, **kwargs: Any) -> Any:
    """Build a config from the flags the user gave (None: the dataclass default)."""
    try:
        return cls(**{k: v for k, v in kwargs.items() if v is not None})
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def gan() -> None:
    """MNIST GAN baselines: the lecture MLP GAN and a small DCGAN.

    \b
    cyclekit gan train --data-dir ../shared/data/MNIST/raw     # defaults: tuned MLP GAN
    cyclekit gan train --lr 2e-4 --betas 0.9 0.999 --batch-size 100   # lecture recipe
    cyclekit gan sample --checkpoint checkpoints/mnist_gan/last.pt -n 64 -o grid.png
    cyclekit gan eval --checkpoint checkpoints/mnist_gan/last.pt
    """


@gan.command("train")
@click.option(
    "--arch",
    type=click.Choice(["mlp", "dcgan"]),
    default="mlp",
    show_default=True,
    help="mlp: 64 -> 256 -> 256 -> 784 / 784 -> 256 -> 256 -> 1 (the lecture GAN); dcgan: "
    "transposed convs + batch norm / strided convs + LeakyReLU + dropout.",
)
@click.option("--latent-dim", type=int, help="Size of the noise vector z.  [default: 64]")
@click.option(
    "--hidden", type=int, help="MLP layer width, or DCGAN base channels.  [default: 256 / 32]"
)
@click.option(
    "--betas",
    type=float,
    nargs=2,
    help="Adam betas; the lecture recipe uses PyTorch's 0.9 0.999.  [default: 0.5 0.999]",
)
@click.option(
    "--real-label",
    type=float,
    help="Target for real images in D's loss; 0.9 is one-sided label smoothing.  [default: 1.0]",
)
@click.option(
    "--digits", callback=_digits, help="Train only on these classes, e.g. 3 or 3,5 (default: all)."
)
@click.option(
    "--full-batch", is_flag=True, help="One step per epoch on the whole set (simplest lecture)."
)
@click.option("--resume", help="auto (this run's last.pt if any) or a checkpoint path.")
@_common_train_options
def gan_train(**kw: Any) -> None:
    """Train a GAN on MNIST; each epoch writes a sample grid, metrics and last.pt.

    Defaults: Adam lr 1e-3, betas 0.5 0.999, batch 128, 30 epochs.

    Metrics per epoch: loss_D, loss_G, D(x) and D(G(z)) (D's mean belief that real/fake images
    are real) and 'fooled' (the fraction of fakes D calls real). At the end samples.gif shows the
    fixed-noise grids over training. The defaults are the best-training settings we measured for
    the MLP; the lecture recipe is --lr 2e-4 --betas 0.9 0.999 --batch-size 100.
    """
    from cyclekit.mnist.gan import GanConfig, train_gan

    kw["name"] = kw["name"] or f"mnist_gan_{kw['arch']}"
    kw["betas"] = kw["betas"] or None
    cfg = _config(GanConfig, **kw)
    result = _run(train_gan, cfg)
    click.echo(f"checkpoint: {result.checkpoint}")
    if result.gif:
        click.echo(f"samples over training: {result.gif}")


@gan.command("sample")
@click.option(
    "--checkpoint", required=True, type=click.Path(path_type=Path), help="A gan train last.pt."
)
@click.option("-n", "--num", "n", default=64, show_default=True, help="How many samples.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="A .png/.jpg file: one grid; anything else: a folder of n 28x28 PNGs.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the noise.")
@click.option("--nrow", default=8, show_default=True, help="Images per grid row.")
@click.option("--device", default="cpu", show_default=True)
def gan_sample(checkpoint: Path, n: int, output: Path, seed: int, nrow: int, device: str) -> None:
    """Draw samples from a trained generator (no architecture flags needed)."""
    from cyclekit.mnist.common import save_grid, save_individual
    from cyclekit.mnist.gan import generate, load_generator

    if n < 1:
        raise click.BadParameter(f"must be >= 1, got {n}", param_hint="-n")
    G, _ = _run(load_generator, checkpoint, device)
    images = generate(G, n, seed=seed, device=device)
    if output.suffix.lower() in (".png", ".jpg", ".jpeg"):
        click.echo(f"wrote a grid of {n} samples: {save_grid(images, output, nrow=nrow)}")
    else:
        save_individual(images, output)
        click.echo(f"wrote {n} 28x28 PNGs to {output}/")


@gan.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path))
@click.option("--data-dir", help=DATA_HELP + "  [default: the run's --data-dir]")
@click.option("--download/--no-download", default=True, show_default=True)
@click.option("-n", "--num", "n", default=10_000, show_default=True, help="Samples to score.")
@click.option("--seed", default=0, show_default=True, help="Seed of the noise and classifier.")
@click.option(
    "--classifier-epochs", default=2, show_default=True, help="Training of the scoring CNN."
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write JSON.")
def gan_eval(**kw: Any) -> None:
    """Score a generator: Fréchet distance, class coverage, classifier confidence.

    Protocol: a small CNN is trained on the MNIST training set (cached in $CYCLEKIT_CACHE or
    ~/.cache/cyclekit, its test accuracy printed); n samples are drawn with --seed; the Fréchet
    distance compares their 128-d CNN features with the test set's (digits the run was trained
    on), beside the distance n real training digits reach; a digit is missing when < 1% of
    samples are classified as it.
    """
    report = _run(evaluate_checkpoint, **kw)
    from cyclekit.mnist.evaluate import format_report

    click.echo(format_report(report))


def evaluate_checkpoint(
    checkpoint: Path,
    data_dir: str | None = None,
    download: bool = True,
    n: int = 10_000,
    seed: int = 0,
    classifier_epochs: int = 2,
    device: str = "cpu",
    json_path: Path | None = None,
    log: Callable[[str], None] = click.echo,
) -> dict[str, Any]:
    """The ``gan eval`` report for a checkpoint (see :mod:`cyclekit.mnist.evaluate`)."""
    import numpy as np
    import torch

    from cyclekit.mnist.data import load_mnist, to_tensor
    from cyclekit.mnist.evaluate import load_or_train_classifier, quality_report
    from cyclekit.mnist.gan import generate, load_generator

    G, blob = load_generator(checkpoint, device)
    data_dir = data_dir or blob["config"]["data_dir"]
    train = load_mnist(data_dir, "train", download=download)
    test = load_mnist(data_dir, "test", download=download)
    clf, acc = load_or_train_classifier(train, test, seed, classifier_epochs, device, log=log)
    # Compare with the classes the run was trained on (--digits 3: the test set's 3s).
    digits = blob["config"].get("digits") or list(range(10))
    ref = to_tensor(test.images[np.isin(test.labels, digits)])
    real = to_tensor(train.images[np.isin(train.labels, digits)])
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n]
    report = quality_report(generate(G, n, seed, device), clf, ref, real[pick], device)
    report = {"classifier_test_accuracy": acc, **report, "checkpoint": str(checkpoint)}
    if json_path:
        json_path.write_text(json.dumps(report, indent=2))
    return report


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def ae() -> None:
    """MNIST autoencoder baseline (plain or denoising).

    \b
    cyclekit ae train --data-dir ../shared/data/MNIST/raw --noise 0.5
    """


@ae.command("train")
@click.option(
    "--arch",
    type=click.Choice(["mlp", "conv"]),
    default="mlp",
    show_default=True,
    help="mlp: 784 -> 32 -> 784; conv: strided convs to 7x7 maps and transposed convs back.",
)
@click.option("--code-dim", type=int, help="Size of the MLP code.  [default: 32]")
@click.option("--hidden", type=int, help="MLP extra hidden width (0: none) / conv channels.")
@click.option(
    "--noise",
    type=float,
    help="Std of Gaussian noise added to inputs in [0, 1]; > 0 trains a denoiser.  [default: 0]",
)
@_common_train_options
def ae_train(**kw: Any) -> None:
    """Train an autoencoder with MSE; writes reconstructions.png (rows: noisy input,
    reconstruction, original) and prints the test-set MSE."""
    from cyclekit.mnist.ae import AEConfig, train_ae

    kw["name"] = kw["name"] or f"mnist_ae_{kw['arch']}"
    result = _run(train_ae, _config(AEConfig, **kw))
    click.echo(f"test MSE: {result.test_mse:.5f}")
    click.echo(f"figure: {result.figure}")
    click.echo(f"checkpoint: {result.checkpoint}")
