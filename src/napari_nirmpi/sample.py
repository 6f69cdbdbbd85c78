"""Render a trained field on any grid of its FOV, or of a sub-region, in bounded memory."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import NirmpiError
from .grid import Grid
from .nir.field import Field

__all__ = ["sample", "sample_grid"]


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
    try:
        lower, upper = region
    except (TypeError, ValueError):
        raise NirmpiError("region must be (lower, upper) in metres (image axis order) or a Grid") from None
    return g.region(lower, upper, shape)


def sample(field: Field, shape: Sequence[int] | int | None = None, region=None,
           batch_size: int | None = None) -> tuple[np.ndarray, Grid]:
    """Evaluate `field` at the voxel centres of a grid → (float32 image of grid.shape, Grid).

    The returned Grid is in the same physical frame as field.grid (same FOV/centre for a full
    sample), so a 104² sample overlays the 29² reconstruction exactly. Points are evaluated in
    batches of about `batch_size` so memory stays bounded for 1024² or large 3D grids.
    """
    out_grid = sample_grid(field, shape, region)
    g = field.grid
    # voxel centres along each axis (metres) → the field's normalised box, axis by axis
    axes = [((c - lo) / f * 2.0 - 1.0).astype(np.float32)
            for c, lo, f in zip(out_grid.axis_centers(), g.lower, g.fov)]
    shp = out_grid.shape
    image = np.empty(shp, np.float32)
    flat = image.reshape(-1)
    dev = field.device
    if batch_size is None:
        batch_size = 1 << 14 if torch.device(dev).type == "cpu" else 1 << 20
    inner = int(np.prod(shp[1:]))
    rows = max(1, batch_size // inner)  # whole leading-axis slices per batch
    # the trailing-axes coordinate block is the same for every leading index: build it once
    rest = np.stack(np.meshgrid(*axes[1:], indexing="ij"), axis=-1).reshape(-1, len(shp) - 1)
    rest_t = torch.from_numpy(rest).to(dev)
    lead = torch.from_numpy(axes[0]).to(dev)
    net = field.network
    net.eval()
    with torch.inference_mode():
        for i in range(0, shp[0], rows):
            l = lead[i:i + rows]
            pts = torch.cat([l.repeat_interleave(inner)[:, None], rest_t.repeat(len(l), 1)], dim=1)
            vals = net(pts) * field.scale
            flat[i * inner:(i + len(l)) * inner] = vals.float().cpu().numpy()
    return image, out_grid
