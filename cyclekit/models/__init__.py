"""Networks. Models import nothing from data, training or the CLI.

The two dicts below are the only place where config names map to classes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cyclekit.choices import UNET_DOWNS, side_multiple
from cyclekit.models.discriminator import NLayerDiscriminator, PixelDiscriminator
from cyclekit.models.init import INITS, init_weights
from cyclekit.models.norm import NORMS
from cyclekit.models.patch_sample import PatchSampleMLP
from cyclekit.models.resnet import DOWNSAMPLES, UPSAMPLES, ResnetGenerator
from cyclekit.models.unet import UnetGenerator

# name -> (class, fixed constructor kwargs)
GENERATORS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "resnet_9blocks": (ResnetGenerator, {"n_blocks": 9}),
    "resnet_6blocks": (ResnetGenerator, {"n_blocks": 6}),
    "unet_128": (UnetGenerator, {"num_downs": UNET_DOWNS["unet_128"]}),
    "unet_256": (UnetGenerator, {"num_downs": UNET_DOWNS["unet_256"]}),
}
DISCRIMINATORS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "basic": (NLayerDiscriminator, {"n_layers": 3}),
    "n_layers": (NLayerDiscriminator, {}),
    "pixel": (PixelDiscriminator, {}),
}

__all__ = [
    "DOWNSAMPLES",
    "UPSAMPLES",
    "GENERATORS",
    "DISCRIMINATORS",
    "INITS",
    "NORMS",
    "build_generator",
    "build_discriminator",
    "generator_spec",
    "generator_from_spec",
    "init_weights",
    "PatchSampleMLP",
    "resnet_sampling",
    "resnet_variant_from_state",
    "side_multiple",
]

# Resampling defaults: the official CycleGAN generator. A spec leaves them out when they are
# the defaults, so CycleGAN specs stay exactly as before these options existed: old files load
# unchanged and files written now still load in older cyclekit versions.
_SAMPLING_DEFAULTS = {"downsample": "conv", "upsample": "transpose"}


def generator_spec(
    arch: str,
    input_nc: int,
    output_nc: int,
    ngf: int,
    norm: str,
    use_dropout: bool,
    downsample: str = "conv",
    upsample: str = "transpose",
) -> dict[str, Any]:
    """The constructor arguments of a generator as a plain dict (saved beside its weights).

    ``downsample``/``upsample`` (ResNet only, see DOWNSAMPLES/UPSAMPLES) are stored only when
    they differ from the CycleGAN defaults ``conv``/``transpose``; a spec without them means
    those defaults.
    """
    if arch not in GENERATORS:
        raise ValueError(f"unknown generator {arch!r}; choose one of {', '.join(GENERATORS)}")
    spec: dict[str, Any] = {
        "arch": arch,
        "input_nc": input_nc,
        "output_nc": output_nc,
        "ngf": ngf,
        "norm": norm,
        "use_dropout": use_dropout,
    }
    sampling = {"downsample": downsample, "upsample": upsample}
    _check_sampling(arch, sampling)
    spec.update({k: v for k, v in sampling.items() if v != _SAMPLING_DEFAULTS[k]})
    return spec


def resnet_sampling(spec: Mapping[str, Any]) -> tuple[str, str]:
    """``(downsample, upsample)`` of a generator spec, the defaults filled in."""
    return (
        spec.get("downsample", _SAMPLING_DEFAULTS["downsample"]),
        spec.get("upsample", _SAMPLING_DEFAULTS["upsample"]),
    )


def _check_sampling(arch: str, sampling: Mapping[str, Any]) -> None:
    allowed = {"downsample": DOWNSAMPLES, "upsample": UPSAMPLES}
    for key, value in sampling.items():
        if value not in allowed[key]:
            raise ValueError(f"unknown {key} {value!r}; choose one of {', '.join(allowed[key])}")
        if value != _SAMPLING_DEFAULTS[key] and GENERATORS[arch][0] is not ResnetGenerator:
            raise ValueError(f"{key}={value!r} needs a ResNet generator, not {arch!r}")


def generator_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a generator from :func:`generator_spec` output (no weights loaded)."""
    spec = dict(spec)
    arch = spec.pop("arch")
    if arch not in GENERATORS:
        raise ValueError(f"unknown generator {arch!r}; choose one of {', '.join(GENERATORS)}")
    sampling = {k: spec.pop(k, default) for k, default in _SAMPLING_DEFAULTS.items()}
    _check_sampling(arch, sampling)
    cls, fixed = GENERATORS[arch]
    if cls is ResnetGenerator:
        spec.update(sampling)
    return cls(**fixed, **spec)


