"""Finding image files and decoding them into plain uint8 arrays with Pillow.

Every decode goes through :func:`decode_image`, so training and translation treat EXIF
orientation, palettes, alpha, CMYK and 16-bit files the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cyclekit.errors import CyclekitError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageDecodeError(CyclekitError):
    """An image file that cannot be used; ``str()`` is a one-line 'path: reason'."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files below ``root`` (recursive, any letter case), sorted for determinism.

    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and is_image_file(name):
                found.append(Path(dirpath) / name)
    return sorted(found)


@dataclass
class DecodedImage:
    """``pixels``: (H, W, C) uint8, C = 3 (RGB) or 1 (gray); ``alpha``: (H, W) uint8 or None."""

    pixels: np.ndarray
    alpha: np.ndarray | None
    icc_profile: bytes | None
    exif: bytes | None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow reports sizes."""
        return self.pixels.shape[1], self.pixels.shape[0]


def _to_8bit(img: Image.Image) -> Image.Image:
    # 16/32-bit integer and float modes: scale the full range to 0..255 rather than clipping,
    # which is what Pillow's convert("L") would do (16-bit photos would come out white).
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
        arr = arr.astype(np.float64) / 65535.0 * 255.0
    elif img.mode == "F":
        lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=1.0))
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def decode_image(
    path: str | os.PathLike, channels: int = 3, composite_alpha: bool = True
) -> DecodedImage:
    """Read ``path`` upright (EXIF orientation applied) as RGB (``channels=3``) or gray (1).

    Transparent images are composited on white when ``composite_alpha``; otherwise their
    alpha channel is returned separately. Raises :class:`ImageDecodeError` on any failure.
    """
    path = Path(path)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError(f"{path}: file is empty")
        with Image.open(path) as img:
            img.load()  # force the full decode here so truncation errors surface now
            icc = img.info.get("icc_profile")
            img = ImageOps.exif_transpose(img)
            # Read after the transpose: Pillow drops the Orientation tag from the rotated
            # image's EXIF, so writing it back cannot make viewers rotate a second time.
            exif = img.info.get("exif")
            alpha = None
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
                if img.mode in ("RGBa", "La"):
                    img = img.convert("RGBA")
                alpha = np.asarray(img.getchannel("A")).copy()
                img = img.convert("RGB" if img.mode in ("RGBA", "PA") else "L")
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                img = _to_8bit(img)
            if img.mode == "1":
                img = img.convert("L")
            img = img.convert("L" if channels == 1 else "RGB")
            pixels = np.asarray(img).copy()
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"{path}: cannot decode image ({e})") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if alpha is not None and composite_alpha:
        a = alpha.astype(np.float32)[:, :, None] / 255.0
        pixels = np.rint(pixels * a + 255.0 * (1.0 - a)).astype(np.uint8)
        alpha = None
    return DecodedImage(pixels=pixels, alpha=alpha, icc_profile=icc, exif=exif)
