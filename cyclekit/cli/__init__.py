"""The ``cyclekit`` command: a thin click layer over importable functions.

Subcommands live in their own modules and are imported only when invoked, so ``cyclekit --help``
does not pay for torch, albumentations or wandb.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from cyclekit import __version__
from cyclekit.cli import common

# command name -> ("module", "attribute", one-line help shown by `cyclekit --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": (
        "cyclekit.cli.train",
        "train",
        "Train CycleGAN, CUT or FastCUT on two unpaired image folders.",
    ),
    "translate": (
        "cyclekit.cli.translate",
        "translate",
        "Translate (stylise) images or whole folders with a trained generator.",
    ),
    "export": (
        "cyclekit.cli.translate",
        "export",
        "Export a generator to ONNX, TorchScript or the official .pth format.",
    ),
    "datasets": (
        "cyclekit.cli.datasets",
        "datasets",
        "List, download or synthesise unpaired datasets.",
    ),
    "eval": (
        "cyclekit.cli.eval",
        "eval_command",
        "Score a model: FID, KID and structure of its translations, beside doing nothing.",
    ),
    "demo": (
        "cyclekit.cli.demo",
        "demo",
        "See CycleGAN learn in minutes on a CPU: synth data, train, translate, gallery.",
    ),
    "gan": ("cyclekit.cli.mnist", "gan", "MNIST baselines: vanilla GAN and DCGAN."),
    "ae": ("cyclekit.cli.mnist", "ae", "MNIST baseline: a (denoising) autoencoder."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, (mod, _, _) in COMMANDS.items() if importlib.util.find_spec(mod)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        if importlib.util.find_spec(module) is None:
            return None
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table, without importing every command module.
        rows = [(n, COMMANDS[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cyclekit")
def main() -> None:
    """cyclekit: unpaired image-to-image translation with CycleGAN.

    \b
    Train on two folders of images:   cyclekit train --data datasets/horse2zebra --name h2z
    Stylise a folder of photos:       cyclekit translate photos/ -o out/ --checkpoint G_ab.pt
    Run `cyclekit COMMAND --help` for the options of each command.
    """


def run() -> None:
    """The ``cyclekit`` executable: :func:`main` in a process of its own, which a command may
    then end without the interpreter's teardown (see :func:`common.leave`). Tests call
    :func:`main` through click's runner, inside their own process, and never get that exit."""
    common.OWN_PROCESS = True
    main()
