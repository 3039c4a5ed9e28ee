"""Frame-to-frame consistency for video translation, and the flicker metric that measures it.

A generator translates each frame alone, so a video flickers: every frame gets its own
instance-norm statistics (brightness and colour pump with noise and small changes) and its own
small artefacts. Two remedies, chosen with ``--temporal``:

- ``stats``: each instance norm uses statistics smoothed over the frames so far (an exponential
  moving average, restarted at a scene cut) instead of the frame's own. This is the idea of the
  tiling code (:mod:`cyclekit.translate.tiling`), which shares one image's statistics across
  its tiles, applied across time. It costs nothing measurable.
- ``flow``: ``stats``, then each output is blended with the previous output warped by the
  optical flow of the inputs, where that flow is reliable (forward-backward consistent and
  photometrically right); moving edges and uncovered areas keep the new frame.

:func:`warping_error` is the flicker measure: the mean squared difference between frame t's
output and frame t-1's output warped by the flow of the inputs, occluded pixels masked (the
same number on the input clip is what a perfectly stable translation would show).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

# Weight of the past in the statistics' moving average: a time constant of about 4 frames, long
# enough to average out noise, short enough to follow a pan (see scripts/bench_video.py).
STATS_MOMENTUM = 0.75
# Largest weight of the warped previous output in the flow blend.
FLOW_WEIGHT = 0.6
# A scene cut: mean absolute difference of 32x32 grey thumbnails above this (0..255). A slow
# pan with noise stays below 10; a cut between two scenes is usually above 40.
CUT_THRESHOLD = 30.0
_FLOW_SIDE = 480  # flow is computed with the long side at most this (fast; motion is smooth)


def is_cut(prev: np.ndarray | None, frame: np.ndarray) -> bool:
    """Whether ``frame`` starts a new scene after ``prev`` (both (H, W, C) uint8)."""
    if prev is None:
        return True
    return float(np.abs(_thumb(prev) - _thumb(frame)).mean()) > CUT_THRESHOLD


def _thumb(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(_grey(frame), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


def _grey(frame: np.ndarray) -> np.ndarray:
    import cv2

    if frame.shape[2] == 1:
        return np.ascontiguousarray(frame[:, :, 0])
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


# -- stats: instance-norm statistics smoothed over time ------------------------------------------


class SmoothedStats:
    """Per instance norm, the moving average of its (mean, var) over the frames of one clip.

    Frames are numbered in clip order; :meth:`smooth` for frame k uses the average up to k-1,
    so a frame run again (a batch retried after running out of memory) gets the same result.
    ``resets`` marks the frames that start a scene: there the average restarts.
    """

    def __init__(self, momentum: float = STATS_MOMENTUM) -> None:
        self.momentum = momentum
        self.resets: list[bool] = []
        self._history: dict[Any, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}

    def smooth(
        self, key: Any, first: int, mean: torch.Tensor, var: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Smoothed (mean, var), shape (N, C), for frames ``first``..``first+N-1`` of ``key``."""
        history = self._history.setdefault(key, {})
        means, vars_ = [], []
        for i in range(mean.shape[0]):
            k = first + i
            m, v = mean[i], var[i]
            before = history.get(k - 1)
            if before is not None and not (k < len(self.resets) and self.resets[k]):
                a = self.momentum
                m, v = a * before[0] + (1 - a) * m, a * before[1] + (1 - a) * v
            history[k] = (m, v)
            history.pop(k - 3, None)  # a retry goes back at most one batch: keep a few
            means.append(m)
            vars_.append(v)
        return torch.stack(means), torch.stack(vars_)


def _instance_norms(model: nn.Module) -> list[nn.InstanceNorm2d]:
    from cyclekit.translate.tiling import _instance_norms

    return _instance_norms(model)


@contextlib.contextmanager
def smoothed_norms(
    model: nn.Module, state: SmoothedStats, first_frame: Callable[[], int]
) -> Iterator[None]:
    """While active, every instance norm of ``model`` normalises a batch of consecutive frames
    (the first is frame ``first_frame()``) with ``state``'s smoothed statistics."""
    patched = []
    for m in _instance_norms(model):

        def forward(x: torch.Tensor, m: nn.InstanceNorm2d = m) -> torch.Tensor:
            # The built-in instance norm is this batch norm over a (1, N*C, H, W) view (the
            # same bits, in the input's precision), which also returns each frame's own
            # statistics in float32; the output is then moved onto the smoothed statistics in
            # place. Measured on CPU, bf16, 720p x 64 channels: 0.16 s against 0.12 s for the
            # built-in norm (var_mean and a float32 copy: 0.66 s).
            n, c, h, w = x.shape
            y, own_mean, own_invstd = torch.native_batch_norm(
                x.reshape(1, n * c, h, w), None, None, None, None, True, 0.0, m.eps
            )
            own_mean, own_invstd = own_mean.view(n, c), own_invstd.view(n, c)
            own_var = own_invstd.pow(-2) - m.eps
            mean, var = state.smooth(m, first_frame(), own_mean, own_var)
            y = y.view(n, c, h, w)
            if not (torch.equal(mean, own_mean) and torch.equal(var, own_var)):
                inv = torch.rsqrt(var + m.eps)
                scale = (inv / own_invstd)[:, :, None, None].to(y.dtype)
                shift = ((own_mean - mean) * inv)[:, :, None, None].to(y.dtype)
                y.mul_(scale).add_(shift)
            if m.affine:
                y = y * m.weight[None, :, None, None] + m.bias[None, :, None, None]
            return y

        m.forward = forward  # an instance attribute shadows the class method
        patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def stats_filter(state: SmoothedStats) -> Callable[[dict], dict]:
    """For tiled frames (:func:`~cyclekit.translate.tiling.run_tiled`): the whole frame's
    recorded statistics, smoothed, one call per frame in clip order."""
    counter = [0]

    def apply(stats: dict) -> dict:
        k = counter[0]
        counter[0] += 1
        out = {}
        for m, (mean, var) in stats.items():
            out[m] = state.smooth(m, k, mean, var)
        return out

    return apply


