"""PatchGAN and pixel discriminators, module trees as in the official code."""

from __future__ import annotations

import torch
from torch import nn

from cyclekit.models.antialias import Downsample
from cyclekit.models.norm import conv_bias, norm_layer


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs, then two stride-1 ones.

    At n_layers=3 each output logit sees a 70x70 patch and an (H, W) input gives an
    (H/8 - 2, W/8 - 2) map; in general sides must be large enough for every conv (see
    :func:`patch_output_size`).
    """

    def __init__(
        self,
        input_nc: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        antialias: bool = False,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        # CUT's default: each stride-2 conv becomes a stride-1 conv, then a blur-and-subsample
        # (same module order as the official CUT code, so its keys match).
        stride = 1 if antialias else 2
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, 4, stride=stride, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        if antialias:
            layers.append(Downsample(ndf))
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                make_norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
            if antialias:
                layers.append(Downsample(ndf * mult))
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
            make_norm(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN: classifies every pixel on its own (output has the input's H, W)."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, norm: str = "instance"):
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1, stride=1, padding=0),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, stride=1, padding=0, bias=bias),
            make_norm(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 1, stride=1, padding=0, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def patch_output_size(side: int, n_layers: int, antialias: bool = False) -> int:
    """Output side of :class:`NLayerDiscriminator` for an input side (<= 0: too small)."""
    for _ in range(n_layers):
        if antialias:
            side = side + 2 - 4 + 1  # k4 s1 p1
            side = (side + 1) // 2 if side > 0 else 0  # blur (reflect pad 1) and subsample
        else:
            side = (side + 2 - 4) // 2 + 1  # k4 s2 p1
        if side <= 0:
            return 0
    for _ in range(2):
        side = side + 2 - 4 + 1  # k4 s1 p1
    return side
