"""Grid <-> napari layer glue: scale/translate and napari `units` in mm, `metadata["nirmpi"]`,
layer lookups.

Every layer this plugin makes carries ``metadata["nirmpi"]`` =
``{"kind", "source", "header", "parameters", "grid"}`` so a result can be reproduced from the
layer alone; `grid` is ``Grid.to_dict()`` (metres, image axis order).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np

from ..errors import NirmpiError
from ..grid import Grid

KEY = "nirmpi"
KINDS = ("system_matrix", "measurement", "reconstruction", "ground_truth", "reconstruction_series")


def json_safe(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and tuples into plain JSON-able Python values."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 4096 else f"<array {obj.shape} {obj.dtype}>"
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


MM = "mm"
# napari's default unit: what a non-spatial leading axis (SM component, frame index) keeps
INDEX_UNIT = "pixel"


def spatial_units(ndim: int, leading: int = 0, leading_unit: str = INDEX_UNIT) -> tuple:
    """napari `units` for an image with `leading` extra axes before `ndim` spatial (mm) axes.

    napari (>= 0.7) compares the units of the trailing axes of all layers: they must share a
    dimensionality (length here), else it warns "Inconsistent units across layers" and renders
    and scale-bars without units; leading axes only ever meet other leading axes."""
    return (leading_unit,) * leading + (MM,) * ndim


def grid_kwargs(grid: Grid, leading: int = 0) -> dict:
    """napari `scale`/`translate`/`units` (mm) for an image on `grid`; `leading` extra axes get
    scale 1 and napari's default (index) unit. The scale bar and the status bar then read mm."""
    return {"scale": (1.0,) * leading + tuple(grid.scale_mm),
            "translate": (0.0,) * leading + tuple(grid.translate_mm),
            "units": spatial_units(grid.ndim, leading)}


def layer_units(layer) -> tuple[str, ...]:
    """The layer's napari units as short strings ("mm", "pixel")."""
    return tuple(f"{u:~}" if hasattr(u, "dimensionality") else str(u) for u in layer.units)


def start_at_first_component(viewer, name: str) -> None:
    """Put the leading slider of a just-added stack on index 0 (for the SM: the strongest
    component). napari moves every slider to the middle when the first layer is added, which on a
    system matrix sorted by SNR shows a component of median SNR (816 of 1633): noise."""
    if name not in viewer.layers or viewer.dims.ndim < 3:
        return
    layer = viewer.layers[name]
    lead = layer.ndim - 2 if layer.ndim > 2 else 0
    axis = viewer.dims.ndim - layer.ndim  # the layer's first axis in the viewer's dims
    if lead:
        viewer.dims.set_current_step(axis, 0)


def schedule_first_component(name: str) -> None:
    """From a reader (no viewer at hand): once napari has added the layer `name` to the current
    viewer (next event-loop turn), move its leading slider to component 0. Never raises."""
    try:
        import napari
        from qtpy.QtCore import QTimer

        viewer = napari.current_viewer()
        if viewer is None:
            return

        def go(tries=[0]):  # noqa: B006 - a retry counter shared by the re-scheduled calls
            try:
                if name in viewer.layers:
                    start_at_first_component(viewer, name)
                elif tries[0] < 20:  # napari adds reader layers after the reader returns
                    tries[0] += 1
                    QTimer.singleShot(50, go)
            except RuntimeError:  # the viewer closed meanwhile
                pass

        QTimer.singleShot(0, go)
    except Exception:  # noqa: BLE001 - a display nicety; a reader must not fail on it
        pass


def make_metadata(kind: str, *, source=None, header: dict | None = None,
                  parameters: dict | None = None, grid: Grid | None = None, **extra) -> dict:
    """The layer `metadata` dict: everything under the "nirmpi" key."""
    if isinstance(source, (list, tuple)):
        source = [os.path.abspath(os.fspath(s)) for s in source]
    elif source is not None:
        source = os.path.abspath(os.fspath(source))
    meta = {"kind": kind, "source": source, "header": json_safe(header or {}),
            "parameters": json_safe(parameters or {}),
            "grid": None if grid is None else grid.to_dict()}
    meta.update(extra)
    return {KEY: meta}


def image_layer_kwargs(name: str, kind: str, grid: Grid, *, leading: int = 0, **meta) -> dict:
    """Keyword arguments for `viewer.add_image` / a LayerData tuple of an image on `grid`."""
    kw = {"name": name, "metadata": make_metadata(kind, grid=grid, **meta)}
    kw.update(grid_kwargs(grid, leading))
    return kw


def nirmpi_meta(layer) -> dict:
    """The layer's "nirmpi" metadata, or {} for layers from elsewhere."""
    md = getattr(layer, "metadata", None) or {}
    m = md.get(KEY)
    return m if isinstance(m, dict) else {}


def layer_kind(layer) -> str | None:
    return nirmpi_meta(layer).get("kind")


