"""Running a generator on an image of any size: pad, batch, tile, crop.

Why tiling needs care: instance normalisation divides every feature map by the mean and
standard deviation of the *whole* map. A tile has different statistics from the whole image,
so naive tiles disagree in colour and contrast and the seams show. Here every tile is
normalised with the statistics of the whole image instead, recorded by one "guide" pass over
the whole image (downscaled only when it would not fit the memory budget). With shared
statistics a tile differs from the untiled result only within the receptive field of its
cut edges, and those pixels get almost no weight in the overlap blend.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cyclekit.models import side_multiple

Runner = Callable[[torch.Tensor], torch.Tensor]

# Peak activation memory of an untiled forward pass, in floats per pixel per unit of ngf
# (measured on resnet_9blocks, ngf=64, 1024x1024: 14 bytes in fp32, 10 in bf16; rounded up).
_PEAK_FLOATS_PER_PIXEL_NGF = 4


def geometry(spec: dict[str, Any]) -> tuple[int, int]:
    """(multiple, smallest side) the generator's input must have, after padding.

    ResNet generators downsample twice (sides multiple of 4), and their residual blocks
    reflect-pad by 1 at 1/4 scale, which needs at least 2 pixels there: 8 at full scale.
    """
    m = side_multiple(spec["arch"])
    return m, (2 * m if spec["arch"].startswith("resnet") else m)


def padded_size(h: int, w: int, spec: dict[str, Any]) -> tuple[int, int]:
    m, smallest = geometry(spec)
    return max(math.ceil(h / m) * m, smallest), max(math.ceil(w / m) * m, smallest)


def pad_image(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Reflect-pad (H, W, C) pixels on the bottom and right to ``size`` = (H', W').

    Reflection (not zeros) keeps the border statistics natural, so the crop back to the
    original size shows no dark rim. numpy repeats the reflection when the pad is larger
    than the image, which tiny images need.
    """
    ph, pw = size[0] - pixels.shape[0], size[1] - pixels.shape[1]
    if ph == 0 and pw == 0:
        return pixels
    return np.pad(pixels, ((0, ph), (0, pw), (0, 0)), mode="reflect")


def to_tensor(batch: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [-1, 1], as ToTensor + Normalize(0.5, 0.5)."""
    t = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
    return t.sub_(0.5).div_(0.5)


def to_uint8(y: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounded (the official code truncates)."""
    y = ((y.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return y.permute(0, 2, 3, 1).cpu().numpy()


def peak_bytes(spec: dict[str, Any], h: int, w: int, batch: int = 1) -> int:
    """Rough peak activation memory of an untiled forward pass on ``batch`` images of h x w."""
    return _PEAK_FLOATS_PER_PIXEL_NGF * 4 * spec["ngf"] * h * w * batch


def make_runner(model: nn.Module, device: torch.device, precision: str) -> Runner:
    """``run(x)``: the model on a CPU batch, on ``device``, under ``precision``'s autocast."""
    from cyclekit.devices import autocast

    ctx = autocast(device, precision)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), ctx():
            return model(x.to(device))

    return run


# -- shared instance-norm statistics ---------------------------------------------------------


def _instance_norms(model: nn.Module) -> list[nn.InstanceNorm2d]:
    # Only norms that compute statistics per input; with running stats they are already global.
    return [
        m for m in model.modules() if isinstance(m, nn.InstanceNorm2d) and not m.track_running_stats
    ]


@torch.inference_mode()
def record_norm_stats(
    model: nn.Module, x: torch.Tensor, run: Runner
) -> dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """Run ``x`` (1, C, H, W) once and keep each instance norm's per-channel (mean, var)."""
    stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        a = args[0].float()
        stats[module] = (a.mean((2, 3)), a.var((2, 3), unbiased=False))  # (1, C) each

    handles = [m.register_forward_pre_hook(hook) for m in _instance_norms(model)]
    try:
        run(x)
    finally:
        for h in handles:
            h.remove()
    return stats


@contextlib.contextmanager
def frozen_norm_stats(
    model: nn.Module,
    stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]],
) -> Iterator[None]:
    """Make each instance norm use the given statistics instead of its input's own."""
    patched = []
    for m in _instance_norms(model):
        mean, var = stats[m]
        mean, rstd = mean[:, :, None, None], torch.rsqrt(var + m.eps)[:, :, None, None]

        def forward(x: torch.Tensor, mean: torch.Tensor = mean, rstd: torch.Tensor = rstd):
            return ((x.float() - mean.to(x.device)) * rstd.to(x.device)).to(x.dtype)

        m.forward = forward  # an instance attribute shadows the class method
        patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


