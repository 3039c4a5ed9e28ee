"""The one fake-digit builder of the MNIST tests: digit d is a vertical bar at column 2 + 2d on
a faint noise background, so classes are trivially separable and tiny models learn them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cyclekit.mnist.data import MnistArrays, write_idx_gz


def fake_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 28, 28)`` uint8 and their labels ``0, 1, ..., 9, 0, ...`` (int64)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, d in enumerate(labels):
        images[i, 4:24, 2 + 2 * d : 5 + 2 * d] = 255
    return images, labels.astype(np.int64)


def fake_arrays(n: int, seed: int = 0) -> MnistArrays:
    return MnistArrays(*fake_digits(n, seed), "fake")


def write_fake_mnist(root: Path, n_train: int = 100, n_test: int = 50) -> Path:
    """The four official file names in ``root``, holding fake digits."""
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = fake_digits(n, seed)
        write_idx_gz(images, root / f"{prefix}-images-idx3-ubyte.gz")
        write_idx_gz(labels.astype(np.uint8), root / f"{prefix}-labels-idx1-ubyte.gz")
    return root
