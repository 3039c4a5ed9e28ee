"""Training configuration: one dataclass, validated early, saved as YAML beside checkpoints.

A light module (torch is imported only to check names that live beside the code using them:
norms, inits, precisions, devices), so the CLI can build and check a config cheaply. Values from
YAML files and saved checkpoints go through :func:`coerce_settings`, which converts what is
unambiguous (``32.0`` -> 32, ``"2e-4"`` -> 2e-4) and refuses the rest naming key, value and type.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cyclekit.errors import CyclekitError
from cyclekit.training.tracking import WANDB_MODES

GENERATOR_ARCHS = ("resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256")
DISCRIMINATOR_ARCHS = ("basic", "n_layers", "pixel")
GAN_MODES = ("lsgan", "vanilla", "wgangp", "hinge")
PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
MODELS = ("cyclegan", "cut", "fastcut")
EVAL_METRICS = ("kid", "fid")  # --eval-metric: what best.pt is kept by (lower is better)
ONE_SIDED = ("cut", "fastcut")  # one generator (A -> B), no cycle
# Settings whose default depends on --model: None in the dataclass means "the model's default",
# filled in when the config is built (and saved resolved, so a resume never re-guesses them).
# CycleGAN: the official CycleGAN code; CUT and FastCUT: the official CUT code's two modes.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "cyclegan": {
        "epochs": 100, "epochs_decay": 100, "init_type": "normal",
        "downsample": "conv", "upsample": "transpose",
    },
    "cut": {
        "epochs": 200, "epochs_decay": 200, "init_type": "xavier",
        "downsample": "antialias", "upsample": "antialias",
        "lambda_nce": 1.0, "nce_idt": True, "flip_equivariance": False,
    },
    "fastcut": {
        "epochs": 150, "epochs_decay": 50, "init_type": "xavier",
        "downsample": "antialias", "upsample": "antialias",
        "lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True,
    },
}  # fmt: skip
CUT_ONLY = ("lambda_gan", "lambda_nce", "nce_idt", "nce_layers", "num_patches", "nce_t")
CUT_ONLY += ("flip_equivariance",)
# Beyond these, a typo (an extra zero) would ask for tens of GB before the first step.
MAX_SIDE = 8192  # --load-size / --crop-size
MAX_WIDTH = 1024  # --ngf / --ndf
MAX_D_LAYERS = 8  # --n-layers-D (8 layers already need 768-pixel images)
MAX_SEED = 2**32 - 1  # seeds are combined into torch generator seeds, which are 64-bit

PATH_SETTINGS = ("data", "data_a", "data_b", "checkpoints_dir")

# Fields that may change when resuming a run; changing any other field would make the
# checkpoint mean something else, so resume refuses it.
RESUMABLE_OVERRIDES = frozenset(
    {
        "epochs",
        "epochs_decay",
        "max_steps",
        "max_minutes",
        "device",
        "precision",
        "num_workers",
        "compile",
        "log_every",
        "sample_every",
        "save_every",
        "save_latest_every",
        "wandb_mode",
        "wandb_project",
        "wandb_entity",
        "tags",
        "checkpoints_dir",
        "data",
        "data_a",
        "data_b",
        # Evaluation and alarms watch the run without changing it (the eval never touches the
        # training random streams); a best-so-far from another metric or image count is not
        # comparable and is started afresh (see cyclekit.training.evaluation).
        "eval_every",
        "eval_images",
        "eval_metric",
        "stop_on_alarm",
    }
)


class ConfigError(CyclekitError):
    """A bad setting; the message names the flag."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the official ones of ``model``."""

    model: str = "cyclegan"  # cyclegan | cut | fastcut

    # data
    data: str | None = None  # folder with trainA/ trainB/ (testA/ testB/ optional)
    data_a: str | None = None  # or: any folder of domain-A images
    data_b: str | None = None  # and any folder of domain-B images
    input_nc: int = 3  # channels of domain A (1 = grayscale, 3 = RGB)
    output_nc: int = 3  # channels of domain B
    preprocess: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    no_flip: bool = False
    # run
    name: str = "cyclegan"
    checkpoints_dir: str = "checkpoints"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 where the hardware computes it natively (issue 15)
    num_workers: int = 4
    # torch.compile the networks (slow start, faster steps); None = auto: long runs where a
    # compiler exists (see cyclekit.training.compiling)
    compile: bool | None = None
    batch_size: int = 1
    epochs: int | None = None  # epochs at the initial learning rate (model default)
    epochs_decay: int | None = None  # epochs of linear decay to 0 (model default)
    max_steps: int | None = None  # stop after this many iterations in total (smoke runs)
    max_minutes: float | None = None  # stop (and save) after this much training time
    # model
    netG: str = "resnet_9blocks"
    ngf: int = 64
    netD: str = "basic"
    ndf: int = 64
    n_layers_D: int = 3  # used by netD=n_layers
    norm: str = "instance"
    dropout: bool = False  # official CycleGAN trains without dropout
    init_type: str | None = None  # normal (CycleGAN) or xavier (CUT)
    init_gain: float = 0.02
    downsample: str | None = None  # ResNet generators: conv (CycleGAN) | antialias (CUT)
    upsample: str | None = None  # transpose (CycleGAN) | resize-conv | antialias (CUT)
    # losses and optimiser
    gan_mode: str = "lsgan"
    lambda_a: float = 10.0  # cycle loss weight A -> B -> A
    lambda_b: float = 10.0  # cycle loss weight B -> A -> B
    lambda_identity: float = 0.5  # identity loss weight, relative to lambda_a / lambda_b
    lambda_gp: float = 10.0  # gradient penalty weight (gan_mode=wgangp)
    pool_size: int = 50  # fake images kept for the discriminators; 0 = no pool
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    # CUT / FastCUT (ignored by cyclegan)
    lambda_gan: float = 1.0  # adversarial loss weight
    lambda_nce: float | None = None  # PatchNCE weight: 1 (CUT), 10 (FastCUT)
    nce_idt: bool | None = None  # PatchNCE between B and G(B) too: on for CUT
    nce_layers: str = "0,4,8,12,16"  # encoder layers whose features PatchNCE compares
    num_patches: int = 256  # patches sampled per layer
    nce_t: float = 0.07  # PatchNCE temperature
    flip_equivariance: bool | None = None  # FastCUT: translate flipped inputs half the time
    # logging and saving
    log_every: int = 100  # steps between loss logs (each log syncs the device once)
    sample_every: int = 400  # steps between sample grids
    n_samples: int = 4  # test images per domain in the sample grids
    save_every: int = 5  # epochs between epoch checkpoints
    save_latest_every: int = 5000  # steps between last.pt saves (also saved every epoch)
    wandb_mode: str = "auto"
    wandb_project: str = "cyclekit"
    wandb_entity: str | None = None
    tags: list[str] = field(default_factory=list)
    # evaluation and health (new fields: defaults keep older checkpoints resumable)
    eval_every: int | None = None  # epochs between FID/KID evaluations; None: 10 on CUDA, else 0
    eval_images: int = 100  # first K test images (sorted) per domain, the same every time
    eval_metric: str = "kid"  # kid | fid: the one best.pt is kept by
    stop_on_alarm: bool = False  # a health alarm saves last.pt and stops the run (exit 1)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"--model {self.model!r} is not one of: {', '.join(MODELS)}")
        for name, value in MODEL_DEFAULTS[self.model].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.validate()

    @property
    def one_sided(self) -> bool:
        return self.model in ONE_SIDED

    def validate(self) -> None:
        """Check every setting on its own and against the others (not the data folders:
        see :func:`require_data_source`, since a resumed run takes them from its checkpoint)."""
        for name, allowed in choice_lists().items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{_flag(name)} {getattr(self, name)!r} is not one of: {', '.join(allowed)}"
                )
        if not is_device_name(self.device):
            raise ConfigError(
                f"--device {self.device!r} is not a device; choose auto, cpu, cuda, cuda:N or mps"
            )
        if not self.name or self.name in (".", "..") or any(c in self.name for c in "/\\"):
            raise ConfigError(
                f"--name {self.name!r} must be a plain folder name (no '/', not empty, '.' or "
                "'..'); the run folder is --checkpoints-dir/NAME"
            )
        positive = ["batch_size", "ngf", "ndf", "n_layers_D", "log_every", "sample_every"]
        positive += ["save_every", "save_latest_every", "load_size", "crop_size"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}")
        for name in ["epochs", "epochs_decay", "num_workers", "pool_size", "n_samples", "seed"]:
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must be >= 0, got {getattr(self, name)}")
        limits = {"load_size": MAX_SIDE, "crop_size": MAX_SIDE, "ngf": MAX_WIDTH}
        limits.update(ndf=MAX_WIDTH, n_layers_D=MAX_D_LAYERS, seed=MAX_SEED)
        for name, most in limits.items():
            if getattr(self, name) > most:
                raise ConfigError(
                    f"{_flag(name)} {getattr(self, name)} is too large (at most {most})"
                )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{_flag(f.name)} must be a finite number, got {value}")
        if self.epochs + self.epochs_decay < 1:
            raise ConfigError("--epochs plus --epochs-decay must be at least 1")
        if self.eval_every is not None and self.eval_every < 0:
            raise ConfigError(f"--eval-every must be >= 0 (0 = off), got {self.eval_every}")
        if self.eval_images < 2:
            raise ConfigError(f"--eval-images must be >= 2 (FID and KID), got {self.eval_images}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"--max-minutes must be > 0, got {self.max_minutes}")
        for name in ["lambda_a", "lambda_b", "lambda_identity", "lambda_gp", "init_gain"]:
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{_flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if self.input_nc not in (1, 3) or self.output_nc not in (1, 3):
            raise ConfigError("--input-nc and --output-nc must be 1 or 3")
        if not self.one_sided and self.lambda_identity > 0 and self.input_nc != self.output_nc:
            raise ConfigError(
                "--lambda-identity needs --input-nc == --output-nc; set --lambda-identity 0"
            )
        for tag in self.tags:
            if not 1 <= len(tag) <= 64:  # W&B refuses other tags, which would stop the run
                raise ConfigError(f"--tag {tag!r}: a tag has 1 to 64 characters")
        if self.data is not None and (self.data_a is not None or self.data_b is not None):
            raise ConfigError("give either --data or --data-a/--data-b, not both")
        if self.preprocess.startswith("resize") and self.load_size < self.crop_size:
            raise ConfigError(
                f"--load-size {self.load_size} must be >= --crop-size {self.crop_size}"
            )
        if self.preprocess != "none":
            self._check_side(self.crop_size, "--crop-size")
        self._check_model()

    def _check_model(self) -> None:
        """What the chosen model needs (generator sampling layers, CUT's settings)."""
        if self.one_sided and self.netG.startswith("unet"):
            raise ConfigError(
                f"--model {self.model} needs a ResNet generator (its encoder features feed "
                f"PatchNCE); --netG {self.netG} has none: use resnet_9blocks or resnet_6blocks"
            )
        sampling = (self.downsample, self.upsample)
        if self.netG.startswith("unet") and sampling != ("conv", "transpose"):
            raise ConfigError(
                f"--downsample/--upsample apply to ResNet generators; --netG {self.netG} has "
                "its own (use --downsample conv --upsample transpose)"
            )
        if not self.one_sided:
            return
        if self.gan_mode == "wgangp":
            raise ConfigError(f"--model {self.model} does not support --gan-mode wgangp")
        if self.nce_idt and self.input_nc != self.output_nc:
            raise ConfigError(
                "--nce-idt feeds B images to the A->B generator, so it needs --input-nc == "
                "--output-nc; add --no-nce-idt"
            )
        try:
            layers = [int(x) for x in str(self.nce_layers).split(",")]
        except ValueError:
            layers = []
        if not layers or min(layers) < 0 or layers != sorted(set(layers)):
            raise ConfigError(
                f"--nce-layers {self.nce_layers!r} must be increasing layer numbers like "
                "0,4,8,12,16"
            )
        for name in ("lambda_gan", "lambda_nce"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.num_patches < 1:
            raise ConfigError(f"--num-patches must be >= 1, got {self.num_patches}")
        if not self.nce_t > 0:
            raise ConfigError(f"--nce-t must be > 0, got {self.nce_t}")

    def _check_side(self, side: int, flag: str) -> None:
        multiple = 2 ** (7 if self.netG == "unet_128" else 8) if self.netG.startswith("unet") else 4
        if side % multiple:
            hint = max(multiple, side // multiple * multiple)
            raise ConfigError(
                f"{flag} {side} must be a multiple of {multiple} for --netG {self.netG} "
                f"(so the output has the input's size); try {hint}"
            )
        if self.netD != "pixel":
            n_layers = 3 if self.netD == "basic" else self.n_layers_D
            need = min_patch_side(n_layers, antialias=self.downsample == "antialias")
            if side < need:
                raise ConfigError(
                    f"{flag} {side} is too small: the PatchGAN discriminator with "
                    f"{n_layers} layers needs sides >= {need}"
                )

    @property
    def run_dir(self) -> Path:
        return Path(self.checkpoints_dir) / self.name

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.epochs_decay

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a dict whose keys may use dashes or underscores.

        Unknown keys are errors; values are type-checked and coerced by :func:`coerce_settings`.
        """
        return cls(**coerce_settings(values, source))


def require_data_source(cfg: TrainConfig) -> None:
    """A run needs ``--data`` or both ``--data-a`` and ``--data-b`` (resume takes them from
    the checkpoint, so this is checked apart from :meth:`TrainConfig.validate`)."""
    if cfg.data is None and (cfg.data_a is None or cfg.data_b is None):
        missing = "--data-b" if cfg.data_a is not None else "--data-a" if cfg.data_b else None
        if missing:
            raise ConfigError(f"{missing} is missing: --data-a and --data-b go together")
        raise ConfigError(
            "give --data DIR (with trainA/ and trainB/) or both --data-a and --data-b"
        )


def choice_lists() -> dict[str, tuple[str, ...]]:
    """Setting -> allowed values. Each list is defined once: here, in cyclekit.choices (the
    ones whose code needs torch, kept torch-free for --help) or in cyclekit.training.tracking."""
    from cyclekit.choices import DOWNSAMPLES, INITS, NORMS, PRECISIONS, UPSAMPLES

    return {
        "netG": GENERATOR_ARCHS,
        "netD": DISCRIMINATOR_ARCHS,
        "norm": NORMS,
        "init_type": INITS,
        "gan_mode": GAN_MODES,
        "preprocess": PREPROCESS,
        "precision": PRECISIONS,
        "wandb_mode": WANDB_MODES,
        "model": MODELS,
        "downsample": DOWNSAMPLES,
        "upsample": UPSAMPLES,
        "eval_metric": EVAL_METRICS,
    }


def is_device_name(text: str) -> bool:
    """auto, cpu, cuda, cuda:N or mps (lower case)."""
    from cyclekit.choices import DEVICES

    base, colon, index = text.partition(":")
    if not colon:
        return base in DEVICES
    return base == "cuda" and index.isdigit()


def min_patch_side(n_layers: int, antialias: bool = False) -> int:
    """Smallest image side for which an n-layer PatchGAN still outputs at least 1x1.

    Each strided layer maps a side s to (s - 2) // 2 + 1, which is >= t exactly when s >= 2t,
    and the two stride-1 layers at the end need 3: so 3 * 2 ** n_layers. The anti-aliased
    PatchGAN (CUT) maps s to ceil((s - 1) / 2), which needs s >= 2t: the same bound.
    """
    return 3 * 2**n_layers


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _coerce(value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (int, float, bool, str, list[str], X | None), or raise TypeError."""
    args = typing.get_args(kind)
    if type(None) in args:
        if value is None:
            return None
        (kind,) = [a for a in args if a is not type(None)]
    if typing.get_origin(kind) is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise TypeError("a list of strings")
        return [_coerce(v, str) for v in value]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise TypeError(_TYPE_WORDS[bool])
    if kind is int:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)  # "1e3" (YAML reads it as a string), "32.0"
                except ValueError:
                    raise TypeError(_TYPE_WORDS[int]) from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(_TYPE_WORDS[int])
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise TypeError(_TYPE_WORDS[float]) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)  # nan and inf are numbers: validate() refuses them by flag
        raise TypeError(_TYPE_WORDS[float])
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # a run named 2024
        raise TypeError(_TYPE_WORDS[str])
    raise AssertionError(f"no coercion for {kind!r}")  # a new field type: extend _coerce


def coerce_settings(values: dict[Any, Any], source: str) -> dict[str, Any]:
    """Keys with - or _ -> field names; each value checked against its field's type.

    Unknown keys, a key given twice (``crop-size`` and ``crop_size``) and values that are not
    unambiguously of the field's type are a :class:`ConfigError` naming ``source``, the key,
    the value and the expected type. Choice values are lower-cased (as the flags accept).
    """
    hints = typing.get_type_hints(TrainConfig)
    choices = set(choice_lists()) | {"device"}
    clean: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in hints:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        if name in clean:
            raise ConfigError(f"{source}: setting {name!r} is given twice")
        try:
            value = _coerce(value, hints[name])
        except TypeError as e:
            raise ConfigError(f"{source}: {key}: {value!r} is not {e}") from None
        if name in choices and isinstance(value, str):
            value = value.strip().lower()
        if name in PATH_SETTINGS and isinstance(value, str):
            value = os.path.expanduser(value)  # a shell expands ~ in flags, YAML does not
        clean[name] = value
    return clean


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of settings, type-checked; a one-line error naming the file if not."""
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read config (not a UTF-8 text file)") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of setting: value")
    return coerce_settings(values, str(path))