def grid_from_layer(layer) -> Grid:
    """The physical grid (metres) of an image layer's last 2 or 3 axes.

    Taken from metadata when it matches the data shape, else from napari scale/translate (mm),
    so it also works for layers that did not come from this plugin.
    """
    shape = tuple(int(s) for s in layer.data.shape)
    meta_grid = nirmpi_meta(layer).get("grid")
    if meta_grid:
        try:
            g = Grid.from_dict(meta_grid)
            if tuple(shape[-g.ndim:]) == g.shape:
                return g
        except (NirmpiError, KeyError, TypeError):
            pass
    # a system-matrix stack has a leading frequency axis; other images are (y, x) or (z, y, x)
    nd = len(shape) - 1 if layer_kind(layer) == "system_matrix" else min(len(shape), 3)
    nd = max(2, min(nd, 3))
    shape = shape[-nd:]
    scale = np.asarray(layer.scale, float)[-nd:]
    translate = np.asarray(layer.translate, float)[-nd:]
    fov = scale * np.asarray(shape) * 1e-3
    center = (translate + scale * (np.asarray(shape) - 1) / 2) * 1e-3
    return Grid(shape, tuple(fov), tuple(center))


def image_2d_or_3d(layer) -> np.ndarray:
    """The layer's image as a float array of its grid shape (a leading singleton axis dropped)."""
    data = np.asarray(layer.data, dtype=np.float64)
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    return data


def layers_of_kind(viewer, kinds: Iterable[str] | str, layer_type: str | None = "image") -> list:
    """Layers of the plugin's `kinds`; of napari type `layer_type` ("image"), or any (None)."""
    kinds = {kinds} if isinstance(kinds, str) else set(kinds)
    return [ly for ly in viewer.layers
            if (layer_type is None or type(ly).__name__.lower() == layer_type) and layer_kind(ly) in kinds]


def image_layers(viewer) -> list:
    return [ly for ly in viewer.layers if type(ly).__name__ == "Image"]


def shapes_layers(viewer) -> list:
    return [ly for ly in viewer.layers if type(ly).__name__ == "Shapes"]


def set_or_add_image(viewer, data, **kwargs):
    """Update the layer named kwargs['name'] in place (data, scale, metadata) or add it."""
    name = kwargs["name"]
    if name in viewer.layers:
        layer = viewer.layers[name]
        if type(layer).__name__ == "Image" and np.ndim(layer.data) == np.ndim(data):
            layer.data = data
            for attr in ("scale", "translate", "units", "metadata"):
                if attr in kwargs:
                    setattr(layer, attr, kwargs[attr])
            layer.reset_contrast_limits()
            return layer
        viewer.layers.remove(layer)
    return viewer.add_image(data, **kwargs)


def unique_name(viewer, base: str) -> str:
    names = {ly.name for ly in viewer.layers}
    if base not in names:
        return base
    i = 2
    while f"{base} [{i}]" in names:
        i += 1
    return f"{base} [{i}]"


def set_grid_view(viewer, enabled: bool) -> None:
    """Side-by-side grid mode; napari 0.9 moved `viewer.grid` to `viewer.canvas.grid`."""
    canvas = getattr(viewer, "canvas", None)
    grid = getattr(canvas, "grid", None) if canvas is not None else None
    if grid is None:
        grid = viewer.grid
    grid.enabled = bool(enabled)


def grid_view_enabled(viewer) -> bool:
    canvas = getattr(viewer, "canvas", None)
    grid = getattr(canvas, "grid", None) if canvas is not None else None
    if grid is None:
        grid = viewer.grid
    return bool(grid.enabled)


def rectangle_mm(shapes_layer, ndim: int = 2) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(lower, upper) in mm (image axis order) of the selected or last shape's bounding box."""
    if shapes_layer is None or len(shapes_layer.data) == 0:
        raise NirmpiError("region: the Shapes layer has no shape; draw a rectangle first")
    sel = sorted(shapes_layer.selected_data)
    verts = np.asarray(shapes_layer.data[sel[-1] if sel else -1], float)
    # Shapes data are in data coordinates; map to world (mm) through the layer's transform.
    world = verts * np.asarray(shapes_layer.scale) + np.asarray(shapes_layer.translate)
    world = world[:, -ndim:]
    lo, hi = world.min(axis=0), world.max(axis=0)
    if np.any(hi <= lo):
        raise NirmpiError("region: the shape has zero extent along an axis; draw a rectangle")
    return tuple(lo.tolist()), tuple(hi.tolist())


def line_mm(shapes_layer, ndim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) in mm of the selected or last line/path shape (first and last vertex)."""
    if shapes_layer is None or len(shapes_layer.data) == 0:
        raise NirmpiError("line profile: the Shapes layer has no shape; draw a line first")
    sel = sorted(shapes_layer.selected_data)
    idx = sel[-1] if sel else len(shapes_layer.data) - 1
    verts = np.asarray(shapes_layer.data[idx], float)
    world = (verts * np.asarray(shapes_layer.scale) + np.asarray(shapes_layer.translate))[:, -ndim:]
    return world[0], world[-1]
