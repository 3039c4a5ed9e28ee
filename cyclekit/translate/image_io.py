"""Reading one input for the model and writing its result: the per-image work of
``cyclekit translate``, run in worker threads. Pure functions of their arguments."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cyclekit.data.images import ImageDecodeError, decode_image

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
    started: float


def _work_size(
    h: int, w: int, resize: tuple[int, int] | None, max_size: int | None
) -> tuple[int, int]:
    if resize is not None:
        return resize[1], resize[0]
    if max_size is not None and max(h, w) > max_size:
        s = max_size / max(h, w)
        return max(MIN_SIDE, round(h * s)), max(MIN_SIDE, round(w * s))
    return h, w


def _resize(pixels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    out = np.asarray(img.resize((hw[1], hw[0]), Image.Resampling.LANCZOS))
    return out[:, :, None] if out.ndim == 2 else out


def prepare(
    job: Job,
    spec: dict[str, Any],
    resize: tuple[int, int] | None = None,
    max_size: int | None = None,
) -> Prepared:
    """Decode ``job.src`` upright, resize it for the model if asked, pad it for the model."""
    from cyclekit.translate.tiling import pad_image, padded_size

    started = time.perf_counter()
    img = decode_image(job.src, channels=spec["input_nc"], composite_alpha=False)
    h, w = img.pixels.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageDecodeError(f"{job.src}: too small ({w}x{h} px, need {MIN_SIDE}+ per side)")
    work = _work_size(h, w, resize, max_size)
    pixels = img.pixels if work == (h, w) else _resize(img.pixels, work)
    pixels = pad_image(pixels, padded_size(*work, spec))
    return Prepared(job, pixels, work, (h, w), img.alpha, img.icc_profile, img.exif, started)


def finish(
    prep: Prepared, out: np.ndarray, keep_resized: bool = False, quality: int = 95
) -> dict[str, Any]:
    """Crop the model output, resize it back, reattach alpha and write it atomically."""
    out = out[: prep.work[0], : prep.work[1]]
    alpha = prep.alpha
    if prep.work != prep.size:
        if keep_resized:
            if alpha is not None:
                alpha = _resize(alpha[:, :, None], prep.work)[:, :, 0]
        else:
            out = _resize(out, prep.size)
    write_image(prep.job.dst, out, alpha, icc=prep.icc, exif=prep.exif, quality=quality)
    return {"size": [int(out.shape[1]), int(out.shape[0])]}


# -- writing ------------------------------------------------------------------------------------


def _upright_exif(raw: bytes | None) -> bytes | None:
    # The pixels were rotated upright when decoded; an orientation tag left in the EXIF would
    # make viewers rotate them a second time.
    if not raw:
        return None
    try:
        exif = Image.Exif()
        exif.load(raw)
        exif.pop(0x0112, None)  # Orientation
        return exif.tobytes()
    except Exception:  # malformed EXIF: drop it rather than fail the image
        return None


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
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}{PARTIAL_SUFFIX}")
    try:
        img.save(tmp, format=fmt, **kwargs)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
