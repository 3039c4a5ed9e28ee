"""Run set-up for ``cyclekit train``: folders, resume, config merging, signals, small files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from cyclekit.data.images import ImageDecodeError, decode_image
from cyclekit.data.unpaired import Domain
from cyclekit.models import side_multiple
from cyclekit.training.config import (
    RESUMABLE_OVERRIDES,
    ConfigError,
    TrainConfig,
    require_data_source,
)


def _folder(flag: str, path: Path) -> Path:
    if not path.exists():
        raise ConfigError(f"{flag} {path}: folder does not exist")
    if not path.is_dir():
        raise ConfigError(f"{flag} {path}: not a folder")
    return path


def domain_dirs(cfg: TrainConfig) -> tuple[Path, Path, Path | None, Path | None]:
    """(trainA, trainB, testA or None, testB or None); a missing folder names its flag."""
    require_data_source(cfg)
    if cfg.data is not None:
        root = _folder("--data", Path(cfg.data))
        for sub in ("trainA", "trainB"):
            if not (root / sub).is_dir():
                raise ConfigError(f"--data {root}: missing {sub}/ (expected trainA/ and trainB/)")
        test_a, test_b = root / "testA", root / "testB"
        return (
            root / "trainA",
            root / "trainB",
            test_a if test_a.is_dir() else None,
            test_b if test_b.is_dir() else None,
        )
    assert cfg.data_a is not None and cfg.data_b is not None  # require_data_source
    return _folder("--data-a", Path(cfg.data_a)), _folder("--data-b", Path(cfg.data_b)), None, None


def check_distributed_config(cfg: TrainConfig, world_size: int) -> None:
    """Settings that cannot work with ``world_size`` processes (torchrun), refused up front.

    WGAN-GP's gradient penalty differentiates the discriminator's input gradient
    (double backward), which DistributedDataParallel does not support.
    """
    if world_size > 1 and cfg.gan_mode == "wgangp":
        raise ConfigError(
            f"--gan-mode wgangp does not work with torchrun ({world_size} processes): its "
            "gradient penalty needs a double backward, which DistributedDataParallel does not "
            "support; train it in one process, or pick another --gan-mode"
        )


def check_uncropped_sizes(domain: Domain, cfg: TrainConfig) -> None:
    """Without a crop, image sizes reach the networks as they are: check them up front."""
    if "crop" in cfg.preprocess:
        return
    from cyclekit.data.transforms import resized_size
    from cyclekit.training.config import min_patch_side

    sizes = {}
    for path, (w, h) in zip(domain.files, domain.sizes, strict=True):
        sizes.setdefault(resized_size(w, h, cfg.preprocess, cfg.load_size, cfg.crop_size), path)
    if cfg.netD != "pixel":
        need = min_patch_side(3 if cfg.netD == "basic" else cfg.n_layers_D)
        for (w, h), path in sizes.items():
            if min(w, h) < need:
                raise ConfigError(
                    f"{path}: {w}x{h} is too small for the PatchGAN discriminator (sides >= "
                    f"{need}) with --preprocess {cfg.preprocess}; use a crop mode or bigger images"
                )
    if cfg.gan_mode == "wgangp" and len(sizes) > 1:
        raise ConfigError(
            f"--gan-mode wgangp with --preprocess {cfg.preprocess} needs images of one size "
            "(the gradient penalty mixes real and pooled fake images); use a crop mode"
        )
    if cfg.batch_size > 1 and len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise ConfigError(
            f"--batch-size {cfg.batch_size} with --preprocess {cfg.preprocess} needs images of one "
            f"size, but {p1} is {s1[0]}x{s1[1]} and {p2} is {s2[0]}x{s2[1]}; "
            "use --batch-size 1 or a crop mode"
        )


def report_domain(domain: Domain, cfg: TrainConfig) -> None:
    if domain.bad:
        print(
            f"skipping {len(domain.bad)} unreadable file(s) in domain {domain.name}:",
            file=sys.stderr,
        )
        for line in domain.bad:
            print(f"  {line}", file=sys.stderr)
    from cyclekit.data.transforms import needs_upscale

    small = [
        f
        for f, (w, h) in zip(domain.files, domain.sizes, strict=True)
        if needs_upscale(w, h, cfg.preprocess, cfg.load_size, cfg.crop_size)
    ]
    if small:
        print(
            f"warning: {len(small)} image(s) in domain {domain.name} are smaller than "
            f"--crop-size {cfg.crop_size} and will be upscaled (e.g. {small[0]})",
            file=sys.stderr,
        )


def sample_batch(paths: list[Path], channels: int, cfg: TrainConfig) -> torch.Tensor | None:
    if cfg.n_samples == 0:
        return None
    from cyclekit.data.transforms import eval_transform

    side = cfg.crop_size if cfg.preprocess != "none" else 256
    tensors = []
    for path in paths:
        try:
            pixels = decode_image(path, channels=channels).pixels
        except ImageDecodeError:
            continue
        tensors.append(eval_transform(pixels, side, side_multiple(cfg.netG)))
        if len(tensors) == cfg.n_samples:
            break
    return torch.stack(tensors) if tensors else None


def merge_resumed_config(
    saved: dict[str, Any], cfg: TrainConfig, explicit: set[str] | None
) -> TrainConfig:
    """The saved config, with the explicitly given settings that may change on resume.

    ``explicit``: names of settings the user gave (None: all of ``cfg``).
    """
    current = cfg.to_dict()
    names = set(current) if explicit is None else set(explicit)
    if all(current[k] is None for k in ("data", "data_a", "data_b")):
        names -= {"data", "data_a", "data_b"}  # no data given: the run's own is used
    # Limits belong to one invocation: a run stopped by --max-steps resumes without it.
    names |= {"max_steps", "max_minutes"}
    if names & {"data", "data_a", "data_b"}:  # the data source is replaced as a whole
        names |= {"data", "data_a", "data_b"}
    merged = dict(saved)
    conflicts = []
    for name in sorted(names):
        if name not in saved or saved[name] == current[name]:
            continue
        if name in RESUMABLE_OVERRIDES:
            merged[name] = current[name]
        else:
            conflicts.append(
                f"--{name.replace('_', '-')} {current[name]!r} (run has {saved[name]!r})"
            )
    if conflicts:
        raise ConfigError(
            "cannot resume with changed settings: "
            + "; ".join(conflicts)
            + ". Drop these flags, or start a new run with another --name"
        )
    return TrainConfig.from_dict(merged, "checkpoint config")
