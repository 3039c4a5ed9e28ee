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


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None."""
    import shutil

    names = ("chromium", "chromium-browser", "google-chrome")
    return next((p for n in names if (p := shutil.which(n))), None)


def chromium_page_dom(page: Path, profile: Path, window: str = "1280,900") -> tuple[str, float]:
    """(DOM after load, seconds of the whole Chromium call) for ``page`` in headless Chromium
    with a ``window`` ("width,height") viewport, which decides what a lazy page loads.

    Under pytest a missing Chromium skips the test (fails it with CYCLEKIT_REQUIRE_SHARED=1);
    elsewhere (a benchmark script) it raises RuntimeError: check :func:`find_chromium` first.
    """
    import os
    import subprocess
    import sys
    import time

    browser = find_chromium()
    if browser is None:
        msg = "chromium not installed (Debian: apt-get install chromium)"
        if "pytest" not in sys.modules:
            raise RuntimeError(msg)
        import pytest

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
        f"--window-size={window}",
        # Virtual time runs until the page is idle (its images and scripts loaded), 10 s at most.
        "--virtual-time-budget=10000",
        "--dump-dom",
        Path(page).absolute().as_uri(),
    ]
    started = time.perf_counter()
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    return dom, time.perf_counter() - started


def body_data(dom: str) -> dict[str, Any]:
    """The ``data-*`` attributes of the <body> in ``dom``: ``data-thumbs-loaded="6"`` as
    ``{"thumbs_loaded": 6}`` (numbers as int or float, anything else as text)."""
    import html
    import re

    tag = re.search(r"<body\b([^>]*)>", dom)
    if tag is None:
        raise AssertionError(f"no <body> in the DOM: {dom[:300]!r}")
    found: dict[str, Any] = {}
    for name, raw in re.findall(r'\sdata-([\w-]+)="([^"]*)"', tag.group(1)):
        value: Any = html.unescape(raw)
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                pass
        found[name.replace("-", "_")] = value
    return found


def chromium_page_stats(page: Path, profile: Path, window: str = "1280,900") -> dict[str, Any]:
    """What the gallery page counted on its <body> after loading in headless Chromium
    (:func:`body_data`: ``entries``, ``figures``, ``thumbs_requested``, ``thumbs_loaded``,
    ``thumbs_failed``, ``first_screen_ms``) plus ``wall_s``, the Chromium call's seconds
    (start-up included). For tests and scripts/bench_scale.py."""
    dom, wall = chromium_page_dom(page, profile, window)
    return {**body_data(dom), "wall_s": wall}
