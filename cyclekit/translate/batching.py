"""Batching for ``cyclekit translate``: pad an image to the sizes a generator takes, group
same-size images into batches, hand them to a runner, tile those too big for memory.

No torch here (``cyclekit translate`` on OpenVINO starts without it, see
:mod:`cyclekit.translate.deferred`): whole images go to the runner as numpy arrays when it
takes them (``runner.numpy_io``), else as torch tensors; tiles always run in torch
(:mod:`cyclekit.translate.tiling`).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from cyclekit.choices import side_multiple
from cyclekit.translate.deferred import torch_module

# The smallest tile (--tile, and automatic tiling) whose result cannot be told from the untiled
# one; from 256 px on, the overlap is its full 128 px. Measured on three horse2zebra test
# photos, resnet_9blocks ngf=64 with the official random init, fp32, |tiled - untiled| of the
# uint8 outputs (mean / max, in 1/255 steps):
#   256 px photos: tile 64: 9.6 / 138; 96: 2.6 / 53; 128: 0.75 / 21; 192: 0.07 / 3
#   512 px photos: tile 192: 0.13 / 4; 256: 0.022 / 1; 320: 0.011 / 1; 384: 0.010 / 1
# At 256 px and up, only rounding differs (max 1 step); below, errors show as seams.
MIN_TILE = 256

# Peak activation memory of an untiled forward pass, in floats per pixel per unit of ngf
# (measured on resnet_9blocks, ngf=64, 1024x1024: 14 bytes in fp32, 10 in bf16; rounded up).
_PEAK_FLOATS_PER_PIXEL_NGF = 4


def geometry(spec: dict[str, Any]) -> tuple[int, int]:
    """(multiple, smallest side) the generator's input must have, after padding.

    ResNet generators downsample twice (sides multiple of 4), and their residual blocks
    reflect-pad by 1 at 1/4 scale, which needs at least 2 pixels there: 8 at full scale.
    """
    m = side_multiple(spec["arch"])
    return m, (2 * m if spec["arch"].startswith("resnet") else m)


def padded_size(h: int, w: int, spec: dict[str, Any]) -> tuple[int, int]:
    m, smallest = geometry(spec)
    return max(math.ceil(h / m) * m, smallest), max(math.ceil(w / m) * m, smallest)


def pad_image(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Reflect-pad (H, W, C) pixels on the bottom and right to ``size`` = (H', W').

    Reflection (not zeros) keeps the border statistics natural, so the crop back to the
    original size shows no dark rim. numpy repeats the reflection when the pad is larger
    than the image, which tiny images need.
    """
    ph, pw = size[0] - pixels.shape[0], size[1] - pixels.shape[1]
    if ph == 0 and pw == 0:
        return pixels
    return np.pad(pixels, ((0, ph), (0, pw), (0, 0)), mode="reflect")


def peak_bytes(spec: dict[str, Any], h: int, w: int, batch: int = 1) -> int:
    """Rough peak activation memory of an untiled forward pass on ``batch`` images of h x w."""
    return _PEAK_FLOATS_PER_PIXEL_NGF * 4 * spec["ngf"] * h * w * batch


