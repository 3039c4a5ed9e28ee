"""Finding image files and decoding them into plain uint8 arrays with Pillow.

Every decode goes through :func:`decode_image`, so training and translation treat EXIF
orientation, palettes, alpha, CMYK and 16-bit files the same way.

Image size limits: Pillow's guard against decompression bombs is one process-wide setting
(``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 megapixels by default) that turns a large file into a
warning or an exception from deep inside Pillow. Here the size is checked from the header,
before any pixel is decoded, against a limit per call: Pillow's unless the caller deliberately
allows more (``cyclekit translate`` does, for big scans). A file over the limit is an
:class:`ImageDecodeError` like any other unreadable file.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cyclekit.errors import CyclekitError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageDecodeError(CyclekitError):
    """An image file that cannot be used; ``str()`` is a one-line 'path: reason'."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:  # a dangling link, or a file removed meanwhile
        return None
    return st.st_dev, st.st_ino


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files below ``root`` (recursive, any letter case), sorted for determinism.

    The files of :func:`iter_images`, sorted by path.
    """
    return sorted(iter_images(root))


def iter_images(
    root: str | os.PathLike,
    skip: Collection[tuple[int, int]] = (),
    extensions: Collection[str] = IMAGE_EXTENSIONS,
) -> Iterator[Path]:
    """Image files below ``root``, yielded as the folders are read (a huge tree streams).

    Order: a folder's files (sorted by name), then its subfolders (sorted), depth first; the
    same on every run. Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are
    skipped. Symbolic links are followed, but each real folder is entered once and each real
    file listed once (by the first path that reaches it in that order), so a link loop neither
    hangs the search nor lists one image many times. Memory is flat in the number of files:
    one int a file is remembered (its identity) and nothing is decoded.
    Folders whose (st_dev, st_ino) is in ``skip`` are not entered (translate's output folder).
    ``extensions`` (lower case, with the dot) chooses the files: images unless told otherwise
    (translate also lists videos).
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageDecodeError(f"{root}: not a folder")
    seen_dirs = {_identity(root), *skip}
    seen_files: set[int] = set()
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=_by_name)
        except OSError:  # unreadable or removed meanwhile: as os.walk, skip it
            continue
        subfolders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                ident = _identity(entry.path)
                if ident is not None and ident not in seen_dirs:
                    seen_dirs.add(ident)
                    subfolders.append(entry.path)
                continue
            if os.path.splitext(entry.name)[1].lower() not in extensions:
                continue
            try:
                st = entry.stat()  # follows a link: the file it points to
            except OSError:  # a dangling link, or a file removed meanwhile
                continue
            key = (st.st_dev << 64) | st.st_ino  # one int: ~60 bytes a file in the set
            if key in seen_files:
                continue
            seen_files.add(key)
            yield Path(entry.path)
        stack.extend(reversed(subfolders))


def _by_name(entry: os.DirEntry) -> str:
    return entry.name


@dataclass
class DecodedImage:
    """``pixels``: (H, W, C) uint8, C = 3 (RGB) or 1 (gray); ``alpha``: (H, W) uint8 or None."""

    pixels: np.ndarray
    alpha: np.ndarray | None
    icc_profile: bytes | None
    exif: bytes | None
    # Problems Pillow noticed but decoded past (e.g. "Corrupt EXIF data"), one line each,
    # for the caller to report with the file's name (instead of a raw UserWarning).
    warnings: tuple[str, ...] = field(default=())
    # (height, width) of the upright image in the file, when ``pixels`` were decoded smaller
    # (decode_image's ``shrink``); None: ``pixels`` have the file's size.
    file_hw: tuple[int, int] | None = None

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


# One lock for the two kinds of process-wide Pillow state touched here: warning filters and
# the decompression-bomb limit. Held only around header parsing, and around the decoding of
# an image deliberately allowed past Pillow's limit (rare, and then better one at a time).
_PILLOW_LOCK = threading.RLock()


@contextlib.contextmanager
def pillow_warnings() -> Iterator[list[str]]:
    """Collect the warnings Pillow emits inside the block as one-line messages.

    Pillow reports damaged metadata (a cut-off EXIF block) with ``warnings.warn``, which would
    print a raw ``UserWarning`` with Pillow's source path. ``catch_warnings`` changes
    process-wide state, so blocks are serialised (keep them short: metadata parsing, not
    decoding). Warnings from outside Pillow are passed on unchanged.
    """
    messages: list[str] = []
    with _PILLOW_LOCK:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        for w in caught:
            if "PIL" in Path(w.filename).parts:
                text = " ".join(str(w.message).split())
                if text not in messages:
                    messages.append(text)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@contextlib.contextmanager
def _without_pillow_limit() -> Iterator[int | None]:
    """Pillow's own limit lifted inside the block (the caller checks sizes itself); yields it.

    ``PIL.Image.MAX_IMAGE_PIXELS`` is one global, read inside ``open()`` and, for TIFF, inside
    ``load()``: it is restored on exit, and the lock keeps other cyclekit threads from reading
    the lifted value meanwhile."""
    with _PILLOW_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield limit
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _open(path: Path, max_pixels: int | None, notes: list[str]) -> tuple[Image.Image, bool]:
    """``Image.open`` (header only) with a size limit of ``max_pixels`` (None: Pillow's own,
    ``PIL.Image.MAX_IMAGE_PIXELS``), checked here, before anything is decoded, as a one-line
    :class:`ImageDecodeError` rather than Pillow's warning or exception. Pillow's warnings
    about the header (a JPEG's EXIF is parsed here) are added to ``notes``.

    Returns the image and whether it is over Pillow's limit (then load it with the limit
    lifted: :func:`_load`)."""
    if path.stat().st_size == 0:
        raise ImageDecodeError(f"{path}: file is empty")
    with _without_pillow_limit() as pillow_limit, pillow_warnings() as found:
        img = Image.open(path)
    notes += found
    w, h = img.size
    limit = pillow_limit if max_pixels is None else max_pixels
    if limit is not None and w * h > limit:
        img.close()
        raise ImageDecodeError(
            f"{path}: image too large ({w}x{h} px, {w * h / 1e6:.0f} megapixels; the limit is "
            f"{limit / 1e6:.0f} megapixels)"
        )
    return img, pillow_limit is not None and w * h > pillow_limit


