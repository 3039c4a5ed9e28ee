"""``cyclekit gan`` and ``cyclekit ae``: the MNIST baselines' thin click layer.

Each command builds a config (validated by its dataclass) and calls one importable function.
Only :class:`cyclekit.errors.CyclekitError` becomes a one-line ``Error:``; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from cyclekit.cli.common import CONTEXT, DEVICE, choice, user_errors
from cyclekit.mnist import (
    FEATURES,
    MAX_GRID_SAMPLES,
    MAX_SAMPLES,
    MIN_CLASSIFIER_ACCURACY,
    MIN_EVAL_SAMPLES,
)
from cyclekit.training.config import ConfigError
from cyclekit.training.tracking import WANDB_MODES

DATA_HELP = (
    "MNIST folder: the four official .gz files (here, in raw/ or in MNIST/raw/; no unpacking), "
    "or PNGs as <digit>/*.png. Downloaded here with torchvision when empty and online."
)
SEED = click.IntRange(0, 2**32 - 1)
POSITIVE = click.IntRange(min=1)
# Flags of `train` whose value is not a config field.
RUN_FLAGS = ("resume", "overwrite", "no_progress")


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


def _eval_samples(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if not MIN_EVAL_SAMPLES <= value <= MAX_SAMPLES:
        raise click.BadParameter(
            f"{value}: score {MIN_EVAL_SAMPLES}..{MAX_SAMPLES} samples; a Fréchet distance on "
            f"{FEATURES}-d features needs more samples than features (10,000 is usual)"
        )
    return value


def _common_train_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--data-dir", default="datasets/mnist", show_default=True, help=DATA_HELP),
        click.option(
            "--download/--no-download",
            default=True,
            show_default=True,
            help="Try torchvision's download when --data-dir holds no MNIST.",
        ),
        click.option("--epochs", type=POSITIVE, help="Passes over the training set."),
        click.option("--batch-size", type=POSITIVE, help="Images per step."),
        click.option(
            "--lr", type=click.FloatRange(min=0, min_open=True), help="Adam learning rate."
        ),
        click.option(
            "--seed", type=SEED, default=0, show_default=True, help="Same seed on CPU: same run."
        ),
        click.option(
            "--device", type=DEVICE, default="auto", show_default=True, help="Where to train."
        ),
        click.option("--max-steps", type=POSITIVE, help="Stop after this many steps in total."),
        click.option(
            "--max-minutes",
            type=click.FloatRange(min=0, min_open=True),
            help="Stop (saving last.pt) after this much training time; continue with "
            "--resume auto.",
        ),
        click.option("--checkpoints-dir", default="checkpoints", show_default=True),
        click.option(
            "--resume",
            metavar="auto|PATH",
            help="Continue a run: 'auto' uses NAME/last.pt if it exists, or give a last.pt. "
            "Settings not given come from the checkpoint; changing the model, data "
            "selection or optimiser is refused.",
        ),
        click.option(
            "--overwrite",
            is_flag=True,
            help="Start afresh although the run folder already holds a run (its last.pt, "
            "config and sample grids are replaced).",
        ),
        click.option("--no-progress", is_flag=True, help="No progress bar (epoch lines only)."),
        click.option(
            "--wandb-mode",
            type=choice(WANDB_MODES),
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


def _config(cls: type, ctx: click.Context, kw: dict[str, Any]) -> tuple[Any, set[str]]:
    """A config from the flags the user gave (None: the dataclass default), and their names."""
    values = {k: v for k, v in kw.items() if v is not None and k not in RUN_FLAGS}
    explicit = {k for k in values if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    try:
        return cls(**values), explicit
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


def _stopped(result: Any) -> None:
    """The last lines of a run that did not finish; Ctrl-C / SIGTERM exits with 130."""
    if result.interrupted:
        click.echo(
            f"stopped at step {result.step} (interrupted); continue with --resume auto "
            f"({result.checkpoint})",
            err=True,
        )
        sys.exit(130)


GAN_EPILOG = """\b
Examples:
  cyclekit gan train                            # tuned MLP GAN, MNIST in datasets/mnist
  cyclekit gan train --data-dir path/to/mnist   # the four .gz files elsewhere
  cyclekit gan train --lr 2e-4 --betas 0.9 0.999 --batch-size 100 --name lecture
  cyclekit gan train --resume auto --epochs 40  # continue checkpoints/mnist_gan_mlp
  cyclekit gan sample --checkpoint checkpoints/mnist_gan_mlp/last.pt -n 64 -o grid.png
  cyclekit gan eval --checkpoint checkpoints/mnist_gan_mlp/last.pt

