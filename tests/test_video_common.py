"""Builders for the video tests: tiny clips made with PyAV (this module holds no tests)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from tests.test_translate_common import photo

VFR_STEPS_MS = (33, 50, 41)  # a phone's variable frame rate: uneven steps


def moving_frames(n: int, w: int, h: int, seed: int = 0, noise: float = 4.0) -> list[np.ndarray]:
    """``n`` frames of a smooth image drifting one pixel a frame, with fresh noise each."""
    rng = np.random.default_rng(seed)
    big = photo(w + n, h, seed).astype(np.float32)
    frames = []
    for i in range(n):
        f = big[:, i : i + w] + rng.normal(0, noise, (h, w, 3))
        frames.append(f.clip(0, 255).astype(np.uint8))
    return frames


def make_clip(
    path: Path,
    frames: Sequence[np.ndarray] | None = None,
    n: int = 10,
    size: tuple[int, int] = (32, 24),
    vfr: bool = False,
    rotation: int = 0,
    audio: str | None = "aac",
    codec: str = "libx264",
) -> Path:
    """A clip of ``frames`` (else ``n`` moving ones of ``size`` = (w, h)) at 25 fps (or with
    uneven steps), time base 1/1000, with an ``audio`` track of a sine (None: no audio)."""
    import av

    if frames is None:
        frames = moving_frames(n, *size)
    h, w = frames[0].shape[:2]
    tb = Fraction(1, 1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=25)
        vs.width, vs.height = w, h
        vs.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        vs.time_base = vs.codec_context.time_base = tb
        if rotation:
            vs.set_display_rotation(rotation)
        a = None
        if audio:
            a = out.add_stream(audio, rate=8000)
            a.layout = "mono"
        pts = 0
        for i, arr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            f.pts, f.time_base = pts, tb
            pts += VFR_STEPS_MS[i % 3] if vfr else 40
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if a is not None:
            size_ = a.codec_context.frame_size or 1024
            for k in range(6):
                tone = np.sin(np.arange(size_) * 0.05 + k).astype(np.float32)[None] * 0.3
                af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                af.sample_rate, af.pts = 8000, k * size_
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode():
                out.mux(p)
    return path


def read_clip(path: Path) -> dict[str, Any]:
    """What a test compares: frames (RGB arrays), pts, time base, rotation, size, audio
    packets (bytes) per audio stream."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        decoded = list(c.decode(v))
        info = {
            "frames": [f.to_ndarray(format="rgb24") for f in decoded],
            "pts_seconds": [float(f.pts * v.time_base) for f in decoded],
            "rotation": decoded[0].rotation if decoded else 0,
            "size": (v.codec_context.width, v.codec_context.height),
            "rate": v.average_rate,
            "codec": v.codec_context.name,
        }
    with av.open(str(path)) as c:
        audio = list(c.streams.audio)
        packets: dict[int, list[bytes]] = {s.index: [] for s in audio}
        if audio:
            for p in c.demux(*audio):
                if p.size:
                    packets[p.stream.index].append(bytes(p))
        info["audio"] = [packets[s.index] for s in audio]
        info["audio_codecs"] = [s.codec_context.name for s in audio]
    return info
