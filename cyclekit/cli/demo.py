"""``cyclekit demo``: a thin click layer over :func:`cyclekit.demo.run_demo`."""

from __future__ import annotations

import click

from cyclekit.cli.common import CONTEXT, DEVICE, choice, user_errors
from cyclekit.data.synth import SYNTH_TASKS
from cyclekit.demo import PRESETS
from cyclekit.training.config import MODELS
from cyclekit.training.tracking import WANDB_MODES


@click.command(
    context_settings=CONTEXT,
    epilog="""\b
Examples:
  cyclekit demo                       # ~5 minutes on a laptop CPU
  cyclekit demo --minutes 1 --out /tmp/demo
  cyclekit demo --task photo2poster --device cuda
  cyclekit demo --model fastcut       # the one-sided, faster FastCUT instead of CycleGAN""",
)
@click.option(
    "--task",
    type=choice(SYNTH_TASKS),
    default="day2night",
    show_default=True,
    help="Which synthetic translation to learn.",
)
@click.option(
    "--minutes",
    type=float,
    default=3.0,
    show_default=True,
    help="Training time budget (data, translation and scoring come on top).",
)
@click.option(
    "--device",
    type=DEVICE,
    default="auto",
    show_default=True,
    help="Where to train and translate.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="demo",
    show_default=True,
    help="Folder for the run, the translations and index.html.",
)
@click.option(
    "--datasets-root",
    type=click.Path(file_okay=False),
    default="datasets",
    show_default=True,
    help="Where the synthetic dataset is written (reused if present).",
)
@click.option(
    "--preset",
    type=choice(PRESETS),
    default="default",
    show_default=True,
    help="tiny: a seconds-long smoke run (tiny images and model).",
)
@click.option(
    "--model",
    type=choice(MODELS),
    default="cyclegan",
    show_default=True,
    help="cyclegan, or the one-sided cut / fastcut (A->B only, PatchNCE instead of a cycle).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--wandb-mode",
    type=choice(WANDB_MODES),
    default="offline",
    show_default=True,
    help="W&B logging of the demo run.",
)
@click.option("--max-steps", type=int, default=None, help="Also stop after this many steps.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def demo(
    task: str,
    minutes: float,
    device: str,
    out: str,
    datasets_root: str,
    preset: str,
    model: str,
    seed: int,
    wandb_mode: str,
    max_steps: int | None,
    no_progress: bool,
) -> None:
    """See CycleGAN (or CUT) learn an unpaired translation, with pictures, in minutes on a CPU.

    Draws a synthetic unpaired dataset (scenes in style A, other scenes in style B, with the
    true B rendering of every test scene kept aside), trains a small CycleGAN on it with the
    real trainer, translates the test scenes with the real translate engine, and writes
    OUT/index.html showing input / translation / ground truth. The score is the PSNR against
    the ground truth, next to the PSNR of doing nothing.
    """
    from cyclekit.demo import run_demo

    with user_errors():
        r = run_demo(
            task,
            out,
            datasets_root,
            minutes,
            device,
            preset,
            seed,
            wandb_mode,
            max_steps,
            progress=not no_progress,
            model=model,
        )
    click.echo(f"trained {r.steps} steps; run folder {r.run_dir}")
    click.echo(
        f"PSNR vs ground truth: {r.psnr_model:.2f} dB translated, "
        f"{r.psnr_identity:.2f} dB doing nothing ({r.gain:+.2f} dB)"
    )
    click.echo(f"gallery: {r.gallery.resolve()}")
