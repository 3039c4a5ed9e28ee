"""Running a generator in torch on an image of any size, tile by tile (padding and batching:
:mod:`cyclekit.translate.batching`).

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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Runner = Callable[[torch.Tensor], torch.Tensor]


def _normalise(t: torch.Tensor) -> torch.Tensor:
    # uint8 -> float32 in [-1, 1], as ToTensor + Normalize(0.5, 0.5) (same operations, so the
    # same bits, whether a whole batch or one tile is converted).
    return t.float().div_(255.0).sub_(0.5).div_(0.5)


def to_model_input(batch: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [-1, 1], as ToTensor + Normalize(0.5, 0.5)."""
    return _normalise(torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2))


def from_model_output(y: torch.Tensor, inplace: bool = False) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounded (the official code truncates).

    ``inplace`` reuses ``y``'s memory when it is float32 (for very large images)."""
    with torch.inference_mode():  # model outputs are inference tensors: in-place needs this
        y = y.float() if inplace else y.float().clone()
        y = y.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
        return y.permute(0, 2, 3, 1).cpu().numpy()


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
    """The model input whose statistics all tiles share: ``x`` itself (as model input) when
    it has at most ``max_pixels`` pixels, else an area-downscaled copy."""
    h, w = x.shape[-2:]
    if h * w <= max_pixels:
        return _normalise(x) if x.dtype == torch.uint8 else x
    scale = math.sqrt(max_pixels / (h * w))
    gh = max(multiple, int(h * scale) // multiple * multiple)
    gw = max(multiple, int(w * scale) // multiple * multiple)
    if x.dtype != torch.uint8:
        return F.interpolate(x, size=(gh, gw), mode="area")
    # A big image stays uint8 (a quarter of the memory); Pillow's box filter averages areas
    # without a float copy of the whole image.
    from PIL import Image

    hwc = x[0].permute(1, 2, 0).numpy()
    img = Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else np.ascontiguousarray(hwc))
    small = np.array(img.resize((gw, gh), Image.Resampling.BOX))  # writable, for torch
    return to_model_input((small[:, :, None] if small.ndim == 2 else small)[None])


def _axis_weights(length: int, tile: int, overlap: int, multiple: int):
    """Tile starts along one axis and their 1-D blend weights, normalised to sum to 1."""
    n = min(tile, length)
    starts = tile_origins(length, tile, overlap, multiple)
    ramps = [_ramp(n, t, t + n, length, overlap) for t in starts]
    total = torch.zeros(length)
    for t, r in zip(starts, ramps, strict=True):
        total[t : t + n] += r
    return n, [(t, r / total[t : t + n]) for t, r in zip(starts, ramps, strict=True)]


def _plan(h: int, w: int, tile: int, overlap: int, multiple: int):
    """Tile side (th, tw), the tiles' row starts and column starts with their weights.

    Tiles form a full grid, so the 2-D blend window of tile (row, col) is the outer product of
    the row's and the column's 1-D weights, and these windows sum to 1 at every pixel: no
    whole-image weight map is ever held in memory.
    """
    th, rows = _axis_weights(h, tile, overlap, multiple)
    tw, cols = _axis_weights(w, tile, overlap, multiple)
    return th, tw, rows, cols


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
    stats_filter: Callable[[dict], dict] | None = None,
) -> torch.Tensor:
    """Translate one padded image ``x`` (1, C, H, W) tile by tile; returns (1, C', H, W) on CPU.

    ``x`` is model input (float in [-1, 1]) or uint8 pixels, converted a tile at a time (for
    very large scans: 1 byte a value instead of 4). ``run`` moves a batch to the model's device
    and runs it under the chosen precision. The statistics come from ``x`` itself when it has
    at most ``guide_pixels`` pixels (then the result matches the untiled one up to the blend),
    else from a downscaled copy: an approximation, but one shared by all tiles, so no seams.
    ``stats_filter`` may change the recorded statistics before the tiles use them (a video
    smooths them over time: :mod:`cyclekit.translate.temporal`).
    """
    _, _, h, w = x.shape
    tile = max(multiple, tile // multiple * multiple)
    overlap = default_overlap(tile, multiple) if overlap is None else overlap
    th, tw, rows, cols = _plan(h, w, tile, overlap, multiple)
    stats = record_norm_stats(model, _guide(x, guide_pixels, multiple), run)
    if stats_filter is not None:
        stats = stats_filter(stats)
    tiles = [(t, s, wh, ww) for t, wh in rows for s, ww in cols]
    out: torch.Tensor | None = None
    with frozen_norm_stats(model, stats):
        for i in range(0, len(tiles), batch_size):
            chunk = tiles[i : i + batch_size]
            batch = torch.cat([x[:, :, t : t + th, s : s + tw] for t, s, _, _ in chunk])
            y = run(_normalise(batch) if batch.dtype == torch.uint8 else batch)
            y = y.float().cpu()
            if out is None:
                out = torch.zeros(1, y.shape[1], h, w)
            for (t, s, wh, ww), yi in zip(chunk, y, strict=True):
                out[0, :, t : t + th, s : s + tw] += yi * (wh[:, None] * ww[None, :])
    assert out is not None
    return out