def _load(img: Image.Image, over_pillow_limit: bool) -> None:
    if over_pillow_limit:  # allowed by the caller: let Pillow's TIFF reader past its check
        with _without_pillow_limit():
            img.load()
    else:
        img.load()


@contextlib.contextmanager
def _pillow_errors(path: Path, what: str) -> Iterator[None]:
    """Pillow's and the OS's many exceptions for a bad file, as one :class:`ImageDecodeError`."""
    try:
        yield
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(f"{path}: {what} ({e})") from None


def image_size(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) of ``path`` as displayed (EXIF orientation applied), from its header.

    For scanning a folder quickly: nothing is decoded. Raises :class:`ImageDecodeError` (one
    line, naming the file) for an empty, unreadable or damaged file, or one of more than
    ``max_pixels`` pixels (default: Pillow's decompression-bomb limit, 89.5 megapixels unless
    changed): the files :func:`decode_image` would refuse before decoding.
    """
    path = Path(path)
    with _pillow_errors(path, "cannot read image header"):
        img, _ = _open(path, max_pixels, [])
        with img, pillow_warnings():
            w, h = img.size
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # broken EXIF is not worth dropping the image for
                orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def decode_image(
    path: str | os.PathLike,
    channels: int = 3,
    composite_alpha: bool = True,
    max_pixels: int | None = None,
    shrink: Callable[[int, int], tuple[int, int]] | None = None,
) -> DecodedImage:
    """Read ``path`` upright (EXIF orientation applied) as RGB (``channels=3``) or gray (1).

    Transparent images are composited on white when ``composite_alpha``; otherwise their
    alpha channel is returned separately. Raises :class:`ImageDecodeError` on any failure,
    including a file of more than ``max_pixels`` pixels, checked before decoding (default:
    Pillow's limit; a caller may deliberately allow more, as translate does for big scans).

    ``shrink(h, w)``, given the upright image's size, says what size the caller will resize it
    to; a JPEG is then decoded at a reduced scale (1/2, 1/4 or 1/8, in the DCT, as Pillow's
    ``thumbnail`` does) still :data:`DRAFT_MARGIN` times that size, and ``file_hw`` keeps its
    full size.
    """
    path = Path(path)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    notes: list[str] = []
    with _pillow_errors(path, "cannot decode image"):
        img, over_pillow_limit = _open(path, max_pixels, notes)
        with img:
            file_hw = _draft(img, shrink, notes) if shrink is not None else None
            _load(img, over_pillow_limit)  # the full decode now, so truncation errors surface
            icc = img.info.get("icc_profile")
            with pillow_warnings() as found:
                img = ImageOps.exif_transpose(img)
                # Read after the transpose: Pillow drops the Orientation tag from the rotated
                # image's EXIF, so writing it back cannot make viewers rotate a second time.
                exif = img.info.get("exif")
            notes += [n for n in found if n not in notes]
            if notes:
                exif = None  # damaged: not worth copying into an output
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
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if alpha is not None and composite_alpha:
        a = alpha.astype(np.float32)[:, :, None] / 255.0
        pixels = np.rint(pixels * a + 255.0 * (1.0 - a)).astype(np.uint8)
        alpha = None
    return DecodedImage(pixels, alpha, icc, exif, tuple(notes), file_hw)


# A reduced JPEG decode keeps at least this many times the size it is resized to. Measured on
# a 4096x3072 JPEG of 192 horse2zebra photos at full detail, resized to 256x192 (and 512x384)
# against a full decode: a margin of 2 (Pillow's thumbnail) left a mean difference of 1.32/255
# (1.13), above the 1/255 translate keeps to elsewhere; 3 left 0.37/255 (0.30), 95% of pixels
# within 1/255, and decoded in 68 ms (88 ms) against 304 ms (235 ms) in full.
DRAFT_MARGIN = 3

# EXIF orientations that turn the image a quarter (width and height swap when upright).
_QUARTER_TURNS = (5, 6, 7, 8)


def _draft(
    img: Image.Image, shrink: Callable[[int, int], tuple[int, int]], notes: list[str]
) -> tuple[int, int] | None:
    """Ask a JPEG decoder for the smallest DCT scale that keeps :data:`DRAFT_MARGIN` times
    ``shrink``'s size, for the final Lanczos resize to work from. Returns the upright (h, w)
    in the file if it will decode smaller, else None."""
    if img.format not in ("JPEG", "MPO"):
        return None
    with pillow_warnings() as found:  # (a JPEG's EXIF is in its header, read at open)
        orientation = img.getexif().get(0x0112, 1)
    notes += [n for n in found if n not in notes]
    w, h = img.size
    turned = orientation in _QUARTER_TURNS
    file_hw = (w, h) if turned else (h, w)
    th, tw = shrink(*file_hw)
    if turned:
        th, tw = tw, th
    want = (DRAFT_MARGIN * tw, DRAFT_MARGIN * th)
    if not (want[0] < w and want[1] < h):
        return None
    img.draft(None, want)
    return file_hw if img.size != (w, h) else None
