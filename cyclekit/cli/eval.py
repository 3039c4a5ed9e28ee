"""``cyclekit eval``: FID, KID and structure of a checkpoint's translations, or of two folders.

Only click is imported at module level; torch and the metrics load when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from cyclekit.cli.common import CONTEXT, DEVICE, choice, user_errors

# Kept equal to cyclekit.evaluate.run.DEFAULT_SIZE / MIN_SIZE and metrics.KID_SUBSETS (a test
# checks): importing them here would load numpy for `--help`.
DEFAULT_SIZE = 256
MIN_SIZE = 16
KID_SUBSETS = 100


@click.command(context_settings=CONTEXT)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Generators to evaluate: a cyclekit last.pt (CycleGAN, CUT, FastCUT), an exported "
    "G_ab.pt, or an official .pth (with --direction).",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder: its testA/ and testB/ are the inputs and the real target images.",
)
@click.option(
    "--real-a",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Domain A's test images, instead of DATA/testA.",
)
@click.option(
    "--real-b",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Domain B's test images, instead of DATA/testB.",
)
@click.option(
    "--direction",
    type=choice(["both", "a2b", "b2a"]),
    default="both",
    show_default=True,
    help="Which generator(s) to score. both: what the checkpoint holds (CUT and FastCUT: a2b).",
)
@click.option(
    "--fake",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Score a folder of generated images (any method's) against --real; no checkpoint.",
)
@click.option(
    "--real",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="With --fake: the real images of the target domain.",
)
@click.option(
    "--size",
    type=click.IntRange(min=MIN_SIZE),
    default=DEFAULT_SIZE,
    show_default=True,
    metavar="N",
    help="Every image is resized to NxN px (bicubic) before the generator and the features, "
    "as the official test script feeds CycleGAN. Compare numbers only at one size.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.json",
    help="Also write every number and the protocol (feature network, weights sha256, image "
    "counts, size) to a new .json file (or an earlier eval report).",
)
@click.option(
    "--kid-subsets",
    type=click.IntRange(min=1),
    default=KID_SUBSETS,
    show_default=True,
    help="KID's mean ± std is over this many random subsets (each half the smaller set, at "
    "most 1000 images).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Images per batch. Default: 32 on CUDA, 8 elsewhere.",
)
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="Where to run.")
@click.option(
    "--precision",
    type=choice(["fp32", "bf16", "fp16", "auto"]),
    default="fp32",
    show_default=True,
    help="The generators' precision (the feature network always runs in fp32).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def eval_command(
    checkpoint: Path | None,
    data: Path | None,
    real_a: Path | None,
    real_b: Path | None,
    direction: str,
    fake: Path | None,
    real: Path | None,
    json_path: Path | None,
    **options: object,
) -> None:
    """Is my model any good? Per direction: FID and KID of the translated test images
    against the real images of the target domain, SSIM between each input and its
    translation (how much of the input's structure survives), and the same scores for
    doing nothing (the untranslated inputs), the baseline to beat.

    \b
    Examples:
      cyclekit eval --checkpoint checkpoints/h2z/last.pt --data datasets/horse2zebra
      cyclekit eval --checkpoint G_ab.pt --real-a photos/ --real-b paintings/ --direction a2b
      cyclekit eval --fake results/h2z/fakeB --real datasets/horse2zebra/testB --json h2z.json

    Lower FID and KID are better. KID is the one to trust on test sets of ~100-150 images
    (horse2zebra has 120 and 140): it is unbiased, while FID from so few images is biased
    upward and changes with the image count, so compare FIDs only between runs on the same
    images. Features: the FID Inception network (TensorFlow graph of 2015-12-05, via
    torch-fidelity), as published FID and KID numbers use; its weights (96 MB) are
    downloaded once into ~/.cache/cyclekit or $CYCLEKIT_CACHE (address: $CYCLEKIT_INCEPTION_URL).
    Nothing but the --json report is written.
    """
    from cyclekit.evaluate import EvalError, run

    settings = run.EvalSettings(**options)  # type: ignore[arg-type]
    with user_errors():
        if fake is not None or real is not None:
            used = [f for f, v in (("--checkpoint", checkpoint), ("--data", data),
                                   ("--real-a", real_a), ("--real-b", real_b)) if v]  # fmt: skip
            if used:
                raise EvalError(f"--fake/--real score two folders: not with {', '.join(used)}")
            if fake is None or real is None:
                raise EvalError("--fake and --real go together: give both folders")
            if direction != "both":
                raise EvalError("--direction chooses a checkpoint's generator: not with --fake")
            if json_path is not None:
                run.check_report_target(json_path, [])
            report = run.evaluate_folders(fake, real, settings)
        else:
            if checkpoint is None:
                raise EvalError(
                    "give --checkpoint FILE with --data DIR (or --real-a/--real-b), or "
                    "--fake DIR with --real DIR"
                )
            folder_a, folder_b = run.dataset_folders(data, real_a, real_b)
            if json_path is not None:
                run.check_report_target(json_path, [checkpoint])
            report = run.evaluate_checkpoint(checkpoint, folder_a, folder_b, direction, settings)
        click.echo(run.format_table(report))
        if json_path is not None:
            run.write_report(json_path, report)
            click.echo(f"report: {json_path}", err=True)