Runs go to CHECKPOINTS_DIR/NAME (default name: mnist_gan_ARCH, e.g. mnist_gan_mlp)."""


@click.group(context_settings=CONTEXT, epilog=GAN_EPILOG)
def gan() -> None:
    """MNIST GAN baselines: the lecture MLP GAN and a small DCGAN."""


@gan.command("train", context_settings=CONTEXT)
@click.option(
    "--arch",
    type=choice(["mlp", "dcgan"]),
    default="mlp",
    show_default=True,
    help="mlp: 64 -> 256 -> 256 -> 784 / 784 -> 256 -> 256 -> 1 (the lecture GAN); dcgan: "
    "transposed convs + batch norm / strided convs + LeakyReLU + dropout.",
)
@click.option("--latent-dim", type=POSITIVE, help="Size of the noise vector z.  [default: 64]")
@click.option(
    "--hidden", type=POSITIVE, help="MLP layer width, or DCGAN base channels.  [default: 256 / 32]"
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
    "--full-batch",
    is_flag=True,
    help="One step per epoch on the whole set (simplest lecture).",
)
@click.option(
    "--name", help="Run name: files go to CHECKPOINTS_DIR/NAME.  [default: mnist_gan_ARCH]"
)
@_common_train_options
@click.pass_context
def gan_train(ctx: click.Context, **kw: Any) -> None:
    """Train a GAN on MNIST; each epoch writes a sample grid, metrics and last.pt.

    Defaults: Adam lr 1e-3, betas 0.5 0.999, batch 128, 30 epochs.

    Metrics per epoch: loss_D, loss_G, D(x) and D(G(z)) (D's mean belief that real/fake images
    are real) and 'fooled' (the fraction of fakes D calls real). At the end samples.gif shows the
    fixed-noise grids over training. The defaults are the best-training settings we measured for
    the MLP; the lecture recipe is --lr 2e-4 --betas 0.9 0.999 --batch-size 100. Stop any time
    with Ctrl-C (last.pt is saved) and continue with --resume auto.
    """
    from cyclekit.mnist.gan import GanConfig, train_gan

    kw["betas"] = kw["betas"] or None
    kw["digits"] = kw["digits"] or None
    cfg, explicit = _config(GanConfig, ctx, kw)
    with user_errors():
        result = train_gan(
            cfg, progress=not kw["no_progress"], resume=kw["resume"],
            overwrite=kw["overwrite"], explicit=explicit,
        )  # fmt: skip
    _stopped(result)
    click.echo(f"checkpoint: {result.checkpoint}")
    if result.gif:
        click.echo(f"samples over training: {result.gif}")


@gan.command("sample", context_settings=CONTEXT)
@click.option(
    "--checkpoint", required=True, type=click.Path(path_type=Path), help="A gan train last.pt."
)
@click.option(
    "-n",
    "--num",
    "n",
    type=click.IntRange(1, MAX_SAMPLES),
    default=64,
    show_default=True,
    help="How many samples.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help=f"A .png/.jpg name: one grid (up to {MAX_GRID_SAMPLES} samples); a name without "
    "suffix (or a folder): n 28x28 PNGs 00000.png... inside. Only files an earlier "
    "`gan sample` wrote are ever replaced.",
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the noise.")
@click.option("--nrow", type=POSITIVE, default=8, show_default=True, help="Images per grid row.")
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
def gan_sample(checkpoint: Path, n: int, output: Path, seed: int, nrow: int, device: str) -> None:
    """Draw samples from a trained generator (no architecture flags needed)."""
    from cyclekit.devices import resolve_device
    from cyclekit.errors import UsageError
    from cyclekit.mnist.common import (
        SAMPLE_MARK,
        check_replaceable,
        individual_paths,
        sample_output_kind,
        save_grid,
        save_individual,
    )
    from cyclekit.mnist.gan import check_finite, generate, load_gan_generator

    with user_errors():
        kind = sample_output_kind(output)
        if kind == "grid" and n > MAX_GRID_SAMPLES:
            raise UsageError(
                f"-n {n}: a grid holds at most {MAX_GRID_SAMPLES} samples; give -o a folder name"
            )
        check_replaceable([output] if kind == "grid" else individual_paths(output, n), checkpoint)
        dev = resolve_device(device)
        G, _ = load_gan_generator(checkpoint, dev)
        images = check_finite(generate(G, n, seed=seed, device=dev), checkpoint)
        if kind == "grid":
            save_grid(images, output, nrow=nrow, mark=SAMPLE_MARK)
            click.echo(f"wrote a grid of {n} samples: {output}")
        else:
            save_individual(images, output, mark=SAMPLE_MARK)
            click.echo(f"wrote {n} 28x28 PNGs to {output}/")


@gan.command("eval", context_settings=CONTEXT)
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path))
@click.option("--data-dir", help=DATA_HELP + "  [default: the run's --data-dir]")
@click.option("--download/--no-download", default=True, show_default=True)
@click.option(
    "-n",
    "--num",
    "n",
    type=int,
    callback=_eval_samples,
    default=10_000,
    show_default=True,
    help=f"Samples to score: more than the {FEATURES} features (at least {MIN_EVAL_SAMPLES}), "
    "or their covariance is singular; 10,000 (the default) for numbers comparable across "
    "runs and with the README.",
)
@click.option(
    "--seed", type=SEED, default=0, show_default=True, help="Seed of the noise and classifier."
)
@click.option(
    "--classifier-epochs",
    type=POSITIVE,
    default=2,
    show_default=True,
    help=f"Training of the scoring CNN; it must reach {MIN_CLASSIFIER_ACCURACY:.0%} test "
    "accuracy, or nothing is scored.",
)
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    help="Also write the report as JSON (replaces only an earlier report).",
)
def gan_eval(**kw: Any) -> None:
    """Score a generator: Fréchet distance, class coverage, classifier confidence.

    Protocol: a small CNN is trained on the MNIST training set (cached in $CYCLEKIT_CACHE,
    else $XDG_CACHE_HOME/cyclekit, else ~/.cache/cyclekit; its test accuracy printed, and below
    95% nothing is scored); n samples are drawn with --seed; the Fréchet distance compares
    their 128-d CNN features with the test set's (digits the run was trained on), beside the
    distance n real training digits reach; a digit is missing when < 1% of samples are
    classified as it.
    """
    from cyclekit.mnist.evaluate import evaluate_checkpoint, format_report

    with user_errors():
        report = evaluate_checkpoint(**kw, log=click.echo)
    click.echo(format_report(report))


AE_EPILOG = """\b
Examples:
  cyclekit ae train --noise 0.5                 # a denoiser, MNIST in datasets/mnist
  cyclekit ae train --arch conv --epochs 3 --data-dir path/to/mnist

