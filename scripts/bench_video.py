"""Measure video translation: flicker per --temporal mode, and frames/s at 720p. Prints JSON.

    .venv/bin/python scripts/bench_video.py                  # flicker + speed
    .venv/bin/python scripts/bench_video.py --no-speed       # flicker only
    .venv/bin/python scripts/bench_video.py --checkpoint G.pt  # a trained generator

Flicker is the mean warping error (:func:`cyclekit.translate.temporal.warping_error`, in
(1/255)^2 units) between consecutive output frames, with the *true* motion of clips made here
(so the metric does not share the flow estimator of ``--temporal flow``):

- ``photo``: a slow pan and zoom over a ../shared/data/horse2zebra photo (synthetic texture
  when absent), with noise (sigma 3) in every frame;
- ``scene``: a synthetic moving scene: a textured background panning 1 px a frame, a textured
  square crossing it at 3 px a frame (pixels it uncovers are masked), noise likewise;
- ``static``: the photo, unmoving, noise only: each mode's PSNR against the translation of the
  noise-free photo, next to ``none``'s (the issue's "within 1 dB where nothing moves").

``removed`` = (flicker of none - flicker of the mode) / (flicker of none - flicker of the input):
the share of the flicker the translation adds that the mode takes away (target: >= 0.5).
Clips go through the real engine (``translate_paths``): lossless FFV1 in, PNG frames out.
Default model: resnet_9blocks ngf=64 with the official random initialisation (no trained
weights here: it shows the mechanism and the cost; a trained model flickers differently).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHOTOS = ROOT.parent / "shared" / "data" / "horse2zebra" / "testA"
NOISE = 3.0


def _source(side: int) -> np.ndarray:
    files = sorted(PHOTOS.glob("*.jpg")) if PHOTOS.is_dir() else []
    if files:
        img = Image.open(files[0]).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
        return np.asarray(img)
    from tests.test_translate_common import photo

    return photo(side, side, 7)


def _noisy(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (frame + rng.normal(0, NOISE, frame.shape)).clip(0, 255).astype(np.uint8)


def photo_clip(n: int, size: int, rng: np.random.Generator):
    """Pan + zoom over a photo: frame t samples the photo at M_t @ (x, y, 1); true flow t->t-1
    is M_{t-1}^-1 M_t p - p."""
    import cv2

    src = _source(2 * size).astype(np.float32)
    c = size - 0.5  # centre of the source
    mats = []
    for t in range(n):
        s = 0.75 - 0.004 * t  # zooming in slowly
        dx = -0.18 * size + 1.5 * t  # panning right 1.5 source px a frame
        half = size / 2 - 0.5
        mats.append(np.array([[s, 0, c + dx - s * half], [0, s, c - s * half]]))
    clean = [
        cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        for m in mats
    ]
    frames = [_noisy(f, rng) for f in clean]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    pts = np.stack([xs, ys, np.ones_like(xs)], -1)
    flows = []
    for t in range(1, n):
        a = np.vstack([mats[t], [0, 0, 1]])
        b_inv = np.linalg.inv(np.vstack([mats[t - 1], [0, 0, 1]]))
        moved = pts @ (b_inv @ a).T
        flow = (moved[..., :2] - pts[..., :2]).astype(np.float32)
        inside = (moved[..., 0] >= 0) & (moved[..., 0] <= size - 1)
        inside &= (moved[..., 1] >= 0) & (moved[..., 1] <= size - 1)
        flows.append((flow, inside.astype(np.float32)))
    return frames, flows


def scene_clip(n: int, size: int, rng: np.random.Generator):
    """A background panning 1 px a frame (content moves left) and a square moving right 3 px a
    frame; true flow per layer, pixels the square uncovered or left the frame masked."""
    from tests.test_translate_common import photo

    bg = photo(size + n + 2, size, 3).astype(np.float32)
    square = photo(size // 4, size // 4, 11).astype(np.float32)[::-1]
    q = size // 4
    frames, flows = [], []
    for t in range(n):
        f = bg[:, t : t + size].copy()
        x0, y0 = 8 + 3 * t, size // 3
        f[y0 : y0 + q, x0 : x0 + q] = square
        frames.append(_noisy(f, rng))
        if t == 0:
            continue
        flow = np.zeros((size, size, 2), np.float32)
        flow[..., 0] = 1.0  # the background point was 1 px to the right in frame t-1
        mask = np.ones((size, size), np.float32)
        mask[:, size - 1 :] = 0  # came from outside the frame
        px0 = x0 - 3  # the square in frame t-1
        mask[y0 : y0 + q, px0 - 1 : px0 + q] = 0  # background hidden by it in t-1
        flow[y0 : y0 + q, x0 : x0 + q, 0] = -3.0
        mask[y0 : y0 + q, x0 : x0 + q] = 1
        flows.append((flow, mask))
    return frames, flows


def _write_clip(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=fps)
        vs.height, vs.width = frames[0].shape[:2]
        vs.pix_fmt = "bgr0"  # lossless RGB: the engine sees exactly these frames
        vs.time_base = vs.codec_context.time_base = Fraction(1, fps)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    return path


def _translate(
    clip: Path, work: Path, model, info, mode: str, frames: bool = True
) -> tuple[list, float]:
    """(output frames, seconds the engine spent on the clip) through translate_paths: PNG
    frames only (exact), or with ``frames=False`` the default H.264 video (for speed)."""
    from cyclekit.translate.engine import TranslateOptions, translate_paths
    from cyclekit.translate.video import VideoOptions

    frames_dir = work / f"frames-{mode}-{clip.stem}"
    if frames:
        video = VideoOptions(temporal=mode, frames_dir=frames_dir, write_video=False)
    else:
        video = VideoOptions(temporal=mode)
    options = TranslateOptions(work / "out", progress=False, video=video)
    report = translate_paths([str(clip)], model, info, options)
    assert report.failed == 0, report.summary()
    outs = [np.asarray(Image.open(p)) for p in sorted((frames_dir / clip.name).glob("*.png"))]
    return outs, report.seconds


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def flicker(model, info, modes: list[str], n: int, size: int, work: Path) -> dict:
    from cyclekit.translate.temporal import warping_error

    rng = np.random.default_rng(0)
    result: dict = {"frames": n, "size": size, "noise_sigma": NOISE}
    clips = {"photo": photo_clip(n, size, rng), "scene": scene_clip(n, size, rng)}
    for name, (frames, flows) in clips.items():
        clip = _write_clip(work / f"{name}.mkv", frames)
        entry: dict = {"input": round(warping_error(frames, frames, flows), 2)}
        for mode in modes:
            outs, seconds = _translate(clip, work, model, info, mode)
            assert len(outs) == n
            entry[mode] = round(warping_error(frames, outs, flows), 2)
            entry[f"{mode}_seconds"] = round(seconds, 2)
        added = entry["none"] - entry["input"]
        for mode in modes:
            if mode != "none" and added > 0:
                entry[f"{mode}_removed"] = round((entry["none"] - entry[mode]) / added, 3)
        result[name] = entry
    # Nothing moves: each mode's frames against the translation of the clean photo.
    clean = _source(size)
    still = [_noisy(clean.astype(np.float32), rng) for _ in range(n)]
    clip = _write_clip(work / "static.mkv", still)
    ref_clip = _write_clip(work / "clean.mkv", [clean] * 2)
    reference = _translate(ref_clip, work, model, info, "none")[0][0]
    static: dict = {}
    zero = [(np.zeros((size, size, 2), np.float32), np.ones((size, size), np.float32))] * (n - 1)
    none_frames = None
    for mode in modes:
        outs = _translate(clip, work, model, info, mode)[0]
        none_frames = outs if mode == "none" else none_frames
        static[f"{mode}_psnr_vs_clean"] = round(np.mean([_psnr(o, reference) for o in outs]), 2)
        static[f"{mode}_flicker"] = round(warping_error(still, outs, zero), 2)
        if none_frames is not None and mode != "none":
            vs_none = np.mean([_psnr(o, r) for o, r in zip(outs, none_frames, strict=True)])
            static[f"{mode}_psnr_vs_none"] = round(float(vs_none), 2)
    static["input_flicker"] = round(warping_error(still, still, zero), 2)
    result["static"] = static
    return result


def speed(model, info, modes: list[str], n: int, work: Path) -> dict:
    """Frames/s for a 1280x720 clip, default options (CPU unless CUDA), per mode."""
    import cv2

    src = cv2.resize(_source(720), (1280, 720), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(1)
    clip = _write_clip(work / "hd.mkv", [_noisy(np.roll(src, 4 * t, 1), rng) for t in range(n)])
    # Warm-up (first-call allocations, autocast caches) on a 2-frame clip at the same size.
    warm = _write_clip(work / "hd_warm.mkv", [src, src])
    _translate(warm, work, model, info, "none", frames=False)
    out: dict = {"frames": n, "size": "1280x720", "output": "H.264 video, default options"}
    for mode in modes:
        _, seconds = _translate(clip, work, model, info, mode, frames=False)
        out[f"{mode}_fps"] = round(n / seconds, 3)
    return out


def overheads(model, reps: int) -> dict:
    """What each mode adds per 720p frame, timed alone and interleaved (robust to a shared
    machine's load drifting): the model with and without smoothed statistics, the flow blend."""
    import torch

    from cyclekit.devices import resolve_device, resolve_precision
    from cyclekit.translate.temporal import FlowBlend, SmoothedStats, smoothed_norms
    from cyclekit.translate.tiling import make_runner, to_model_input

    device = resolve_device("auto")
    run = make_runner(model.to(device), device, resolve_precision("auto", device))
    frame = np.array(Image.fromarray(_source(720)).resize((1280, 720)))  # writable, for torch
    x = to_model_input(frame[None])
    run(x)  # warm-up
    times: dict[str, list[float]] = {"none": [], "stats": []}
    state = SmoothedStats()
    for i in range(reps):
        for mode in ("none", "stats"):
            ctx = smoothed_norms(model, state, lambda i=i: i) if mode == "stats" else None
            start = time.perf_counter()
            if ctx is None:
                run(x)
            else:
                with ctx:
                    run(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[mode].append(time.perf_counter() - start)
    blend = FlowBlend()
    moved = np.roll(frame, 3, axis=1)
    blend(frame, frame, True)
    start = time.perf_counter()
    for _ in range(reps):
        blend(moved, moved, False)
    flow_s = (time.perf_counter() - start) / reps
    none, stats = float(np.median(times["none"])), float(np.median(times["stats"]))
    return {
        "model_s_per_frame": round(none, 3),
        "stats_model_s_per_frame": round(stats, 3),
        "flow_blend_s_per_frame": round(flow_s, 4),
        "cost_vs_none": {
            "stats": round(stats / none, 3),
            "flow": round((stats + flow_s) / none, 3),
        },
    }


def _machine() -> dict:
    import torch

    model = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_1_5_15": [round(x, 2) for x in load],
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a generator (default: random init)")
    parser.add_argument("--frames", type=int, default=24, help="frames per flicker clip")
    parser.add_argument("--size", type=int, default=256, help="flicker clips' side, px")
    parser.add_argument("--hd-frames", type=int, default=4, help="frames of the 720p clip")
    parser.add_argument("--modes", default="none,stats,flow")
    parser.add_argument("--reps", type=int, default=3, help="720p model runs per mode, alone")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-flicker", action="store_true")
    args = parser.parse_args()
    import torch

    from cyclekit.generator_io import load_generator, save_generator
    from cyclekit.models import build_generator, generator_spec

    modes = args.modes.split(",")
    result: dict = {"machine": _machine(), "modes": modes}
    with tempfile.TemporaryDirectory(prefix="cyclekit-bench-video-") as tmp:
        work = Path(tmp)
        gen = args.checkpoint
        if gen is None:
            torch.manual_seed(0)
            spec = generator_spec("resnet_9blocks", 3, 3, 64, "instance", False)
            gen = save_generator(work / "G.pt", build_generator(**spec), spec, "a2b")
            result["model"] = "resnet_9blocks ngf=64, random init (seed 0)"
        model, info = load_generator(gen)
        started = time.perf_counter()
        if not args.no_flicker:
            result["flicker"] = flicker(model, info, modes, args.frames, args.size, work)
        if not args.no_speed:
            result["speed_720p"] = speed(model, info, modes, args.hd_frames, work)
            result["overhead_720p"] = overheads(model, args.reps)
        result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine_after"] = _machine()["load_1_5_15"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