# -- tiles ------------------------------------------------------------------------------------


def tile_origins(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Tile starts along one axis: multiples of ``multiple`` (so the stride-2 layers see the
    same pixel grid as in the untiled pass), ``tile`` long, overlapping by >= ``overlap``."""
    if tile >= length:
        return [0]
    stride = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


def _ramp(n: int, start: int, end: int, length: int, overlap: int) -> torch.Tensor:
    """1-D blend weight of a tile covering [start, end) of an axis of ``length``.

    Near an edge shared with another tile the weight rises from ~0 to 1 across the overlap,
    and is ~0 over its first quarter: that strip saw the tile's artificial edge."""
    d = torch.arange(n, dtype=torch.float32) + 0.5
    w = torch.ones(n)
    margin, span = overlap / 4, max(overlap / 2, 1.0)
    if start > 0:
        w = torch.minimum(w, ((d - margin) / span).clamp(1e-3, 1.0))
    if end < length:
        w = torch.minimum(w, ((n - d - margin) / span).clamp(1e-3, 1.0))
    return w


def default_overlap(tile: int, multiple: int) -> int:
    # 128 px: measured on a 1024x1024 image, 96 px of overlap leaves max errors ~1e-2 near the
    # seams (the residual blocks see ~70 px past a cut edge), 128 px ~2e-3. Small tiles get
    # half their side.
    return max(multiple, min(128, tile // 2) // multiple * multiple)


def _guide(x: torch.Tensor, max_pixels: int, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h * w <= max_pixels:
        return x
    scale = math.sqrt(max_pixels / (h * w))
    gh = max(multiple, int(h * scale) // multiple * multiple)
    gw = max(multiple, int(w * scale) // multiple * multiple)
    return F.interpolate(x, size=(gh, gw), mode="area")


def _plan(h: int, w: int, tile: int, overlap: int, multiple: int):
    """Tile boxes (top, left) and their blend windows, normalised to sum to 1 at every pixel."""
    th, tw = min(tile, h), min(tile, w)
    boxes = [
        (t, s)
        for t in tile_origins(h, tile, overlap, multiple)
        for s in tile_origins(w, tile, overlap, multiple)
    ]
    wins = [
        _ramp(th, t, t + th, h, overlap)[:, None] * _ramp(tw, s, s + tw, w, overlap)[None, :]
        for t, s in boxes
    ]
    total = torch.zeros(h, w)
    for (t, s), win in zip(boxes, wins, strict=True):
        total[t : t + th, s : s + tw] += win
    wins = [win / total[t : t + th, s : s + tw] for (t, s), win in zip(boxes, wins, strict=True)]
    return th, tw, boxes, wins


@torch.inference_mode()
def run_tiled(
    model: nn.Module,
    x: torch.Tensor,
    run: Runner,
    tile: int,
    multiple: int,
    overlap: int | None = None,
    guide_pixels: int = 4 * 1024 * 1024,
    batch_size: int = 1,
) -> torch.Tensor:
    """Translate one padded image ``x`` (1, C, H, W) tile by tile; returns (1, C', H, W) on CPU.

    ``run`` moves a batch to the model's device and runs it under the chosen precision.
    The statistics come from ``x`` itself when it has at most ``guide_pixels`` pixels (then
    the result matches the untiled one up to the blend), else from a downscaled copy: an
    approximation, but one shared by all tiles, so no seams.
    """
    _, _, h, w = x.shape
    tile = max(multiple, tile // multiple * multiple)
    overlap = default_overlap(tile, multiple) if overlap is None else overlap
    th, tw, boxes, wins = _plan(h, w, tile, overlap, multiple)
    stats = record_norm_stats(model, _guide(x, guide_pixels, multiple), run)
    out: torch.Tensor | None = None
    with frozen_norm_stats(model, stats):
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i : i + batch_size]
            y = run(torch.cat([x[:, :, t : t + th, s : s + tw] for t, s in chunk]))
            y = y.float().cpu()
            if out is None:
                out = torch.zeros(1, y.shape[1], h, w)
            for (t, s), yi, win in zip(chunk, y, wins[i : i + batch_size], strict=True):
                out[0, :, t : t + th, s : s + tw] += yi * win
    assert out is not None
    return out


class Batcher:
    """Collects padded images, runs same-size ones as one batch, tiles those too big.

    ``add`` and ``flush`` return the finished (item, output) pairs: output is the padded
    (H, W, C') uint8 result, or the exception that made the model fail on that image.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: dict[str, Any],
        run: Runner,
        batch_size: int,
        budget_bytes: int,
        tile: int | None = None,
    ) -> None:
        self.model, self.spec, self.run = model, spec, run
        self.batch_size, self.budget, self.tile = batch_size, budget_bytes, tile
        self.multiple = geometry(spec)[0]
        self.pending: dict[tuple[int, ...], list[tuple[Any, np.ndarray]]] = {}

    def _max_batch(self, h: int, w: int) -> int:
        return max(1, min(self.batch_size, self.budget // max(1, peak_bytes(self.spec, h, w))))

    def _tile_for(self, h: int, w: int) -> int | None:
        if self.tile is not None:
            return self.tile if max(h, w) > self.tile else None
        if peak_bytes(self.spec, h, w) <= self.budget:
            return None
        # Automatic: the largest tile whose pass takes half the budget (the guide pass and
        # the output buffers need the rest), at most 1024.
        side = int(math.sqrt(self.budget / 2 / peak_bytes(self.spec, 1, 1)))
        return max(self.multiple, min(1024, side) // self.multiple * self.multiple)

    def add(self, item: Any, pixels: np.ndarray) -> list[tuple[Any, np.ndarray | Exception]]:
        h, w = pixels.shape[:2]
        tile = self._tile_for(h, w)
        if tile is not None:
            try:
                guide = max(self.multiple**2, self.budget // peak_bytes(self.spec, 1, 1))
                x = to_tensor(pixels[None])
                y = run_tiled(
                    self.model,
                    x,
                    self.run,
                    tile,
                    self.multiple,
                    guide_pixels=guide,
                    batch_size=self._max_batch(tile, tile),
                )
                return [(item, to_uint8(y)[0])]
            except RuntimeError as e:  # out of memory and the like: this image fails
                return [(item, e)]
        group = self.pending.setdefault(pixels.shape, [])
        group.append((item, pixels))
        if len(group) >= self._max_batch(h, w):
            return self._run_group(pixels.shape)
        if sum(len(g) for g in self.pending.values()) >= 2 * self.batch_size:
            # Many sizes in flight: don't hold decoded images forever.
            return self._run_group(max(self.pending, key=lambda k: len(self.pending[k])))
        return []

    def flush(self) -> list[tuple[Any, np.ndarray | Exception]]:
        done = []
        for key in list(self.pending):
            done += self._run_group(key)
        return done

    def _run_group(self, key: tuple[int, ...]) -> list[tuple[Any, np.ndarray | Exception]]:
        group = self.pending.pop(key)
        try:
            y = to_uint8(self.run(to_tensor(np.stack([p for _, p in group]))))
            return [(item, out) for (item, _), out in zip(group, y, strict=True)]
        except RuntimeError as e:
            if len(group) == 1:
                return [(group[0][0], e)]
            # A batch that failed (e.g. out of memory) is retried one image at a time.
            done = []
            for item, p in group:
                self.pending[key] = [(item, p)]
                done += self._run_group(key)
            return done
