"""``cyclekit train``: flags -> TrainConfig -> :func:`cyclekit.training.loop.train`.

Options default to the TrainConfig defaults (the official CycleGAN ones). With ``--config``,
the YAML file's values replace the defaults and any flag given on the command line wins.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from cyclekit.cli.common import CONTEXT, DEVICE, choice, user_errors
from cyclekit.training import config as C
from cyclekit.training.tracking import WANDB_MODES

D = C.TrainConfig.__dataclass_fields__


def opt(*decls: str, name: str, help: str, **kw):  # noqa: A002, ANN201
    """A click option whose default and shown default come from TrainConfig."""
    default = D[name].default
    return click.option(*decls, name, default=default, show_default=True, help=help, **kw)


class Channels(click.ParamType):
    """1 or 3, as an int (click.Choice of strings with an int default fails on click 8.1)."""

    name = "channels"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value in (1, 3):
            return value
        if isinstance(value, str) and value.strip() in ("1", "3"):
            return int(value)
        self.fail(f"{value!r} is not 1 (grayscale) or 3 (RGB)", param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[1|3]"


class LazyChoice(click.Choice):
    """A case-insensitive choice whose list is loaded on first use.

    Some lists live beside torch code (norms and inits in cyclekit.models, precisions in
    cyclekit.devices); loading them lazily keeps ``import cyclekit.cli.train`` free of torch.
    """

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self._load = load
        self._loaded: Sequence[str] | None = None
        super().__init__((), case_sensitive=False)

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        if self._loaded is None:
            self._loaded = tuple(self._load())
        return self._loaded

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        pass  # click.Choice.__init__ sets it; the real list comes from the loader


def listed(setting: str) -> LazyChoice:
    return LazyChoice(lambda: C.choice_lists()[setting])


def by_model(name: str) -> str:
    """The per-model defaults of a setting, for its help line."""
    fmt = lambda v: ("on" if v else "off") if isinstance(v, bool) else str(v)  # noqa: E731
    parts = [f"{m} {fmt(d[name])}" for m, d in C.MODEL_DEFAULTS.items() if name in d]
    return f" [default by --model: {', '.join(parts)}]"


# Settings left to the model when neither a flag nor the YAML file gives them.
MODEL_DEPENDENT = frozenset(k for d in C.MODEL_DEFAULTS.values() for k in d)


@click.command(
    context_settings=CONTEXT,
    epilog="""\b
Examples:
  cyclekit train --data datasets/horse2zebra --name horse2zebra
  cyclekit train --data-a photos/ --data-b paintings/ --name monet --crop-size 128
  cyclekit train --name horse2zebra --resume auto   # data and settings come from the run
  cyclekit train --config run.yaml --max-steps 10     # flags override the file

