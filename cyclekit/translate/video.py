"""Videos in ``cyclekit translate``: decode, translate every frame, encode, audio copied as is.

A video (by extension: :data:`VIDEO_EXTENSIONS`), or with ``--sequence`` a folder of frames,
is one input of the run: one line in the report, one output. Frames go through the same
:class:`~cyclekit.translate.batching.Batcher` as images (precision, batching, tiling of 4K frames,
any generator the engine loads), upright (a phone clip's rotation is undone for the model and
kept as metadata), with :mod:`cyclekit.translate.temporal` against flicker.

Kept from the input: the frame size, every frame's timestamp in the input's time base (so a
variable-frame-rate clip stays in sync), the frame count, the rotation, the colour tags, and
every audio stream, its packets copied unchanged (never re-encoded). Subtitle and data streams
are not kept (a warning says so). The video goes to a temporary name in the output folder and is
renamed when complete; ``--frames DIR`` folders likewise. Any failure is one line naming the
file and leaves nothing behind.

PyAV (FFmpeg's libraries, in its wheels) does the decoding and encoding: ``pip install
'cyclekit[video]'``. It is imported only when a video is translated.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cyclekit.errors import CyclekitError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
NEEDS_AV = "translating videos needs PyAV: pip install 'cyclekit[video]'"
AV_MAJOR = 18  # the first PyAV that writes a rotation (pyproject.toml's video extra)
FRAMES_MARK = ".cyclekit-frames"  # in every --frames folder we write: ours to replace
DEFAULT_FPS = 25.0  # --sequence
POSTER_SECONDS = 1.0  # the gallery's poster: the first frame at or after this time


class VideoError(CyclekitError):
    """A video (or frame sequence) that cannot be translated; ``str()`` is one line."""


@dataclass(frozen=True)
class Codec:
    encoders: tuple[str, ...]  # FFmpeg encoders, the first this build has is used
    home: str  # container for an input whose own container cannot hold it
    containers: frozenset[str]  # input containers (extensions) kept as they are
    crf: tuple[int, int, int] | None  # (default, lowest, highest); None: lossless
    options: tuple[tuple[str, str], ...] = ()


_MP4ISH = frozenset({"mp4", "m4v", "mov", "mkv"})
CODECS = {
    # CRF 18: x264's "visually lossless"; the default 23 smears the fine texture styles add.
    "h264": Codec(("libx264",), "mp4", _MP4ISH, (18, 0, 51), (("preset", "medium"),)),
    "hevc": Codec(("libx265",), "mp4", _MP4ISH, (20, 0, 51), (("x265-params", "log-level=0"),)),
    "vp9": Codec(("libvpx-vp9",), "webm", frozenset({"webm", "mkv"}), (31, 0, 63), (("b", "0"),)),
    "av1": Codec(("libsvtav1", "libaom-av1"), "mp4", _MP4ISH | {"webm"}, (30, 0, 63)),
    "ffv1": Codec(("ffv1",), "mkv", frozenset({"mkv"}), None),
}
_MUXERS = {"mp4": "mp4", "m4v": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm"}


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def video_output_name(rel: Path, codec: str, sequence: bool = False) -> Path:
    """Where a video at ``rel`` goes: the same name when its container can hold ``codec``
    (``clip.mp4``, ``clip.mov`` and ``clip.mkv`` with H.264), else the codec's container after
    its full name (``clip.webm`` -> ``clip.webm.mp4``), as images get ``--format``. A frame
    folder (``--sequence``) gets the container after its name (``shot1`` -> ``shot1.mp4``)."""
    ext = rel.suffix.lower().lstrip(".")
    if not sequence and ext in CODECS[codec].containers:
        return rel
    return rel.with_name(f"{rel.name}.{CODECS[codec].home}")


def require_av() -> Any:
    try:
        import av
    except ImportError:
        raise VideoError(NEEDS_AV) from None
    major = av.__version__.split(".")[0]
    if not major.isdigit() or int(major) < AV_MAJOR:
        # An older one would write a phone clip without its rotation: sideways.
        raise VideoError(
            f"PyAV {av.__version__} is too old (need {AV_MAJOR}.0+): "
            "pip install -U 'cyclekit[video]'"
        )
    return av


def encoder_for(codec: str) -> str:
    """The FFmpeg encoder for ``--codec``; :class:`VideoError` when this build has none."""
    av = require_av()
    for name in CODECS[codec].encoders:
        with contextlib.suppress(av.codec.codec.UnknownCodecError):
            av.codec.Codec(name, "w")
            return name
    raise VideoError(
        f"--codec {codec}: this FFmpeg build has no encoder for it "
        f"({', '.join(CODECS[codec].encoders)}); use --codec h264"
    )


@dataclass
class VideoOptions:
    """How ``cyclekit translate`` writes videos."""

    codec: str = "h264"
    crf: int | None = None  # None: the codec's default
    temporal: str = "flow"  # measured: scripts/bench_video.py
    frames_dir: Path | None = None  # --frames: the translated frames as PNGs, below it
    write_video: bool = True  # --no-video: only the frames
    sequence: bool = False  # every INPUT folder is one clip of frames
    fps: float = DEFAULT_FPS  # frame rate of a --sequence

    def __post_init__(self) -> None:
        from cyclekit.choices import TEMPORAL_MODES

        self.codec = self.codec.lower()
        if self.codec not in CODECS:
            raise VideoError(f"--codec {self.codec}: choose one of {', '.join(CODECS)}")
        if self.temporal not in TEMPORAL_MODES:
            raise VideoError(f"--temporal {self.temporal}: choose {', '.join(TEMPORAL_MODES)}")
        crf = CODECS[self.codec].crf
        if self.crf is not None:
            if crf is None:
                raise VideoError(f"--crf: --codec {self.codec} is lossless, it takes no --crf")
            if not crf[1] <= self.crf <= crf[2]:
                raise VideoError(
                    f"--crf {self.crf}: {self.codec} takes {crf[1]}..{crf[2]} (lower is better)"
                )
        if not self.write_video and self.frames_dir is None:
            raise VideoError("--no-video writes only the frames: give --frames DIR too")
        if not 0 < self.fps <= 1000:
            raise VideoError(f"--fps {self.fps}: give a frame rate in (0, 1000]")
        if self.frames_dir is not None:
            self.frames_dir = Path(self.frames_dir)


@dataclass
class ClipContext:
    """What the engine lends a clip: the model and how to run it, and the run's options."""

    model: Any
    spec: dict[str, Any]
    run: Any  # tiling.Runner
    batch_size: int
    budget: int
    tile: int | None
    resize: tuple[int, int] | None
    max_size: int | None
    keep_resized: bool
    output_dir: Path
    pool: ThreadPoolExecutor
    progress: bool = True
    thumbs: Path | None = None  # the gallery's thumbnail folder: posters are written there


