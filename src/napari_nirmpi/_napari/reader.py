"""npe2 reader for MDF files (system matrices, measurements, reconstructions).

Layers made here:

* system matrix -> lazy (dask) image stack ``(component, y, x)`` (or ``(component, z, y, x)``):
  one plane per (receive channel, frequency) row, sorted by SNR (highest first), each showing
  ``|s_k| / max|s_k|`` so every component uses the full contrast range while browsing. Planes
  are read from disk only when displayed (one `MDFFile.read_system_matrix` call per chunk).
  ``metadata["nirmpi"]["rows"]`` lists, per plane: channel, frequency index, frequency (Hz), SNR.
* measurement -> its mean spectrum over foreground frames as an image ``(channel, frequency)``
  of ``log10 |u_k|`` (the usual log-magnitude spectrum view); the frequency axis is in MHz,
  each channel a band; it is not in mm, so view it alone (the sample data adds it hidden).
* reconstruction -> an image on its grid (a leading frame axis when it holds several).
* a frame-series Zarr store (directory ``OUT.zarr`` from `nirmpi batch`) -> a lazy image with a
  time axis (see `series.py`).

`get_reader` only peeks at the HDF5 groups and never raises; a file that looks like MDF but is
broken gives a napari error notification with the MDFError message (no traceback dialog); an
``.h5`` that is not MDF gives a warning notification saying why (napari itself only reports that
no reader took it). A system matrix is probed at open time (up to 64 chunks read) so that a
corrupt chunk is reported then, not when a lazy plane is first shown. File warnings (see
docs/reliability.md) become warning notifications and ``metadata["nirmpi"]["header"]["warnings"]``.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import NirmpiError
from .layers import grid_kwargs, make_metadata

MDF_SUFFIXES = (".mdf", ".h5", ".hdf5")
SM_CHUNK = 16  # planes per dask chunk: small enough that scrolling is snappy


def _not_mdf_reason(path: str) -> str | None:
    """None for an HDF5 file whose root has MDF groups, else why not. Never raises, never
    blocks (a FIFO or device is not opened)."""
    import stat

    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot be accessed ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a FIFO, socket or device)"
    try:
        import h5py

        with h5py.File(path, "r") as f:
            keys = set(f.keys())
    except Exception:
        return "is not an HDF5 file"
    data_groups = {"measurement", "reconstruction", "calibration"}
    if keys & data_groups and keys & {"acquisition", "version", "scanner", "study", "reconstruction"}:
        return None
    return ("is an HDF5 file without MDF content (no /measurement, /calibration or /reconstruction "
            "next to /version or /acquisition)")


def _looks_like_mdf(path: str) -> bool:
    return _not_mdf_reason(path) is None


def get_reader(path):
    """`read_mdf` for MDF files, `read_series` for frame-series Zarr stores written by
    `nirmpi batch`, else None (lets other readers try)."""
    try:
        if isinstance(path, (list, tuple)):
            if not path:
                return None
            readers = {get_reader(p) for p in path}
            return readers.pop() if len(readers) == 1 and None not in readers else None
        p = os.fspath(path)
        if os.path.isdir(p):
            from .series import looks_like_series, read_series

            return read_series if looks_like_series(p) else None
        if not p.lower().endswith(MDF_SUFFIXES) or os.path.isdir(p):
            return None
        if p.lower().endswith(".mdf"):
            # the user says it is MDF: claim it, so a broken file (or a FIFO, a dangling
            # symlink) gets a clear message from read_mdf instead of napari's generic refusal
            return read_mdf if os.path.lexists(p) else None
        why = _not_mdf_reason(p)
        if why is None:
            return read_mdf
        # napari only says that no reader accepted the file: say why here (other readers may
        # still accept it, so this is a warning, not an error)
        _notify(f"napari-nirmpi: {_one_line(p)} {why}; not read as MDF", error=False)
        return None
    except Exception:
        return None


def read_mdf(path):
    """LayerData tuples for one or more MDF files; errors become notifications."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    out = []
    for p in paths:
        try:
            out.extend(layers_from_file(os.fspath(p)))
        except NirmpiError as exc:
            _notify_error(str(exc))
        except OSError as exc:
            _notify_error(f"{p}: cannot be read as MDF ({exc})")
    return out or [(None,)]


def _one_line(text) -> str:
    text = str(text)
    return text if text.isprintable() else repr(text)[1:-1]


def _notify(message: str, error: bool = True) -> None:
    try:
        from napari.utils.notifications import show_error, show_warning

        (show_error if error else show_warning)(message)
    except Exception:  # no napari: still tell the user
        import warnings

        warnings.warn(message, stacklevel=3)


