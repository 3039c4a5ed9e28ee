"""Networks. Models import nothing from data, training or the CLI.

The two dicts below are the only place where config names map to classes.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cyclekit.models.discriminator import NLayerDiscriminator, PixelDiscriminator
from cyclekit.models.init import INITS, init_weights
from cyclekit.models.norm import NORMS
from cyclekit.models.resnet import ResnetGenerator
from cyclekit.models.unet import UnetGenerator

# name -> (class, fixed constructor kwargs)
GENERATORS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "resnet_9blocks": (ResnetGenerator, {"n_blocks": 9}),
    "resnet_6blocks": (ResnetGenerator, {"n_blocks": 6}),
    "unet_128": (UnetGenerator, {"num_downs": 7}),
    "unet_256": (UnetGenerator, {"num_downs": 8}),
}
DISCRIMINATORS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "basic": (NLayerDiscriminator, {"n_layers": 3}),
    "n_layers": (NLayerDiscriminator, {}),
    "pixel": (PixelDiscriminator, {}),
}

__all__ = [
    "GENERATORS",
    "DISCRIMINATORS",
    "INITS",
    "NORMS",
    "build_generator",
    "build_discriminator",
    "generator_spec",
    "generator_from_spec",
    "init_weights",
    "side_multiple",
]


def generator_spec(
    arch: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool
) -> dict[str, Any]:
    """The constructor arguments of a generator as a plain dict (saved beside its weights)."""
    if arch not in GENERATORS:
        raise ValueError(f"unknown generator {arch!r}; choose one of {', '.join(GENERATORS)}")
    return {
        "arch": arch,
        "input_nc": input_nc,
        "output_nc": output_nc,
        "ngf": ngf,
        "norm": norm,
        "use_dropout": use_dropout,
    }


def generator_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a generator from :func:`generator_spec` output (no weights loaded)."""
    spec = dict(spec)
    arch = spec.pop("arch")
    if arch not in GENERATORS:
        raise ValueError(f"unknown generator {arch!r}; choose one of {', '.join(GENERATORS)}")
    cls, fixed = GENERATORS[arch]
    return cls(**fixed, **spec)


def build_generator(
    arch: str = "resnet_9blocks",
    input_nc: int = 3,
    output_nc: int = 3,
    ngf: int = 64,
    norm: str = "instance",
    use_dropout: bool = False,
) -> nn.Module:
    return generator_from_spec(generator_spec(arch, input_nc, output_nc, ngf, norm, use_dropout))


def build_discriminator(
    arch: str = "basic", input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance"
) -> nn.Module:
    if arch not in DISCRIMINATORS:
        raise ValueError(
            f"unknown discriminator {arch!r}; choose one of {', '.join(DISCRIMINATORS)}"
        )
    cls, fixed = DISCRIMINATORS[arch]
    kwargs: dict[str, Any] = {"input_nc": input_nc, "ndf": ndf, "norm": norm, **fixed}
    if arch == "n_layers":
        kwargs["n_layers"] = n_layers
    return cls(**kwargs)


def side_multiple(arch: str) -> int:
    """Image sides a generator needs for output size == input size."""
    if arch.startswith("unet"):
        return 2 ** GENERATORS[arch][1]["num_downs"]
    return 4
