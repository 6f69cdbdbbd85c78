"""Frame-series Zarr stores (written by `nirmpi batch` / `series.reconstruct_series`) in napari.

A store ``OUT.zarr`` (OME-Zarr, NGFF 0.5) holds the array "reconstruction" (frames, y, x) |
(frames, z, y, x) float32 with attrs (grid, scale_mm, translate_mm, frame_times, method, …);
napari-ome-zarr opens it too, from the NGFF metadata. Through this plugin it opens as ONE lazy image
layer (``dask.array.from_zarr``: a frame is read from disk when it is displayed) with

* a time axis: ``axis_labels = ("t", "y", "x")``, scale = the frame interval (s) and
  translate = the first frame time, so the world coordinate of the time axis IS the frame time
  (napari 0.9's slider itself shows the frame index). napari ``units`` are mm on the spatial
  axes and napari's index unit on the time axis, like the other layers' leading axes (napari
  drops units and warns "Inconsistent units across layers" as soon as layers disagree); the
  physical units are also in ``metadata["nirmpi"]["axis_units"]`` (s, mm, mm);
* mm scale/translate on the spatial axes (the same as every other layer of this plugin);
* ``metadata["nirmpi"]``: kind "reconstruction_series", source, grid, parameters, attrs.

Because the slider shows an index, `attach_frame_time_overlay` puts the exact frame time
("frame 3/6 · t = 1.958 ms", from the store's own frame_times) in the canvas text overlay and
keeps it in step with the dims; the reader attaches it to the current viewer.
"""

from __future__ import annotations

import json
import os
import weakref

import numpy as np

from .layers import spatial_units, json_safe, make_metadata, nirmpi_meta

SERIES_KIND = "reconstruction_series"
SERIES_ARRAY = "reconstruction"


def looks_like_series(path) -> bool:
    """Cheap check (two small JSON reads) for a directory written by reconstruct_series. Never raises."""
    try:
        p = os.fspath(path)
        if not os.path.isdir(p):
            return False
        meta3 = os.path.join(p, SERIES_ARRAY, "zarr.json")  # zarr v3
        if os.path.isfile(meta3):
            with open(meta3) as fh:
                attrs = json.load(fh).get("attributes", {})
        else:
            meta2 = os.path.join(p, SERIES_ARRAY, ".zattrs")  # zarr v2
            if not os.path.isfile(meta2):
                return False
            with open(meta2) as fh:
                attrs = json.load(fh)
        kind = (attrs.get("nirmpi") or {}).get("kind")
        return kind == SERIES_KIND and "grid" in attrs
    except Exception:
        return False


def frame_axis(attrs: dict, n: int) -> tuple[float, float, np.ndarray | None]:
    """(scale, translate, times) of the frame axis: the median frame interval (s) and the first
    frame time when the store knows the times, else (1, 0, None) (frame index). The same numbers
    as the store's NGFF metadata (`series.store.time_axis`)."""
    from ..series.store import time_axis

    return time_axis(attrs.get("frame_times"), n)