def is_clip(job: Any, vo: VideoOptions) -> bool:
    """Whether a planned job is a clip (a video, or a --sequence folder), not an image."""
    # (A folder is a job only with --sequence: no stat call per image otherwise.)
    return is_video_file(job.src) or (vo.sequence and job.src.is_dir())


def check_support(inputs: Sequence[str], vo: VideoOptions) -> None:
    """Before anything is written: PyAV and the --codec encoder, when an INPUT is a video or
    --sequence is given (a video a glob finds, without PyAV, fails on its own line)."""
    videos = [a for a in inputs if is_video_file(a) and os.path.isfile(a)]
    if not (videos or vo.sequence):
        return
    try:
        encoder_for(vo.codec) if vo.write_video else require_av()
    except VideoError as e:
        raise VideoError(f"{videos[0] if videos else '--sequence'}: {e}") from None


def frames_folder(dst: Path, output_dir: Path, vo: VideoOptions) -> Path | None:
    """The ``--frames`` folder of the clip whose video is ``dst``: below DIR, the video's own
    path below the output folder (``out/trip/clip.mp4`` -> ``DIR/trip/clip.mp4/``)."""
    if vo.frames_dir is None:
        return None
    return vo.frames_dir / dst.relative_to(output_dir)


def frames_folder_state(folder: Path) -> tuple[bool, str | None]:
    """(whether the frames folder exists, why it must not be replaced or None)."""
    if not os.path.lexists(folder):
        return False, None
    if not folder.is_dir() or not (folder / FRAMES_MARK).is_file():
        return True, (
            f"{folder} already exists and was not written by cyclekit translate --frames, so "
            "it is not replaced; move it away or choose another --frames folder"
        )
    return True, None


# -- translating one clip -------------------------------------------------------------------------


