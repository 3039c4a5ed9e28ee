"""Pieces shared by the MNIST baselines' loops: batch order, resume, configs and images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cyclekit.files import CheckpointError


def batch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The shuffled indices of one epoch, from a generator seeded by (seed, epoch).

    Deriving each epoch's order from its number (instead of one running generator) lets a run
    stopped mid-epoch resume at the exact batch where it stopped.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """``None``: fresh run; ``auto``: ``run_dir/last.pt`` if it exists; else a path that must."""
    if not resume:
        return None
    if resume == "auto":
        last = run_dir / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"{path}: --resume checkpoint does not exist")
    return path


def plain_config(cfg: Any) -> dict[str, Any]:
    """A dataclass config as YAML/W&B-friendly plain values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def save_config_yaml(cfg: Any, path: Path) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(plain_config(cfg), sort_keys=False))


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8, value_range: str = "tanh") -> Path:
    """Save ``(N, 1, H, W)`` images in [-1, 1] (or [0, 1] for ``unit``) as one PNG grid."""
    from torchvision.utils import save_image

    if value_range == "tanh":
        images = images * 0.5 + 0.5
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=0.5)
    return path


def save_individual(images: torch.Tensor, folder: Path) -> list[Path]:
    """Save ``(N, 1, 28, 28)`` images in [-1, 1] as ``folder/00000.png`` ... (8-bit grayscale)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = ((images.clamp(-1, 1) * 0.5 + 0.5) * 255).round().to(torch.uint8)[:, 0].numpy()
    paths = []
    for i, p in enumerate(pixels):
        paths.append(folder / f"{i:05d}.png")
        Image.fromarray(p, mode="L").save(paths[-1])
    return paths


def save_gif(frames: Sequence[Path], path: Path, ms_per_frame: int = 250) -> Path | None:
    """An animated GIF of the grids over training (the last frame held longer)."""
    from PIL import Image

    if not frames:
        return None
    images = [Image.open(f).convert("P") for f in frames]
    durations = [ms_per_frame] * (len(images) - 1) + [ms_per_frame * 8]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False
    )
    return Path(path)
