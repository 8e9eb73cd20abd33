"""Behaviour of the benchmark metrics: PSNR, SSIM, the step-count speed model, paired median ratios, percentiles.

Why: the fidelity and speed tables are only as right as these few functions; they are cheap to pin down.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.metrics import batch_fidelity, median_ratio, modelled_speedup, percentile, psnr, ssim


def test_psnr_known_values() -> None:
    a = np.zeros((16, 16))
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 0.1) == pytest.approx(20.0)  # mse 0.01 on range 1 -> 20 dB
    assert psnr(a, a + 0.1, data_range=2.0) == pytest.approx(20.0 + 20 * math.log10(2))


def test_ssim_identity_symmetry_and_order() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((16, 16))
    assert ssim(img, img) == pytest.approx(1.0)
    slightly = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    badly = np.clip(img + rng.normal(0, 0.3, img.shape), 0, 1)
    assert ssim(img, slightly) == pytest.approx(ssim(slightly, img))
    assert 1.0 > ssim(img, slightly) > ssim(img, badly)
    assert ssim(img, 1 - img) < 0  # anti-correlated structure


def test_ssim_matches_a_direct_window_computation() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.random((7, 7)), rng.random((7, 7))  # one window: the mean is that window's value
    c1, c2 = 0.01**2, 0.03**2
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    cov = ((x - mx) * (y - my)).sum() / (x.size - 1)
    expected = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(x, y) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("shape", "noise", "data_range"), [((16, 16), 0.05, 1.0), ((64, 48), 0.3, 1.0), ((33, 40), 0.5, 2.0)]
)
def test_ssim_agrees_with_scikit_image(shape: tuple[int, int], noise: float, data_range: float) -> None:
    """The reference implementation (scikit-image's defaults: 7x7 uniform window, sample covariance), once."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(2)
    x = rng.random(shape) * data_range
    y = np.clip(x + rng.normal(0, noise * data_range, shape), 0, data_range)
    expected = structural_similarity(x, y, data_range=data_range)
    assert ssim(x, y, data_range=data_range) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_ssim_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        ssim(np.zeros((16, 16)), np.zeros((16, 15)))
    with pytest.raises(ValueError):
        ssim(np.zeros((5, 5)), np.zeros((5, 5)))


def test_batch_fidelity_counts_identical_images() -> None:
    rng = np.random.default_rng(2)
    seq = rng.random((4, 16, 16))
    out = seq.copy()
    out[1] = np.clip(out[1] + 0.05, 0, 1)
    fid = batch_fidelity(out, seq)
    assert fid["psnr_identical_images"] == 3
    assert math.isfinite(fid["psnr_db_mean"]) and fid["psnr_db_mean"] > 25
    assert fid["ssim_min"] < fid["ssim_mean"] <= 1.0
    assert batch_fidelity(seq, seq)["psnr_db_mean"] == math.inf


def test_modelled_speedup() -> None:
    assert modelled_speedup(20, 2, 1, 20) == pytest.approx(1.0)  # all warm-up: no speedup
    assert modelled_speedup(20, 2, 1, 0) == pytest.approx(2.0)
    assert modelled_speedup(20, 2, 1, 1) == pytest.approx(20 / (1 + 19 / 2))
    assert modelled_speedup(20, 3, 2, 3) == pytest.approx(20 / (3 + 17 / 6))
    assert modelled_speedup(20, 4, 1, 5) < modelled_speedup(20, 4, 1, 1)


def test_median_ratio_pairs_runs() -> None:
    assert median_ratio([10.0, 12.0, 30.0], [5.0, 6.0, 10.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        median_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        median_ratio([], [])


def test_percentile() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))
