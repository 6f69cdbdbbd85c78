"""MDF v2.1.0 writers: calibration, measurement, reconstruction (atomic replace)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import uuid as _uuid
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from ..errors import MDFError, NirmpiError
from ..grid import Grid
from .acquisition import Acquisition
from .header import _PIECE_ELEMENTS

MDF_VERSION = "2.1.0"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _atomic_write(path, force: bool, fill: Callable[[h5py.File], None]) -> Path:
    path = Path(path)
    if path.is_dir():
        raise MDFError(f"{path}: is a directory; cannot write an MDF file there")
    if path.exists() and not force:
        raise MDFError(f"{path}: file exists (FileExistsError); pass force=True to overwrite")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MDFError(f"{path}: directory {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as h5:
            fill(h5)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, (NirmpiError, KeyboardInterrupt, SystemExit)):
            raise
        if isinstance(e, Exception):
            raise MDFError(f"{path}: writing failed ({type(e).__name__}: {e})") from e
        raise
    return path


def _umask() -> int:
    old = os.umask(0o22)
    os.umask(old)
    return old


def _put(h5: h5py.File, name: str, value, dtype=None):
    if isinstance(value, str):
        h5.create_dataset(name, data=value, dtype=h5py.string_dtype())
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        h5.create_dataset(name, data=np.array(value, dtype=object), dtype=h5py.string_dtype())
    else:
        # np.asarray, not np.ascontiguousarray: the latter makes a 0-d scalar (1,), and the
        # spec's dimension "1" is a 0-d dataset (what MPIFiles.jl writes and python/reco.py reads)
        h5.create_dataset(name, data=np.array(value, dtype=dtype, order="C"))


_META_DEFAULTS = {
    "study_name": "napari-nirmpi", "study_description": "", "experiment_name": "",
    "experiment_description": "", "subject": "", "is_simulation": True,
    "scanner_name": "napari-nirmpi simulator", "scanner_manufacturer": "napari-nirmpi",
    "scanner_facility": "", "operator": "", "topology": "FFP", "tracer_name": "",
    "tracer_vendor": "", "tracer_batch": "", "tracer_solute": "Fe",
    "tracer_volume": 0.0, "tracer_concentration": 0.0,
}


def _write_common(h5: h5py.File, metadata: dict | None):
    m = dict(_META_DEFAULTS)
    unknown = set(metadata or {}) - set(m)
    if unknown:
        raise MDFError(f"metadata: unknown keys {sorted(unknown)}; known: {sorted(m)}")
    m.update(metadata or {})
    now = _now()
    _put(h5, "/version", MDF_VERSION)
    _put(h5, "/uuid", str(_uuid.uuid4()))
    _put(h5, "/time", now)
    _put(h5, "/study/name", str(m["study_name"]))
    _put(h5, "/study/number", 0, np.int64)
    _put(h5, "/study/uuid", str(_uuid.uuid4()))
    _put(h5, "/study/description", str(m["study_description"]))
    _put(h5, "/study/time", now)
    _put(h5, "/experiment/name", str(m["experiment_name"]))
    _put(h5, "/experiment/number", 0, np.int64)
    _put(h5, "/experiment/uuid", str(_uuid.uuid4()))
    _put(h5, "/experiment/description", str(m["experiment_description"]))
    _put(h5, "/experiment/subject", str(m["subject"]))
    _put(h5, "/experiment/isSimulation", int(bool(m["is_simulation"])), np.int8)
    _put(h5, "/scanner/facility", str(m["scanner_facility"]))
    _put(h5, "/scanner/operator", str(m["operator"]))
    _put(h5, "/scanner/manufacturer", str(m["scanner_manufacturer"]))
    _put(h5, "/scanner/name", str(m["scanner_name"]))
    _put(h5, "/scanner/topology", str(m["topology"]))
    if m["tracer_name"]:
        _put(h5, "/tracer/name", [str(m["tracer_name"])])
        _put(h5, "/tracer/batch", [str(m["tracer_batch"])])
        _put(h5, "/tracer/vendor", [str(m["tracer_vendor"])])
        _put(h5, "/tracer/volume", [float(m["tracer_volume"])], np.float64)
        _put(h5, "/tracer/concentration", [float(m["tracer_concentration"])], np.float64)
        _put(h5, "/tracer/solute", [str(m["tracer_solute"])])


def _write_acquisition(h5: h5py.File, acq: Acquisition, N: int, conversion=None):
    J, D, C = acq.num_periods, len(acq.dividers), acq.num_rx_channels
    _put(h5, "/acquisition/numAverages", acq.num_averages, np.int64)
    _put(h5, "/acquisition/numFrames", N, np.int64)
    _put(h5, "/acquisition/numPeriodsPerFrame", J, np.int64)
    _put(h5, "/acquisition/startTime", _now())
    if acq.gradient is not None:
        _put(h5, "/acquisition/gradient", np.broadcast_to(acq.gradient, (J, 1, 3, 3)), np.float64)
        _put(h5, "/acquisition/offsetField", np.zeros((J, 1, 3)), np.float64)
    g = "/acquisition/drivefield/"
    _put(h5, g + "numChannels", D, np.int64)
    _put(h5, g + "baseFrequency", acq.base_frequency, np.float64)
    _put(h5, g + "divider", np.asarray(acq.dividers).reshape(D, 1), np.int64)
    _put(h5, g + "cycle", acq.cycle, np.float64)
    _put(h5, g + "strength", np.broadcast_to(np.asarray(acq.drive_strength).reshape(1, D, 1), (J, D, 1)),
         np.float64)
    phase = np.zeros(D) if acq.drive_phase is None else np.asarray(acq.drive_phase)
    _put(h5, g + "phase", np.broadcast_to(phase.reshape(1, D, 1), (J, D, 1)), np.float64)
    h5.create_dataset(g + "waveform", data=np.array([["sine"]] * D, dtype=object),
                      dtype=h5py.string_dtype())
    r = "/acquisition/receiver/"
    _put(h5, r + "numChannels", C, np.int64)
    _put(h5, r + "bandwidth", acq.bandwidth, np.float64)
    _put(h5, r + "numSamplingPoints", acq.num_sampling_points, np.int64)
    _put(h5, r + "unit", "V")
    # (C x 2: scale, offset); identity unless given. MPIFiles.jl expects the dataset.
    _put(h5, r + "dataConversionFactor", np.tile([1.0, 0.0], (C, 1)) if conversion is None else conversion,
         np.float64)
    if acq.transfer_function is not None:
        h5.create_dataset(r + "transferFunction", data=acq.transfer_function.astype(np.complex128))


def _check_acq(acq) -> Acquisition:
    if not isinstance(acq, Acquisition):
        raise MDFError(f"acquisition must be an mdf.Acquisition, got {type(acq).__name__}")
    return acq


def _write_extras(h5: h5py.File, extras: dict | None, frame_times=None, params=None):
    for k, v in (extras or {}).items():
        if not isinstance(k, str) or not k or k.startswith("/"):
            raise MDFError(f"extras: key {k!r} must be a relative dataset name")
        _put(h5, "/_nirmpi/" + k, v)
    if frame_times is not None:
        _put(h5, "/_nirmpi/frameTimes", frame_times, np.float64)
    if params is not None:
        try:
            text = json.dumps(params, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        except (TypeError, ValueError) as e:
            raise MDFError(f"params: not JSON-serialisable ({e})") from None
        _put(h5, "/_nirmpi/parameters", text)


def _bg_flags(is_background_frame, N: int, what: str) -> np.ndarray:
    bg = np.asarray(is_background_frame)
    if bg.shape != (N,):
        raise MDFError(f"{what}: is_background_frame must have shape ({N},) (one flag per "
                       f"frame), got {bg.shape}")
    return bg.astype(bool)


def _freq_selection(frequency_selection, K: int, what: str) -> np.ndarray | None:
    if frequency_selection is None:
        return None
    sel = np.asarray(frequency_selection, dtype=np.int64).ravel()
    if sel.size == 0 or sel.min() < 0 or sel.max() >= K or np.any(np.diff(sel) <= 0):
        raise MDFError(f"{what}: frequency_selection must be sorted unique 0-based indices in "
                       f"[0, {K - 1}], got {sel[:8]}")
    return sel


def _write_data(h5: h5py.File, data, *, fd: bool, fast: bool, complex_storage: str,
                sel: np.ndarray | None, frames_last_in: bool,
                snr_acc: Callable | None = None):
    """Write /measurement/data from `data` (any array-like with .shape and slicing), copying
    slices of the frequency/sample axis so that big inputs are never doubled in memory.
    Input layout: (J, C, X, N) if frames_last_in else (N, J, C, X)."""
    shp = tuple(data.shape)
    if frames_last_in:
        J, C, X, N = shp
    else:
        N, J, C, X = shp
    Xo = len(sel) if sel is not None else X
    logical = (J, C, Xo, N) if fast else (N, J, C, Xo)
    if fd:
        if complex_storage == "compound":
            dset = h5.create_dataset("/measurement/data", shape=logical, dtype=np.complex64)
        elif complex_storage == "trailing":
            dset = h5.create_dataset("/measurement/data", shape=logical + (2,), dtype=np.float32)
        else:
            raise MDFError(f"complex_storage must be 'compound' or 'trailing', got {complex_storage!r}")
    else:
        dt = np.asarray(data[(slice(0, 1),) * 4]).dtype
        if dt.kind == "c":
            raise MDFError("time-domain data must be real")
        dset = h5.create_dataset("/measurement/data", shape=logical,
                                 dtype=dt if dt.kind in "iu" else np.float32)
    src_idx = np.arange(X) if sel is None else sel
    step = max(1, _PIECE_ELEMENTS // max(1, J * C * N))
    for s in range(0, Xo, step):
        idx = src_idx[s:s + step]
        sl = slice(int(idx[0]), int(idx[-1]) + 1)
        if frames_last_in:
            block = np.asarray(data[:, :, sl, :])
            block = block[:, :, idx - sl.start, :]          # (J, C, x, N)
        else:
            block = np.asarray(data[:, :, :, sl])
            block = np.moveaxis(block[:, :, :, idx - sl.start], 0, -1)  # -> (J, C, x, N)
        if block.dtype.kind in "fc" and not np.all(np.isfinite(block)):
            raise MDFError("data contains NaN or Inf")
        if snr_acc is not None:
            snr_acc(s, block)
        if not fast:
            block = np.moveaxis(block, -1, 0)               # -> (N, J, C, x)
        if fd:
            block = block.astype(np.complex64)
            if complex_storage == "trailing":
                block = np.stack([block.real, block.imag], axis=-1)
        else:
            block = block.astype(dset.dtype)
        if fast:
            dset[:, :, s:s + len(idx)] = block
        else:
            dset[:, :, :, s:s + len(idx)] = block


def _measurement_flags(h5, *, fd, fast, sel, bg):
    m = "/measurement/"
    _put(h5, m + "isFourierTransformed", int(fd), np.int8)
    _put(h5, m + "isFastFrameAxis", int(fast), np.int8)
    _put(h5, m + "isBackgroundCorrected", 0, np.int8)
    _put(h5, m + "isSpectralLeakageCorrected", 0, np.int8)
    _put(h5, m + "isTransferFunctionCorrected", 0, np.int8)
    _put(h5, m + "isFrequencySelection", int(sel is not None), np.int8)
    if sel is not None:
        _put(h5, m + "frequencySelection", sel + 1, np.int64)  # 1-based, as MPIFiles.jl
    _put(h5, m + "isFramePermutation", 0, np.int8)
    _put(h5, m + "isSparsityTransformed", 0, np.int8)
    _put(h5, m + "isBackgroundFrame", bg.astype(np.int8), np.int8)


def write_calibration(path, data, *, grid: Grid, acquisition: Acquisition, is_background_frame,
                      snr=None, metadata=None, extras=None, force=False, fourier=True,
                      complex_storage="compound", frame_axis_last=True,
                      frequency_selection=None, conversion_factor=None) -> Path:
    """Write a system-matrix (calibration) file.

    data: complex (J, C, K, O + B) with the frame axis last (positions in x-fastest order,
    then background frames as flagged), or real (J, C, V, O + B) with fourier=False; any
    array-like with .shape and slicing (e.g. an h5py dataset or memmap) is copied piecewise.
    snr: (J, C, K); when None it is computed from the background frames (needs B >= 2):
    mean |fg - mean bg| / mean absolute deviation of bg.
    Layout options (all readable): complex_storage "compound" | "trailing" (float axis of 2),
    frame_axis_last (isFastFrameAxis), frequency_selection (sorted 0-based full-axis indices
    to keep; data may hold all K or only those), conversion_factor (C x 2, time data only).
    """
    acq = _check_acq(acquisition)
    if not isinstance(grid, Grid):
        raise MDFError(f"{path}: grid must be a Grid, got {type(grid).__name__}")
    J, C, K, V = acq.num_periods, acq.num_rx_channels, acq.num_frequencies, acq.num_sampling_points
    shp = tuple(getattr(data, "shape", np.shape(data)))
    if not hasattr(data, "shape"):
        data = np.asarray(data)
    sel = _freq_selection(frequency_selection, K, str(path)) if fourier else None
    if frequency_selection is not None and not fourier:
        raise MDFError(f"{path}: frequency_selection needs frequency-domain data (fourier=True)")
    X = (K if sel is None else (K, len(sel))) if fourier else V
    if len(shp) != 4 or shp[:2] != (J, C) or (shp[2] not in X if isinstance(X, tuple) else shp[2] != X):
        raise MDFError(f"{path}: calibration data must have shape (J={J}, C={C}, "
                       f"{'K' if fourier else 'V'}={X}, O+B), got {shp}")
    N = shp[3]
    bg = _bg_flags(is_background_frame, N, str(path))
    O = int(np.count_nonzero(~bg))
    if O != grid.size:
        raise MDFError(f"{path}: calibration has {O} foreground frames but grid {grid.shape} "
                       f"has {grid.size} voxels")
    if sel is not None and shp[2] == len(sel) and len(sel) != K:
        sel_in = np.arange(len(sel))  # data holds only the selected frequencies
    else:
        sel_in = sel
    nst = K if sel is None else len(sel)
    if snr is not None:
        snr = np.asarray(snr, dtype=np.float64)
        if snr.shape not in ((J, C, K), (J, C, nst)) or not np.all(np.isfinite(snr)):
            raise MDFError(f"{path}: snr must be finite with shape (J={J}, C={C}, K={K}) or "
                           f"(J, C, {nst} selected), got {snr.shape}")
        if snr.shape != (J, C, nst):
            snr = snr[:, :, sel]
    elif np.count_nonzero(bg) < 2:
        raise MDFError(f"{path}: snr is required when the calibration has fewer than 2 "
                       f"background frames (it is computed from them otherwise)")
    if conversion_factor is not None:
        conversion_factor = np.asarray(conversion_factor, dtype=np.float64)
        if conversion_factor.shape != (C, 2) or not np.all(np.isfinite(conversion_factor)):
            raise MDFError(f"{path}: conversion_factor must be finite (C={C}, 2), got {conversion_factor.shape}")
    snr_out = np.zeros((J, C, nst)) if snr is None else snr

    def snr_of(spec):  # spec (J, C, k, N) -> (J, C, k): mean |fg - mean bg| / MAD of bg
        spec = spec.astype(np.complex128)
        mb = spec[..., bg].mean(axis=-1, keepdims=True)
        noise = np.mean(np.abs(spec[..., bg] - mb), axis=-1)
        return np.mean(np.abs(spec[..., ~bg] - mb), axis=-1) / np.maximum(noise, np.finfo(float).tiny)

    def acc(s, block):  # called per written slice of the frequency axis
        if snr is None and fourier:
            snr_out[:, :, s:s + block.shape[2]] = snr_of(block)

    if snr is None and not fourier:  # time data: SNR of the spectra, computed once here
        td = np.asarray(data, dtype=np.float64)
        if conversion_factor is not None:
            td = (td * conversion_factor[:, 0].reshape(1, C, 1, 1)
                  + conversion_factor[:, 1].reshape(1, C, 1, 1))
        snr_out[:] = snr_of(np.fft.rfft(td, axis=2) / V)

    def fill(h5):
        _write_common(h5, metadata)
        _write_acquisition(h5, acq, N, conversion_factor if not fourier else None)
        _write_data(h5, data, fd=fourier, fast=frame_axis_last, complex_storage=complex_storage,
                    sel=sel_in, frames_last_in=True, snr_acc=acc)
        _measurement_flags(h5, fd=fourier, fast=frame_axis_last,
                           sel=sel, bg=bg)
        size, fov, center = grid.to_mdf()
        c = "/calibration/"
        _put(h5, c + "size", size, np.int64)
        _put(h5, c + "fieldOfView", fov, np.float64)
        _put(h5, c + "fieldOfViewCenter", center, np.float64)
        _put(h5, c + "order", "xyz")
        _put(h5, c + "method", "simulation")
        _put(h5, c + "deltaSampleSize", np.zeros(3), np.float64)
        pos = _mdf_positions(grid)
        _put(h5, c + "positions", pos, np.float64)
        G = acq.gradient if acq.gradient is not None else np.zeros((3, 3))
        _put(h5, c + "offsetFields", -pos @ G.T, np.float64)  # moves the FFP to each position
        _put(h5, c + "snr", snr_out, np.float64)
        _write_extras(h5, extras)

    return _atomic_write(path, force, fill)


def _mdf_positions(grid: Grid) -> np.ndarray:
    """Voxel centres (P, 3) in MDF (x, y, z) order, x fastest."""
    pts = grid.points().reshape(-1, grid.ndim)[:, ::-1]   # image order -> (x, y[, z])
    if grid.ndim == 2:
        pts = np.concatenate([pts, np.zeros((len(pts), 1))], axis=1)
    return pts


def write_measurement(path, data, *, acquisition: Acquisition, is_background_frame,
                      fourier=False, frame_times=None, metadata=None, extras=None, force=False,
                      complex_storage="compound", frame_axis_last=False, frequency_selection=None,
                      conversion_factor=None) -> Path:
    """Write a measurement file.

    data: real (N, J, C, V) time domain (float32 or raw integers with `conversion_factor`
    (C x 2: scale, offset)), or complex (N, J, C, K) with fourier=True. Layout options as in
    `write_calibration`; frame_times (N,) seconds are kept under /_nirmpi/frameTimes.
    """
    acq = _check_acq(acquisition)
    J, C, K, V = acq.num_periods, acq.num_rx_channels, acq.num_frequencies, acq.num_sampling_points
    if not hasattr(data, "shape"):
        data = np.asarray(data)
    shp = tuple(data.shape)
    if frequency_selection is not None and not fourier:
        raise MDFError(f"{path}: frequency_selection needs frequency-domain data (fourier=True)")
    sel = _freq_selection(frequency_selection, K, str(path))
    X_ok = (K,) if sel is None else (K, len(sel))
    if len(shp) != 4 or shp[1:3] != (J, C) or (shp[3] not in X_ok if fourier else shp[3] != V):
        raise MDFError(f"{path}: measurement data must have shape (N, J={J}, C={C}, "
                       f"{'K=' + str(K) if fourier else 'V=' + str(V)}), got {shp}")
    if not fourier and np.asarray(data[:1, :1, :1, :1]).dtype.kind == "c":
        raise MDFError(f"{path}: time-domain data must be real (pass fourier=True for spectra)")
    N = shp[0]
    bg = _bg_flags(is_background_frame, N, str(path))
    if frame_times is not None:
        frame_times = np.asarray(frame_times, dtype=np.float64)
        if frame_times.shape != (N,) or not np.all(np.isfinite(frame_times)):
            raise MDFError(f"{path}: frame_times must be finite with shape ({N},), got {frame_times.shape}")
    if conversion_factor is not None:
        conversion_factor = np.asarray(conversion_factor, dtype=np.float64)
        if conversion_factor.shape != (C, 2) or not np.all(np.isfinite(conversion_factor)):
            raise MDFError(f"{path}: conversion_factor must be finite (C={C}, 2), got {conversion_factor.shape}")
    sel_in = np.arange(len(sel)) if sel is not None and shp[3] == len(sel) and len(sel) != K else sel

    def fill(h5):
        _write_common(h5, metadata)
        _write_acquisition(h5, acq, N, conversion_factor if not fourier else None)
        _write_data(h5, data, fd=fourier, fast=frame_axis_last, complex_storage=complex_storage,
                    sel=sel_in, frames_last_in=False)
        _measurement_flags(h5, fd=fourier, fast=frame_axis_last, sel=sel, bg=bg)
        _write_extras(h5, extras, frame_times=frame_times)

    return _atomic_write(path, force, fill)


def _source_acquisition(params) -> Acquisition | None:
    """The acquisition of the measurement a reconstruction came from (params["meas_path"], as
    build_problem records it): the spec makes /acquisition mandatory in every file."""
    src = params.get("meas_path") if isinstance(params, dict) else None
    if not isinstance(src, str) or not src:
        return None
    from .read import MDFFile

    try:
        return MDFFile(src).acquisition
    except NirmpiError:  # the source moved or broke since: the reconstruction is still written
        return None


def write_reconstruction(path, image, grid: Grid, *, params=None, force=False,
                         acquisition: Acquisition | None = None, metadata=None) -> Path:
    """Write a reconstruction: image (*grid.shape) or (Q, *grid.shape) -> /reconstruction/data
    (Q, P, 1) float32, voxels x fastest; parameters (JSON) under /_nirmpi/parameters.
    /acquisition comes from `acquisition`, else from the measurement named by
    params["meas_path"]; without either the file lacks it (`nirmpi validate` says so)."""
    if not isinstance(grid, Grid):
        raise MDFError(f"{path}: grid must be a Grid, got {type(grid).__name__}")
    img = np.asarray(image)
    if img.shape == grid.shape:
        img = img[None]
    if img.ndim != grid.ndim + 1 or img.shape[1:] != grid.shape or img.shape[0] < 1:
        raise MDFError(f"{path}: image must have shape {grid.shape} or (Q, *{grid.shape}), got {img.shape}")
    if img.dtype.kind not in "iufb" or not np.all(np.isfinite(img)):
        raise MDFError(f"{path}: image must be finite real numbers")
    Q = img.shape[0]
    data = img.astype(np.float32).reshape(Q, grid.size, 1)  # C order of (z, y, x) = x fastest
    if acquisition is None:
        acquisition = _source_acquisition(params)

    def fill(h5):
        _write_common(h5, metadata)
        if acquisition is not None:
            _write_acquisition(h5, _check_acq(acquisition), Q)
        size, fov, center = grid.to_mdf()
        r = "/reconstruction/"
        _put(h5, r + "data", data, np.float32)
        _put(h5, r + "size", size, np.int64)
        _put(h5, r + "fieldOfView", fov, np.float64)
        _put(h5, r + "fieldOfViewCenter", center, np.float64)
        _put(h5, r + "order", "xyz")
        _put(h5, r + "positions", _mdf_positions(grid), np.float64)
        _put(h5, r + "isOverscanRegion", np.zeros(grid.size, np.int8), np.int8)
        _write_extras(h5, None, params=params if params is not None else {})

    return _atomic_write(path, force, fill)
