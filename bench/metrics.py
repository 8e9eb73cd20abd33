"""Image fidelity metrics and speedup aggregation used by the benchmarks (pure numpy/scipy, unit-tested).

Why here and not scikit-image: the project keeps its dependency list short; PSNR is one line and SSIM follows
scikit-image's defaults (7x7 uniform window, K1=0.01, K2=0.03, sample covariance), which suit 16x16 digits
(the 11x11 Gaussian window of the original paper is most of such an image). The step-count speed model is the
paper's accounting: a warm-up step costs a full denoiser pass, an asynchronous stride-S round costs 1/N of one and
finishes S steps.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements; ``inf`` for identical inputs."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, win: int = 7) -> float:
    """Mean structural similarity of two 2-D images (scikit-image's defaults: uniform ``win`` x ``win`` window,
    sample covariance, mean over the valid interior)."""
    from scipy.ndimage import uniform_filter

    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim needs two equal 2-D images, got {x.shape} and {y.shape}")
    if min(x.shape) < win:
        raise ValueError(f"images {x.shape} are smaller than the {win}x{win} window")
    n = win * win
    cov_norm = n / (n - 1)
    ux, uy = uniform_filter(x, win), uniform_filter(y, win)
    uxx, uyy, uxy = uniform_filter(x * x, win), uniform_filter(y * y, win), uniform_filter(x * y, win)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def batch_fidelity(async_images: np.ndarray, seq_images: np.ndarray, data_range: float = 1.0) -> dict[str, float]:
    """Mean per-image PSNR (finite values; identical images count as ``inf`` in the count) and SSIM of two batches
    of 2-D images, plus the PSNR of the whole batch."""
    if async_images.shape != seq_images.shape:
        raise ValueError(f"batches differ in shape: {async_images.shape} vs {seq_images.shape}")
    per_psnr = [psnr(a, b, data_range) for a, b in zip(async_images, seq_images, strict=True)]
    per_ssim = [ssim(a, b, data_range) for a, b in zip(async_images, seq_images, strict=True)]
    finite = [p for p in per_psnr if math.isfinite(p)]
    return {
        "psnr_db_mean": statistics.fmean(finite) if finite else math.inf,
        "psnr_db_batch": psnr(async_images, seq_images, data_range),
        "psnr_identical_images": len(per_psnr) - len(finite),
        "ssim_mean": statistics.fmean(per_ssim),
        "ssim_min": min(per_ssim),
    }


def modelled_speedup(steps: int, model_n: int, stride: int, warm_up: int) -> float:
    """Speedup from the step-count model: warm-up steps cost 1 each, the remaining steps cost 1/(N*S) each."""
    if not warm_up >= 0:
        raise ValueError("warm_up must be >= 0")
    warm = min(warm_up, steps)
    cost = warm + (steps - warm) / (model_n * stride)
    return steps / cost


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the paired ratios ``numerators[i] / denominators[i]`` (runs of one repetition are paired)."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("need equally many (>= 1) paired timings")
    return float(statistics.median(n / d for n, d in zip(numerators, denominators, strict=True)))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, as numpy's default."""
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, np.float64), q))