# -- flow: blend with the previous output, motion-compensated -----------------------------------


def _flow_pair(a: np.ndarray, b: np.ndarray, preset: int | None = None) -> np.ndarray:
    """Dense flow from grey ``a`` to grey ``b``: a(x) ~ b(x + flow(x)); (H, W, 2) float32."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST if preset is None else preset)
    return dis.calc(a, b, None)


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> np.ndarray:
    return np.mgrid[0:h, 0:w].astype(np.float32)  # (a clip has one or two frame sizes)


def _warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``img`` (H, W, C) sampled at x + flow(x): the previous frame moved onto this one."""
    import cv2

    gy, gx = _grid(*flow.shape[:2])
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    out = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(img.shape)


def backward_flow(
    prev: np.ndarray, cur: np.ndarray, preset: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(flow from ``cur`` to ``prev``, reliability mask in 0..1) at full size, for (H, W, C)
    uint8 frames. Reliable: the backward flow and the forward flow undo each other
    (occlusions fail this) and the warped previous frame matches the current one. All of it
    at the flow's size (long side :data:`_FLOW_SIDE`), then scaled up: cheap at 4K too."""
    import cv2

    h, w = cur.shape[:2]
    scale = min(1.0, _FLOW_SIDE / max(h, w))
    g_prev, g_cur = _grey(prev), _grey(cur)
    if scale < 1:
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        g_prev = cv2.resize(g_prev, size, interpolation=cv2.INTER_AREA)
        g_cur = cv2.resize(g_cur, size, interpolation=cv2.INTER_AREA)
    back = _flow_pair(g_cur, g_prev, preset)
    fwd = _flow_pair(g_prev, g_cur, preset)
    # Forward-backward check (Sundaram et al.): |b + f(x + b)|^2 small relative to the motion.
    f_at = _warp(fwd, back)
    err = ((back + f_at) ** 2).sum(-1)
    tol = 0.01 * ((back**2).sum(-1) + (f_at**2).sum(-1)) + 0.5
    mask = (err < tol).astype(np.float32)
    # Photometric check: 12 grey levels of mismatch halve the weight.
    diff = np.abs(_warp(g_prev.astype(np.float32), back) - g_cur)
    mask *= np.exp(-((diff / 12.0) ** 2) * np.log(2))
    if scale < 1:
        back = cv2.resize(back, (w, h), interpolation=cv2.INTER_LINEAR) / scale
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
    return back.astype(np.float32), mask.astype(np.float32)


class FlowBlend:
    """Blends each output with the previous (blended) output warped onto it, in clip order."""

    def __init__(self, weight: float = FLOW_WEIGHT) -> None:
        self.weight = weight
        self._prev: tuple[np.ndarray, np.ndarray] | None = None  # (input, blended output)

    def __call__(self, inp: np.ndarray, out: np.ndarray, cut: bool) -> np.ndarray:
        """``inp`` and ``out``: (H, W, C) uint8 of one frame at the model's size."""
        prev = self._prev
        result = out
        if prev is not None and not cut and prev[0].shape == inp.shape:
            flow, mask = backward_flow(prev[0], inp)
            warped = _warp(prev[1], flow).astype(np.float32)
            a = (self.weight * mask)[:, :, None]
            mixed = out.astype(np.float32)
            mixed += (warped - mixed) * a
            result = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        self._prev = (inp, result)
        return result


# -- the metric ------------------------------------------------------------------------------------


def warping_error(
    inputs: Sequence[np.ndarray],
    outputs: Sequence[np.ndarray],
    flows: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> float:
    """Mean warping error between consecutive ``outputs`` (uint8 (H, W, C) frames), in units
    of (1/255)^2 per pixel and channel: frame t-1's output warped by the flow of the inputs
    (t -> t-1) against frame t's output, over the pixels the mask keeps.

    ``flows[t-1]`` = (flow from frame t to t-1, mask in 0..1) when known (a synthetic clip);
    else estimated from the inputs (DIS optical flow, medium preset, forward-backward checked).
    """
    import cv2

    errors = []
    for t in range(1, len(outputs)):
        if flows is not None:
            flow, mask = flows[t - 1]
        else:
            flow, mask = backward_flow(inputs[t - 1], inputs[t], cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            mask = (mask > 0.5).astype(np.float32)
        warped = _warp(outputs[t - 1].astype(np.float32), flow)
        sq = ((outputs[t].astype(np.float32) - warped) ** 2).mean(-1)
        if mask.sum() > 0:
            errors.append(float((sq * mask).sum() / mask.sum()))
    return float(np.mean(errors)) if errors else 0.0
