"""Reading and writing for video translation (:mod:`cyclekit.translate.video`): frames and
audio packets out of a file or a folder of frames, the encoded video with the audio copied in,
``--frames`` folders, and the gallery's poster frames. PyAV is imported when a clip is opened.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from cyclekit.translate.video import (
    _MUXERS,
    CODECS,
    DEFAULT_FPS,
    FRAMES_MARK,
    POSTER_SECONDS,
    VideoError,
    VideoOptions,
    encoder_for,
    require_av,
)

# -- reading ------------------------------------------------------------------------------------


@dataclass
class Frame:
    pixels: np.ndarray  # (H, W, C) uint8 as stored (not rotated)
    pts: int | None
    rotation: int = 0
    colors: dict[str, int] = field(default_factory=dict)


def why(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


class VideoSource:
    """The first video stream of a file (cover pictures skipped) and its audio streams."""

    def __init__(self, path: Path, channels: int) -> None:
        av = require_av()
        self.path, self.channels = path, channels
        try:
            self.container = av.open(str(path), metadata_errors="replace")
        except av.error.FFmpegError as e:
            raise VideoError(
                f"cannot open it as a video ({why(e)}): damaged, truncated or not a video"
            ) from None
        attached = av.stream.Disposition.attached_pic
        streams = [s for s in self.container.streams.video if not s.disposition & attached]
        self.audio = list(self.container.streams.audio)
        if not streams:
            self.close()
            extra = " (only audio)" if self.audio else ""
            raise VideoError(f"has no video stream{extra}")
        self.stream = streams[0]
        if self.stream.codec_context is None:
            name = getattr(self.stream, "codec_tag", None) or "unknown"
            self.close()
            raise VideoError(f"its video codec ({name}) cannot be decoded by this FFmpeg build")
        self.stream.thread_type = "AUTO"
        self.codec_name = self.stream.codec_context.name
        self.time_base = self.stream.time_base or Fraction(1, 90000)
        self.rate = self.stream.average_rate or self.stream.guessed_rate
        self.declared = self.stream.frames or None
        others = len(self.container.streams) - len(self.audio) - len(streams)
        self.warnings = []
        if len(streams) > 1:
            self.warnings.append(f"only the first of its {len(streams)} video streams is kept")
        if others > 0:
            self.warnings.append(f"{others} subtitle/data/cover stream(s) not copied")

    def estimate(self) -> int | None:
        if self.declared:
            return self.declared
        if self.container.duration and self.rate:
            return round(self.container.duration / 1e6 * float(self.rate))
        return None

    def check_complete(self, frames: int, last_pts: int | None) -> None:
        """Raise :class:`VideoError` when fewer frames came out than the file announces: FFmpeg
        stops quietly at the end of a truncated file. 2% and two frames of slack: an edit list
        may hide a few frames, and the stated duration is rounded."""
        step = 1 / float(self.rate) if self.rate else 0.04
        if self.declared and frames < self.declared - 2 - 0.02 * self.declared:
            raise VideoError(
                f"truncated or damaged: {frames} of its {self.declared} frames could be decoded"
            )
        end = self._stated_end()
        if end is None or last_pts is None:
            return
        got = float(last_pts * self.time_base) + step
        if got < end - 2 * step - 0.02 * end:
            raise VideoError(
                f"truncated or damaged: its video ends at {got:.2f} s of the {end:.2f} s "
                f"it announces ({frames} frames decoded)"
            )

    def _stated_end(self) -> float | None:
        """The end of the video stream the file states, in seconds (not the audio's end)."""
        s = self.stream
        start = float((s.start_time or 0) * self.time_base)
        if s.duration:
            return start + float(s.duration * self.time_base)
        tag = s.metadata.get("DURATION", "")  # Matroska: per track, HH:MM:SS.nnnnnnnnn
        if m := re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", tag):
            return start + int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
        if not self.audio and self.container.duration:
            return self.container.duration / 1e6
        return None

    def items(self) -> Iterator[Frame | Any]:
        """Frames (decoded, as stored) and audio packets, in file order."""
        av = require_av()
        fmt = "rgb24" if self.channels == 3 else "gray"
        index = 0
        try:
            for packet in self.container.demux(self.stream, *self.audio):
                if packet.stream.type == "audio":
                    if packet.size and packet.dts is not None:
                        yield packet
                    continue
                for frame in packet.decode():
                    index += 1
                    kw = {"src_color_range": frame.color_range} if frame.color_range else {}
                    colors = {
                        k: int(getattr(frame, k))
                        for k in ("colorspace", "color_range", "color_primaries", "color_trc")
                    }
                    pixels = frame.to_ndarray(format=fmt, **kw)
                    yield Frame(
                        pixels if pixels.ndim == 3 else pixels[:, :, None],
                        frame.pts,
                        int(round(frame.rotation or 0)),
                        colors,
                    )
        except av.error.FFmpegError as e:
            raise VideoError(
                f"cannot decode frame {index + 1} ({why(e)}): the file is damaged or truncated"
            ) from None

    def close(self) -> None:
        self.container.close()


def _natural(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p.casefold() for p in re.split(r"(\d+)", name)]


class SequenceSource:
    """A folder of frames (its images, not its subfolders, in natural name order)."""

    def __init__(self, folder: Path, channels: int, fps: float) -> None:
        from cyclekit.data.images import is_image_file

        self.path, self.channels = folder, channels
        self.files = sorted(
            (p for p in folder.iterdir() if is_image_file(p) and not p.name.startswith(".")),
            key=lambda p: _natural(p.name),
        )
        if not self.files:
            raise VideoError("--sequence: the folder holds no image files (subfolders not read)")
        rate = Fraction(fps).limit_denominator(1001)
        self.rate, self.time_base = rate, 1 / rate
        self.audio: list[Any] = []
        self.warnings: list[str] = []
        self.codec_name = "images"

    def estimate(self) -> int:
        return len(self.files)

    def check_complete(self, frames: int, last_pts: int | None) -> None:
        pass  # every file was decoded, or the clip failed

    def items(self) -> Iterator[Frame]:
        from cyclekit.data.images import ImageDecodeError, decode_image

        for i, f in enumerate(self.files):
            try:
                img = decode_image(f, channels=self.channels)
            except ImageDecodeError as e:
                raise VideoError(f"frame {f.name}: {str(e).removeprefix(f'{f}: ')}") from None
            yield Frame(img.pixels, i)

    def close(self) -> None:
        pass


def ahead(items: Iterator[Any], size: int) -> Iterator[Any]:
    """``items`` produced in a background thread, ``size`` ahead (decoding runs while the
    model works); an exception there is raised here. Close it to stop the thread."""
    q: queue.Queue = queue.Queue(size)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as e:  # handed to the consumer, which raises it
            put(("error", e))

    thread = threading.Thread(target=work, name="cyclekit-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


# -- writing ------------------------------------------------------------------------------------


class VideoSink:
    """The output file: the translated frames encoded, the audio packets copied."""

    def __init__(
        self,
        tmp: Path,
        dst: Path,
        vo: VideoOptions,
        source: Any,
        first: Frame,
        size: tuple[int, int],
        rotation: int,
        channels: int,
    ) -> None:
        av = require_av()
        self.av = av
        container = dst.suffix.lower().lstrip(".")
        options = {"movflags": "+faststart"} if container in ("mp4", "m4v", "mov") else {}
        self.out = av.open(str(tmp), "w", format=_MUXERS[container], options=options)
        try:
            self._streams(vo, source, first, size, rotation, channels, container)
        except BaseException:
            self.abandon()
            raise

    def _streams(
        self,
        vo: VideoOptions,
        source: Any,
        first: Frame,
        size: tuple[int, int],
        rotation: int,
        channels: int,
        container: str,
    ) -> None:
        codec = CODECS[vo.codec]
        h, w = size
        self.tb = source.time_base
        vs = self.out.add_stream(encoder_for(vo.codec), rate=source.rate or DEFAULT_FPS)
        vs.width, vs.height = w, h
        vs.pix_fmt = self._pix_fmt(vo.codec, vs.codec_context.codec, w, h)
        vs.time_base = vs.codec_context.time_base = self.tb
        opts = dict(codec.options)
        if codec.crf is not None:
            opts["crf"] = str(vo.crf if vo.crf is not None else codec.crf[0])
        vs.codec_context.options = opts
        self.colors = {k: v for k, v in first.colors.items() if v}
        for key, value in self.colors.items():
            setattr(vs.codec_context, key, value)
        if rotation:
            vs.set_display_rotation(rotation)
        self.vs = vs
        self.fmt = "rgb24" if channels == 3 else "gray"  # the generator's output
        self.audio: dict[int, Any] = {}
        for s in source.audio:
            if s.codec_context.name not in self.out.supported_codecs:
                raise VideoError(
                    f"its audio ({s.codec_context.name}) cannot be copied unchanged into "
                    f".{container}; use --codec ffv1 (.mkv holds any audio)"
                )
            self.audio[s.index] = self.out.add_stream_from_template(s)

    @staticmethod
    def _pix_fmt(codec: str, encoder: Any, w: int, h: int) -> str:
        formats = {f.name for f in encoder.video_formats or ()}
        if codec == "ffv1":
            return "bgr0"  # lossless RGB
        if w % 2 == 0 and h % 2 == 0 or "yuv444p" not in formats:
            if (w % 2 or h % 2) and "yuv444p" not in formats:
                raise VideoError(f"{codec} cannot encode an odd frame size ({w}x{h}); use h264")
            return "yuv420p"  # what every player plays
        return "yuv444p"  # 4:2:0 halves both sides: an odd side needs full chroma

    def frame(self, pixels: np.ndarray, pts: int) -> None:
        f = self.av.VideoFrame.from_ndarray(
            pixels if self.fmt == "rgb24" else pixels[:, :, 0], format=self.fmt
        )
        f = f.reformat(
            format=self.vs.pix_fmt,
            dst_colorspace=self.colors.get("colorspace"),
            dst_color_range=self.colors.get("color_range"),
        )
        f.pts, f.time_base = pts, self.tb
        for p in self.vs.encode(f):
            self.out.mux(p)

    def packet(self, packet: Any) -> None:
        packet.stream = self.audio[packet.stream.index]
        self.out.mux(packet)

    def finish(self) -> None:
        for p in self.vs.encode(None):
            self.out.mux(p)
        self.out.close()

    def abandon(self) -> None:
        with contextlib.suppress(Exception):  # the file is deleted anyway
            self.out.close()


class FramesSink:
    """PNG frames into a hidden temporary folder, renamed to ``final`` when the clip is done."""

    def __init__(self, final: Path, pool: ThreadPoolExecutor, names: list[str] | None) -> None:
        self.final, self.pool, self.names = final, pool, names
        self.tmp = final.parent / f".{final.name}.{secrets.token_hex(4)}.cyclekit-partial"
        self.tmp.mkdir(parents=True)
        self.writes: list[Future] = []

    def add(self, index: int, pixels: np.ndarray) -> None:
        name = self.names[index] if self.names else f"{index + 1:06d}.png"
        self.writes.append(self.pool.submit(save_png, self.tmp / name, pixels))
        if len(self.writes) > 16:  # a bounded number of frames waiting for the disk
            self.writes.pop(0).result()

    def commit(self) -> None:
        for w in self.writes:
            w.result()
        (self.tmp / FRAMES_MARK).write_text("written by cyclekit translate --frames\n")
        old = None
        if self.final.is_dir():  # an earlier run's (checked before): swapped out, then removed
            old = self.final.parent / f".{self.final.name}.{secrets.token_hex(4)}.old"
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abandon(self) -> None:
        for w in self.writes:
            w.cancel()
        for w in self.writes:
            with contextlib.suppress(Exception):
                w.result()
        shutil.rmtree(self.tmp, ignore_errors=True)


def save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(path, format="PNG")


def save_poster(thumbs: Path, source: Path, pixels: np.ndarray) -> None:
    """The gallery's thumbnail of a video (or frame folder): one frame, where the gallery looks
    for the thumbnail of ``source``, written after ``source`` so it counts as up to date."""
    from PIL import Image

    from cyclekit.translate.gallery import THUMB_SIDE, thumbnail_path

    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).convert("RGB")
    img.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    dst = thumbnail_path(thumbs, source)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    img.save(tmp, format="JPEG", quality=85)
    os.replace(tmp, dst)


def posters_from_files(thumbs: Path, src: Path, dst: Path, channels: int) -> None:
    """Posters for a clip translated by an earlier run (``--skip-existing --gallery``)."""
    with contextlib.suppress(VideoError, OSError):
        for path, ch in ((src, channels), (dst, 3)):
            if path.is_dir():
                continue  # a frame folder: no poster
            source = VideoSource(path, ch)
            try:
                for item in source.items():
                    if isinstance(item, Frame):
                        t = (item.pts or 0) * source.time_base
                        pixels = np.rot90(item.pixels, item.rotation // 90)
                        poster = pixels
                        if t >= POSTER_SECONDS:
                            break
                save_poster(thumbs, path, np.ascontiguousarray(poster))
            finally:
                source.close()