def _contrast(arr, n: int) -> tuple[float, float]:
    """Contrast limits from up to three frames (first, middle, last): no full read of the store."""
    vals = []
    for i in sorted({0, n // 2, n - 1}):
        frame = np.asarray(arr[i])
        frame = frame[np.isfinite(frame)]
        if frame.size:
            vals.append((float(frame.min()), float(frame.max())))
    if not vals:
        return 0.0, 1.0
    lo, hi = min(v[0] for v in vals), max(v[1] for v in vals)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def series_layer_data(path) -> tuple:
    """The LayerData tuple (dask array, add_image kwargs, "image") of a series store."""
    import dask.array as da

    from ..series import open_series

    path = os.path.abspath(os.fspath(path))
    arr, grid, attrs = open_series(path)
    n = int(arr.shape[0])
    data = da.from_zarr(arr)
    dt, t0, times = frame_axis(attrs, n)
    spatial = ("z", "y", "x")[-grid.ndim:]
    method = attrs.get("method", "?")
    name = f"Series {os.path.basename(path.rstrip(os.sep))} ({method})"
    params = {k: attrs.get(k) for k in ("method", "method_kwargs", "preprocess", "average", "warm_start",
                                         "frames_selected", "chunk_frames") if k in attrs}
    kw = {
        "name": name, "colormap": "inferno", "multiscale": False,
        "scale": (dt, *grid.scale_mm), "translate": (t0, *grid.translate_mm),
        "axis_labels": ("t", *spatial),
        # the time axis keeps napari's index unit, as a system matrix's component axis does
        "units": spatial_units(grid.ndim, leading=1),
        "contrast_limits": _contrast(arr, n),
        "metadata": make_metadata(SERIES_KIND, source=path, grid=grid, parameters=params,
                                  method=method, attrs=json_safe(attrs),
                                  frame_times=None if times is None else times.tolist(),
                                  frame_interval_s=dt if times is not None else None,
                                  axis_units=["s" if times is not None else "frame", *["mm"] * grid.ndim]),
    }
    return (data, kw, "image")


def read_series(path):
    """npe2 reader function for series stores (one path or a list); errors become notifications."""
    from ..errors import NirmpiError
    from .reader import _notify_error

    paths = path if isinstance(path, (list, tuple)) else [path]
    out = []
    for p in paths:
        try:
            out.append(series_layer_data(p))
        except (NirmpiError, OSError, KeyError, ValueError) as exc:
            _notify_error(f"{p}: cannot be read as a nirmpi series store ({exc})")
    if out:
        try:  # show the frame time of the current slice (the reader has no viewer argument)
            import napari

            viewer = napari.current_viewer()
            if viewer is not None:
                attach_frame_time_overlay(viewer)
        except Exception:
            pass
    return out or [(None,)]


# -- frame time in the canvas -----------------------------------------------------------------
def frame_of(layer, world_point) -> int:
    """The frame index of `layer` shown at the viewer's world point (clamped to the layer)."""
    n = int(layer.data.shape[0])
    lead = len(world_point) - layer.ndim  # the viewer may have more axes than the layer
    t = float(world_point[lead]) if lead >= 0 else 0.0
    scale, trans = float(layer.scale[0]), float(layer.translate[0])
    i = int(round((t - trans) / scale)) if scale else 0
    return int(min(max(i, 0), n - 1))


def frame_time_text(layer, world_point) -> str:
    """'NAME: frame i/n · t = 1.958 ms' (times from the store's attrs), or without t if unknown."""
    i = frame_of(layer, world_point)
    n = int(layer.data.shape[0])
    times = nirmpi_meta(layer).get("frame_times")
    text = f"{layer.name}: frame {i + 1}/{n}"
    if times and i < len(times) and times[i] is not None:
        text += f" · t = {format_time(times[i])}"
    return text


def format_time(t: float) -> str:
    """'1.25 s', or in ms below one second (MPI frames last well under a millisecond each)."""
    t = float(t)
    return f"{t:.4g} s" if abs(t) >= 1 or t == 0 else f"{t * 1e3:.4g} ms"


def _text_overlay(viewer):
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None) if canvas is not None else None
    ov = getattr(overlays, "text", None) if overlays is not None else None
    return ov if ov is not None else viewer.text_overlay  # napari < 0.9


def _series_layers(viewer) -> list:
    return [ly for ly in viewer.layers if nirmpi_meta(ly).get("kind") == SERIES_KIND
            and type(ly).__name__ == "Image"]


_OWNED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # viewer -> text we last set


def update_frame_time(viewer) -> str | None:
    """Write the frame time of the active (else topmost visible) series layer into the canvas
    text overlay; hide it again (if the text is still ours) when no series is shown."""
    from .session import _unproxied

    real = _unproxied(viewer)
    shown = [ly for ly in _series_layers(viewer) if ly.visible]
    ov = _text_overlay(viewer)
    if not shown:
        if _OWNED.get(real) is not None and ov.text == _OWNED[real]:
            ov.visible = False
            ov.text = ""
        _OWNED.pop(real, None)
        return None
    active = viewer.layers.selection.active
    layer = active if active in shown else shown[-1]
    text = frame_time_text(layer, viewer.dims.point)
    if _OWNED.get(real) is None:  # taking the overlay over: top left, readable
        ov.position = "top_left"
        ov.font_size = 12
    if ov.text != text:
        ov.text = text
    ov.visible = True
    _OWNED[real] = text
    return text


_HOOKED: "weakref.WeakSet" = weakref.WeakSet()


def attach_frame_time_overlay(viewer) -> None:
    """Keep the canvas text overlay on the series' frame time as the dims and layers change
    (idempotent per viewer)."""
    from .session import _unproxied

    real = _unproxied(viewer)
    if real not in _HOOKED:
        _HOOKED.add(real)
        ref = weakref.ref(real)

        def _update(*_):
            v = ref()
            if v is not None:
                try:
                    update_frame_time(v)
                except Exception:  # an overlay must never break slicing
                    pass

        def _watch(layer):
            if nirmpi_meta(layer).get("kind") == SERIES_KIND:
                layer.events.visible.connect(_update)

        def _inserted(event):
            _watch(event.value)
            _update()

        for ly in real.layers:
            _watch(ly)
        real.dims.events.point.connect(_update)
        real.layers.events.inserted.connect(_inserted)
        real.layers.events.removed.connect(_update)
        real.layers.selection.events.active.connect(_update)
    update_frame_time(real)