Runs go to CHECKPOINTS_DIR/NAME (default name: mnist_ae_ARCH, e.g. mnist_ae_mlp)."""


@click.group(context_settings=CONTEXT, epilog=AE_EPILOG)
def ae() -> None:
    """MNIST autoencoder baseline (plain or denoising)."""


@ae.command("train", context_settings=CONTEXT)
@click.option(
    "--arch",
    type=choice(["mlp", "conv"]),
    default="mlp",
    show_default=True,
    help="mlp: 784 -> 32 -> 784; conv: strided convs to 7x7 maps and transposed convs back.",
)
@click.option("--code-dim", type=POSITIVE, help="Size of the MLP code.  [default: 32]")
@click.option(
    "--hidden",
    type=click.IntRange(min=0),
    help="MLP extra hidden width (0: none) / conv channels.",
)
@click.option(
    "--noise",
    type=click.FloatRange(min=0),
    help="Std of Gaussian noise added to inputs in [0, 1]; > 0 trains a denoiser.  [default: 0]",
)
@click.option(
    "--name", help="Run name: files go to CHECKPOINTS_DIR/NAME.  [default: mnist_ae_ARCH]"
)
@_common_train_options
@click.pass_context
def ae_train(ctx: click.Context, **kw: Any) -> None:
    """Train an autoencoder with MSE; writes reconstructions.png (rows: noisy input,
    reconstruction, original) and prints the test-set MSE. Ctrl-C saves last.pt; continue
    with --resume auto."""
    from cyclekit.mnist.ae import AEConfig, train_ae

    cfg, explicit = _config(AEConfig, ctx, kw)
    with user_errors():
        result = train_ae(
            cfg, progress=not kw["no_progress"], resume=kw["resume"],
            overwrite=kw["overwrite"], explicit=explicit,
        )  # fmt: skip
    _stopped(result)
    click.echo(f"test MSE: {result.test_mse:.5f}")
    click.echo(f"figure: {result.figure}")
    click.echo(f"checkpoint: {result.checkpoint}")
