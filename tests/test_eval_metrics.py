"""FID, KID and SSIM against answers known independently of the code under test:
closed-form Fréchet distances of Gaussians, MMD² summed pair by pair, SSIM of flat images and
a window computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from cyclekit.evaluate.metrics import (
    feature_stats,
    fid,
    frechet_distance,
    kid,
    kid_subset_size,
    mmd2_unbiased,
    polynomial_kernel,
    ssim,
    stats_from_moments,
)


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_distance_of_gaussians_with_diagonal_covariances():
    # Commuting covariances: |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = frechet_distance(stats_from_moments(mu1, np.diag(a)), stats_from_moments(mu2, np.diag(b)))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_scaled_covariances():
    # S2 = c^2 S1 (not diagonal): tr(S1 + S2 - 2 (S1 S2)^(1/2)) = (1 - c)^2 tr S1.
    rng = np.random.default_rng(1)
    s1, c = _spd(rng, 6), 2.5
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = ((mu1 - mu2) ** 2).sum() + (1 - c) ** 2 * np.trace(s1)
    got = frechet_distance(stats_from_moments(mu1, s1), stats_from_moments(mu2, c * c * s1))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_the_eigenvalue_formula():
    # The textbook route: tr (S1 S2)^(1/2) = sum of the square roots of the eigenvalues of S1 S2.
    rng = np.random.default_rng(2)
    s1, s2 = _spd(rng, 5), _spd(rng, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    cross = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross
    got = frechet_distance(stats_from_moments(mu1, s1), stats_from_moments(mu2, s2))
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n_a, n_b", [(7, 9), (40, 30), (12, 40)])  # fewer and more than d
def test_fid_on_features_equals_fid_of_their_sample_moments(n_a, n_b):
    rng = np.random.default_rng(n_a)
    d = 16
    a = rng.normal(size=(n_a, d)) @ rng.normal(size=(d, d))
    b = rng.normal(1.0, 2.0, size=(n_b, d))
    moments = [stats_from_moments(x.mean(0), np.cov(x, rowvar=False)) for x in (a, b)]
    assert fid(a, b) == pytest.approx(frechet_distance(*moments), rel=1e-8, abs=1e-9)
    assert np.allclose(feature_stats(a).cov, np.cov(a, rowvar=False))


def test_fid_of_samples_approaches_the_closed_form():
    rng = np.random.default_rng(3)
    d = 3
    mu1, mu2 = np.zeros(d), np.array([1.0, -1.0, 0.5])
    a, b = np.array([1.0, 2.0, 0.5]), np.array([2.0, 0.5, 0.5])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    x = mu1 + rng.normal(size=(40000, d)) * np.sqrt(a)
    y = mu2 + rng.normal(size=(40000, d)) * np.sqrt(b)
    assert fid(x, y) == pytest.approx(expected, abs=0.03)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-9)


def _mmd2_pair_by_pair(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a.b/d + 1)^3, summed over pairs one at a time."""
    m, d = x.shape

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (sum(float(p) * float(q) for p, q in zip(a, b, strict=True)) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)


def test_mmd2_matches_the_pair_by_pair_sum():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.5, 1.0, size=(7, 5))
    k = polynomial_kernel
    got = mmd2_unbiased(k(x, x), k(y, y), k(x, y))
    assert got == pytest.approx(_mmd2_pair_by_pair(x, y), rel=1e-12)


def test_kid_on_whole_sets_is_the_direct_mmd2_with_no_spread():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 4)), rng.normal(1.0, 1.0, size=(6, 4))
    result = kid(x, y, subsets=3, subset_size=6)
    assert result.mean == pytest.approx(_mmd2_pair_by_pair(x, y), rel=1e-12)
    assert result.std == pytest.approx(0.0, abs=1e-12)
    assert (result.subsets, result.subset_size) == (3, 6)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(6)
    same = kid(rng.normal(size=(120, 8)), rng.normal(size=(140, 8)))
    apart = kid(rng.normal(size=(120, 8)), rng.normal(0.7, 1.0, size=(140, 8)))
    assert same.subset_size == 60  # half the smaller set
    assert abs(same.mean) < 2 * same.std  # the unbiased estimate straddles 0
    assert apart.mean > 3 * apart.std > 0
    # The same seed gives the same subsets: a fixed number for a fixed input.
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    assert kid(x, y) == kid(x, y)


def test_kid_subset_size_rule():
    assert kid_subset_size(120, 140) == 60
    assert kid_subset_size(5000, 3000) == 1000
    assert kid_subset_size(3, 100) == 2
    assert kid_subset_size(2, 2) == 2


def test_kid_refuses_sets_too_small_to_estimate():
    with pytest.raises(ValueError):
        kid(np.zeros((1, 3)), np.zeros((5, 3)))


def _flat(value: int, size: int = 16) -> np.ndarray:
    return np.full((1, size, size, 3), value, dtype=np.uint8)


def test_ssim_of_flat_images_has_its_closed_form():
    # No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    c1 = (0.01 * 255) ** 2
    for a, b in ((100, 100), (100, 150), (10, 240)):
        expected = (2 * a * b + c1) / (a * a + b * b + c1)
        assert ssim(_flat(a), _flat(b))[0] == pytest.approx(expected, rel=1e-12)


def test_ssim_matches_a_window_computed_by_hand():
    # 12x12 gray images: the 11x11 window fits at 2x2 positions; each computed directly.
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (12, 12)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).round()
    t = np.arange(11) - 5.0
    g = np.exp(-(t**2) / (2 * 1.5**2))
    w = np.outer(g, g) / g.sum() ** 2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(2):
        for j in range(2):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            values.append(
                (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    got = ssim(a.astype(np.uint8)[None, :, :, None], b.astype(np.uint8)[None, :, :, None])
    assert got[0] == pytest.approx(np.mean(values), rel=1e-9)


def test_ssim_ranks_kept_structure_above_noise_and_inversion():
    rng = np.random.default_rng(8)
    ramp = np.linspace(0, 255, 32)
    img = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=-1)
    img = (img + rng.normal(0, 20, img.shape)).clip(0, 255).astype(np.uint8)[None]
    noisy = (img + rng.normal(0, 40, img.shape)).clip(0, 255).astype(np.uint8)
    # Luminance only: swapping red and blue keeps much more than inverting.
    swapped = img[..., ::-1]
    same, kept, noise, inverted = (ssim(img, x)[0] for x in (img, swapped, noisy, 255 - img))
    assert same == pytest.approx(1.0)
    assert 1.0 > kept > noise > 0 > inverted
    # One number per pair, in order.
    both = np.concatenate([img, img])
    assert ssim(both, np.concatenate([img, 255 - img])).shape == (2,)
