"""Small builders shared by tests: tiny image trees and tiny training configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cyclekit.training.config import TrainConfig

# CLI flags for a tiny, fast model on CPU (~30 ms a step); tests add data, names and limits.
TINY_TRAIN_FLAGS = [
    "--ngf", "8", "--ndf", "8", "--netG", "resnet_6blocks", "--load-size", "36",
    "--crop-size", "32", "--num-workers", "0", "--no-progress", "--device", "cpu",
]  # fmt: skip


def make_image_tree(
    root: Path, n_a: int = 5, n_b: int = 4, size: tuple[int, int] = (48, 40), seed: int = 0
) -> Path:
    """root/trainA, trainB, testA, testB with random-noise PNG/JPEG images (w, h = size).

    Domain A is dark-ish, domain B bright-ish, so there is something to learn.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    for sub, n, lo, hi in (("trainA", n_a, 0, 140), ("trainB", n_b, 110, 256)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(lo, hi, (h, w, 3), dtype=np.uint8)
            ext = "png" if i % 2 else "JPG"
            Image.fromarray(arr).save(root / sub / f"img_{i}.{ext}")
    for sub in ("testA", "testB"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / sub / "t0.png")
    return root


def tiny_config(data: Path, run_root: Path, **overrides: Any) -> TrainConfig:
    """ngf=ndf=8, 6 blocks, 32 px crops, no workers, W&B off: ~30 ms a step on a laptop CPU."""
    values: dict[str, Any] = dict(
        data=str(data),
        name="tiny",
        checkpoints_dir=str(run_root),
        netG="resnet_6blocks",
        ngf=8,
        ndf=8,
        load_size=36,
        crop_size=32,
        epochs=2,
        epochs_decay=2,
        num_workers=0,
        log_every=1,
        sample_every=1000,
        wandb_mode="disabled",
        device="cpu",
    )
    values.update(overrides)
    return TrainConfig(**values)


def chromium_dom(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after load, rendered by headless Chromium (skip/fail if absent)."""
    import os
    import shutil
    import subprocess

    import pytest

    browser = next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))),
        None,
    )
    if browser is None:
        msg = "chromium not installed (Debian: apt-get install chromium)"
        if os.environ.get("CYCLEKIT_REQUIRE_SHARED") == "1":
            pytest.fail(msg + " (CYCLEKIT_REQUIRE_SHARED=1)")
        pytest.skip(msg)
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
