"""Two unpaired image folders as one dataset, sampled as the official code but seeded.

An epoch has max(|A|, |B|) samples: A in a shuffled order (indices modulo |A|), B drawn at
random. The whole epoch plan comes from (seed, epoch), so it can be replayed from any
position when a run resumes mid-epoch.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from cyclekit.data.images import ImageDecodeError, decode_image, list_images
from cyclekit.errors import CyclekitError


class DataError(CyclekitError):
    """A data folder that cannot be trained on; the message names the folder."""


@dataclass
class Domain:
    name: str  # "A" or "B"
    root: Path
    files: list[Path]
    sizes: list[tuple[int, int]]  # (w, h), upright
    bad: list[str]  # "path: reason" for each file that was skipped


def _upright_size(img: Image.Image) -> tuple[int, int]:
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is not worth dropping the image for
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _too_large(path: Path, e: Exception) -> str:
    # Pillow: "Image size (N pixels) exceeds limit of M pixels, could be decompression bomb..."
    found = re.findall(r"\d+", str(e))
    size = f"{int(found[0]):,} pixels, " if found else ""
    return (
        f"{path}: image too large to decode safely ({size}over Pillow's limit of "
        f"{Image.MAX_IMAGE_PIXELS:,}); downscale it to train on it"
    )


def scan_domain(name: str, root: str | Path) -> Domain:
    """List a domain's images and read their headers; unreadable files are set aside.

    Only headers are read (fast on big folders); files that break later, mid-decode, are
    skipped then. Images over Pillow's decompression-bomb limit are set aside too: decoding
    one would take gigabytes for a training crop of a few hundred pixels.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"domain {name}: folder {root} does not exist")
    files, sizes, bad = [], [], []
    for path in list_images(root):
        try:
            if path.stat().st_size == 0:
                raise ImageDecodeError(f"{path}: file is empty")
            with warnings.catch_warnings():
                # Between 1x and 2x the limit Pillow only warns; treat both alike.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    size = _upright_size(img)
        except ImageDecodeError as e:
            bad.append(str(e))
            continue
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            bad.append(_too_large(path, e))
            continue
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            reason = "not an image Pillow can read" if isinstance(e, UnidentifiedImageError) else e
            bad.append(f"{path}: {reason}")
            continue
        files.append(path)
        sizes.append(size)
    if not files:
        extra = f" ({len(bad)} unreadable)" if bad else ""
        raise DataError(
            f"domain {name}: no readable image in {root}{extra}; expected "
            ".jpg/.jpeg/.png/.bmp/.tif/.tiff/.webp files (searched recursively)"
        )
    return Domain(name, root, files, sizes, bad)


class EpochSampler(Sampler):
    """Yields (index_a, index_b, sample_seed) triples for one epoch, from ``start`` on.

    Under torch.distributed each of ``world_size`` ranks takes every world_size-th entry of
    the same seeded plan (padded by wrapping around, as DistributedSampler does), so ranks
    see disjoint samples and all run the same number of steps.
    """

    def __init__(self, n_a: int, n_b: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n_a, self.n_b, self.seed = n_a, n_b, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's plan; ``start``: entries of this rank's share already done."""
        self.epoch, self.start = epoch, start

    @property
    def per_rank(self) -> int:
        return math.ceil(max(self.n_a, self.n_b) / self.world_size)

    def __len__(self) -> int:
        return self.per_rank - self.start

    def plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        length = max(self.n_a, self.n_b)
        # A distinct, reproducible stream per (seed, epoch), the same on every rank.
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 1)
        order = torch.randperm(length, generator=g) % self.n_a
        index_b = torch.randint(self.n_b, (length,), generator=g)
        seeds = torch.randint(2**31 - 1, (length,), generator=g)
        return order, index_b, seeds

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        a, b, s = self.plan(self.epoch)
        length = len(a)
        for i in range(self.start, self.per_rank):
            j = (i * self.world_size + self.rank) % length
            yield int(a[j]), int(b[j]), int(s[j])


class UnpairedDataset(Dataset):
    """Indexed by (index_a, index_b, seed) -> {"a": (C_a, H, W), "b": (C_b, H, W)} in [-1, 1]."""

    def __init__(
        self, domain_a: Domain, domain_b: Domain, transform, channels_a: int, channels_b: int
    ):
        self.domains = (domain_a, domain_b)
        self.transform = transform
        self.channels = (channels_a, channels_b)

    def _load(self, which: int, index: int, seed: int) -> torch.Tensor:
        domain = self.domains[which]
        n = len(domain.files)
        for attempt in range(n):
            path = domain.files[(index + attempt) % n]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    pixels = decode_image(path, channels=self.channels[which]).pixels
            except ImageDecodeError as e:
                # Deterministic fallback: the next file. Reported once per worker process.
                warnings.warn(f"skipping {e}", stacklevel=2)
                continue
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                warnings.warn(f"skipping {_too_large(path, e)}", stacklevel=2)
                continue
            return self.transform(pixels, seed + which)
        raise DataError(f"domain {domain.name}: no image in {domain.root} could be decoded")

    def __getitem__(self, item: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        ia, ib, seed = item
        return {"a": self._load(0, ia, seed), "b": self._load(1, ib, seed)}

    def __len__(self) -> int:
        return max(len(d.files) for d in self.domains)
