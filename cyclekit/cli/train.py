"""``cyclekit train``: flags -> TrainConfig -> :func:`cyclekit.training.loop.train`.

Options default to the TrainConfig defaults (the official CycleGAN ones). With ``--config``,
the YAML file's values replace the defaults and any flag given on the command line wins.
"""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from cyclekit.training import config as C

D = C.TrainConfig.__dataclass_fields__


def opt(*decls: str, name: str, help: str, **kw):  # noqa: A002, ANN201
    """A click option whose default and shown default come from TrainConfig."""
    default = D[name].default
    return click.option(*decls, name, default=default, show_default=True, help=help, **kw)


CHOICE = click.Choice


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  cyclekit train --data datasets/horse2zebra --name horse2zebra
  cyclekit train --data-a photos/ --data-b paintings/ --name monet --crop-size 128
  cyclekit train --name horse2zebra --data datasets/horse2zebra --resume auto
  cyclekit train --config run.yaml --max-steps 10     # flags override the file

The run folder CHECKPOINTS_DIR/NAME holds config.yaml, last.pt (resume state), G_ab.pt and
G_ba.pt (generators for `cyclekit translate`), epoch_XXXX.pt and samples/.""",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file of settings (keys as the flags, - or _); flags override it.",
)
@click.option(
    "--resume",
    default=None,
    metavar="auto|PATH",
    help="Continue a run: 'auto' uses NAME/last.pt if it exists, or give a last.pt path.",
)
@opt(
    "--data",
    name="data",
    help="Folder with trainA/ and trainB/ (testA/, testB/ for samples).",
    type=click.Path(file_okay=False),
)
@opt(
    "--data-a",
    name="data_a",
    help="Any folder of domain-A images (instead of --data).",
    type=click.Path(file_okay=False),
)
@opt(
    "--data-b",
    name="data_b",
    help="Any folder of domain-B images (instead of --data).",
    type=click.Path(file_okay=False),
)
@opt("--name", name="name", help="Run name: the run folder and the W&B run name.")
@opt("--checkpoints-dir", name="checkpoints_dir", help="Where run folders are created.")
@opt("--input-nc", name="input_nc", type=CHOICE(["1", "3"]), help="Channels of domain A.")
@opt("--output-nc", name="output_nc", type=CHOICE(["1", "3"]), help="Channels of domain B.")
@opt(
    "--preprocess",
    name="preprocess",
    type=CHOICE(C.PREPROCESS),
    help="resize_and_crop: resize to load size, random crop; crop: random crop only; "
    "scale_width[_and_crop]: width to load size; none: sides rounded to a multiple of 4.",
)
@opt("--load-size", name="load_size", type=int, help="Resize target before cropping.")
@opt("--crop-size", name="crop_size", type=int, help="Training crop (multiple of 4, >= 24).")
@opt("--no-flip", name="no_flip", is_flag=True, help="Disable random horizontal flips.")
@opt("--batch-size", name="batch_size", type=int, help="Image pairs per step.")
@opt("--epochs", name="epochs", type=int, help="Epochs at the initial learning rate.")
@opt("--epochs-decay", name="epochs_decay", type=int, help="Epochs of linear decay to 0.")
@opt(
    "--max-steps",
    name="max_steps",
    type=int,
    help="Stop after this many steps in total (smoke tests, time-boxed runs).",
)
@opt(
    "--max-minutes",
    name="max_minutes",
    type=float,
    help="Stop (saving last.pt) after this much training time; resume later with --resume auto.",
)
@opt("--lr", name="lr", type=float, help="Adam learning rate.")
@opt("--beta1", name="beta1", type=float, help="Adam beta1.")
@opt("--beta2", name="beta2", type=float, help="Adam beta2.")
@opt("--netG", name="netG", type=CHOICE(C.GENERATOR_ARCHS), help="Generator architecture.")
@opt("--ngf", name="ngf", type=int, help="Generator width (filters in the first conv).")
@opt(
    "--netD",
    name="netD",
    type=CHOICE(C.DISCRIMINATOR_ARCHS),
    help="basic: 70x70 PatchGAN; n_layers: PatchGAN with --n-layers-D; pixel: 1x1.",
)
@opt("--ndf", name="ndf", type=int, help="Discriminator width.")
@opt("--n-layers-D", name="n_layers_D", type=int, help="Layers of the n_layers PatchGAN.")
@opt("--norm", name="norm", type=CHOICE(C.NORMS), help="Normalisation in all networks.")
@opt("--dropout/--no-dropout", name="dropout", help="Dropout in the generator's blocks.")
@opt("--init-type", name="init_type", type=CHOICE(C.INITS), help="Weight initialisation.")
@opt("--init-gain", name="init_gain", type=float, help="Scale of the initialisation.")
@opt(
    "--gan-mode",
    name="gan_mode",
    type=CHOICE(C.GAN_MODES),
    help="Adversarial objective (wgangp applies the gradient penalty).",
)
@opt("--lambda-a", name="lambda_a", type=float, help="Cycle loss weight A->B->A.")
@opt("--lambda-b", name="lambda_b", type=float, help="Cycle loss weight B->A->B.")
@opt(
    "--lambda-identity",
    name="lambda_identity",
    type=float,
    help="Identity loss weight relative to the cycle weights; 0 turns it off.",
)
@opt("--lambda-gp", name="lambda_gp", type=float, help="Gradient penalty weight (wgangp).")
@opt("--pool-size", name="pool_size", type=int, help="Fake-image history size; 0 = off.")
@opt("--seed", name="seed", type=int, help="Seed for init, data order, crops, pools.")
@opt("--device", name="device", type=CHOICE(C.DEVICES), help="Where to train.")
@opt(
    "--precision",
    name="precision",
    type=CHOICE(C.PRECISIONS),
    help="fp32, bf16 (autocast; fast on recent CPUs/GPUs), fp16 (CUDA), auto.",
)
@opt("--num-workers", name="num_workers", type=int, help="Data loading processes.")
@opt(
    "--compile/--no-compile",
    name="compile",
    help="torch.compile the networks: a slow first step, then faster ones (GPU mostly).",
)
@opt("--log-every", name="log_every", type=int, help="Steps between loss logs.")
@opt("--sample-every", name="sample_every", type=int, help="Steps between sample grids.")
@opt("--n-samples", name="n_samples", type=int, help="Test images per domain in the grids.")
@opt("--save-every", name="save_every", type=int, help="Epochs between epoch checkpoints.")
@opt(
    "--save-latest-every",
    name="save_latest_every",
    type=int,
    help="Steps between last.pt saves (it is also saved every epoch and on Ctrl-C).",
)
@opt(
    "--wandb-mode",
    name="wandb_mode",
    type=CHOICE(C.WANDB_MODES),
    help="auto: online if W&B credentials are configured, else offline.",
)
@opt("--wandb-project", name="wandb_project", help="W&B project.")
@opt("--wandb-entity", name="wandb_entity", help="W&B entity (user or team).")
@click.option("--tag", "tags", multiple=True, help="W&B tag (repeatable).")
@click.option("--no-progress", is_flag=True, help="No progress bar (epoch summaries only).")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start afresh even though CHECKPOINTS_DIR/NAME already holds a run (its files are "
    "replaced as the new run saves).",
)
@click.pass_context
def train(
    ctx: click.Context,
    config_file: str | None,
    resume: str | None,
    tags: tuple[str, ...],
    no_progress: bool,
    overwrite: bool,
    **flags: object,
) -> None:
    """Train a CycleGAN on two unpaired image folders.

    Defaults reproduce the official CycleGAN recipe: ResNet-9 generators, 70x70 PatchGANs,
    LSGAN, cycle weight 10, identity 0.5, pool 50, Adam 2e-4, 100 + 100 epochs. Stop any
    time with Ctrl-C (last.pt is saved) and continue with --resume auto.
    """
    values: dict[str, object] = {}
    explicit: set[str] = set()
    try:
        if config_file is not None:
            values = C.load_yaml_config(config_file)
            explicit |= set(values)
        for name, value in flags.items():
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE or name not in values:
                values[name] = value
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                explicit.add(name)
        if tags:
            values["tags"] = list(tags)
            explicit.add("tags")
        for key in ("input_nc", "output_nc"):
            values[key] = int(values[key])  # type: ignore[arg-type]
        cfg = C.TrainConfig.from_dict(values, config_file or "flags")
    except C.ConfigError as e:
        raise click.UsageError(str(e)) from None

    from cyclekit.data.unpaired import DataError
    from cyclekit.files import CheckpointError
    from cyclekit.training.loop import train as run_training

    try:
        result = run_training(
            cfg, resume=resume, explicit=explicit, progress=not no_progress, overwrite=overwrite
        )
    except (C.ConfigError, CheckpointError, DataError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    where = result.run_dir
    if result.ranks_in_sync is False:
        raise click.ClickException("ranks ended with different weights; the run is not trustworthy")
    if not result.is_main:
        sys.exit(130 if result.interrupted else 0)
    if result.interrupted or not result.finished:
        why = "interrupted" if result.interrupted else "limit reached (--max-steps/--max-minutes)"
        click.echo(
            f"stopped at step {result.step}, {why}; continue with --resume auto "
            f"({where}/last.pt); generators so far in {where}/G_ab.pt and G_ba.pt",
            err=True,
        )
        if result.interrupted:
            sys.exit(130)
        return
    click.echo(
        f"done: step {result.step}; generators in {where}/G_ab.pt and {where}/G_ba.pt", err=True
    )
