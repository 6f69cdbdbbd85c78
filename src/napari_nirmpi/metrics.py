"""Image quality metrics for reconstructions in arbitrary units, and line profiles in mm.

Reconstructions (Kaczmarz, NIR) have an arbitrary intensity scale, so PSNR/SSIM first fit the
image to the reference with the least-squares scalar a = ⟨image, ref⟩/⟨image, image⟩.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import NirmpiError
from .grid import Grid

__all__ = ["fit_intensity", "psnr", "ssim", "line_profile", "fwhm"]


def _pair(image, reference, what):
    image = np.asarray(image, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if image.shape != reference.shape:
        raise NirmpiError(f"{what}: image shape {image.shape} differs from reference shape "
                          f"{reference.shape} (resample one of them first)")
    if not (np.all(np.isfinite(image)) and np.all(np.isfinite(reference))):
        raise NirmpiError(f"{what}: image or reference contains NaN or Inf")
    return image, reference


def fit_intensity(image, reference) -> np.ndarray:
    """a·image with the least-squares a (a = 0 for an all-zero image)."""
    image, reference = _pair(image, reference, "fit_intensity")
    # plain sums, not np.vdot: a BLAS call wakes OpenBLAS's worker threads, which then spin and
    # slowed a torch training scored every 25 iterations by 30–40 % on 2 cores (docs/research-notes.md,
    # 2026-11-27; `python -m benchmarks.scoring_interference`)
    den = float((image * image).sum())
    a = float((image * reference).sum()) / den if den > 0 else 0.0
    return a * image


def _data_range(reference, data_range):
    if data_range is not None:
        return float(data_range)
    r = float(reference.max() - reference.min())
    return r if r > 0 else 1.0


def psnr(image, reference, fit: bool = True, data_range: float | None = None) -> float:
    """PSNR in dB (skimage); data_range defaults to reference max − min (1 if constant)."""
    from skimage.metrics import peak_signal_noise_ratio

    image, reference = _pair(image, reference, "psnr")
    if fit:
        image = fit_intensity(image, reference)
    return float(peak_signal_noise_ratio(reference, image, data_range=_data_range(reference, data_range)))


def ssim(image, reference, fit: bool = True, data_range: float | None = None) -> float:
    """SSIM (skimage, uniform 7-voxel window, shrunk to the largest odd size that fits)."""
    from skimage.metrics import structural_similarity

    image, reference = _pair(image, reference, "ssim")
    smallest = min(image.shape)
    if image.ndim not in (2, 3) or smallest < 3:
        raise NirmpiError(f"ssim: needs a 2-D or 3-D image at least 3 voxels wide, got {image.shape}")
    win = min(7, smallest if smallest % 2 else smallest - 1)
    if fit:
        image = fit_intensity(image, reference)
    return float(structural_similarity(reference, image, data_range=_data_range(reference, data_range),
                                       win_size=win))


def line_profile(image, grid: Grid, start_mm, end_mm, num: int = 200, order: int = 1):
    """Values along the segment start→end (mm, image axis order (y, x) / (z, y, x)).

    Returns (distance_mm (num,), values (num,)); interpolation of `order` (0–5) at voxel centres,
    nearest-edge extension outside the outermost centres.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.shape != grid.shape:
        raise NirmpiError(f"line_profile: image shape {image.shape} does not match grid {grid.shape}")
    start = np.asarray(start_mm, dtype=np.float64).ravel()
    end = np.asarray(end_mm, dtype=np.float64).ravel()
    if start.size != grid.ndim or end.size != grid.ndim:
        raise NirmpiError(f"line_profile: start and end need {grid.ndim} coordinates (mm, image "
                          f"axis order), got {start.size} and {end.size}")
    if int(num) < 2:
        raise NirmpiError(f"line_profile: num must be >= 2, got {num}")
    s = np.linspace(0.0, 1.0, int(num))
    pts_m = (start[None, :] + s[:, None] * (end - start)[None, :]) * 1e-3
    idx = (pts_m - np.asarray(grid.origin)) / np.asarray(grid.voxel_size)
    values = ndimage.map_coordinates(image, idx.T, order=int(order), mode="nearest")
    return s * float(np.linalg.norm(end - start)), values


def fwhm(distance, values) -> float:
    """Full width at half maximum of the highest peak (linear interpolation); nan if not bounded."""
    d = np.asarray(distance, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    k = int(np.argmax(v))
    half = v[k] / 2.0
    left = np.flatnonzero(v[:k] < half)
    right = np.flatnonzero(v[k:] < half)
    if v[k] <= 0 or left.size == 0 or right.size == 0:
        return float("nan")
    i = left[-1]                      # v[i] < half <= v[i+1]
    j = k + right[0]                  # v[j-1] >= half > v[j]
    xl = d[i] + (half - v[i]) / (v[i + 1] - v[i]) * (d[i + 1] - d[i])
    xr = d[j - 1] + (v[j - 1] - half) / (v[j - 1] - v[j]) * (d[j] - d[j - 1])
    return float(xr - xl)
