"""FID, KID and SSIM on in-memory features and images: pure functions, cheap to call.

- **FID** (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to two sets of
  features, ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. Biased upward with few images
  (its value depends on the image count), so compare FIDs only at equal counts.
- **KID** (Bińkowski et al. 2018): the unbiased estimate of the squared maximum mean
  discrepancy with the polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random
  subsets; unbiased at any count, which makes it the number to trust on ~100-1000 images.
- **SSIM** (Wang et al. 2004) of each input and its translation, on luminance: how much of the
  input's structure (edges, shading) survives, whatever happens to the colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KID_SUBSETS = 100
KID_MAX_SUBSET = 1000  # the customary subset size (Bińkowski et al.; torch-fidelity's default)
KID_SEED = 0


# -- FID ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a set of features, the covariance kept as ``factor``:
    ``cov == factor.T @ factor`` (unbiased, n - 1), with ``factor`` (k, d), k <= d.

    Why a factor: with A, B factors of S1, S2, ``tr (S1 S2)^(1/2)`` is the sum of the singular
    values of ``A @ B.T``, exactly (the non-zero eigenvalues of ``A'A B'B`` are those of
    ``(A B')'(A B')``). From n < d images the factor is the n centred features themselves, so
    FID on 120 images costs a 120 x 120 SVD instead of a 2048 x 2048 matrix square root, and
    no complex round-off has to be thrown away."""

    mean: np.ndarray
    factor: np.ndarray
    count: int

    @property
    def cov(self) -> np.ndarray:
        return self.factor.T @ self.factor


def feature_stats(features: np.ndarray) -> FeatureStats:
    """:class:`FeatureStats` of (n, d) features, n >= 2, in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (n >= 2, d) features, got shape {x.shape}")
    n, d = x.shape
    mean = x.mean(axis=0)
    centred = (x - mean) / np.sqrt(n - 1)
    # More images than dimensions: R of a QR has the same R'R and is only d x d.
    factor = np.linalg.qr(centred, mode="r") if n > d else centred
    return FeatureStats(mean, factor, n)


def stats_from_moments(mean: np.ndarray, cov: np.ndarray, count: int = 0) -> FeatureStats:
    """:class:`FeatureStats` from a mean and a covariance matrix (e.g. published statistics)."""
    cov = np.asarray(cov, dtype=np.float64)
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    factor = np.sqrt(np.clip(w, 0.0, None))[:, None] * v.T
    return FeatureStats(np.asarray(mean, dtype=np.float64), factor, count)


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """The Fréchet distance between the Gaussians fitted to ``a`` and ``b``."""
    diff = a.mean - b.mean
    cross = np.linalg.svd(a.factor @ b.factor.T, compute_uv=False).sum()
    value = diff @ diff + (a.factor**2).sum() + (b.factor**2).sum() - 2.0 * cross
    return float(max(value, 0.0))  # >= 0 exactly; only round-off can take it below


def fid(fake: np.ndarray | FeatureStats, real: np.ndarray | FeatureStats) -> float:
    """FID between two (n, d) feature sets (or their :class:`FeatureStats`, e.g. cached
    statistics of the real images)."""
    a = fake if isinstance(fake, FeatureStats) else feature_stats(fake)
    b = real if isinstance(real, FeatureStats) else feature_stats(real)
    return frechet_distance(a, b)


# -- KID ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KID:
    mean: float
    std: float
    subsets: int
    subset_size: int


def kid_subset_size(n_fake: int, n_real: int) -> int:
    """Half the smaller set, at most :data:`KID_MAX_SUBSET`, at least 2.

    Not the whole smaller set: subsets of all of it would all be equal, and their spread (the
    ± reported) zero whatever the uncertainty. With halves the spread is a fair, somewhat
    wide, error bar; the mean is unbiased at any subset size."""
    return max(2, min(KID_MAX_SUBSET, min(n_fake, n_real) // 2))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(x @ y.T / d + 1) ** 3``, KID's kernel."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """The unbiased MMD² estimate from the kernel matrices of two sets of m samples each."""
    m = k_xx.shape[0]
    same = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(same - 2.0 * k_xy.sum() / (m * m))


def kid(
    fake: np.ndarray,
    real: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int | None = None,
    seed: int = KID_SEED,
) -> KID:
    """KID: the mean and spread of :func:`mmd2_unbiased` over ``subsets`` pairs of random
    subsets (without replacement) of ``subset_size`` fakes and as many reals."""
    x = np.asarray(fake, dtype=np.float64)
    y = np.asarray(real, dtype=np.float64)
    if len(x) < 2 or len(y) < 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two sets of >= 2 features of one size, got {x.shape}, {y.shape}")
    m = subset_size or kid_subset_size(len(x), len(y))
    if not 2 <= m <= min(len(x), len(y)):
        raise ValueError(f"KID subset size {m} does not fit {len(x)} and {len(y)} features")
    rng = np.random.default_rng(seed)
    # Kernels of every pair once, then indexed (a few MB for evaluation-sized sets); larger
    # sets compute each subset's kernels on the fly instead.
    whole = len(x) * len(x) + len(y) * len(y) + len(x) * len(y) <= 3 * 2048 * 2048
    if whole:
        k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    values = np.empty(subsets)
    for s in range(subsets):
        i = rng.choice(len(x), m, replace=False)
        j = rng.choice(len(y), m, replace=False)
        if whole:
            values[s] = mmd2_unbiased(k_xx[np.ix_(i, i)], k_yy[np.ix_(j, j)], k_xy[np.ix_(i, j)])
        else:
            a, b = x[i], y[j]
            values[s] = mmd2_unbiased(
                polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
            )
    return KID(float(values.mean()), float(values.std()), subsets, m)


# -- SSIM -----------------------------------------------------------------------------------

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
# ITU-R BT.601 luma, as Pillow's convert("L") and MATLAB's rgb2gray.
_LUMA = np.array([0.299, 0.587, 0.114])


def luminance(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 1 or 3) uint8 -> (N, H, W) float64 luma in 0..255."""
    x = np.asarray(images, dtype=np.float64)
    return x[..., 0] if x.shape[-1] == 1 else x @ _LUMA


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean SSIM of each pair of (N, H, W, C) uint8 images, on luminance: (N,) in [-1, 1].

    Wang et al.'s reference settings: an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
    K2 = 0.03, dynamic range 255, averaged over the positions where the window fits. 1: the
    same structure; near 0: none of it; below 0: inverted."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(luminance(a))[:, None]
    y = torch.from_numpy(luminance(b))[:, None]
    if x.shape != y.shape or min(x.shape[2:]) < SSIM_WINDOW:
        raise ValueError(f"need pairs of images of one size >= {SSIM_WINDOW} px: {x.shape}")
    t = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(t**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()

    def blur(z: torch.Tensor) -> torch.Tensor:  # separable Gaussian, 'valid' positions only
        return F.conv2d(F.conv2d(z, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))

    c1, c2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    return (num / den).mean((1, 2, 3)).numpy()
