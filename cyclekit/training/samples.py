"""Sample grids: for each test image, real / translated / reconstructed, both directions."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from cyclekit.files import atomic_path

# A two-sided model fills the first six; a one-sided one (CUT) real_a, fake_b, real_b, idt_b.
COLUMNS = ("real_a", "fake_b", "rec_a", "real_b", "fake_a", "rec_b", "idt_b")


def _rgb(t: torch.Tensor) -> torch.Tensor:
    return t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t


def save_sample_grid(images: dict[str, torch.Tensor], path: Path, pad: int = 2) -> Path:
    """One row per test image with the six COLUMNS; written atomically as PNG."""
    from torchvision.utils import make_grid

    columns = [c for c in COLUMNS if c in images]  # a one-sided model has no B -> A row
    n = images["real_a"].shape[0]
    tiles = [_rgb(images[c][i : i + 1]) for i in range(n) for c in columns]
    sizes = {t.shape[-2:] for t in tiles}
    if len(sizes) > 1:  # A and B test images of different sizes: bring them to one size
        h, w = tiles[0].shape[-2:]
        tiles = [torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear") for t in tiles]
    grid = make_grid(
        torch.cat(tiles).cpu().clamp(-1, 1),
        nrow=len(columns),
        padding=pad,
        value_range=(-1, 1),
        normalize=True,
    )
    array = grid.mul(255).round().byte().permute(1, 2, 0).numpy()
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path
