"""Training configuration: one dataclass, validated early, saved as YAML beside checkpoints.

A leaf module (imports nothing from cyclekit except the name lists), so the CLI can build and
check a config before torch is imported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cyclekit.errors import CyclekitError

GENERATOR_ARCHS = ("resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256")
DISCRIMINATOR_ARCHS = ("basic", "n_layers", "pixel")
NORMS = ("instance", "batch", "none")
INITS = ("normal", "xavier", "kaiming", "orthogonal")
GAN_MODES = ("lsgan", "vanilla", "wgangp", "hinge")
PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
WANDB_MODES = ("auto", "online", "offline", "disabled")

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
    }
)


class ConfigError(CyclekitError):
    """A bad setting; the message names the flag."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    """Everything that defines a CycleGAN training run. Defaults are the official ones."""

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
    precision: str = "fp32"
    num_workers: int = 4
    compile: bool = False  # torch.compile the four networks (slow start, faster steps)
    batch_size: int = 1
    epochs: int = 100  # epochs at the initial learning rate
    epochs_decay: int = 100  # epochs of linear decay to 0
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
    init_type: str = "normal"
    init_gain: float = 0.02
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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        choices = {
            "netG": GENERATOR_ARCHS,
            "netD": DISCRIMINATOR_ARCHS,
            "norm": NORMS,
            "init_type": INITS,
            "gan_mode": GAN_MODES,
            "preprocess": PREPROCESS,
            "device": DEVICES,
            "precision": PRECISIONS,
            "wandb_mode": WANDB_MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{_flag(name)} {getattr(self, name)!r} is not one of: {', '.join(allowed)}"
                )
        positive = ["batch_size", "ngf", "ndf", "n_layers_D", "log_every", "sample_every"]
        positive += ["save_every", "save_latest_every", "load_size", "crop_size"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}")
        for name in ["epochs", "epochs_decay", "num_workers", "pool_size", "n_samples", "seed"]:
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.epochs + self.epochs_decay < 1:
            raise ConfigError("--epochs plus --epochs-decay must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"--max-minutes must be > 0, got {self.max_minutes}")
        for name in ["lambda_a", "lambda_b", "lambda_identity", "lambda_gp", "init_gain"]:
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("--lr must be > 0 and --beta1/--beta2 in [0, 1)")
        if self.input_nc not in (1, 3) or self.output_nc not in (1, 3):
            raise ConfigError("--input-nc and --output-nc must be 1 or 3")
        if self.lambda_identity > 0 and self.input_nc != self.output_nc:
            raise ConfigError(
                "--lambda-identity needs --input-nc == --output-nc; set --lambda-identity 0"
            )
        if self.data is None and (self.data_a is None or self.data_b is None):
            raise ConfigError(
                "give --data DIR (with trainA/ and trainB/) or both --data-a and --data-b"
            )
        if self.data is not None and (self.data_a is not None or self.data_b is not None):
            raise ConfigError("give either --data or --data-a/--data-b, not both")
        if self.preprocess.startswith("resize") and self.load_size < self.crop_size:
            raise ConfigError(
                f"--load-size {self.load_size} must be >= --crop-size {self.crop_size}"
            )
        if self.preprocess != "none":
            self._check_side(self.crop_size, "--crop-size")

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
            need = min_patch_side(n_layers)
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
        """Build from a dict whose keys may use dashes or underscores; unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        clean = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ConfigError(f"{source}: unknown setting {key!r}")
            clean[name] = value
        try:
            return cls(**clean)
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None


def min_patch_side(n_layers: int) -> int:
    """Smallest image side for which an n-layer PatchGAN still outputs at least 1x1."""
    side = 1
    while True:
        s = side
        ok = True
        for _ in range(n_layers):
            s = (s - 2) // 2 + 1
            if s <= 0:
                ok = False
                break
        if ok and s - 2 >= 1:
            return side
        side += 1


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of settings; a clear error if it is anything else."""
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of setting: value")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if str(key).replace("-", "_") not in known:
            raise ConfigError(f"{path}: unknown setting {key!r}")
    return {str(k).replace("-", "_"): v for k, v in values.items()}
