"""Reading one input for the model and writing its result: the per-image work of
``cyclekit translate``, run in worker threads. Pure functions of their arguments."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cyclekit.data.images import ImageDecodeError, decode_image, pillow_warnings
from cyclekit.files import atomic_path

# Output extension -> Pillow format. JPEG cannot hold alpha; BMP cannot hold metadata.
FORMATS = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "bmp": "BMP",
    "tif": "TIFF",
    "tiff": "TIFF",
}
MIN_SIDE = 4  # smaller "images" are icons or broken files, not something to stylise
PARTIAL_SUFFIX = ".cyclekit-partial"
# The largest input translate decodes: 400 megapixels (e.g. a 20000 x 20000 scan). Far above
# Pillow's default limit (89 megapixels), deliberately: such scans go through the tiling path,
# which keeps the image as uint8. Measured: an 8000 x 5000 PNG peaked at 1.42 GB of RSS with
# --memory-budget 256 (0.65 GB is torch itself), ~13 bytes a pixel beyond the budget: about
# 5-6 GB at the limit, plus the memory budget (1.5 GiB by default on CPU).
MAX_PIXELS = 400_000_000
# --max-size / --resize decode a JPEG at a reduced scale (scripts/bench_translate.py
# --draft-check measures it against a full decode; False turns it off for that comparison).
JPEG_DRAFT = True


@dataclass
class Job:
    """One input image and where its result goes."""

    src: Path
    dst: Path


@dataclass
class Prepared:
    """A decoded input, ready for the model, with what writing its result will need."""

    job: Job
    pixels: np.ndarray  # (H', W', C) uint8, resized for the model and reflect-padded
    work: tuple[int, int]  # (h, w) before padding: the model-size result is cropped to it
    size: tuple[int, int]  # (h, w) of the upright input
    alpha: np.ndarray | None
    icc: bytes | None
    exif: bytes | None
    seconds: float  # spent decoding and resizing (not waiting in a queue)
    warnings: tuple[str, ...] = ()  # what Pillow noticed but decoded past (damaged EXIF)


def work_size(
    h: int, w: int, resize: tuple[int, int] | None, max_size: int | None
) -> tuple[int, int]:
    """(h, w) to run the model at: ``resize`` = (width, height) exactly, else the long side at
    most ``max_size`` with the aspect ratio kept. No side goes below :data:`MIN_SIDE`: a long,
    thin image keeps its shape and gets a long side above ``max_size`` instead."""
    if resize is not None:
        return resize[1], resize[0]
    if max_size is not None and max(h, w) > max_size:
        s = max(max_size / max(h, w), MIN_SIDE / min(h, w))
        if s >= 1:
            return h, w
        return max(MIN_SIDE, round(h * s)), max(MIN_SIDE, round(w * s))
    return h, w


def _resize_hw(pixels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 resized to ``hw`` = (height, width), Lanczos."""
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    out = np.array(img.resize((hw[1], hw[0]), Image.Resampling.LANCZOS))  # writable, for torch
    return out[:, :, None] if out.ndim == 2 else out


# The largest side each writer can encode (Pillow raises otherwise, after the model ran).
MAX_SIDE = {"WEBP": 16383, "JPEG": 65500}


def prepare(
    job: Job,
    spec: dict[str, Any],
    resize: tuple[int, int] | None = None,
    max_size: int | None = None,
    keep_resized: bool = False,
) -> Prepared:
    """Decode ``job.src`` upright, resize it for the model if asked, pad it for the model.

    Raises :class:`ImageDecodeError` for an image that cannot be used, including one whose
    result would be too large for the output format (checked before the model runs)."""
    from cyclekit.translate.batching import pad_image, padded_size

    started = time.perf_counter()
    # A JPEG the model will see smaller is decoded smaller (see decode_image's shrink).
    smaller = JPEG_DRAFT and (resize is not None or max_size is not None)
    img = decode_image(
        job.src,
        channels=spec["input_nc"],
        composite_alpha=False,
        max_pixels=MAX_PIXELS,
        shrink=(lambda h, w: work_size(h, w, resize, max_size)) if smaller else None,
    )
    h, w = img.file_hw or img.pixels.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageDecodeError(f"{job.src}: too small ({w}x{h} px, need {MIN_SIDE}+ per side)")
    work = work_size(h, w, resize, max_size)
    out_h, out_w = work if keep_resized else (h, w)
    fmt = FORMATS.get(job.dst.suffix.lower().lstrip("."), "PNG")
    if max(out_h, out_w) > MAX_SIDE.get(fmt, max(out_h, out_w)):
        raise ImageDecodeError(
            f"{job.src}: a {out_w}x{out_h} px result is too large for {fmt} (at most "
            f"{MAX_SIDE[fmt]} px a side); use --format png"
        )
    pixels = img.pixels if img.pixels.shape[:2] == work else _resize_hw(img.pixels, work)
    pixels = pad_image(pixels, padded_size(*work, spec))
    seconds = time.perf_counter() - started
    return Prepared(
        job, pixels, work, (h, w), img.alpha, img.icc_profile, img.exif, seconds, img.warnings
    )


