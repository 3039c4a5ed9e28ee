"""Anti-aliased resampling of CUT's generator (Zhang, "Making convolutional networks
shift-invariant again", 2019), numerically equal to the official CUT layers.

Both layers hold their fixed binomial blur as a buffer named ``filt`` (one copy per channel,
shape ``(C, 1, k, k)``): the official code saves it in ``latest_net_G.pth``, so keeping the
name and shape is what lets those files load with ``strict=True``.

Under bf16/fp16 (autocast on a CPU with native bf16 is the default) some of the official ops
are an order of magnitude slower than they need be on a CPU: a depthwise convolution's
backward pass and a depthwise transposed convolution (oneDNN has no fast reduced-precision
path for either: ~90 ms for a 128-channel 128x128 map on one core, where a plain depthwise
convolution over the same pixels takes ~10), the reflection pad's backward in bf16 (~5x a
hand-written fold) and the pad itself, which autocast runs in float32 (extra copies each way).
So in reduced precision these layers compute the same linear maps with fast ops only:

* a transposed convolution with stride s and padding p is a stride-1 convolution, with the
  spatially flipped filter and padding k - 1 - p, of the input with s - 1 zeros inserted
  between its pixels (:func:`zero_insert`);
* the backward pass of a stride-s convolution (its adjoint) is that transposed convolution,
  and the backward pass of a transposed convolution is the stride-s convolution;
* the pad runs in the reduced dtype (it only copies pixels, so the values are the same), and
  the 1-pixel reflection pad's backward is :func:`fold_reflect_pad`.

The forward values equal the official layer's (the same few products summed in float32 and
rounded once to the output dtype, up to summation order); the gradients too, except that a
corner pixel's four reflected terms may be rounded in two steps instead of one. float32 and
wider inputs, TorchScript (translate's export) and an Upsample with a filter of size 1 or 2
run the official ops unchanged. ``tests/test_cut_speed_equivalence.py`` checks all of it.
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


# Dtypes that take the fast forms (a test adds float32 to check them against the official ops).
_FAST_DTYPES = (torch.float16, torch.bfloat16)


@torch.jit.unused
def _eager_out_dtype(x: torch.Tensor) -> torch.dtype:
    # What the official convolution returns: the autocast dtype under autocast.
    kind = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


def zero_insert(
    x: torch.Tensor, stride: int, margin: int = 0, extra: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """(N, C, H, W) -> x at every ``stride``-th pixel with zeros between, ``margin`` zero
    rows/columns on each side and ``extra`` more at the bottom/right:
    (N, C, (H-1)*s + 1 + 2*margin + extra[0], (W-1)*s + 1 + 2*margin + extra[1])."""
    n, c, h, w = x.shape
    hs, ws = (h - 1) * stride + 1, (w - 1) * stride + 1
    out = x.new_zeros(n, c, hs + 2 * margin + extra[0], ws + 2 * margin + extra[1])
    out[:, :, margin : margin + hs : stride, margin : margin + ws : stride] = x
    return out


def _transposed(
    x: torch.Tensor, filt: torch.Tensor, stride: int, padding: int, extra: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """``F.conv_transpose2d(x, filt, stride, padding, output_padding=extra, groups=C)`` for a
    depthwise ``filt`` and ``padding <= k - 1``, as a stride-1 convolution of the zero-inserted
    input (see module notes); its zero padding k - 1 - p is built into the zero-inserted map."""
    k = filt.shape[-1]
    buf = zero_insert(x, stride, k - 1 - padding, extra)
    return F.conv2d(buf, filt.flip(-2, -1), groups=x.shape[1])


def fold_reflect_pad(grad: torch.Tensor) -> torch.Tensor:
    """The adjoint of a 1-pixel reflection pad: (N, C, H+2, W+2) -> (N, C, H, W), each padded
    pixel's gradient added to the pixel it copies (row 0 to row 1, row H+1 to row H-2, the same
    for columns, and the corners to both). ``reflection_pad2d_backward`` in bf16 is ~5x slower.
    """
    h, w = grad.shape[-2] - 2, grad.shape[-1] - 2
    out = grad[:, :, 1:-1, 1:-1].clone()
    # One index at a time: with a side of 3, rows (or columns) 1 and h - 2 are the same one.
    out[:, :, :, 1] += grad[:, :, 1:-1, 0]
    out[:, :, :, w - 2] += grad[:, :, 1:-1, w + 1]
    for src, dst in ((0, 1), (h + 1, h - 2)):
        row = grad[:, :, src, 1:-1].clone()
        row[:, :, 1] += grad[:, :, src, 0]  # the corners: reflected in both directions
        row[:, :, w - 2] += grad[:, :, src, w + 1]
        out[:, :, dst, :] += row
    return out


class _StridedBlur(torch.autograd.Function):
    """Depthwise ``conv2d(pad(x), filt, stride)``; backward = its transposed convolution, then
    the pad's adjoint. ``reflect1``: the pad is a 1-pixel reflection, done here (so that its
    backward is :func:`fold_reflect_pad`); otherwise ``x`` comes padded."""

    @staticmethod
    def forward(  # noqa: ANN001
        ctx, x: torch.Tensor, filt: torch.Tensor, stride: int, reflect1: bool
    ) -> torch.Tensor:
        if reflect1:
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        ctx.save_for_backward(filt)
        ctx.stride, ctx.size, ctx.reflect1 = stride, x.shape[-2:], reflect1
        return F.conv2d(x, filt, stride=stride, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # noqa: ANN001
        (filt,) = ctx.saved_tensors
        s, k = ctx.stride, filt.shape[-1]
        h, w = ctx.size
        # Input rows/columns past the last window got no weight: zero gradient there.
        extra = (h - (grad.shape[-2] - 1) * s - k, w - (grad.shape[-1] - 1) * s - k)
        gx = _transposed(grad, filt, s, 0, extra)
        return (fold_reflect_pad(gx) if ctx.reflect1 else gx), None, None, None


class _TransposedBlur(torch.autograd.Function):
    """Depthwise ``conv_transpose2d(x, filt, stride, padding)``; backward = the strided
    convolution with the same stride and padding (its adjoint)."""

    @staticmethod
    def forward(  # noqa: ANN001
        ctx, x: torch.Tensor, filt: torch.Tensor, stride: int, padding: int
    ) -> torch.Tensor:
        ctx.save_for_backward(filt)
        ctx.stride, ctx.padding = stride, padding
        return _transposed(x, filt, stride, padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # noqa: ANN001
        (filt,) = ctx.saved_tensors
        gx = F.conv2d(grad, filt, stride=ctx.stride, padding=ctx.padding, groups=grad.shape[1])
        return gx, None, None, None


@torch.jit.unused
def _reduced_down(layer: Downsample, x: torch.Tensor) -> torch.Tensor | None:
    dtype = _eager_out_dtype(x)
    if dtype not in _FAST_DTYPES:
        return None
    reflect1 = isinstance(layer.pad, nn.ReflectionPad2d) and layer.pad.padding == (1, 1, 1, 1)
    with torch.autocast(x.device.type, enabled=False):
        x = x.to(dtype)
        if not reflect1:
            x = layer.pad(x)
        return _StridedBlur.apply(x, layer.filt.to(dtype), layer.stride, reflect1)


@torch.jit.unused
def _reduced_up(layer: Upsample, x: torch.Tensor) -> torch.Tensor | None:
    dtype = _eager_out_dtype(x)
    # The official padding 1 + (k-1)//2, plus the crop of 1 on each side for an even filter
    # folded into it; the stride-1 form needs padding <= k - 1.
    even = layer.filt_size % 2 == 0
    padding = 1 + (layer.filt_size - 1) // 2 + int(even)
    if dtype not in _FAST_DTYPES or padding > layer.filt_size - 1:
        return None
    with torch.autocast(x.device.type, enabled=False):
        xp = layer.pad(x.to(dtype))
        y = _TransposedBlur.apply(xp, layer.filt.to(dtype), layer.stride, padding)
    return y if even else y[:, :, 1:, 1:]


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
        if not torch.jit.is_scripting():
            y = _reduced_down(self, x)
            if y is not None:
                return y
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
        if not torch.jit.is_scripting():
            y = _reduced_up(self, x)
            if y is not None:
                return y
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