def build_generator(
    arch: str = "resnet_9blocks",
    input_nc: int = 3,
    output_nc: int = 3,
    ngf: int = 64,
    norm: str = "instance",
    use_dropout: bool = False,
    downsample: str = "conv",
    upsample: str = "transpose",
) -> nn.Module:
    spec = generator_spec(
        arch, input_nc, output_nc, ngf, norm, use_dropout, downsample=downsample, upsample=upsample
    )
    return generator_from_spec(spec)


_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _ndim(value: Any) -> int:
    # A state_dict from a file is untrusted: a value may be anything.
    return value.dim() if isinstance(value, torch.Tensor) else -1


def resnet_variant_from_state(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The :func:`generator_spec` of a ResNet generator's state_dict, read off its keys and shapes.

    Recognises official CycleGAN ``latest_net_G*.pth`` files, official CUT/FastCUT ones (with
    or without anti-aliasing up and down) and cyclekit's own ResNet generators (including
    ``upsample="resize-conv"``). Keys must be bare (no ``module.`` prefix). Returns None when
    the keys are not a ResNet generator's at all; raises ValueError (a one-line message
    without the file name) when they look like one that no supported variant matches.
    Running statistics that an instance norm does not have (files from PyTorch < 0.4) are
    ignored, as the loader drops them.
    """
    if not all(isinstance(k, str) for k in state):
        return None
    first = state.get("model.1.weight")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    if _ndim(first) != 4 or not blocks:
        return None
    convs = sorted(
        int(m.group(1))
        for k, v in state.items()
        if (m := re.match(r"model\.(\d+)\.weight$", k)) and _ndim(v) == 4
    )
    arch = f"resnet_{len(blocks)}blocks"
    if arch not in GENERATORS:
        raise ValueError(f"ResNet generator with {len(blocks)} blocks is not supported")
    # Instance norm has no weights but its convs keep their bias; batch norm has weights (at
    # model.2 right after the first conv); with no norm the official convs have no bias.
    norm = (
        "batch" if "model.2.weight" in state else "instance" if "model.1.bias" in state else "none"
    )
    # Dropout moves each block's second conv from conv_block.5 to conv_block.6 (a batch-norm
    # layer can sit at .6 too, but its weight is 1-D).
    dropout = any(k.endswith(".conv_block.6.weight") and _ndim(v) == 4 for k, v in state.items())
    base = {
        "arch": arch,
        "input_nc": int(first.shape[1]),
        "output_nc": int(state[f"model.{convs[-1]}.weight"].shape[0]),
        "ngf": int(first.shape[0]),
        "norm": norm,
        "use_dropout": dropout,
    }
    got = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state.items()}
    for downsample in DOWNSAMPLES:
        for upsample in UPSAMPLES:
            spec = generator_spec(**base, downsample=downsample, upsample=upsample)
            # On the meta device the candidate costs no memory and no init time.
            with torch.device("meta"):
                want = {
                    k: tuple(v.shape) for k, v in generator_from_spec(spec).state_dict().items()
                }
            extra = {k for k in got if k not in want and k.rsplit(".", 1)[-1] in _STATS}
            if want == {k: v for k, v in got.items() if k not in extra}:
                return spec
    raise ValueError(
        f"keys look like a {len(blocks)}-block ResNet generator (ngf {base['ngf']}) but match "
        "no CycleGAN or CUT layout"
    )


def build_discriminator(
    arch: str = "basic",
    input_nc: int = 3,
    ndf: int = 64,
    n_layers: int = 3,
    norm: str = "instance",
    antialias: bool = False,
) -> nn.Module:
    """``antialias``: blur-pool downsampling in a PatchGAN (CUT's default; no effect on pixel)."""
    if arch not in DISCRIMINATORS:
        raise ValueError(
            f"unknown discriminator {arch!r}; choose one of {', '.join(DISCRIMINATORS)}"
        )
    cls, fixed = DISCRIMINATORS[arch]
    kwargs: dict[str, Any] = {"input_nc": input_nc, "ndf": ndf, "norm": norm, **fixed}
    if arch == "n_layers":
        kwargs["n_layers"] = n_layers
    if cls is NLayerDiscriminator:
        kwargs["antialias"] = antialias
    return cls(**kwargs)
