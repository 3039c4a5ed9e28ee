"""Training-time preprocessing, the official modes, with albumentations for the random parts.

Every random choice comes from a per-sample seed, so a sample looks the same whatever worker
decodes it and a resumed run sees the same crops and flips as an uninterrupted one.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

# albumentations otherwise checks PyPI for a newer version at import time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402


def _round_to(side: int, multiple: int) -> int:
    # As the official __make_power_2: nearest multiple, never below one multiple.
    return max(multiple, int(round(side / multiple)) * multiple)


def resized_size(
    w: int, h: int, preprocess: str, load_size: int, crop_size: int
) -> tuple[int, int]:
    """(w, h) after the deterministic resize step of ``preprocess`` (before any crop)."""
    if preprocess == "resize_and_crop":
        return load_size, load_size
    if preprocess.startswith("scale_width"):
        if w == load_size and h >= crop_size:
            return w, h
        return load_size, max(int(load_size * h / w), crop_size)
    return w, h  # crop, none


def needs_upscale(w: int, h: int, preprocess: str, load_size: int, crop_size: int) -> bool:
    """True when an image is smaller than the crop after resizing (it will be upscaled)."""
    if "crop" not in preprocess:
        return False
    rw, rh = resized_size(w, h, preprocess, load_size, crop_size)
    return min(rw, rh) < crop_size


def _resize_wh(pixels: np.ndarray, w: int, h: int) -> np.ndarray:
    """(H, W, C) -> (h, w, C); arguments in Pillow's (width, height) order."""
    if (pixels.shape[1], pixels.shape[0]) == (w, h):
        return pixels
    shrink = w < pixels.shape[1] and h < pixels.shape[0]
    # Area averaging when shrinking (no aliasing on big photos), bicubic when enlarging as the
    # official code does with PIL.
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    out = cv2.resize(pixels, (w, h), interpolation=interp)
    return out[:, :, None] if out.ndim == 2 else out


def image_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """One (H, W, C) uint8 image -> (C, H, W) float32 in [-1, 1] (ToTensor + Normalize(0.5))."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 127.5 - 1.0


class TrainTransform:
    """resize (by mode) -> upscale if smaller than the crop -> random crop -> random flip ->
    sides rounded to ``multiple`` -> tensor in [-1, 1]."""

    def __init__(
        self,
        preprocess: str = "resize_and_crop",
        load_size: int = 286,
        crop_size: int = 256,
        flip: bool = True,
        multiple: int = 4,
    ) -> None:
        self.preprocess, self.load_size, self.crop_size = preprocess, load_size, crop_size
        self.multiple = multiple
        self.crop = "crop" in preprocess
        steps = []
        if self.crop:
            steps.append(A.RandomCrop(crop_size, crop_size))
        if flip:
            steps.append(A.HorizontalFlip(p=0.5))
        self.random = A.Compose(steps, seed=0) if steps else None

    def __call__(self, pixels: np.ndarray, seed: int) -> torch.Tensor:
        h, w = pixels.shape[:2]
        rw, rh = resized_size(w, h, self.preprocess, self.load_size, self.crop_size)
        if self.crop and min(rw, rh) < self.crop_size:
            scale = self.crop_size / min(rw, rh)
            rw, rh = (
                max(self.crop_size, math.ceil(rw * scale)),
                max(self.crop_size, math.ceil(rh * scale)),
            )
        pixels = _resize_wh(pixels, rw, rh)
        if self.random is not None:
            self.random.set_random_seed(seed)
            pixels = self.random(image=pixels)["image"]
        if not self.crop:
            pixels = _resize_wh(pixels, _round_to(rw, self.multiple), _round_to(rh, self.multiple))
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        return image_to_tensor(pixels)


def eval_transform(pixels: np.ndarray, side: int, multiple: int = 4) -> torch.Tensor:
    """Deterministic view for sample grids: short side to ``side``, centre crop side x side."""
    h, w = pixels.shape[:2]
    scale = side / min(h, w)
    rw, rh = max(side, round(w * scale)), max(side, round(h * scale))
    pixels = _resize_wh(pixels, rw, rh)
    top, left = (rh - side) // 2, (rw - side) // 2
    pixels = pixels[top : top + side, left : left + side]
    side_m = _round_to(side, multiple)
    return image_to_tensor(_resize_wh(pixels, side_m, side_m))
