"""Anti-aliased resampling of CUT's generator (Zhang, "Making convolutional networks
shift-invariant again", 2019), numerically equal to the official CUT layers.

Both layers hold their fixed binomial blur as a buffer named ``filt`` (one copy per channel,
shape ``(C, 1, k, k)``): the official code saves it in ``latest_net_G.pth``, so keeping the
name and shape is what lets those files load with ``strict=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PADS = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d, "zero": nn.ZeroPad2d}


def binomial_filter(size: int) -> torch.Tensor:
    """The ``size`` x ``size`` blur kernel (outer product of a binomial row), summing to 1.

    Size 3 is [1, 2, 1] x [1, 2, 1] / 16, size 4 is [1, 3, 3, 1] x [1, 3, 3, 1] / 64.
    """
    if not 1 <= size <= 7:
        raise ValueError(f"blur filter size must be 1..7, got {size}")
    row = torch.tensor([math.comb(size - 1, i) for i in range(size)], dtype=torch.float64)
    kernel = row[:, None] * row[None, :]
    return (kernel / kernel.sum()).float()


def _pad_layer(pad_type: str, sizes: int | tuple[int, int, int, int]) -> nn.Module:
    if pad_type not in PADS:
        raise ValueError(f"unknown pad type {pad_type!r}; choose one of {', '.join(PADS)}")
    return PADS[pad_type](sizes)


class Downsample(nn.Module):
    """Blur then keep every second pixel: (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)).

    The blur is a depthwise convolution with stride 2 over a reflect-padded input; an even
    filter is padded one pixel more on the right/bottom, as the official layer does.
    """

    def __init__(
        self, channels: int, pad_type: str = "reflect", filt_size: int = 3, stride: int = 2
    ) -> None:
        super().__init__()
        self.channels, self.filt_size, self.stride = channels, filt_size, stride
        before, after = (filt_size - 1) // 2, filt_size // 2
        # (left, right, top, bottom) as the pad layers take them.
        self.pad = _pad_layer(pad_type, (before, after, before, after))
        kernel = binomial_filter(filt_size)
        self.register_buffer("filt", kernel[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(x), self.filt, stride=self.stride, groups=x.shape[1])

    def extra_repr(self) -> str:
        return f"{self.channels}, filt_size={self.filt_size}, stride={self.stride}"


class Upsample(nn.Module):
    """Zero-insert x2 then blur: (N, C, H, W) -> (N, C, 2H, 2W).

    A depthwise transposed convolution with the blur (scaled by stride**2 so a flat image stays
    flat) over a replicate-padded input, then cropped to exactly twice the size. The padding,
    the extra 1-pixel pad and the crop reproduce the official layer's output pixel for pixel.
    """

    def __init__(
        self, channels: int, pad_type: str = "replicate", filt_size: int = 4, stride: int = 2
    ) -> None:
        super().__init__()
        self.channels, self.filt_size, self.stride = channels, filt_size, stride
        self.pad = _pad_layer(pad_type, 1)
        kernel = binomial_filter(filt_size) * stride**2
        self.register_buffer("filt", kernel[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = (self.filt_size - 1) // 2
        y = F.conv_transpose2d(
            self.pad(x), self.filt, stride=self.stride, padding=1 + half, groups=x.shape[1]
        )
        # The 1-pixel edge pad leaves one surplus row/column at the start, and for an even
        # filter one more at the end: crop them to get exactly stride x the input size.
        y = y[:, :, 1:, 1:]
        return y if self.filt_size % 2 else y[:, :, :-1, :-1]

    def extra_repr(self) -> str:
        return f"{self.channels}, filt_size={self.filt_size}, stride={self.stride}"
