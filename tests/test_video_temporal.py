"""--temporal: the modes run, smoothing lowers flicker on a clip whose only change is noise, the
smoothed statistics are the same however frames are batched (or tiled), and the metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cyclekit.translate.tiling as tiling
from cyclekit.translate.temporal import (
    SmoothedStats,
    backward_flow,
    is_cut,
    warping_error,
)
from tests.test_translate_common import photo, translate_with
from tests.test_video_common import make_clip

pytest.importorskip("av")

STILL = [(np.zeros((32, 32, 2), np.float32), np.ones((32, 32), np.float32))] * 9


def _noise_clip(path: Path, n: int = 10, side: int = 32) -> tuple[Path, list[np.ndarray]]:
    """A still photo with fresh noise in every frame, lossless (FFV1): nothing else changes."""
    rng = np.random.default_rng(0)
    base = photo(side, side, 3).astype(np.float32)
    frames = [(base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8) for _ in range(n)]
    return make_clip(path, frames=frames, codec="ffv1", audio=None), frames


def _frames(tmp_path: Path, clip: Path, gen: Path, *flags: str) -> list[np.ndarray]:
    """The translated frames of ``clip`` as PNGs (exact: no video codec in between)."""
    frames = tmp_path / "frames"
    r = translate_with(clip, tmp_path / "out", gen, "--frames", str(frames), "--no-video", *flags)
    assert r.exit_code == 0, r.output
    return [np.asarray(Image.open(p)) for p in sorted((frames / clip.name).glob("*.png"))]


def test_every_mode_runs_and_smoothing_lowers_flicker_on_noise(tmp_path: Path, gen: Path) -> None:
    clip, frames = _noise_clip(tmp_path / "noise.mkv")
    flicker = {}
    for mode in ("none", "stats", "flow"):
        outs = _frames(tmp_path, clip, gen, "--temporal", mode)
        assert len(outs) == 10 and outs[0].shape == (32, 32, 3)
        flicker[mode] = warping_error(frames, outs, STILL)
    default = _frames(tmp_path, clip, gen)  # the default --temporal
    flicker["default"] = warping_error(frames, default, STILL)
    # Measured (scripts/bench_video.py): flow takes away most of the added flicker.
    assert flicker["flow"] < 0.5 * flicker["none"], flicker
    assert flicker["default"] < flicker["none"], flicker
    assert flicker["none"] > warping_error(frames, frames, STILL)  # translation adds flicker


def test_stats_are_the_same_however_frames_are_batched(tmp_path: Path, gen: Path) -> None:
    clip, _ = _noise_clip(tmp_path / "noise.mkv", n=7)
    one = _frames(tmp_path, clip, gen, "--temporal", "stats", "--precision", "fp32")
    four = _frames(
        tmp_path, clip, gen, "--temporal", "stats", "--precision", "fp32", "--batch-size", "4"
    )
    none = _frames(tmp_path, clip, gen, "--temporal", "none", "--precision", "fp32")
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(one, four, strict=True)) <= 1
    # ... and they did change something (frame 1 and later; frame 0 has only its own).
    assert np.array_equal(one[0], none[0])
    assert any(not np.array_equal(a, b) for a, b in zip(one[1:], none[1:], strict=True))


def test_tiled_frames_share_the_smoothed_statistics(
    tmp_path: Path, gen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    filters = []
    real = tiling.run_tiled

    def spy(*args, **kwargs):
        filters.append(kwargs.get("stats_filter"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tiling, "run_tiled", spy)
    rng = np.random.default_rng(1)
    base = photo(264, 264, 2).astype(np.float32)
    frames = [(base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8) for _ in range(3)]
    clip = make_clip(tmp_path / "big.mkv", frames=frames, codec="ffv1", audio=None)
    common = ("--temporal", "stats", "--precision", "fp32")
    tiled = _frames(tmp_path, clip, gen, *common, "--tile", "256")
    assert len(filters) == 3 and all(f is not None for f in filters)
    whole = _frames(tmp_path, clip, gen, *common)
    assert len(filters) == 3  # untiled: no tiles
    diff = [np.abs(a.astype(int) - b).mean() for a, b in zip(tiled, whole, strict=True)]
    assert max(diff) < 2.0, diff  # the same statistics: only the tiles' blend differs


def test_smoothed_stats_average_restart_at_cuts_and_repeat_a_retried_frame() -> None:
    state = SmoothedStats(momentum=0.5)
    state.resets = [True, False, False, True]
    own = torch.tensor([[0.0], [2.0], [4.0], [10.0]])
    mean, _ = state.smooth("norm", 0, own, own)
    assert mean[:, 0].tolist() == [0.0, 1.0, 2.5, 10.0]
    # Frame 2 run again (a batch retried after running out of memory): the same answer.
    again, _ = state.smooth("norm", 2, own[2:3], own[2:3])
    assert again[0, 0].item() == 2.5


def test_cut_detection() -> None:
    a = photo(64, 48, 0)
    noisy = (a + np.random.default_rng(0).normal(0, 6, a.shape)).clip(0, 255).astype(np.uint8)
    assert is_cut(None, a)
    assert not is_cut(a, noisy)
    assert not is_cut(a, np.roll(a, 2, axis=1))  # a pan
    assert is_cut(a, 255 - a)


def test_warping_error_follows_the_motion() -> None:
    a = photo(64, 48, 0)
    b = np.roll(a, 2, axis=1)  # everything moved 2 px right
    flow = np.zeros((48, 64, 2), np.float32)
    flow[..., 0] = -2.0  # frame 1's pixel was 2 px to the left in frame 0
    mask = np.ones((48, 64), np.float32)
    mask[:, :2] = 0  # came in from the edge
    assert warping_error([a, b], [a, b], [(flow, mask)]) < 1.0
    assert warping_error([a, b], [a, b], [(np.zeros_like(flow), mask)]) > 50
    # Estimated flow (no truth given) finds the motion too.
    assert warping_error([a, b], [a, b]) < 10
    est, reliable = backward_flow(a, b)
    assert abs(np.median(est[..., 0]) + 2) < 0.5 and reliable.mean() > 0.5