The run folder CHECKPOINTS_DIR/NAME holds config.yaml, last.pt (resume state), G_ab.pt and
G_ba.pt (generators for `cyclekit translate`; G_ab.pt only for cut/fastcut), epoch_XXXX.pt,
samples/ and, with --eval-every, best.pt (the generators with the best --eval-metric so far).
CUT and FastCUT: cyclekit train --model cut --data datasets/horse2zebra --name h2z_cut""",
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
    help="Continue a run: 'auto' uses NAME/last.pt if it exists, or give a last.pt path. "
    "Data and settings come from the run; flags given change what may change (epochs, device, "
    "logging, data folders).",
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
@opt(
    "--model",
    name="model",
    type=choice(C.MODELS),
    help="cyclegan: two generators and a cycle loss (A->B and B->A). cut / fastcut: one "
    "generator A->B with a patchwise contrastive loss (PatchNCE); fastcut is lighter and "
    "faster. Sets the defaults marked 'by --model'.",
)
@opt("--name", name="name", help="Run name: the run folder and the W&B run name.")
@opt("--checkpoints-dir", name="checkpoints_dir", help="Where run folders are created.")
@opt("--input-nc", name="input_nc", type=Channels(), help="Channels of domain A.")
@opt("--output-nc", name="output_nc", type=Channels(), help="Channels of domain B.")
@opt(
    "--preprocess",
    name="preprocess",
    type=choice(C.PREPROCESS),
    help="resize_and_crop: resize to load size, random crop; crop: random crop only; "
    "scale_width[_and_crop]: width to load size; none: sides rounded to a multiple of 4.",
)
@opt("--load-size", name="load_size", type=int, help="Resize target before cropping.")
@opt("--crop-size", name="crop_size", type=int, help="Training crop (multiple of 4, >= 24).")
@opt("--no-flip", name="no_flip", is_flag=True, help="Disable random horizontal flips.")
@opt("--batch-size", name="batch_size", type=int, help="Image pairs per step.")
@opt(
    "--epochs",
    name="epochs",
    type=int,
    help="Epochs at the initial learning rate." + by_model("epochs"),
)
@opt(
    "--epochs-decay",
    name="epochs_decay",
    type=int,
    help="Epochs of linear decay to 0." + by_model("epochs_decay"),
)
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
@opt("--netG", name="netG", type=choice(C.GENERATOR_ARCHS), help="Generator architecture.")
@opt(
    "--downsample",
    name="downsample",
    type=listed("downsample"),
    help="ResNet generator's downsampling: conv (strided, the official CycleGAN weights) or "
    "antialias (blur-pool, CUT's; also used in the PatchGAN)." + by_model("downsample"),
)
@opt(
    "--upsample",
    name="upsample",
    type=listed("upsample"),
    help="ResNet generator's upsampling: transpose (the official CycleGAN weights), "
    "resize-conv (nearest x2 then a conv: no checkerboard artifacts), antialias (CUT's)."
    + by_model("upsample"),
)
@opt("--ngf", name="ngf", type=int, help="Generator width (filters in the first conv).")
@opt(
    "--netD",
    name="netD",
    type=choice(C.DISCRIMINATOR_ARCHS),
    help="basic: 70x70 PatchGAN; n_layers: PatchGAN with --n-layers-D; pixel: 1x1.",
)
@opt("--ndf", name="ndf", type=int, help="Discriminator width.")
@opt("--n-layers-D", name="n_layers_D", type=int, help="Layers of the n_layers PatchGAN.")
@opt("--norm", name="norm", type=listed("norm"), help="Normalisation in all networks.")
@opt("--dropout/--no-dropout", name="dropout", help="Dropout in the generator's blocks.")
@opt(
    "--init-type",
    name="init_type",
    type=listed("init_type"),
    help="Weight initialisation." + by_model("init_type"),
)
@opt("--init-gain", name="init_gain", type=float, help="Scale of the initialisation.")
@opt(
    "--gan-mode",
    name="gan_mode",
    type=choice(C.GAN_MODES),
    help="Adversarial objective (wgangp applies the gradient penalty).",
)
@opt("--lambda-a", name="lambda_a", type=float, help="Cycle loss weight A->B->A.")
@opt("--lambda-b", name="lambda_b", type=float, help="Cycle loss weight B->A->B.")
@opt(
    "--lambda-identity",
    name="lambda_identity",
    type=float,
    help="Identity loss weight relative to the cycle weights; 0 turns it off. For a gentle "
    "look (a colour grade, a film look) 5, with --upsample resize-conv, makes CycleGAN beat "
    "doing nothing sooner (README: Which model?).",
)
@opt("--lambda-gp", name="lambda_gp", type=float, help="Gradient penalty weight (wgangp).")
@opt("--pool-size", name="pool_size", type=int, help="Fake-image history size; 0 = off.")
@opt("--lambda-gan", name="lambda_gan", type=float, help="cut/fastcut: adversarial loss weight.")
@opt(
    "--lambda-nce",
    name="lambda_nce",
    type=float,
    help="cut/fastcut: PatchNCE loss weight." + by_model("lambda_nce"),
)
@opt(
    "--nce-idt/--no-nce-idt",
    name="nce_idt",
    help="cut/fastcut: PatchNCE between B and G(B) as well (an identity term)."
    + by_model("nce_idt"),
)
@opt(
    "--nce-layers",
    name="nce_layers",
    help="cut/fastcut: encoder layers whose features PatchNCE compares (comma-separated).",
)
@opt("--num-patches", name="num_patches", type=int, help="cut/fastcut: patches per layer.")
@opt("--nce-t", name="nce_t", type=float, help="cut/fastcut: PatchNCE temperature.")
@opt(
    "--flip-equivariance/--no-flip-equivariance",
    name="flip_equivariance",
    help="cut/fastcut: translate a mirrored input half the time and ask for the mirrored "
    "result." + by_model("flip_equivariance"),
)
@opt("--seed", name="seed", type=int, help="Seed for init, data order, crops, pools.")
@opt("--device", name="device", type=DEVICE, help="Where to train.")
@opt(
    "--precision",
    name="precision",
    type=listed("precision"),
    help="auto (default): bf16 where the hardware computes it natively (CPUs with AVX-512 BF16 "
    "or AMX, CUDA GPUs with bf16), fp16 on older CUDA GPUs, fp32 elsewhere. fp32: exact, "
    "about 2x slower on those CPUs. bf16: autocast. fp16: CUDA only.",
)
@opt("--num-workers", name="num_workers", type=int, help="Data loading processes.")
@opt(
    "--compile/--no-compile",
    name="compile",
    help="torch.compile the networks: minutes of compiling before the first step, then "
    "faster steps (1.4x at 128^2 with bf16 on a 2-core AMX CPU). Default (neither flag): auto, "
    "on when the planned steps x pixels are far past the point where compiling pays back and "
    "a C++ compiler (CPU) or Triton (CUDA) is there; the start-up line says which and why.",
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
    type=choice(WANDB_MODES),
    help="auto: online if W&B credentials are configured, else offline.",
)
@opt(
    "--eval-every",
    name="eval_every",
    type=int,
    help="Every N epochs (and after the last), score the generators with FID and KID, as "
    "`cyclekit eval` does, on the first --eval-images test images (DATA/testA, testB), log "
    "eval/* and keep the best as best.pt; 0 = off. Default: 10 on CUDA, off elsewhere.",
)
@opt(
    "--eval-images",
    name="eval_images",
    type=int,
    help="Test images per domain for --eval-every (the first K, sorted: the same every time).",
)
@opt(
    "--eval-metric",
    name="eval_metric",
    type=choice(C.EVAL_METRICS),
    help="What best.pt is kept by (lower is better). KID is unbiased at small image counts.",
)
@opt(
    "--stop-on-alarm/--no-stop-on-alarm",
    name="stop_on_alarm",
    help="A health alarm (colour inversion, doing nothing, collapse, discriminator wins) "
    "saves last.pt and stops the run with exit code 1; by default it only warns. A NaN loss "
    "always stops the run.",
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
    """Train CycleGAN (or CUT / FastCUT) on two unpaired image folders.

    Defaults reproduce the official CycleGAN recipe: ResNet-9 generators, 70x70 PatchGANs,
    LSGAN, cycle weight 10, identity 0.5, pool 50, Adam 2e-4, 100 + 100 epochs. --model cut
    or fastcut switches to the official CUT code's defaults (one generator A->B, PatchNCE,
    anti-aliased sampling, xavier init; 200 + 200 or 150 + 50 epochs). Stop any time with
    Ctrl-C (last.pt is saved) and continue with --resume auto.
    """
    values: dict[str, object] = {}
    explicit: set[str] = set()
    with user_errors():
        if resume is not None and overwrite:
            raise C.ConfigError(
                "--overwrite starts a run afresh and --resume continues one: give only one"
            )
        if config_file is not None:
            values = C.load_yaml_config(config_file)
            explicit |= set(values)
        for name, value in flags.items():
            from_command_line = ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
            if from_command_line or name not in values:
                # Not given: a model-dependent setting is left for --model to decide.
                left_to_model = name in MODEL_DEPENDENT and not from_command_line
                values[name] = None if left_to_model else value
            if from_command_line:
                explicit.add(name)
        if tags:
            values["tags"] = list(tags)
            explicit.add("tags")
        cfg = C.TrainConfig.from_dict(values, config_file or "flags")
        preflight(cfg, resume, explicit)

        from cyclekit.training.loop import train as run_training

        result = run_training(
            cfg, resume=resume, explicit=explicit, progress=not no_progress, overwrite=overwrite
        )
    where = result.run_dir
    if result.ranks_in_sync is False:
        raise click.ClickException("ranks ended with different weights; the run is not trustworthy")
    if not result.is_main:
        sys.exit(130 if result.interrupted else 0)
    if result.interrupted or not result.finished:
        why = "interrupted" if result.interrupted else "limit reached (--max-steps/--max-minutes)"
        click.echo(
            f"stopped at step {result.step}, {why}; continue with --resume auto "
            f"({where}/last.pt); generators so far: {_generators(where)}",
            err=True,
        )
        if result.interrupted:
            sys.exit(130)
        return
    click.echo(f"done: step {result.step}; generators: {_generators(where)}", err=True)


def _generators(run_dir: Path) -> str:
    # One-sided models (CUT, FastCUT) save G_ab.pt only.
    return " and ".join(str(run_dir / n) for n in ("G_ab.pt", "G_ba.pt") if (run_dir / n).exists())


def preflight(cfg: C.TrainConfig, resume: str | None, explicit: set[str]) -> None:
    """Checks that need no data and no model, run before anything is written.

    A resumed run takes its data folders, W&B mode and GAN mode from its checkpoint, so those
    are checked here only when they are given (the trainer checks the merged config again).
    """
    from cyclekit.training.tracking import check_wandb_mode

    no_data = cfg.data is None and cfg.data_a is None and cfg.data_b is None
    last = cfg.run_dir / "last.pt"
    if resume is None:
        C.require_data_source(cfg)
    elif resume != "auto" and not Path(resume).is_file():
        raise C.ConfigError(f"--resume {resume}: no such file (give auto or a last.pt path)")
    elif resume == "auto" and no_data and not last.is_file():
        # A mistyped --name: there is no run to take the data from, and no data to start one.
        raise C.ConfigError(
            f"--resume auto: nothing to resume at {last}; check --name and --checkpoints-dir, "
            "or give --data to start a new run"
        )
    if resume is None or "wandb_mode" in explicit:
        check_wandb_mode(cfg.wandb_mode)
    from cyclekit.files import check_writable_dir
    from cyclekit.training.prepare import check_distributed_config

    check_writable_dir(Path(cfg.checkpoints_dir), "--checkpoints-dir", C.ConfigError)
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world_size = 1  # torch.distributed reports a malformed WORLD_SIZE itself
    if resume is None or "gan_mode" in explicit:
        check_distributed_config(cfg, world_size)
