"""Synthetic unpaired datasets with ground truth, drawn with numpy and Pillow (no download).

Each task draws a random scene and renders it in two styles, A ("photo") and B. The two domains
are drawn from independent scenes, so the training data is unpaired, but for every test image
the other style's rendering of the *same* scene is saved too (``testA_gt/``, ``testB_gt/``), so a
translation can be scored with PSNR. The B rendering keeps the scene geometry and changes colour,
tone and texture only: a small CycleGAN can learn it in minutes on a CPU.

Every image comes from its own generator seeded with ``(seed, split, index)``: the same seed gives
the same bytes, and test image 7 is the same scene whatever ``n_train`` is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cyclekit.data.images import decode_image, list_images
from cyclekit.data.official import DatasetError, DatasetExistsError, make_root, replace_dir

# Up front limits: a typo (--size 100000) would otherwise ask for hundreds of GB in one array.
MAX_SIZE = 1024  # image side; each image is drawn at 2x this before the box filter
MAX_IMAGES = 100_000  # per split

# Shapes are drawn at SS x the output size and box-filtered down: smooth, anti-aliased edges.
SS = 2
RGB = tuple[int, int, int]

# ------------------------------------------------------------------------------------------------
# Landscapes (day2night, summer2winter): one scene, rendered by a style that recolours each role.

HILL_GREENS: list[RGB] = [(86, 150, 60), (110, 170, 70), (70, 130, 55), (130, 175, 80)]
WALLS: list[RGB] = [(225, 205, 165), (190, 95, 70), (200, 200, 195), (235, 220, 140)]
ROOFS: list[RGB] = [(150, 50, 40), (110, 70, 45), (80, 85, 100)]
CROWNS: list[RGB] = [(50, 120, 45), (75, 140, 50)]
SUN, WINDOW, DOOR, TRUNK = (250, 215, 60), (70, 90, 115), (100, 65, 40), (95, 65, 40)

# A style: (sky top, sky at the horizon) and role -> (day colour -> colour).
Style = tuple[tuple[RGB, RGB], Callable[[str, RGB], RGB]]


def _mix(c: RGB, gain: float, add: RGB) -> RGB:
    return tuple(int(min(255, max(0, round(gain * v + a)))) for v, a in zip(c, add, strict=True))


def _day(role: str, c: RGB) -> RGB:
    return c


def _night(role: str, c: RGB) -> RGB:
    if role == "sun":
        return (235, 235, 215)  # the moon, in the sun's place
    if role == "window":
        return (255, 205, 90)  # lit windows
    if role in ("wall", "roof", "door", "trunk"):
        return _mix(c, 0.30, (5, 8, 30))
    return _mix(c, 0.22, (0, 10, 35))  # hills, ground, tree crowns: dark blue-green


def _winter(role: str, c: RGB) -> RGB:
    if role in ("hill", "ground"):
        return _mix(c, 0.15, (200, 205, 222))  # snow, keeping hills apart by a few levels
    if role == "crown":
        return _mix(c, 0.5, (150, 150, 160))  # snow-dusted trees
    if role == "roof":
        return (240, 242, 248)  # snow on the roofs
    if role == "sun":
        return (245, 240, 225)  # a pale winter sun
    return _mix(c, 0.85, (10, 10, 20))  # walls, doors, windows, trunks: slightly cooler


STYLES: dict[str, Style] = {
    "day": (((90, 150, 230), (200, 225, 250)), _day),
    "night": (((8, 12, 40), (35, 45, 95)), _night),
    "winter": (((150, 160, 180), (215, 220, 230)), _winter),
}


def _landscape(rng: np.random.Generator, s: int) -> list[tuple[str, str, list[float], RGB]]:
    """A random scene on an s x s canvas: (role, "ellipse"|"rect"|"poly", coords, day colour)."""
    U = lambda lo, hi: float(rng.uniform(lo, hi)) * s
    horizon = U(0.45, 0.62)
    shapes = []
    cx, cy, r = U(0.1, 0.9), U(0.08, 0.3), U(0.05, 0.1)
    shapes.append(("sun", "ellipse", [cx - r, cy - r, cx + r, cy + r], SUN))
    for _ in range(int(rng.integers(1, 4))):
        hx, rx, ry = U(0.0, 1.0), U(0.3, 0.7), U(0.12, 0.3)
        top = horizon - ry * float(rng.uniform(0.3, 0.8))
        col = HILL_GREENS[int(rng.integers(len(HILL_GREENS)))]
        shapes.append(("hill", "ellipse", [hx - rx, top, hx + rx, top + 2 * ry], col))
    shapes.append(("ground", "rect", [0, horizon, s, s], HILL_GREENS[int(rng.integers(4))]))
    for _ in range(int(rng.integers(0, 3))):
        tx, base, cr = U(0.05, 0.95), U(0.65, 0.95), U(0.05, 0.09)
        shapes.append(("trunk", "rect", [tx - 0.2 * cr, base - 2 * cr, tx + 0.2 * cr, base], TRUNK))
        crown = [tx - cr, base - 3.6 * cr, tx + cr, base - 1.6 * cr]
        shapes.append(("crown", "ellipse", crown, CROWNS[int(rng.integers(len(CROWNS)))]))
    for _ in range(int(rng.integers(1, 4))):
        w, h = U(0.14, 0.24), U(0.12, 0.2)
        x0, base = U(0.0, 1.0) - w / 2, U(0.62, 0.95)
        y0 = base - h
        shapes.append(("wall", "rect", [x0, y0, x0 + w, base], WALLS[int(rng.integers(4))]))
        roof = [x0 - 0.1 * w, y0, x0 + 1.1 * w, y0, x0 + w / 2, y0 - 0.55 * h]
        shapes.append(("roof", "poly", roof, ROOFS[int(rng.integers(len(ROOFS)))]))
        ww = 0.22 * w
        for fx in (0.14, 0.64):  # two windows, then a door between them
            wx, wy = x0 + fx * w, y0 + 0.22 * h
            shapes.append(("window", "rect", [wx, wy, wx + ww, wy + ww], WINDOW))
        dx = x0 + 0.4 * w
        shapes.append(("door", "rect", [dx, base - 0.45 * h, dx + 0.2 * w, base], DOOR))
    return shapes


def _render_landscape(shapes: list, size: int, style: str) -> np.ndarray:
    (top, bottom), recolour = STYLES[style]
    s = size * SS
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
    sky = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    img = Image.fromarray(np.broadcast_to(sky, (s, s, 3)).round().astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for role, kind, xy, colour in shapes:
        fill = recolour(role, colour)
        if kind == "ellipse":
            draw.ellipse(xy, fill=fill)
        elif kind == "rect":
            draw.rectangle(xy, fill=fill)
        else:
            draw.polygon(xy, fill=fill)
    return np.asarray(img.reduce(SS))


def _landscape_task(style_a: str, style_b: str) -> Callable:
    def generate(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        shapes = _landscape(rng, size * SS)
        return _render_landscape(shapes, size, style_a), _render_landscape(shapes, size, style_b)

    return generate


# ------------------------------------------------------------------------------------------------
# photo2poster: softly shaded, muted shapes -> flat vivid poster colours with dark outlines.

POSTER: list[RGB] = [
    (220, 40, 40), (245, 160, 30), (240, 215, 40), (60, 170, 70),
    (40, 150, 200), (50, 70, 190), (150, 60, 170), (235, 110, 160),
]  # fmt: skip
# The photo shows each poster colour muted (halfway to grey) so that the colour classes stay far
# apart: the mapping is "recognise the class, flatten the shading, outline the edges".
MUTED = [tuple(int(0.55 * v + 0.45 * 128) for v in c) for c in POSTER]
POSTER_PAPER, OUTLINE = (245, 235, 210), (25, 20, 30)


def _photo2poster(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    s = size * SS
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)
    # photo background: a soft diagonal grey-beige gradient; poster background: flat paper.
    g0, g1 = rng.uniform(150, 190), rng.uniform(195, 235)
    ramp = g0 + (g1 - g0) * (0.6 * t[:, None] + 0.4 * t[None, :])
    photo = ramp[:, :, None] * np.array([1.0, 0.97, 0.9], np.float32)
    poster = Image.new("RGB", (s, s), POSTER_PAPER)
    pdraw = ImageDraw.Draw(poster)
    line = max(1, round(s / 40))
    for _ in range(int(rng.integers(3, 7))):
        k = int(rng.integers(len(POSTER)))
        cx, cy = rng.uniform(0.1, 0.9, 2) * s
        rx, ry = rng.uniform(0.08, 0.25, 2) * s
        kind = int(rng.integers(3))
        if kind == 0:
            xy: list[float] = [cx - rx, cy - ry, cx + rx, cy + ry]
        else:
            n = 3 if kind == 1 else 4
            a = rng.uniform(0, 2 * np.pi) + np.arange(n) * 2 * np.pi / n
            xy = np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1).ravel().tolist()
        mask_img = Image.new("L", (s, s), 0)
        mdraw = ImageDraw.Draw(mask_img)
        (mdraw.ellipse if kind == 0 else mdraw.polygon)(xy, fill=255)
        ys, xs = np.nonzero(np.asarray(mask_img) > 127)
        # Photo: light from a random side, brighter centre, darker rim (factor ~0.7 .. 1.15).
        lx, ly = rng.uniform(-1, 1, 2)
        d = np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
        shade = 1.1 - 0.25 * np.clip(d, 0, 1.2) + 0.08 * (lx * (xs - cx) + ly * (ys - cy)) / s
        photo[ys, xs] = np.array(MUTED[k], np.float32) * shade[:, None].astype(np.float32)
        (pdraw.ellipse if kind == 0 else pdraw.polygon)(
            xy, fill=POSTER[k], outline=OUTLINE, width=line
        )
    photo = photo.reshape(size, SS, size, SS, 3).mean((1, 3))  # the same box filter as reduce()
    photo += rng.normal(0.0, 3.0, photo.shape)  # a little sensor grain
    return np.clip(photo, 0, 255).round().astype(np.uint8), np.asarray(poster.reduce(SS))


# ------------------------------------------------------------------------------------------------
# day2film: a mild task, the kind many real ones are (a colour grade, a film look): the output
# stays close to the input, so a model must first learn to do almost nothing.

WARM = np.array([1.05, 1.0, 0.86], np.float32)  # a warm tint: more red, less blue


def film_look(rgb: np.ndarray) -> np.ndarray:
    """A fixed film grade: gentle S-curve, 15 % less saturation, warm tint, lifted blacks."""
    x = rgb.astype(np.float32) / 255.0
    x = x + 0.6 * x * (1.0 - x) * (x - 0.5)  # S-curve: a little more contrast in the mids
    grey = x.mean(axis=2, keepdims=True)
    x = grey + 0.85 * (x - grey)
    x = 0.06 + 0.9 * np.clip(x * WARM, 0.0, 1.0)  # blacks lifted to 6 %, whites to 96 %
    return np.clip(x * 255.0, 0, 255).round().astype(np.uint8)


def _day2film(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    day = _render_landscape(_landscape(rng, size * SS), size, "day")
    return day, film_look(day)


# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthTask:
    """``generate(rng, size)`` -> (A rendering, B rendering) of one random scene, (size, size, 3)
    uint8 each. ``mild``: B is close to A (doing nothing already scores above 20 dB)."""

    generate: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    description: str
    mild: bool = False


SYNTH_TASKS: dict[str, SynthTask] = {
    "day2night": SynthTask(
        _landscape_task("day", "night"),
        "landscapes with houses by day -> the same by night (dark blue, moon, lit windows)",
    ),
    "summer2winter": SynthTask(
        _landscape_task("day", "winter"),
        "green summer landscapes -> the same under snow (white hills, snowy roofs, grey sky)",
    ),
    "photo2poster": SynthTask(
        _photo2poster,
        "softly shaded muted shapes -> flat vivid poster colours with dark outlines",
    ),
    "day2film": SynthTask(
        _day2film,
        "daylight landscapes -> the same with a film grade (warm, softer colour, lifted blacks)",
        mild=True,
    ),
}

SPLITS = ("trainA", "trainB", "testA", "testB")


def _save_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, format="PNG", optimize=False, compress_level=6)


def make_synthetic(
    name: str,
    root: Path,
    n_train: int = 200,
    n_test: int = 50,
    size: int = 64,
    seed: int = 0,
    force: bool = False,
    made_by: str | None = None,
) -> Path:
    """Write ``root/name/{trainA,trainB,testA,testB,testA_gt,testB_gt}`` and return that folder.

    ``testA_gt/X.png`` is the B-style rendering of the scene in ``testA/X.png`` (and
    ``testB_gt/`` the A-style one of ``testB/``); ``made_by`` is recorded in synth.json. The
    folder is built beside the target and renamed into place at the end; an existing target is
    an error unless ``force``. Bad arguments, a full disk or an unwritable ``root`` raise
    :class:`DatasetError`.
    """
    if name not in SYNTH_TASKS:
        raise DatasetError(f"unknown synthetic task {name!r}; choose from {', '.join(SYNTH_TASKS)}")
    if not 16 <= size <= MAX_SIZE:
        raise DatasetError(f"--size must be 16 to {MAX_SIZE} pixels, got {size}")
    if n_train < 1 or n_test < 1:
        raise DatasetError(
            f"need at least one train and one test image (got --n {n_train}, --n-test {n_test})"
        )
    if max(n_train, n_test) > MAX_IMAGES:
        raise DatasetError(
            f"--n and --n-test are limited to {MAX_IMAGES:,} images per folder "
            f"(got {n_train:,}, {n_test:,})"
        )
    if not 0 <= seed < 2**63:
        raise DatasetError(f"--seed must be a non-negative integer below 2**63, got {seed}")
    root, task = Path(root), SYNTH_TASKS[name]
    target = root / name
    if target.exists() and not force:
        raise DatasetExistsError(f"{target} already exists (use --force to replace it)")
    make_root(root)
    # PNGs of these pictures are far smaller than raw pixels; raw is the safe upper bound.
    need = (2 * n_train + 4 * n_test) * (3 * size * size + 1024)
    free = shutil.disk_usage(root).free
    if need > free:
        raise DatasetError(
            f"--root {root}: {2 * n_train + 4 * n_test:,} images of {size}x{size} may need up "
            f"to {need / 2**20:,.0f} MiB, but only {free / 2**20:,.0f} MiB are free"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    try:
        for sub in (*SPLITS, "testA_gt", "testB_gt"):
            (tmp / sub).mkdir()
        for split_id, split in enumerate(SPLITS):
            n = n_train if split.startswith("train") else n_test
            for i in range(n):
                rng = np.random.default_rng([seed, split_id, i])
                a, b = task.generate(rng, size)
                shown, other = (a, b) if split.endswith("A") else (b, a)
                _save_png(shown, tmp / split / f"{i:05d}.png")
                if split.startswith("test"):
                    _save_png(other, tmp / f"{split}_gt" / f"{i:05d}.png")
        meta = dict(task=name, description=task.description, n_train=n_train, n_test=n_test)
        meta.update(size=size, seed=seed)
        if made_by:
            meta["made_by"] = made_by  # lets that tool know the folder is its own to replace
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, target)
    except OSError as e:  # disk full, permissions: name the folder, leave nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"--root {root}: cannot write {name} ({e.strerror or e})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# ------------------------------------------------------------------------------------------------
# Scoring


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images of the same shape (inf if equal)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def folder_psnr(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> float:
    """Mean PSNR over the images of ``gt_dir`` against the same-stem images of ``pred_dir``.

    ``folder_psnr(ds / "testA", ds / "testA_gt")`` is the "do nothing" baseline.
    """
    preds = {p.relative_to(pred_dir).with_suffix("").as_posix(): p for p in list_images(pred_dir)}
    scores = []
    for g in list_images(gt_dir):
        key = g.relative_to(gt_dir).with_suffix("").as_posix()
        if key not in preds:
            raise DatasetError(f"{pred_dir}: no image for ground truth {g.name}")
        scores.append(psnr(decode_image(preds[key]).pixels, decode_image(g).pixels))
    if not scores:
        raise DatasetError(f"{gt_dir}: no ground-truth images")
    return float(np.mean(scores))