def pixels_to_input(batch: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [-1, 1]: the same float32 operations as
    :func:`cyclekit.translate.tiling.to_model_input`, so the same bits (tested)."""
    x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
    x /= np.float32(255.0)
    x -= np.float32(0.5)
    x /= np.float32(0.5)
    return x


def output_to_pixels(y: np.ndarray) -> np.ndarray:
    """(N, C, H, W) float32 in [-1, 1] -> (N, H, W, C) uint8, rounded half to even like
    :func:`cyclekit.translate.tiling.from_model_output` (tested); reuses ``y``'s memory."""
    y = np.asarray(y, dtype=np.float32)
    y += np.float32(1.0)
    y *= np.float32(127.5)
    np.rint(y, out=y)
    np.clip(y, 0, 255, out=y)
    return y.astype(np.uint8).transpose(0, 2, 3, 1)


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` says memory ran out (CPU, CUDA or MPS): that image fails, the run goes on."""
    text = str(e).lower()
    return isinstance(e, MemoryError) or any(
        s in text for s in ("out of memory", "can't allocate memory", "not enough memory")
    )


class Batcher:
    """Collects padded images, runs same-size ones as one batch, tiles those too big.

    ``add`` and ``flush`` return the finished (item, output) pairs: output is the padded
    (H, W, C') uint8 result, or the out-of-memory error that made that image fail (any other
    exception is a bug and propagates).
    """

    def __init__(
        self,
        model: Any,
        spec: dict[str, Any],
        run: Callable[[Any], Any],
        batch_size: int,
        budget_bytes: int,
        tile: int | None = None,
        stats_filter: Callable[[dict], dict] | None = None,
        tiled_run: Callable[[Any], Any] | None = None,
    ) -> None:
        self.model, self.spec, self.run = model, spec, run
        # Tiles need the torch modules (their norm statistics are shared through hooks): a
        # faster backend in ``run`` serves whole images only.
        self.tiled_run = tiled_run or run
        self.batch_size, self.budget, self.tile = batch_size, budget_bytes, tile
        self.stats_filter = stats_filter  # for tiled images only (see run_tiled)
        self.multiple = geometry(spec)[0]
        self.pending: dict[tuple[int, ...], list[tuple[Any, np.ndarray]]] = {}
        # Batches started on a runner that can work in the background (``run.submit``, see
        # backends.OpenVinoRunner): their images are decoded while the model runs.
        self.in_flight: collections.deque[tuple[list[tuple[Any, np.ndarray]], Any]] = (
            collections.deque()
        )

    def _to_input(self, batch: np.ndarray) -> Any:
        if getattr(self.run, "numpy_io", False):
            return pixels_to_input(batch)
        from cyclekit.translate.tiling import to_model_input

        return to_model_input(batch)

    def _from_output(self, y: Any) -> np.ndarray:
        if isinstance(y, np.ndarray):
            return output_to_pixels(y)
        from cyclekit.translate.tiling import from_model_output

        return from_model_output(y, inplace=True)

    def _max_batch(self, h: int, w: int) -> int:
        return max(1, min(self.batch_size, self.budget // max(1, peak_bytes(self.spec, h, w))))

    def tile_for(self, h: int, w: int) -> int | None:
        """The tile side a padded h x w image will be translated in; None: untiled."""
        return self._tile_for(h, w)

    def _tile_for(self, h: int, w: int) -> int | None:
        if self.tile is not None:
            return self.tile if max(h, w) > self.tile else None
        if peak_bytes(self.spec, h, w) <= self.budget:
            return None
        # Automatic: the largest tile whose pass takes half the budget (the guide pass and
        # the output buffers need the rest), at most 1024.
        # Never below MIN_TILE (for a tiny --memory-budget and a wide generator that may take
        # more memory than asked: a visibly different result would be worse).
        side = int(math.sqrt(self.budget / 2 / peak_bytes(self.spec, 1, 1)))
        side = max(MIN_TILE, min(1024, side))
        return max(self.multiple, side // self.multiple * self.multiple)

    def add(self, item: Any, pixels: np.ndarray) -> list[tuple[Any, np.ndarray | Exception]]:
        h, w = pixels.shape[:2]
        tile = self._tile_for(h, w)
        if tile is not None:
            try:
                import torch

                from cyclekit.translate import tiling

                guide = max(self.multiple**2, self.budget // peak_bytes(self.spec, 1, 1))
                # uint8, converted a tile at a time: a 200-megapixel scan needs 0.6 GB here,
                # not 2.4 GB as float.
                x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
                y = tiling.run_tiled(
                    torch_module(self.model),
                    x,
                    self.tiled_run,
                    tile,
                    self.multiple,
                    guide_pixels=guide,
                    batch_size=self._max_batch(tile, tile),
                    stats_filter=self.stats_filter,
                )
                del x
                return [(item, tiling.from_model_output(y, inplace=True)[0])]
            except (RuntimeError, MemoryError) as e:
                if not out_of_memory(e):
                    raise  # a bug, not this image's fault: keep the traceback
                return [(item, e)]
        group = self.pending.setdefault(pixels.shape, [])
        group.append((item, pixels))
        if len(group) >= self._max_batch(h, w):
            return self._run_group(pixels.shape)
        if sum(len(g) for g in self.pending.values()) >= 2 * self.batch_size:
            # Many sizes in flight: don't hold decoded images forever.
            return self._run_group(max(self.pending, key=lambda k: len(self.pending[k])))
        return self._collect(wait_for=0)  # batches finished meanwhile go to be written

    def flush(self) -> list[tuple[Any, np.ndarray | Exception]]:
        done = []
        for key in list(self.pending):
            done += self._run_group(key)
        return done + self._collect(wait_for=len(self.in_flight))

    def _collect(self, wait_for: int) -> list[tuple[Any, np.ndarray | Exception]]:
        """Results of the batches in flight: the oldest ``wait_for`` waited for, then any
        others already finished (in the order they were started)."""
        done = []
        while self.in_flight and (wait_for > 0 or self.in_flight[0][1].ready):
            group, pending = self.in_flight.popleft()
            wait_for -= 1
            y = self._from_output(pending.result())
            done += [(item, out) for (item, _), out in zip(group, y, strict=True)]
        return done

    def _run_group(self, key: tuple[int, ...]) -> list[tuple[Any, np.ndarray | Exception]]:
        group = self.pending.pop(key)
        submit = getattr(self.run, "submit", None)
        if submit is not None and (len(group) > 1 or self.in_flight):
            # One batch running and one queued behind it keep the streams busy; a third
            # waits for the first.
            x = self._to_input(np.stack([p for _, p in group]))
            self.in_flight.append((group, submit(x)))
            return self._collect(wait_for=len(self.in_flight) - 2)
        try:
            # (One image, the CPU default: a view, not np.stack's copy.)
            x = self._to_input(
                group[0][1][None] if len(group) == 1 else np.stack([p for _, p in group])
            )
            y = self._from_output(self.run(x))
            return [(item, out) for (item, _), out in zip(group, y, strict=True)]
        except (RuntimeError, MemoryError) as e:
            if not out_of_memory(e):
                raise
            if len(group) == 1:
                return [(group[0][0], e)]
            # A batch that failed (e.g. out of memory) is retried one image at a time.
            done = []
            for item, p in group:
                self.pending[key] = [(item, p)]
                done += self._run_group(key)
            return done
