"""``cyclekit datasets``: list, download (official CycleGAN zips) or synthesise datasets.

A thin click layer over :mod:`cyclekit.data.official` and :mod:`cyclekit.data.synth`;
numpy and Pillow are imported only by the commands that need them.
"""

from __future__ import annotations

from pathlib import Path

import click

from cyclekit.cli.common import CONTEXT as CTX
from cyclekit.cli.common import choice, user_errors
from cyclekit.data.official import OFFICIAL, URL_ENV, DatasetExistsError, base_url, is_present

ROOT = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("datasets"),
    show_default=True,
    help="Folder that holds the datasets (one sub-folder each).",
)


@click.group(context_settings=CTX)
def datasets() -> None:
    """List, download or synthesise unpaired datasets (folders with trainA/ and trainB/).

    \b
    cyclekit datasets list
    cyclekit datasets download horse2zebra
    cyclekit datasets synth day2night --n 500 --size 64
    """


@datasets.command("list", context_settings=CTX, short_help="Show the datasets and which are here.")
@ROOT
def list_cmd(root: Path) -> None:
    """Show the official and synthetic datasets, and which are already under --root."""
    from cyclekit.data.synth import SYNTH_TASKS

    yes_no = lambda name: "yes" if is_present(root, name) else "no"
    click.echo(f"Official CycleGAN datasets (cyclekit datasets download NAME; from {base_url()}):")
    click.echo(f"  {'NAME':<24}{'SIZE':<9}{'HERE':<6}WHAT")
    for name, d in OFFICIAL.items():
        what = d.description + (" [manual download]" if d.manual else "")
        click.echo(f"  {name:<24}{d.approx_size:<9}{yes_no(name):<6}{what}")
    click.echo("Synthetic datasets with ground truth (cyclekit datasets synth NAME; no download):")
    for name, task in SYNTH_TASKS.items():
        click.echo(f"  {name:<24}{'-':<9}{yes_no(name):<6}{task.description}")
    click.echo(f"HERE: found under {root}/ (with trainA/ and trainB/).")


@datasets.command(
    context_settings=CTX,
    short_help="Download an official CycleGAN dataset (resumable, checked).",
    epilog=f"""\b
Examples:
  cyclekit datasets download horse2zebra
  cyclekit datasets download mini --root /data/cyclegan
An interrupted download resumes from ROOT/NAME.zip.part when run again. The zip is checked
(CRC) and unpacked into a temporary folder that is renamed to ROOT/NAME at the end; the zip is
then deleted. Set {URL_ENV} to use a mirror.""",
)
@click.argument("name", type=choice(OFFICIAL), metavar="NAME")
@ROOT
@click.option("--force", is_flag=True, help="Replace ROOT/NAME if it already exists.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def download(name: str, root: Path, force: bool, no_progress: bool) -> None:
    """Download official CycleGAN dataset NAME into ROOT/NAME (see `cyclekit datasets list`)."""
    from cyclekit.data.official import download_dataset

    with user_errors():
        try:
            target = download_dataset(name, root, force=force, progress=not no_progress)
        except DatasetExistsError:
            if not is_present(root, name):
                raise
            click.echo(f"{root / name} is already here (use --force to download it again).")
            return
    click.echo(f"{name}: ready in {target}")


@datasets.command(
    context_settings=CTX,
    short_help="Generate a synthetic dataset with ground truth (no download).",
    epilog="""\b
Examples:
  cyclekit datasets synth day2night --n 500 --size 64
  cyclekit datasets synth photo2poster --n 200 --size 32 --seed 1 --root /tmp/data
Writes ROOT/NAME/trainA, trainB (unpaired: independent scenes), testA, testB, and the ground
truth testA_gt/ (the B rendering of each testA scene, same file name) and testB_gt/, plus
synth.json. Tasks: see `cyclekit datasets list`.""",
)
@click.argument("name", metavar="NAME")
@click.option("--n", "n_train", default=200, show_default=True, help="Train images per domain.")
@click.option("--n-test", default=50, show_default=True, help="Test images per domain.")
@click.option("--size", default=64, show_default=True, help="Image side in pixels (16 to 1024).")
@click.option("--seed", default=0, show_default=True, help="Same seed, same bytes.")
@ROOT
@click.option("--force", is_flag=True, help="Replace ROOT/NAME if it already exists.")
def synth(
    name: str, n_train: int, n_test: int, size: int, seed: int, root: Path, force: bool
) -> None:
    """Generate the synthetic unpaired dataset NAME (with ground truth) into ROOT/NAME."""
    import time

    from cyclekit.data.synth import make_synthetic

    t0 = time.perf_counter()
    with user_errors():
        target = make_synthetic(name.lower(), root, n_train, n_test, size, seed, force=force)
    n = 2 * n_train + 4 * n_test
    click.echo(
        f"{name}: {n} images of {size}x{size} in {target} ({time.perf_counter() - t0:.1f} s)"
    )
