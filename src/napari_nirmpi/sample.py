"""Render a trained field on any grid of its FOV, or of a sub-region, in bounded memory.

Conventions (the core's): a `region` is ((lower), (upper)) in **metres**, in image axis order
((y, x) or (z, y, x)), in the scanner frame of `field.grid`. The command line's `--region` text
'x0,x1,y0,y1[,z0,z1]' in **millimetres** (x first) converts to that with
`napari_nirmpi.grid.parse_region(text, ndim)`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import NirmpiError
from .grid import Grid
from .nir.field import Field

__all__ = ["sample", "sample_grid", "MAX_BYTES"]

MAX_BYTES = 2 << 30  # default cap on the float32 image: 2 GiB (23170², or 812³ voxels)


def sample_grid(field: Field, shape: Sequence[int] | int | None = None, region=None) -> Grid:
    """The Grid `sample` renders on: the training FOV with `shape` voxels, or a region given as
    (lower, upper) metres in image axis order, or a Grid (its shape unless `shape` is given)."""
    g = field.grid
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),) * g.ndim
    if isinstance(region, Grid):
        if region.ndim != g.ndim:
            raise NirmpiError(f"region grid has {region.ndim} axes, the field {g.ndim}")
        return region if shape is None else region.with_shape(shape)
    if shape is None:
        raise NirmpiError("sample needs a shape (e.g. (104, 104)) unless region is a Grid")
    shape = tuple(int(s) for s in shape)
    if len(shape) != g.ndim or any(s < 1 for s in shape):
        raise NirmpiError(f"sample shape {shape} must have {g.ndim} positive sizes (image axis order)")
    if region is None:
        return g.with_shape(shape)
    if isinstance(region, str):
        raise NirmpiError(f"region {region!r}: the Python API takes ((lower), (upper)) in metres, image axis "
                          "order; convert the command line's 'x0,x1,y0,y1' millimetres with "
                          "napari_nirmpi.grid.parse_region(text, ndim)")
    try:
        lower, upper = region
        lower = tuple(float(v) for v in lower)
        upper = tuple(float(v) for v in upper)
    except (TypeError, ValueError):
        raise NirmpiError("region must be ((lower), (upper)) in metres (image axis order) or a Grid") from None
    if not all(np.isfinite(lower + upper)):
        raise NirmpiError(f"region {region!r}: the bounds must be finite")
    if max(abs(v) for v in lower + upper) > 1.0:  # no MPI field of view reaches a metre
        raise NirmpiError(f"region {tuple(lower)}..{tuple(upper)}: bounds beyond 1 m; the values look like "
                          "millimetres, but the API takes metres (image axis order)")
    out = g.region(lower, upper, shape)
    if not all(lo < hi for lo, hi in zip(np.maximum(out.lower, g.lower), np.minimum(out.upper, g.upper))):
        fov_mm = ", ".join(f"{a * 1e3:.3g}..{b * 1e3:.3g}" for a, b in zip(g.lower, g.upper))
        raise NirmpiError(f"region {tuple(lower)}..{tuple(upper)} m does not overlap the field's FOV "
                          f"({fov_mm} mm, image axis order)")
    return out


def sample(field: Field, shape: Sequence[int] | int | None = None, region=None,
           batch_size: int | None = None, max_bytes: int | None = MAX_BYTES) -> tuple[np.ndarray, Grid]:
    """Evaluate `field` at the voxel centres of a grid → (float32 image of grid.shape, Grid).

    shape: voxels per axis in image order ((y, x) or (z, y, x)), or one int for every axis.
    region: ((y0, x0), (y1, x1)) — or ((z0, y0, x0), (z1, y1, x1)) — in METRES in the scanner
        frame of field.grid (image axis order, NOT the command line's x0,x1,y0,y1 millimetres;
        `grid.parse_region` converts those), or a Grid; None: the whole training FOV.
    max_bytes: refuse a grid whose float32 image would exceed this (default 2 GiB; None: no cap).

    The returned Grid is in the same physical frame as field.grid (same FOV/centre for a full
    sample), so a 104² sample overlays the 29² reconstruction exactly. Points are evaluated in
    batches of about `batch_size` so memory beyond the image stays bounded.
    """
    out_grid = sample_grid(field, shape, region)
    shp = out_grid.shape
    n = int(np.prod(np.asarray(shp, dtype=np.float64)))
    if max_bytes is not None and n * 4 > max_bytes:
        raise NirmpiError(f"sample grid {'×'.join(map(str, shp))} has {n:,} voxels: {n * 4 / 2**30:.1f} GiB as "
                          f"float32, above the cap of {max_bytes / 2**30:.1f} GiB (max_bytes=, or "
                          "nirmpi sample --max-memory GB)")
    g = field.grid
    # voxel centres along each axis (metres) → the field's normalised box, axis by axis
    axes = [((c - lo) / f * 2.0 - 1.0).astype(np.float32)
            for c, lo, f in zip(out_grid.axis_centers(), g.lower, g.fov)]
    image = np.empty(shp, np.float32)
    flat = image.reshape(-1)
    dev = field.device
    if batch_size is None:
        batch_size = 1 << 14 if torch.device(dev).type == "cpu" else 1 << 20
    net = field.network
    net.eval()
    inner = int(np.prod(shp[1:]))
    with torch.inference_mode():
        if inner > batch_size:  # one leading slice is already too many points: flat batches
            ax_t = [torch.from_numpy(a).to(dev) for a in axes]
            for i in range(0, flat.size, batch_size):
                idx = np.unravel_index(np.arange(i, min(i + batch_size, flat.size)), shp)
                pts = torch.stack([a[torch.from_numpy(ix).to(dev)] for a, ix in zip(ax_t, idx)], dim=1)
                flat[i:i + len(idx[0])] = (net(pts) * field.scale).float().cpu().numpy()
            return image, out_grid
        rows = max(1, batch_size // inner)  # whole leading-axis slices per batch
        # the trailing-axes coordinate block is the same for every leading index: build it once
        rest = np.stack(np.meshgrid(*axes[1:], indexing="ij"), axis=-1).reshape(-1, len(shp) - 1)
        rest_t = torch.from_numpy(rest).to(dev)
        lead = torch.from_numpy(axes[0]).to(dev)
        for i in range(0, shp[0], rows):
            l = lead[i:i + rows]
            pts = torch.cat([l.repeat_interleave(inner)[:, None], rest_t.repeat(len(l), 1)], dim=1)
            vals = net(pts) * field.scale
            flat[i * inner:(i + len(l)) * inner] = vals.float().cpu().numpy()
    return image, out_grid
