"""npe2 writers: an image layer -> MDF reconstruction file (via mdf.write_reconstruction) or .npy."""

from __future__ import annotations

import os

import numpy as np

from .layers import KEY, json_safe


class _LayerView:
    """Just enough of a layer for `grid_from_layer`, built from the writer's (data, meta)."""

    def __init__(self, data, meta):
        self.data = np.asarray(data)
        self.metadata = meta.get("metadata") or {}
        nd = self.data.ndim
        self.scale = meta.get("scale", (1.0,) * nd)
        self.translate = meta.get("translate", (0.0,) * nd)


def write_mdf(path: str, data, meta: dict) -> list[str]:
    """Write one image layer as an MDF reconstruction on its physical grid (overwrites)."""
    from .. import mdf
    from .layers import grid_from_layer

    view = _LayerView(data, meta)
    grid = grid_from_layer(view)
    image = np.asarray(data, np.float32)
    if image.ndim > grid.ndim + 1:
        image = image.reshape(-1, *grid.shape)
    params = json_safe((view.metadata.get(KEY) or {}))
    params["layer_name"] = meta.get("name")
    if not os.path.splitext(path)[1]:
        path = path + ".mdf"
    mdf.write_reconstruction(path, image, grid, params=params, force=True)
    return [path]


def write_npy(path: str, data, meta: dict) -> list[str]:
    if not path.endswith(".npy"):
        path = path + ".npy"
    np.save(path, np.asarray(data))
    return [path]