def _notify_error(message: str) -> None:
    _notify(message, error=True)


def header_dict(f) -> dict:
    """A JSON-able summary of an MDFFile header (what the layer metadata keeps)."""
    acq = f.acquisition
    h = {"version": getattr(f, "version", None), "kind": f.kind,
         "num_frames": getattr(f, "num_frames", None)}
    if acq is not None:
        h["acquisition"] = {
            "base_frequency_hz": float(acq.base_frequency), "dividers": list(np.ravel(acq.dividers)),
            "drive_strength_t": list(np.ravel(acq.drive_strength)),
            "num_sampling_points": int(acq.num_sampling_points), "bandwidth_hz": float(acq.bandwidth),
            "num_rx_channels": int(acq.num_rx_channels), "num_periods": int(acq.num_periods)}
    if f.grid is not None:
        h["grid"] = f.grid.to_dict()
    h["warnings"] = list(getattr(f, "warnings", []))
    try:
        h["summary"] = f.summary()
    except Exception:  # a summary is a convenience; never fail a read on it
        pass
    return h


def layers_from_file(path: str, **read_kwargs) -> list:
    from .. import mdf

    f = mdf.open(path)
    for w in getattr(f, "warnings", []):  # also kept in the layer's metadata (header_dict)
        _notify(f"{_one_line(path)}: {w}", error=False)
    if f.kind == "calibration":
        # planes are read lazily later: a corrupt chunk must show now, not as a failing layer
        f.probe()
        layer = system_matrix_layer(f, **read_kwargs)
        from .layers import schedule_first_component

        schedule_first_component(layer[1]["name"])  # the slider on the strongest component
        return [layer]
    if f.kind == "measurement":
        return [measurement_layer(f)]
    if f.kind == "reconstruction":
        return [reconstruction_layer(f)]
    raise NirmpiError(f"{path}: unknown MDF content kind {f.kind!r}")


def _component_order(f):
    """(channel, freq_index, snr) per plane, SNR descending; no SNR -> channel/frequency order."""
    K = len(f.frequencies)
    C = f.acquisition.num_rx_channels if f.acquisition is not None else 1
    snr = None if f.snr is None else np.asarray(f.snr, float)
    if snr is not None:
        snr = snr[0] if snr.ndim == 3 else snr  # period 0
    ch, fi = np.meshgrid(np.arange(C), np.arange(K), indexing="ij")
    ch, fi = ch.ravel(), fi.ravel()
    sel = getattr(f, "available_freq_index", None)
    if sel is not None and len(sel) < K:  # only frequencies stored in the file
        keep = np.isin(fi, np.asarray(sel))
        ch, fi = ch[keep], fi[keep]
    if snr is None:
        return ch, fi, np.full(ch.size, np.nan)
    s = np.nan_to_num(snr[ch, fi], nan=-np.inf)
    order = np.argsort(-s, kind="stable")
    return ch[order], fi[order], snr[ch, fi][order]


def _read_planes(path: str, ch: np.ndarray, fi: np.ndarray, shape: tuple) -> np.ndarray:
    """Normalised magnitudes of SM rows (ch[i], fi[i]) as (n, *shape) float32."""
    from .. import mdf

    f = mdf.open(path)
    out = np.empty((len(ch), *shape), np.float32)
    for c in np.unique(ch):
        pick = np.flatnonzero(ch == c)
        freqs = fi[pick]
        uniq, inv = np.unique(freqs, return_inverse=True)
        rows = f.read_system_matrix(channels=[int(c)], freq_index=uniq)  # (len(uniq), O)
        mag = np.abs(rows[inv]).astype(np.float32)
        peak = mag.max(axis=1, keepdims=True)
        mag /= np.where(peak > 0, peak, 1)
        out[pick] = mag.reshape(len(pick), *shape)
    close = getattr(f, "close", None)
    if callable(close):
        close()
    return out