def _resize(pixels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = pixels.shape[:2]
    shrink = hw[0] * hw[1] < h * w
    out = cv2.resize(
        pixels, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )
    return out[:, :, None] if out.ndim == 2 else out


def translate_clip(src: Path, dst: Path, ctx: ClipContext, vo: VideoOptions) -> dict[str, Any]:
    """Translate the video (or ``--sequence`` folder) ``src`` into ``dst`` and/or its
    ``--frames`` folder. Returns what the report records; raises :class:`VideoError` (one
    line, without the path) when the clip cannot be translated, leaving no output behind."""
    from tqdm import tqdm

    from cyclekit.translate.batching import MIN_TILE, Batcher, pad_image, padded_size
    from cyclekit.translate.deferred import torch_module
    from cyclekit.translate.image_io import work_size
    from cyclekit.translate.temporal import (
        FlowBlend,
        SmoothedStats,
        is_cut,
        smoothed_norms,
        stats_filter,
    )
    from cyclekit.translate.video_io import (
        Frame,
        FramesSink,
        SequenceSource,
        VideoSink,
        VideoSource,
        ahead,
        save_poster,
        why,
    )

    started = time.perf_counter()
    channels = ctx.spec["input_nc"]
    if vo.sequence:
        source: Any = SequenceSource(src, channels, vo.fps)
    else:
        source = VideoSource(src, channels)
    av_error: tuple[type[BaseException], ...] = ()
    if not vo.sequence:
        av_error = (require_av().error.FFmpegError,)
    with contextlib.ExitStack() as stack:
        stack.callback(source.close)
        items = stack.enter_context(contextlib.closing(ahead(source.items(), 8)))
        held = []  # audio before the first frame: written once the output exists
        first = None
        for item in items:
            if isinstance(item, Frame):
                first = item
                break
            held.append(item)
        if first is None:
            raise VideoError("holds no video frames")
        rotation = first.rotation if first.rotation % 90 == 0 else 0
        turns = rotation // 90 % 4  # quarter turns counter-clockwise that make a frame upright
        warnings = list(source.warnings)
        if first.rotation != rotation:
            warnings.append(f"rotation {first.rotation} degrees ignored (not a multiple of 90)")
        upright = np.rot90(first.pixels, turns)
        h, w = upright.shape[:2]
        work = work_size(h, w, ctx.resize, ctx.max_size)
        out_hw = work if ctx.keep_resized else (h, w)
        back = turns  # turned back as stored, with the same rotation metadata
        stored_hw = out_hw[::-1] if back % 2 else out_hw
        sink = None
        if vo.write_video:
            from cyclekit.files import atomic_path
            from cyclekit.translate.image_io import PARTIAL_SUFFIX

            tmp = stack.enter_context(atomic_path(dst, suffix=PARTIAL_SUFFIX))
            try:
                sink = VideoSink(
                    tmp, dst, vo, source, first, stored_hw, rotation, ctx.spec["output_nc"]
                )
            except av_error as e:
                raise VideoError(f"cannot write {dst} ({why(e)})") from None
            stack.push(lambda *exc: sink.abandon() if exc[0] is not None else None)
        frames = None
        folder = frames_folder(dst, ctx.output_dir, vo)
        if folder is not None:
            names = None
            if vo.sequence:
                from cyclekit.translate.plan import output_name

                names = [output_name(Path(f.name), "png").name for f in source.files]
            frames = FramesSink(folder, ctx.pool, names)
            stack.push(lambda *exc: frames.abandon() if exc[0] is not None else None)

        padded = padded_size(*work, ctx.spec)
        batcher = Batcher(ctx.model, ctx.spec, ctx.run, ctx.batch_size, ctx.budget, ctx.tile)
        state = SmoothedStats() if vo.temporal in ("stats", "flow") else None
        blend = FlowBlend() if vo.temporal == "flow" else None
        counter = {"next": 0, "first": 0}
        if state is not None:
            if batcher.tile_for(*padded) is not None:
                batcher.stats_filter = stats_filter(state)
            else:

                def run(x: Any) -> Any:
                    # Frame numbers for the smoothed norms; a batch that fails (out of memory)
                    # is retried one frame at a time from the same number.
                    counter["first"] = counter["next"]
                    y = ctx.run(x)
                    counter["next"] += x.shape[0]
                    return y

                batcher.run = run
                model = torch_module(ctx.model)  # (loaded now if the run began without torch)
                stack.enter_context(smoothed_norms(model, state, lambda: counter["first"]))

        progress = stack.enter_context(
            tqdm(
                total=source.estimate(),
                unit="frame",
                desc=src.name[-30:],
                leave=False,
                disable=not ctx.progress,
            )
        )
        pending: dict[int, tuple[np.ndarray | None, np.ndarray, int, bool]] = {}
        poster: list[Any] = [None, None, None]  # input, output, time
        done = 0

        def emit(results: list[tuple[int, Any]]) -> None:
            nonlocal done
            for index, out in results:
                if isinstance(out, Exception):
                    raise VideoError(
                        f"out of memory at frame {index + 1} ({why(out)}); try --tile "
                        f"{MIN_TILE}, a lower --memory-budget or --max-size"
                    )
                original, inp, pts, cut = pending.pop(index)
                out = out[: work[0], : work[1]]
                if blend is not None:
                    out = blend(inp, out, cut)
                if out.shape[:2] != out_hw:
                    out = _resize(out, out_hw)
                if sink is not None:
                    sink.frame(np.ascontiguousarray(np.rot90(out, -back)), pts)
                if frames is not None:
                    frames.add(index, out)
                seconds = float(pts * source.time_base)
                if ctx.thumbs is not None and (poster[2] is None or poster[2] < POSTER_SECONDS):
                    poster[:] = [original, out, seconds]
                done += 1
                progress.update(1)

        index, last_pts, prev = 0, None, None
        try:
            for item in _chain(first, items):
                if not isinstance(item, Frame):
                    if sink is not None and sink.audio:
                        for p in held:
                            sink.packet(p)
                        held.clear()
                        sink.packet(item)
                    continue
                pixels = np.rot90(item.pixels, turns)
                if pixels.shape[:2] != (h, w):
                    got = f"{pixels.shape[1]}x{pixels.shape[0]}"
                    raise VideoError(f"frame {index + 1} is {got}, the first frame {w}x{h}")
                inp = pixels if work == (h, w) else _resize(pixels, work)
                pts = _timestamp(item.pts, index, last_pts, source, warnings)
                last_pts = pts
                cut = is_cut(prev, inp) if vo.temporal != "none" else False
                prev = inp
                if state is not None:
                    state.resets.append(cut)
                pending[index] = (pixels if ctx.thumbs is not None else None, inp, pts, cut)
                emit(batcher.add(index, pad_image(np.ascontiguousarray(inp), padded)))
                index += 1
            emit(batcher.flush())
            source.check_complete(index, last_pts)
            for p in held:
                if sink is not None and sink.audio:
                    sink.packet(p)
            if sink is not None:
                sink.finish()
        except av_error as e:  # the encoder or the muxer (e.g. an audio codec it refuses)
            raise VideoError(f"cannot write {dst} ({why(e)})") from None
        if frames is not None:
            frames.commit()
    if sink is not None and ctx.thumbs is not None and poster[0] is not None:
        save_poster(ctx.thumbs, src, np.ascontiguousarray(poster[0]))
        save_poster(ctx.thumbs, dst, np.ascontiguousarray(poster[1]))
    seconds = time.perf_counter() - started
    extra: dict[str, Any] = {
        "kind": "video",
        "frames": done,
        "fps": round(float(source.rate), 3) if source.rate else None,
        "size": [int(stored_hw[1]), int(stored_hw[0])],
        "seconds": round(seconds, 3),
        "frames_per_second": round(done / seconds, 2) if seconds > 0 else None,
        "temporal": vo.temporal,
    }
    if rotation:
        extra["rotation"] = rotation
    if source.audio:
        extra["audio_streams"] = len(source.audio)
    if folder is not None:
        extra["frames_dir"] = str(folder)
    if warnings:
        extra["warnings"] = warnings
    return extra


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _timestamp(pts: int | None, index: int, last: int | None, source: Any, warnings: list) -> int:
    """The frame's own timestamp; made up only when missing or not increasing (broken files),
    which the encoder would refuse."""
    if pts is None:
        rate = source.rate or DEFAULT_FPS
        pts = round(index / (rate * source.time_base))
    if last is not None and pts <= last:
        if not any(w.startswith("timestamps") for w in warnings):
            warnings.append("timestamps not increasing: adjusted to keep the frame order")
        pts = last + 1
    return pts
