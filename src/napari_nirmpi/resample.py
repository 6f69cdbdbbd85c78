"""Resampling of voxel images between grids in physical coordinates (the Kaczmarz baseline's up-sampling).

Grids are axis-aligned, so interpolation is separable: one 1-D weight matrix per axis, applied in
turn (exact, and fast for the image sizes of MPI).  Alignment is at voxel CENTRES: a target voxel
centre at position p samples the source at fractional index t = (p − origin)/voxel_size, where
origin is the source's first voxel centre.  Beyond the outermost source centres the image is
extended by its edge value (t is clamped to [0, n − 1]); interior interpolation taps that fall
outside the image use the nearest edge sample ("replicate" border, as image tools do).

Methods
- "bilinear" (2-D) / trilinear (3-D): linear interpolation per axis; reproduces linear ramps exactly.
- "bicubic" (2-D) / tricubic (3-D): Keys cubic convolution with a = −0.5 — the "bicubic" of
  MATLAB's imresize and most image tools (not a B-spline: it interpolates the samples exactly and
  reproduces polynomials up to degree 2 away from the borders).
- "nearest": nearest voxel centre.
No anti-aliasing filter is applied when down-sampling (values are point samples).
"""

from __future__ import annotations

import numpy as np

from .errors import NirmpiError
from .grid import Grid

__all__ = ["upsample", "resample_to_grid", "interpolation_matrix"]

_METHODS = ("bicubic", "bilinear", "nearest")


def _keys(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys (1981) cubic convolution kernel."""
    t = np.abs(t)
    out = np.zeros_like(t)
    near = t <= 1
    far = (t > 1) & (t < 2)
    out[near] = (a + 2) * t[near] ** 3 - (a + 3) * t[near] ** 2 + 1
    out[far] = a * t[far] ** 3 - 5 * a * t[far] ** 2 + 8 * a * t[far] - 4 * a
    return out


def interpolation_matrix(positions_index: np.ndarray, n_src: int, method: str) -> np.ndarray:
    """(len(positions), n_src) weights sampling a 1-D signal of n_src samples at fractional indices."""
    if method not in _METHODS:
        raise NirmpiError(f"resample: method must be one of {_METHODS}, got {method!r}")
    t = np.clip(np.asarray(positions_index, dtype=np.float64), 0.0, n_src - 1.0)
    W = np.zeros((t.size, n_src))
    rows = np.arange(t.size)
    if method == "nearest" or n_src == 1:
        np.add.at(W, (rows, np.clip(np.floor(t + 0.5).astype(int), 0, n_src - 1)), 1.0)
        return W
    base = np.floor(t).astype(int)
    frac = t - base
    if method == "bilinear":
        taps, weights = [0, 1], [1.0 - frac, frac]
    else:
        taps = [-1, 0, 1, 2]
        weights = [_keys(frac - k) for k in taps]
    for k, w in zip(taps, weights):
        np.add.at(W, (rows, np.clip(base + k, 0, n_src - 1)), w)
    return W


def _check_image(image, grid: Grid, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (grid.ndim, grid.ndim + 1) or tuple(image.shape[-grid.ndim:]) != grid.shape:
        raise NirmpiError(f"{what}: image of shape {image.shape} does not match grid {grid.shape} "
                          f"(expected {grid.shape} or (frames, *{grid.shape}))")
    if np.iscomplexobj(image):
        raise NirmpiError(f"{what}: expected a real image, got {image.dtype}")
    return image


def resample_to_grid(image, grid_src: Grid, grid_dst: Grid, method: str = "bicubic") -> np.ndarray:
    """Sample `image` (on `grid_src`) at the voxel centres of `grid_dst` (any box in the FOV).

    image: grid_src.shape, or (F, *grid_src.shape) for a series. Returns grid_dst.shape
    (or (F, *grid_dst.shape)), float32 unless the input is float64.
    """
    image = _check_image(image, grid_src, "resample_to_grid")
    if grid_dst.ndim != grid_src.ndim:
        raise NirmpiError(f"resample_to_grid: source grid is {grid_src.ndim}-D, destination "
                          f"{grid_dst.ndim}-D")
    out_dtype = np.float64 if image.dtype == np.float64 else np.float32
    out = image.astype(np.float64)
    lead = image.ndim - grid_src.ndim
    for ax, (centres, o, v, n) in enumerate(zip(grid_dst.axis_centers(), grid_src.origin,
                                                grid_src.voxel_size, grid_src.shape)):
        W = interpolation_matrix((centres - o) / v, n, method)
        out = np.moveaxis(np.tensordot(W, out, axes=([1], [lead + ax])), 0, lead + ax)
    return out.astype(out_dtype)


def upsample(image, grid: Grid, shape, method: str = "bicubic"):
    """Resample a native image to `shape` voxels over the same FOV: returns (image, Grid)."""
    shape = tuple(int(s) for s in np.ravel(shape)) if not np.isscalar(shape) else (int(shape),) * grid.ndim
    dst = grid.with_shape(shape)
    if dst.shape == grid.shape:
        image = _check_image(image, grid, "upsample")
        return image.astype(np.float64 if image.dtype == np.float64 else np.float32, copy=True), dst
    return resample_to_grid(image, grid, dst, method), dst