def system_matrix_layer(f, max_components: int | None = None):
    import dask
    import dask.array as da

    grid = f.grid
    if grid is None:
        raise NirmpiError(f"{f.path}: the system matrix has no /calibration grid (size/fieldOfView)")
    ch, fi, snr = _component_order(f)
    if max_components:
        ch, fi, snr = ch[:max_components], fi[:max_components], snr[:max_components]
    freqs = np.asarray(f.frequencies)[fi]
    path = os.path.abspath(os.fspath(f.path))
    chunks = []
    for s in range(0, ch.size, SM_CHUNK):
        n = min(SM_CHUNK, ch.size - s)
        block = dask.delayed(_read_planes)(path, ch[s:s + n], fi[s:s + n], grid.shape)
        chunks.append(da.from_delayed(block, shape=(n, *grid.shape), dtype=np.float32))
    data = da.concatenate(chunks, axis=0) if chunks else da.zeros((0, *grid.shape), np.float32)
    rows = {"channel": ch.tolist(), "freq_index": fi.tolist(), "frequency_hz": freqs.tolist(),
            "snr": [None if not np.isfinite(v) else float(v) for v in snr]}
    name = f"SM {os.path.basename(path)}"
    kw = {"name": name, "contrast_limits": (0.0, 1.0), "colormap": "viridis", "multiscale": False,
          "axis_labels": ("component (SNR order)",) + (("z", "y", "x") if grid.ndim == 3 else ("y", "x")),
          "metadata": make_metadata("system_matrix", source=path, header=header_dict(f), grid=grid,
                                    parameters={"display": "|s_k| / max|s_k|", "order": "SNR descending"},
                                    rows=rows)}
    kw.update(grid_kwargs(grid, leading=1))
    return (data, kw, "image")


def mean_spectrum(f, chunk: int = 64) -> np.ndarray:
    """Mean over foreground frames of |spectrum|: (C, K) float."""
    n = int(f.num_frames)
    is_bg = np.asarray(f.is_background_frame, bool) if f.is_background_frame is not None \
        else np.zeros(n, bool)
    frames = np.flatnonzero(~is_bg)
    if frames.size == 0:
        frames = np.arange(n)
    from ..mdf import memory_limit

    # a display average: beyond what one read may hold, average evenly spaced frames instead
    # of streaming millions (a file may declare far more frames than it stores)
    per_frame = f.acquisition.num_rx_channels * max(1, len(f.available_freq_index)) * 8
    most = max(1, memory_limit() // per_frame)
    if frames.size > most:
        frames = frames[np.linspace(0, frames.size - 1, most).astype(np.int64)]
    total = None
    for s in range(0, frames.size, chunk):
        spec = f.read_spectra(frames=frames[s:s + chunk])  # (F, C, K) complex
        part = np.asarray(spec).sum(axis=0)
        total = part if total is None else total + part
    return np.abs(total / frames.size)


def measurement_layer(f):
    mag = mean_spectrum(f)
    with np.errstate(divide="ignore"):
        img = np.log10(np.maximum(mag, np.finfo(np.float32).tiny)).astype(np.float32)
    freqs = np.asarray(f.frequencies, float)
    sel = getattr(f, "available_freq_index", None)
    if sel is not None and len(sel) == img.shape[1]:
        freqs = freqs[np.asarray(sel)]
    # frequency axis in MHz: the spectrum spans ~1 world unit, so a hidden spectrum layer does
    # not dwarf the millimetre images when napari fits the view to all layers
    df = float(freqs[1] - freqs[0]) / 1e6 if freqs.size > 1 else 1.0
    C, K = img.shape
    band = df * K / 12.0  # each channel row drawn as a band 1/12 of the spectrum wide
    path = os.path.abspath(os.fspath(f.path))
    finite = img[np.isfinite(img)]
    lo, hi = (np.percentile(finite, [5, 99.9]) if finite.size else (0.0, 1.0))
    kw = {"name": f"Measurement {os.path.basename(path)}", "scale": (band, df),
          "translate": (0.0, float(freqs[0]) / 1e6 if freqs.size else 0.0),
          "axis_labels": ("channel", "frequency (MHz)"), "colormap": "magma",
          "contrast_limits": (float(lo), float(max(hi, lo + 1e-6))),
          "metadata": make_metadata("measurement", source=path, header=header_dict(f),
                                    parameters={"display": "log10 |mean foreground spectrum|",
                                                "frequency_axis": "MHz", "frequency_step_mhz": df})}
    return (img, kw, "image")


def reconstruction_layer(f):
    image, grid = f.read_reconstruction()
    image = np.asarray(image, np.float32)
    lead = image.ndim - grid.ndim
    if lead == 1 and image.shape[0] == 1:
        image, lead = image[0], 0
    path = os.path.abspath(os.fspath(f.path))
    params = {}
    try:
        import h5py

        with h5py.File(path, "r") as h:  # our own parameters, if this plugin wrote the file
            if "_nirmpi" in h and "params" in h["_nirmpi"].attrs:
                params = {"stored": str(h["_nirmpi"].attrs["params"])}
    except Exception:
        pass
    kw = {"name": f"Reconstruction {os.path.basename(path)}", "colormap": "inferno",
          "metadata": make_metadata("reconstruction", source=path, header=header_dict(f), grid=grid,
                                    parameters=params, method="file")}
    kw.update(grid_kwargs(grid, leading=lead))
    return (image, kw, "image")