def finish(
    prep: Prepared, out: np.ndarray, keep_resized: bool = False, quality: int = 95
) -> dict[str, Any]:
    """Crop the model output, resize it back, reattach alpha and write it atomically.

    Returns what the report records: the written ``size`` (w, h) and the ``seconds`` this
    took."""
    started = time.perf_counter()
    out = out[: prep.work[0], : prep.work[1]]
    alpha = prep.alpha
    if prep.work != prep.size:
        if keep_resized:
            if alpha is not None:
                alpha = _resize_hw(alpha[:, :, None], prep.work)[:, :, 0]
        else:
            out = _resize_hw(out, prep.size)
    write_image(prep.job.dst, out, alpha, icc=prep.icc, exif=prep.exif, quality=quality)
    size = [int(out.shape[1]), int(out.shape[0])]
    return {"size": size, "seconds": time.perf_counter() - started}


# -- writing ------------------------------------------------------------------------------------


def _upright_exif(raw: bytes | None) -> bytes | None:
    # The pixels were rotated upright when decoded; an orientation tag left in the EXIF would
    # make viewers rotate them a second time.
    if not raw:
        return None
    try:
        with pillow_warnings() as damaged:
            exif = Image.Exif()
            exif.load(raw)
            exif.pop(0x0112, None)  # Orientation
            data = exif.tobytes()
    except Exception:  # malformed EXIF: drop it rather than fail the image
        return None
    return None if damaged else data


def _icc_for(icc: bytes | None, mode: str) -> bytes | None:
    # Keep a profile only if it describes the output's colour space (bytes 16..20 of the
    # header): a CMYK or gray profile on RGB pixels would distort every colour.
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    return icc if space == (b"GRAY" if mode in ("L", "LA") else b"RGB ") else None


def write_image(
    dst: Path,
    pixels: np.ndarray,
    alpha: np.ndarray | None = None,
    icc: bytes | None = None,
    exif: bytes | None = None,
    quality: int = 95,
) -> None:
    """Write (H, W, 1|3) uint8 ``pixels`` (+ alpha) in the format of ``dst``'s extension,
    through a hidden temporary file renamed into place: never a half-written ``dst``."""
    fmt = FORMATS.get(dst.suffix.lower().lstrip("."), "PNG")
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    if alpha is not None:
        if fmt == "JPEG":  # no alpha in JPEG: composite on white, as decoding does
            a = alpha.astype(np.float32)[:, :, None] / 255.0
            flat = np.rint(pixels * a + 255.0 * (1.0 - a)).astype(np.uint8)
            img = Image.fromarray(flat[:, :, 0] if flat.shape[2] == 1 else flat)
        else:
            if img.mode == "L" and fmt in ("WEBP", "BMP"):
                img = img.convert("RGB")  # these writers have no gray+alpha mode
            img.putalpha(Image.fromarray(alpha))
    kwargs: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if fmt != "BMP":
        if (e := _upright_exif(exif)) is not None:
            kwargs["exif"] = e
        if (p := _icc_for(icc, img.mode)) is not None:
            kwargs["icc_profile"] = p
    # The hidden temporary name ends in PARTIAL_SUFFIX, so a killed run's leftovers are found
    # and removed by the next run (and never mistaken for images: Pillow is told the format).
    with atomic_path(dst, suffix=PARTIAL_SUFFIX) as tmp:
        img.save(tmp, format=fmt, **kwargs)
