"""MDF v2 (MPI Data Format) reading and writing.

Reading is lazy: `open()` reads the header only; `MDFFile.read_*` open the HDF5 file read-only
for the duration of one call and slice `/measurement/data` to the requested channels,
frequencies and frames. Writers produce MDF v2.1.0 files (complex data as the {r, i}
compound) and replace the target atomically.

Conventions (see docs/architecture.md): frequency-domain data = rfft(time signal) / V;
full-axis frequency index k is at k * bandwidth / (K - 1) Hz, K = V // 2 + 1.
`/measurement/frequencySelection` holds 1-based indices (MDF spec: a subset of {1, ..., L};
MPIFiles.jl writes Julia indices); in memory we use 0-based full-axis indices.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
import uuid as _uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from .errors import MDFError, NirmpiError
from .grid import Grid

# `open` is public (mdf.open) but left out of __all__ so that a star import cannot shadow the builtin
__all__ = [
    "Acquisition", "MDFFile", "ExtraRef", "write_calibration", "write_measurement",
    "write_reconstruction", "MDF_VERSION",
]

MDF_VERSION = "2.1.0"
_PIECE_ELEMENTS = 1 << 21  # ~16 MB of complex64 per h5py read: bounds peak memory above the result
_MIN_PIECE = 1 << 14       # ... but reads are not made smaller than this (per-call overhead)
_SMALL_EXTRA = 1 << 16     # /_nirmpi datasets up to this many elements are read into `extras`
_MAX_SAMPLES = 1 << 26     # sampling points per period; real receivers use ~1e3-1e5
_MAX_HEADER_ELEMENTS = 1 << 24  # header/flag datasets (per-frame flags, SNR, TF) are far smaller


# ----------------------------------------------------------------------------------------------
# Acquisition
# ----------------------------------------------------------------------------------------------
@dataclass
class Acquisition:
    """Drive field + receiver: what a system matrix and a measurement must share."""

    base_frequency: float
    dividers: tuple[int, ...]
    drive_strength: tuple[float, ...]
    num_sampling_points: int
    bandwidth: float
    num_rx_channels: int
    drive_phase: tuple[float, ...] | None = None
    gradient: np.ndarray | None = None
    num_periods: int = 1
    num_averages: int = 1
    transfer_function: np.ndarray | None = None

    def __post_init__(self):
        try:
            self.base_frequency = float(self.base_frequency)
            self.dividers = tuple(int(d) for d in np.ravel(self.dividers))
            self.drive_strength = tuple(float(s) for s in np.ravel(self.drive_strength))
            self.num_sampling_points = int(self.num_sampling_points)
            self.bandwidth = float(self.bandwidth)
            self.num_rx_channels = int(self.num_rx_channels)
            self.num_periods = int(self.num_periods)
            self.num_averages = int(self.num_averages)
            if self.drive_phase is not None:
                self.drive_phase = tuple(float(p) for p in np.ravel(self.drive_phase))
            if self.gradient is not None:
                self.gradient = np.asarray(self.gradient, dtype=np.float64).reshape(3, 3)
            if self.transfer_function is not None:
                self.transfer_function = np.asarray(self.transfer_function, dtype=np.complex128)
        except (TypeError, ValueError) as e:
            raise NirmpiError(f"acquisition: malformed value ({e})") from None
        problems = []
        if not (math.isfinite(self.base_frequency) and self.base_frequency > 0):
            problems.append(f"base_frequency must be positive and finite, got {self.base_frequency}")
        if not self.dividers or any(d < 1 for d in self.dividers):
            problems.append(f"dividers must be positive integers, got {self.dividers}")
        if len(self.drive_strength) != len(self.dividers):
            problems.append(f"drive_strength needs {len(self.dividers)} values (one per drive "
                            f"channel), got {len(self.drive_strength)}")
        if not all(math.isfinite(s) for s in self.drive_strength):
            problems.append(f"drive_strength must be finite, got {self.drive_strength}")
        if self.drive_phase is not None and (len(self.drive_phase) != len(self.dividers)
                                             or not all(math.isfinite(p) for p in self.drive_phase)):
            problems.append(f"drive_phase needs {len(self.dividers)} finite values, got {self.drive_phase}")
        if self.num_sampling_points < 2:
            problems.append(f"num_sampling_points must be >= 2, got {self.num_sampling_points}")
        if not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            problems.append(f"bandwidth must be positive and finite, got {self.bandwidth}")
        if self.num_rx_channels < 1:
            problems.append(f"num_rx_channels must be >= 1, got {self.num_rx_channels}")
        if self.num_periods < 1 or self.num_averages < 1:
            problems.append(f"num_periods and num_averages must be >= 1, got "
                            f"{self.num_periods}, {self.num_averages}")
        if self.gradient is not None and not np.all(np.isfinite(self.gradient)):
            problems.append("gradient must be finite")
        if self.transfer_function is not None:
            want = (self.num_rx_channels, self.num_sampling_points // 2 + 1)
            if self.transfer_function.shape != want:
                problems.append(f"transfer_function must have shape {want}, got "
                                f"{self.transfer_function.shape}")
            elif not np.all(np.isfinite(self.transfer_function)):
                problems.append("transfer_function must be finite")
        if problems:
            raise NirmpiError("acquisition: " + "; ".join(problems))

    @property
    def cycle(self) -> float:
        """Drive-field cycle (s) = lcm(dividers) / base frequency."""
        return math.lcm(*self.dividers) / self.base_frequency

    @property
    def num_frequencies(self) -> int:
        return self.num_sampling_points // 2 + 1

    def frequencies(self) -> np.ndarray:
        K = self.num_frequencies
        return np.arange(K) * (self.bandwidth / (K - 1))

    def drive_frequencies(self) -> np.ndarray:
        return self.base_frequency / np.asarray(self.dividers, dtype=np.float64)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (no transfer function)."""
        return {
            "base_frequency": self.base_frequency, "dividers": list(self.dividers),
            "drive_strength": list(self.drive_strength),
            "drive_phase": None if self.drive_phase is None else list(self.drive_phase),
            "num_sampling_points": self.num_sampling_points, "bandwidth": self.bandwidth,
            "num_rx_channels": self.num_rx_channels, "num_periods": self.num_periods,
            "num_averages": self.num_averages,
            "gradient": None if self.gradient is None else self.gradient.tolist(),
            "has_transfer_function": self.transfer_function is not None,
        }


# ----------------------------------------------------------------------------------------------
# small helpers for reading header datasets
# ----------------------------------------------------------------------------------------------
class _Header:
    """Typed access to the datasets of one open h5py.File; every problem is an MDFError."""

    def __init__(self, h5: h5py.File, path: Path):
        self.h5, self.path = h5, path
        self._kinds: dict[str, bool] | None = None

    def err(self, name: str, what: str) -> MDFError:
        return MDFError(f"{self.path}: dataset {name}: {what}")

    def _kind(self, name: str) -> bool | None:
        """True for a dataset, False for a group, None if absent (one traversal per file)."""
        if self._kinds is None:
            kinds = {"/": False}

            def note(name: bytes, info):
                if info.type in (h5py.h5o.TYPE_DATASET, h5py.h5o.TYPE_GROUP):
                    kinds["/" + name.decode("utf-8", "replace")] = info.type == h5py.h5o.TYPE_DATASET
            try:  # low-level visit: no high-level object per node (3x faster than visititems)
                h5py.h5o.visit(self.h5.id, note, info=True)
            except (KeyError, OSError, RuntimeError, ValueError, TypeError) as e:
                raise MDFError(f"{self.path}: the HDF5 tree cannot be listed ({type(e).__name__}: {e})") from None
            self._kinds = kinds
        return self._kinds.get("/" + name.strip("/"))

    def has(self, name: str) -> bool:
        return self._kind(name) is True

    def has_group(self, name: str) -> bool:
        return self._kind(name) is False

    def dataset(self, name: str) -> h5py.Dataset:
        try:
            obj = self.h5[name]
        except KeyError:
            raise self.err(name, "missing (required by MDF v2)") from None
        except (OSError, RuntimeError, ValueError, TypeError) as e:
            raise self.err(name, f"cannot be opened ({type(e).__name__}: {e})") from None
        if not isinstance(obj, h5py.Dataset):
            raise self.err(name, f"expected a dataset, found {type(obj).__name__}")
        return obj

    def raw(self, name: str) -> np.ndarray:
        d = self.dataset(name)
        if d.size > _MAX_HEADER_ELEMENTS:  # header datasets are small; refuse to load a giant one
            raise self.err(name, f"implausibly large for a header dataset: shape {d.shape}")
        try:
            return np.asarray(d[()])
        except (OSError, RuntimeError, ValueError, TypeError) as e:
            raise self.err(name, f"cannot be read ({type(e).__name__}: {e})") from None

    def numbers(self, name: str, *, integer=False, shape=None, finite=True) -> np.ndarray:
        a = self.raw(name)
        if a.dtype.kind not in "iufb":
            raise self.err(name, f"expected {'integers' if integer else 'numbers'}, got dtype {a.dtype}")
        if shape is not None and a.shape != tuple(shape):
            raise self.err(name, f"expected shape {tuple(shape)}, got {a.shape}")
        if a.dtype.kind == "f":
            if finite and not np.all(np.isfinite(a)):
                raise self.err(name, "contains NaN or Inf")
            if integer:
                if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                    raise self.err(name, f"expected integers, got {a.ravel()[:6]}")
                a = a.astype(np.int64)
        elif integer:
            a = a.astype(np.int64)
        return a

    def scalar(self, name: str, *, integer=False, positive=False, default=None):
        if default is not None and not self.has(name):
            return default
        a = self.numbers(name, integer=integer)
        if a.size != 1:
            raise self.err(name, f"expected a single value, got shape {a.shape}")
        v = int(a.ravel()[0]) if integer else float(a.ravel()[0])
        if positive and not v > 0:
            raise self.err(name, f"expected a positive value, got {v}")
        return v

    def flag(self, name: str, default: bool | None = None) -> bool:
        if not self.has(name):
            if default is None:
                raise self.err(name, "missing (required Int8 flag)")
            return default
        v = self.scalar(name, integer=True)
        if v not in (0, 1):
            raise self.err(name, f"expected a flag 0 or 1, got {v}")
        return bool(v)

    def string(self, name: str, default: str | None = None) -> str:
        if not self.has(name):
            if default is None:
                raise self.err(name, "missing (required string)")
            return default
        a = self.raw(name)
        v = a.ravel()[0] if a.size >= 1 else None
        if isinstance(v, (bytes, np.bytes_)):
            try:
                return bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                raise self.err(name, "string is not valid UTF-8") from None
        if isinstance(v, str):
            return v
        raise self.err(name, f"expected a string, got dtype {a.dtype}")

    def complex_array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        a = self.raw(name)
        if a.dtype.kind == "c" and a.shape == shape:
            out = a.astype(np.complex128)
        elif a.dtype.kind in "iuf" and a.shape == shape + (2,):
            out = a[..., 0].astype(np.float64) + 1j * a[..., 1].astype(np.float64)
        else:
            raise self.err(name, f"expected complex {shape} ({{r, i}} compound) or float "
                                 f"{shape + (2,)}, got {a.dtype} {a.shape}")
        if not np.all(np.isfinite(out)):
            raise self.err(name, "contains NaN or Inf")
        return out


def _meander_permutation(size_xyz: tuple[int, int, int]) -> np.ndarray:
    """0-based stored foreground index of each x-fastest grid position for a meandering
    (snake) scan: a line runs backwards when the sum of the slower 0-based indices is odd."""
    nx, ny, nz = size_xyz
    iz, iy, ix = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    sx = np.where((iy + iz) % 2 == 1, nx - 1 - ix, ix)
    sy = np.where(iz % 2 == 1, ny - 1 - iy, iy)
    return (sx + nx * (sy + ny * iz)).ravel()


def _lenient_flag(h: _Header, name: str) -> bool:
    try:
        return h.flag(name, default=False)
    except MDFError:
        return False


def _per_channel(h: _Header, name: str, D: int, J: int) -> np.ndarray:
    """Drive-field strength/phase (J x D x F in v2.1; older D or J x D): first period, first F."""
    a = h.numbers(name)
    if a.ndim == 3 and a.shape[1] == D and a.shape[0] >= 1 and a.shape[2] >= 1:
        return a[0, :, 0]
    if a.ndim == 2 and a.shape[0] == D:
        return a[:, 0]
    if a.ndim == 2 and a.shape[1] == D:
        return a[0, :]
    if a.ndim == 1 and a.shape[0] == D:
        return a
    raise h.err(name, f"expected shape (J={J}, D={D}, F), got {a.shape}")


def _to_complex(a: np.ndarray) -> np.ndarray:
    """A float (..., 2) array (real, imag) as complex without a copy where possible."""
    if a.dtype == np.float32 or a.dtype == np.float64:
        a = np.ascontiguousarray(a)
        return a.view(np.complex64 if a.dtype == np.float32 else np.complex128)[..., 0]
    a = a.astype(np.float32 if a.dtype.itemsize <= 2 else np.float64)
    return a.view(np.complex64 if a.dtype == np.float32 else np.complex128)[..., 0]


def _as_index(ix: np.ndarray):
    """Sorted unique index array -> slice when contiguous (a cheaper h5py selection)."""
    if len(ix) and int(ix[-1]) - int(ix[0]) + 1 == len(ix):
        return slice(int(ix[0]), int(ix[-1]) + 1)
    return ix


def _chunks(ix: np.ndarray, size: int) -> Iterator[tuple[slice, np.ndarray]]:
    size = max(1, int(size))
    for s in range(0, len(ix), size):
        yield slice(s, min(s + size, len(ix))), ix[s:s + size]


def _sorted_request(values, n: int, what: str, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate integer indices in [0, n); return (sorted unique, reorder map or None)."""
    a = np.asarray(values)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        if a.size and a.dtype.kind == "f" and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise MDFError(f"{path}: {what} must be a 1-D list of integers, got {values!r}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise MDFError(f"{path}: {what} must lie in [0, {n - 1}], got {a.min()}..{a.max()}")
    u = np.unique(a)
    if len(u) == len(a) and np.all(u == a):
        return u, None
    return u, np.searchsorted(u, a)


# ----------------------------------------------------------------------------------------------
# MDFFile
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtraRef:
    """A large dataset under /_nirmpi, not read at open: `.read()` loads it."""

    path: Path
    name: str
    shape: tuple[int, ...]
    dtype: str

    def read(self) -> np.ndarray:
        with _h5open(self.path) as h5:
            h = _Header(h5, self.path)
            return h.raw(self.name)


def _h5open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise MDFError(f"{path}: file does not exist") from None
    except IsADirectoryError:
        raise MDFError(f"{path}: is a directory, expected an MDF (HDF5) file") from None
    except (OSError, RuntimeError, ValueError) as e:
        raise MDFError(f"{path}: not a readable HDF5 file ({e})") from None


class MDFFile:
    """Header of an MDF v2 file; data are read on request (see module docstring)."""

    path: Path
    version: str
    kind: str
    acquisition: Acquisition | None
    grid: Grid | None
    num_frames: int
    is_background_frame: np.ndarray
    frequencies: np.ndarray
    snr: np.ndarray | None
    frame_times: np.ndarray
    flags: dict
    metadata: dict

    def __init__(self, path):
        self.path = Path(path)
        if self.path.is_dir():
            raise MDFError(f"{self.path}: is a directory, expected an MDF (HDF5) file")
        if not self.path.exists():
            raise MDFError(f"{self.path}: file does not exist")
        with _h5open(self.path) as h5:
            try:
                self._read_header(_Header(h5, self.path))
            except MDFError:
                raise
            except NirmpiError as e:
                raise MDFError(f"{self.path}: {e}") from None
            except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError,
                    OverflowError, ZeroDivisionError, AttributeError, UnicodeError) as e:
                raise MDFError(f"{self.path}: malformed MDF header ({type(e).__name__}: {e})") from None

    # -- header ---------------------------------------------------------------------------------
    def _read_header(self, h: _Header):
        if not h.has("/version"):
            raise MDFError(f"{self.path}: not an MDF file (dataset /version is missing)")
        self.version = h.string("/version")
        major = self.version.strip().lstrip("vV").split(".")[0]
        if major == "1":
            raise MDFError(f"{self.path}: MDF v1 (version {self.version!r}) is not supported, "
                           f"convert with MPIFiles.jl (saveasMDF) to MDF v2")
        if major != "2":
            raise MDFError(f"{self.path}: dataset /version: expected MDF 2.x, got {self.version!r}")
        self.metadata = self._read_metadata(h)
        has_meas = h.has("/measurement/data")
        if has_meas and h.has_group("/calibration"):
            self.kind = "calibration"
        elif has_meas:
            self.kind = "measurement"
        elif h.has("/reconstruction/data"):
            self.kind = "reconstruction"
        else:
            raise MDFError(f"{self.path}: neither /measurement/data nor /reconstruction/data "
                           f"found; nothing to read")
        self._conversion = None
        need_acq = self.kind != "reconstruction" or h.has_group("/acquisition/drivefield")
        self.acquisition = self._read_acquisition(h) if need_acq else None
        self.grid = None
        self.snr = None
        self._snr_stored = None
        self.flags = {}
        self.stored_freq_index = None
        if self.kind == "reconstruction":
            self._read_reconstruction_header(h)
        else:
            self._read_measurement_header(h)
            if self.kind == "calibration":
                self._read_calibration_header(h)
        self.frequencies = (self.acquisition.frequencies() if self.acquisition is not None
                            else np.zeros(0))
        self.frame_times = self._read_frame_times(h)
        self._extras_index = self._index_extras(h)

    def _read_metadata(self, h: _Header) -> dict:
        def s(n):  # metadata is informative only: never fatal
            try:
                return h.string(n, default="")
            except MDFError:
                return ""

        return {
            "uuid": s("/uuid"), "time": s("/time"),
            "study_name": s("/study/name"), "study_description": s("/study/description"),
            "experiment_name": s("/experiment/name"),
            "experiment_description": s("/experiment/description"),
            "subject": s("/experiment/subject"),
            "is_simulation": _lenient_flag(h, "/experiment/isSimulation"),
            "scanner_name": s("/scanner/name") or s("/scanner/model"),
            "scanner_manufacturer": s("/scanner/manufacturer"),
            "scanner_facility": s("/scanner/facility"), "operator": s("/scanner/operator"),
            "topology": s("/scanner/topology"), "tracer_name": s("/tracer/name"),
        }

    def _read_acquisition(self, h: _Header) -> Acquisition:
        # defaults as MPIFiles.jl: numPeriodsPerFrame (older name numPeriods) and numAverages -> 1
        J = h.scalar("/acquisition/numPeriods", integer=True, positive=True, default=1)
        J = h.scalar("/acquisition/numPeriodsPerFrame", integer=True, positive=True, default=J)
        navg = h.scalar("/acquisition/numAverages", integer=True, positive=True, default=1)
        D = h.scalar("/acquisition/drivefield/numChannels", integer=True, positive=True)
        base = h.scalar("/acquisition/drivefield/baseFrequency", positive=True)
        div = h.numbers("/acquisition/drivefield/divider", integer=True)
        if div.ndim == 2 and div.shape[0] == D:
            div = div[:, 0]
        if div.shape != (D,) or np.any(div < 1):
            raise h.err("/acquisition/drivefield/divider",
                        f"expected {D} positive integers (D x F), got {div.ravel()[:6]} shape {div.shape}")
        strength = _per_channel(h, "/acquisition/drivefield/strength", D, J)
        phase = (_per_channel(h, "/acquisition/drivefield/phase", D, J)
                 if h.has("/acquisition/drivefield/phase") else None)
        C = h.scalar("/acquisition/receiver/numChannels", integer=True, positive=True)
        V = h.scalar("/acquisition/receiver/numSamplingPoints", integer=True, positive=True)
        if not 2 <= V <= _MAX_SAMPLES:  # the cap keeps a corrupt header from allocating TBs
            raise h.err("/acquisition/receiver/numSamplingPoints",
                        f"expected 2 <= V <= {_MAX_SAMPLES}, got {V}")
        bw = h.scalar("/acquisition/receiver/bandwidth", positive=True)
        gradient = None
        if h.has("/acquisition/gradient"):
            g = h.numbers("/acquisition/gradient")
            if g.size % 9 or g.size == 0:
                raise h.err("/acquisition/gradient", f"expected J x Y x 3 x 3, got shape {g.shape}")
            gradient = g.reshape(-1, 3, 3)[0]
        tf = None
        if h.has("/acquisition/receiver/transferFunction"):
            tf = h.complex_array("/acquisition/receiver/transferFunction", (C, V // 2 + 1))
        if h.has("/acquisition/receiver/dataConversionFactor"):
            cf = h.numbers("/acquisition/receiver/dataConversionFactor")
            if cf.shape != (C, 2):
                raise h.err("/acquisition/receiver/dataConversionFactor",
                            f"expected shape (C={C}, 2) (scale, offset), got {cf.shape}")
            self._conversion = cf.astype(np.float64)
        return Acquisition(base, tuple(div), tuple(strength), V, bw, C, drive_phase=phase,
                           gradient=gradient, num_periods=J, num_averages=navg, transfer_function=tf)

    def _read_measurement_header(self, h: _Header):
        acq = self.acquisition
        J, C, V, K = acq.num_periods, acq.num_rx_channels, acq.num_sampling_points, acq.num_frequencies
        N = h.scalar("/acquisition/numFrames", integer=True, positive=True)
        f = self.flags
        f["isFourierTransformed"] = h.flag("/measurement/isFourierTransformed")
        if h.has("/measurement/isFastFrameAxis"):
            f["isFastFrameAxis"] = h.flag("/measurement/isFastFrameAxis")
        elif h.has("/measurement/isTransposed"):  # name used by older writers
            f["isFastFrameAxis"] = h.flag("/measurement/isTransposed")
        else:  # as MPIFiles.jl: frame axis first; the data shape check below catches a wrong guess
            f["isFastFrameAxis"] = False
        f["isBackgroundCorrected"] = h.flag("/measurement/isBackgroundCorrected")
        f["isFrequencySelection"] = h.flag("/measurement/isFrequencySelection")
        for name in ("isSpectralLeakageCorrected", "isTransferFunctionCorrected",
                     "isFramePermutation", "isSparsityTransformed"):
            f[name] = h.flag("/measurement/" + name, default=False)
        if f["isSparsityTransformed"]:
            raise MDFError(f"{self.path}: /measurement/isSparsityTransformed = 1: sparsity-"
                           f"(DCT-)compressed system matrices are not supported; store the full "
                           f"matrix (MPIFiles.jl saveasMDF without a sparsity transformation)")
        # isFramePermutation = 1 records that frames WERE reordered (MPIFiles.jl stores processed
        # system matrices sorted, background last, with this flag): the stored order is final.
        fd = f["isFourierTransformed"]
        if f["isFrequencySelection"]:
            if not fd:
                raise h.err("/measurement/isFrequencySelection",
                            "frequency selection needs Fourier-transformed data (isFourierTransformed = 0)")
            sel = h.numbers("/measurement/frequencySelection", integer=True)
            if sel.ndim != 1 or sel.size == 0:
                raise h.err("/measurement/frequencySelection",
                            f"expected a non-empty 1-D list of indices, got shape {sel.shape}")
            if sel.min() < 1 or sel.max() > K:
                raise h.err("/measurement/frequencySelection",
                            f"indices must lie in [1, {K}] (1-based, K = V/2+1), got {sel.min()}..{sel.max()}")
            if len(np.unique(sel)) != len(sel):
                raise h.err("/measurement/frequencySelection", "indices are not unique")
            self.stored_freq_index = sel - 1
        else:
            self.stored_freq_index = np.arange(K)
        self._pos_of = np.full(K, -1, dtype=np.int64)
        self._pos_of[self.stored_freq_index] = np.arange(len(self.stored_freq_index))
        last = len(self.stored_freq_index) if fd else V
        fast = f["isFastFrameAxis"]
        logical = (J, C, last, N) if fast else (N, J, C, last)
        d = h.dataset("/measurement/data")
        shape, dt = tuple(d.shape), d.dtype
        if dt.kind == "c" and shape == logical:
            storage = "complex"
        elif dt.kind in "iuf" and shape == logical + (2,) and fd:
            storage = "trailing"
        elif dt.kind in "iuf" and shape == logical and not fd:
            storage = "real"
        else:
            desc = ("(J, C, K, N)" if fast else "(N, J, C, K)") if fd else \
                   ("(J, C, V, N)" if fast else "(N, J, C, V)")
            want = (f"complex {logical} ({{r, i}} compound) or float {logical + (2,)}" if fd
                    else f"real numbers {logical}")
            raise h.err("/measurement/data", f"expected {want} = {desc} for "
                        f"{'frequency' if fd else 'time'}-domain data (/measurement/isFourierTransformed"
                        f" = {int(fd)}, /measurement/isFastFrameAxis = {int(fast)}) with N={N} frames "
                        f"(/acquisition/numFrames), J={J}, C={C}, V={V}; got {dt} {shape}")
        self._storage = storage
        self._data_dtype = str(dt)
        self._data_shape = shape
        self.num_frames = N
        if h.has("/measurement/isBackgroundFrame"):
            bg = h.numbers("/measurement/isBackgroundFrame", integer=True)
            if bg.shape != (N,):
                raise h.err("/measurement/isBackgroundFrame", f"expected shape ({N},) (one flag "
                            f"per frame), got {bg.shape}")
            if np.any((bg != 0) & (bg != 1)):
                raise h.err("/measurement/isBackgroundFrame", "expected flags 0 or 1")
            self.is_background_frame = bg.astype(bool)
        else:
            self.is_background_frame = np.zeros(N, dtype=bool)
        if h.has("/calibration/snr"):
            self._snr_stored = h.numbers("/calibration/snr")

    def _read_calibration_header(self, h: _Header):
        size = h.numbers("/calibration/size", integer=True, shape=(3,))
        if np.any(size < 1):
            raise h.err("/calibration/size", f"expected 3 positive integers (x, y, z), got {size}")
        fov = h.numbers("/calibration/fieldOfView", shape=(3,))
        if np.any(fov <= 0):
            raise h.err("/calibration/fieldOfView", f"expected 3 positive lengths (m), got {fov}")
        center = (h.numbers("/calibration/fieldOfViewCenter", shape=(3,))
                  if h.has("/calibration/fieldOfViewCenter") else np.zeros(3))
        order = h.string("/calibration/order", default="xyz")
        if order.strip().lower() != "xyz":
            raise h.err("/calibration/order", f"expected 'xyz' (x fastest), got {order!r}")
        self.grid = Grid.from_mdf(size, fov, center)
        self._position_order = None
        meander = False
        if h.has("/calibration/isMeanderingGrid"):
            meander = h.flag("/calibration/isMeanderingGrid")
        if meander and not self.flags["isFramePermutation"]:
            # positions stored in snake order (robot scan): sorted position i <- stored i'
            self._position_order = _meander_permutation(tuple(int(s) for s in size))
        O = int(np.count_nonzero(~self.is_background_frame))
        if O != self.grid.size:
            raise h.err("/measurement/data", f"has {O} foreground frames but /calibration/size "
                        f"{tuple(int(s) for s in size)} needs {self.grid.size} (one per voxel)")
        if self._snr_stored is not None:
            J, C, K = (self.acquisition.num_periods, self.acquisition.num_rx_channels,
                       self.acquisition.num_frequencies)
            s = self._snr_stored
            nst = len(self.stored_freq_index)
            if s.shape == (J, C, K):
                snr = s.astype(np.float64)
            elif s.shape == (J, C, nst):
                snr = np.zeros((J, C, K))
                snr[:, :, self.stored_freq_index] = s
            else:
                raise h.err("/calibration/snr", f"expected shape (J={J}, C={C}, K={K}) or "
                            f"(J, C, {nst} selected frequencies), got {s.shape}")
            if np.any(snr < 0):
                raise h.err("/calibration/snr", "expected non-negative values")
            self.snr = snr

    def _read_reconstruction_header(self, h: _Header):
        d = h.dataset("/reconstruction/data")
        size = h.numbers("/reconstruction/size", integer=True, shape=(3,))
        if np.any(size < 1):
            raise h.err("/reconstruction/size", f"expected 3 positive integers (x, y, z), got {size}")
        fov = h.numbers("/reconstruction/fieldOfView", shape=(3,))
        if np.any(fov <= 0):
            raise h.err("/reconstruction/fieldOfView", f"expected 3 positive lengths (m), got {fov}")
        center = (h.numbers("/reconstruction/fieldOfViewCenter", shape=(3,))
                  if h.has("/reconstruction/fieldOfViewCenter") else np.zeros(3))
        order = h.string("/reconstruction/order", default="xyz")
        if order.strip().lower() != "xyz":
            raise h.err("/reconstruction/order", f"expected 'xyz' (x fastest), got {order!r}")
        self.grid = Grid.from_mdf(size, fov, center)
        P = self.grid.size
        if d.ndim != 3 or d.shape[1] != P or d.shape[0] < 1 or d.shape[2] < 1 or d.dtype.kind not in "iuf":
            raise h.err("/reconstruction/data", f"expected real numbers (Q, P={P}, S) (frames x "
                        f"voxels x spectral channels), got {d.dtype} {d.shape}")
        self.num_frames = int(d.shape[0])
        self.is_background_frame = np.zeros(self.num_frames, dtype=bool)

    def _read_frame_times(self, h: _Header) -> np.ndarray:
        N = self.num_frames
        if h.has("/_nirmpi/frameTimes"):
            t = h.numbers("/_nirmpi/frameTimes")
            if t.shape != (N,):
                raise h.err("/_nirmpi/frameTimes", f"expected shape ({N},), got {t.shape}")
            return t.astype(np.float64)
        if self.acquisition is None:
            return np.arange(N, dtype=np.float64)
        a = self.acquisition
        return np.arange(N) * (a.cycle * a.num_periods * a.num_averages)

    def _index_extras(self, h: _Header) -> dict:
        out = {}
        if not h.has_group("/_nirmpi"):
            return out

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (tuple(obj.shape), str(obj.dtype))
        try:
            h.h5["/_nirmpi"].visititems(visit)
        except (OSError, RuntimeError, KeyError, ValueError, TypeError):
            raise MDFError(f"{self.path}: group /_nirmpi cannot be listed") from None
        return out

    # -- derived properties ---------------------------------------------------------------------
    @property
    def foreground_frames(self) -> np.ndarray:
        return np.flatnonzero(~self.is_background_frame)

    @property
    def background_frames(self) -> np.ndarray:
        return np.flatnonzero(self.is_background_frame)

    @property
    def num_foreground_frames(self) -> int:
        return int(np.count_nonzero(~self.is_background_frame))

    @property
    def num_background_frames(self) -> int:
        return int(np.count_nonzero(self.is_background_frame))

    @property
    def available_freq_index(self) -> np.ndarray:
        """Full-axis frequency indices that the file stores (all K unless frequency-selected)."""
        if self.stored_freq_index is None:
            return np.zeros(0, dtype=np.int64)
        return np.sort(self.stored_freq_index)

    @property
    def frequency_selection(self) -> np.ndarray | None:
        """Sorted 0-based full-axis indices a frequency-selected file stores; None otherwise."""
        if not self.flags.get("isFrequencySelection", False):
            return None
        return self.available_freq_index

    @property
    def extras(self) -> dict:
        """Datasets under /_nirmpi (name relative to it): small ones as arrays (strings
        decoded, JSON left as text), large ones as `ExtraRef` to `.read()` on demand."""
        out: dict[str, Any] = {}
        small = [n for n, (shape, _) in self._extras_index.items() if int(np.prod(shape)) <= _SMALL_EXTRA]
        if small:
            with _h5open(self.path) as h5:
                h = _Header(h5, self.path)
                for n in small:
                    v = h.raw("/_nirmpi/" + n)
                    if v.dtype.kind in "SO" and v.shape == ():
                        v = v[()].decode("utf-8", "replace") if isinstance(v[()], bytes) else v[()]
                    out[n] = v
        for n, (shape, dtype) in self._extras_index.items():
            if n not in out:
                out[n] = ExtraRef(self.path, "/_nirmpi/" + n, shape, dtype)
        return out

    # -- data access ----------------------------------------------------------------------------
    def _require(self, *kinds):
        if self.kind not in kinds:
            raise MDFError(f"{self.path}: is a {self.kind} file; this needs a {' or '.join(kinds)} file")

    def _check_period(self, period) -> int:
        J = self.acquisition.num_periods
        try:
            p = int(period)
        except (TypeError, ValueError):
            raise MDFError(f"{self.path}: period must be an integer, got {period!r}") from None
        if not 0 <= p < J:
            raise MDFError(f"{self.path}: period {p} out of range, the file has "
                           f"{J} period(s) per frame (/acquisition/numPeriodsPerFrame)")
        return p

    def _freq_request(self, freq_index):
        """-> (requested full indices (sorted unique), reorder map or None)."""
        K = self.acquisition.num_frequencies
        if freq_index is None:
            return self.available_freq_index, None
        fi, order = _sorted_request(freq_index, K, "freq_index (0-based full-axis frequency index)", self.path)
        missing = fi[self._pos_of[fi] < 0]
        if len(missing):
            f = self.frequencies[missing[:5]]
            raise MDFError(
                f"{self.path}: frequency index {missing[:5].tolist()} ({', '.join(f'{x/1e3:.2f} kHz' for x in f)}) "
                f"is not stored: /measurement/frequencySelection keeps {len(self.stored_freq_index)} "
                f"of {K} frequencies; use MDFFile.available_freq_index")
        return fi, order

    def _pieces(self, h5: h5py.File, period: int, channels: np.ndarray, frames: np.ndarray,
                freqs: np.ndarray) -> Iterator[tuple[int, slice, slice, np.ndarray]]:
        """Yield (channel position, slice of `frames`, slice of `freqs`, complex (n, k)) blocks
        read from /measurement/data; `channels`, `frames`, `freqs` sorted unique; freqs are
        full-axis indices. Time data are converted (dataConversionFactor) and rfft/V'd."""
        d = _Header(h5, self.path).dataset("/measurement/data")
        fd = self.flags["isFourierTransformed"]
        fast = self.flags["isFastFrameAxis"]
        trailing = self._storage == "trailing"
        V = self.acquisition.num_sampling_points
        if fd:
            pos = self._pos_of[freqs]
            porder = np.argsort(pos, kind="stable")
            spos = pos[porder]
            back = None if np.all(porder == np.arange(len(porder))) else np.argsort(porder)
            inner = spos
        else:
            inner = np.arange(V)
            back = None
        width = max(1, len(inner))
        # piece size: at most 1/16 of the result (and <= _PIECE_ELEMENTS), so that the h5py
        # read buffers add little to the peak memory on top of the returned array
        piece = min(_PIECE_ELEMENTS, max(_MIN_PIECE, len(channels) * len(freqs) * len(frames) // 16))
        if fast:  # (J, C, inner, N): chunk along the inner axis, frames whole
            step_inner = max(1, piece // max(1, len(frames))) if fd else len(inner)
            step_frames = len(frames) if fd else max(1, piece // V)
        else:     # (N, J, C, inner): chunk along frames
            step_inner = len(inner)
            step_frames = max(1, piece // width)
        if back is not None:
            step_inner = len(inner)  # unsorted stored selection: reorder whole rows
        tail = (slice(None),) if trailing else ()
        for ci, c in enumerate(channels):
            c = int(c)
            for fsl, fr in _chunks(frames, step_frames):
                for ksl, inn in _chunks(inner, step_inner):
                    block = self._read_piece(d, fast, period, c, fr, inn, tail)
                    if not fd:
                        ksl = slice(0, len(freqs))
                    if trailing:
                        block = _to_complex(block)
                    if not np.all(np.isfinite(block)):
                        raise MDFError(f"{self.path}: dataset /measurement/data contains NaN or Inf "
                                       f"(channel {c}, period {period}, frames {int(fr[0])}..{int(fr[-1])})")
                    if not fd:
                        block = block.astype(np.float64)
                        if self._conversion is not None:
                            a, b = self._conversion[c]
                            block = block * a + b
                        block = (np.fft.rfft(block, axis=1) / V)[:, freqs]
                    elif back is not None:
                        block = block[:, back]
                    yield ci, fsl, ksl, block

    def _read_piece(self, d, fast, j, c, fr, inn, tail) -> np.ndarray:
        """One h5py read of frames `fr` x inner indices `inn` -> (len(fr), len(inn)[, 2])."""
        fs, ins = _as_index(fr), _as_index(inn)
        if not isinstance(fs, slice) and not isinstance(ins, slice):
            # h5py allows one index list per selection: loop over the slower file axis
            if fast:
                rows = [d[(j, c, int(k), fs) + tail] for k in inn]
                return np.stack(rows, axis=0).swapaxes(0, 1)
            rows = [d[(int(n), j, c, ins) + tail] for n in fr]
            return np.stack(rows, axis=0)
        if fast:
            return d[(j, c, ins, fs) + tail].swapaxes(0, 1)
        return d[(fs, j, c, ins) + tail]

    def _guarded(self, fn: Callable, what: str):
        try:
            with _h5open(self.path) as h5:
                return fn(h5)
        except NirmpiError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            raise MDFError(f"{self.path}: dataset /measurement/data: cannot read {what} "
                           f"({type(e).__name__}: {e})") from None

    def _rows(self, channels, freq_index, frames, period) -> np.ndarray:
        """complex64 (M, len(frames)), rows channel-outer / frequency-inner."""
        p = self._check_period(period)
        ch, ch_order = _sorted_request(range(self.acquisition.num_rx_channels) if channels is None
                                       else channels, self.acquisition.num_rx_channels, "channels", self.path)
        fi, f_order = self._freq_request(freq_index)
        Kf = len(fi)
        out = np.empty((len(ch) * Kf, len(frames)), dtype=np.complex64)

        def run(h5):
            if len(frames) and Kf:
                for ci, fsl, ksl, block in self._pieces(h5, p, ch, frames, fi):
                    out[ci * Kf + ksl.start:ci * Kf + ksl.stop, fsl] = block.T
            return out

        out = self._guarded(run, "system-matrix rows")
        if ch_order is not None or f_order is not None:
            co = np.arange(len(ch)) if ch_order is None else ch_order
            fo = np.arange(Kf) if f_order is None else f_order
            out = out[(co[:, None] * Kf + fo[None, :]).ravel()]
        return out

    def read_system_matrix(self, channels=None, freq_index=None, subtract_background=True,
                           period=0) -> np.ndarray:
        """complex64 (M, O): foreground frames (positions, file order) of the requested rows."""
        self._require("calibration", "measurement")
        S = self._rows(channels, freq_index, self.foreground_frames, period)
        if (subtract_background and self.num_background_frames
                and not self.flags.get("isBackgroundCorrected", False)):
            bg = self._rows(channels, freq_index, self.background_frames, period)
            S -= bg.mean(axis=1, keepdims=True).astype(np.complex64)
        if getattr(self, "_position_order", None) is not None:
            S = S[:, self._position_order]   # meandering scan -> x-fastest grid order
        return S

    def read_background(self, channels=None, freq_index=None, period=0) -> np.ndarray | None:
        """complex64 (M, B) background frames of the requested rows, or None without any."""
        self._require("calibration", "measurement")
        if not self.num_background_frames:
            return None
        return self._rows(channels, freq_index, self.background_frames, period)

    def read_spectra(self, frames=None, channels=None, freq_index=None, period=0) -> np.ndarray:
        """complex64 (F, C', K'): spectra rfft(td)/V of the requested frames (default all)."""
        self._require("calibration", "measurement")
        p = self._check_period(period)
        C = self.acquisition.num_rx_channels
        fr, fr_order = _sorted_request(np.arange(self.num_frames) if frames is None else frames,
                                       self.num_frames, "frames", self.path)
        ch, ch_order = _sorted_request(np.arange(C) if channels is None else channels, C,
                                       "channels", self.path)
        fi, f_order = self._freq_request(freq_index)
        out = np.empty((len(fr), len(ch), len(fi)), dtype=np.complex64)

        def run(h5):
            if len(fr) and len(fi):
                for ci, fsl, ksl, block in self._pieces(h5, p, ch, fr, fi):
                    out[fsl, ci, ksl] = block
            return out

        out = self._guarded(run, "spectra")
        if fr_order is not None:
            out = out[fr_order]
        if ch_order is not None:
            out = out[:, ch_order]
        if f_order is not None:
            out = out[:, :, f_order]
        return out

    def read_reconstruction(self) -> tuple[np.ndarray, Grid]:
        """float32 (Q, *grid.shape) (first spectral channel) and its Grid."""
        self._require("reconstruction")

        def run(h5):
            d = _Header(h5, self.path).dataset("/reconstruction/data")
            return np.asarray(d[:, :, 0])

        a = self._guarded(run, "reconstruction")
        if not np.all(np.isfinite(a)):
            raise MDFError(f"{self.path}: dataset /reconstruction/data contains NaN or Inf")
        return a.astype(np.float32).reshape((a.shape[0],) + self.grid.shape), self.grid

    # -- text summary -----------------------------------------------------------------------------
    def summary(self) -> str:
        L = [f"{self.path}", f"  kind        {self.kind} (MDF {self.version})"]
        m = self.metadata
        if m.get("scanner_name") or m.get("scanner_manufacturer"):
            L.append(f"  scanner     {m.get('scanner_name') or '?'} ({m.get('scanner_manufacturer') or '?'}"
                     f"{', ' + m['topology'] if m.get('topology') else ''})")
        if m.get("study_name") or m.get("experiment_name"):
            L.append(f"  study       {m.get('study_name')!r} / experiment {m.get('experiment_name')!r}"
                     f"{' (simulation)' if m.get('is_simulation') else ''}")
        if m.get("tracer_name"):
            L.append(f"  tracer      {m['tracer_name']}")
        a = self.acquisition
        if a is not None:
            fk = ", ".join(f"{f/1e3:.3f}" for f in a.drive_frequencies())
            amp = ", ".join(f"{s*1e3:.2f}" for s in a.drive_strength)
            L.append(f"  drive field {len(a.dividers)} channel(s): {fk} kHz, amplitudes {amp} mT, "
                     f"cycle {a.cycle*1e3:.4f} ms")
            L.append(f"  receiver    {a.num_rx_channels} channel(s), V = {a.num_sampling_points} "
                     f"samples, K = {a.num_frequencies} frequencies, bandwidth {a.bandwidth/1e6:.4g} MHz"
                     f"{', transfer function' if a.transfer_function is not None else ''}")
            if a.num_periods > 1 or a.num_averages > 1:
                L.append(f"  periods     J = {a.num_periods}, averages {a.num_averages}")
        L.append(f"  frames      {self.num_frames} ({self.num_foreground_frames} foreground, "
                 f"{self.num_background_frames} background)")
        if self.grid is not None:
            g = self.grid
            L.append(f"  grid        {' x '.join(map(str, g.shape))} ({'z, ' if g.ndim == 3 else ''}y, x), "
                     f"FOV {' x '.join(f'{v*1e3:.3g}' for v in g.fov)} mm, "
                     f"centre ({', '.join(f'{v*1e3:.3g}' for v in g.center)}) mm")
        if self.kind != "reconstruction":
            f = self.flags
            sel = (f"{len(self.stored_freq_index)} of {a.num_frequencies} frequencies"
                   if f["isFrequencySelection"] else "none")
            storage = {"complex": "{r, i} compound", "trailing": "trailing axis of 2",
                       "real": "real"}[self._storage]
            L.append(f"  data        {'frequency' if f['isFourierTransformed'] else 'time'} domain, "
                     f"{self._data_dtype} {self._data_shape}, "
                     f"{'frame axis last (fast frame axis)' if f['isFastFrameAxis'] else 'frame axis first'}, "
                     f"complex storage: {storage}")
            L.append(f"  selection   {sel}; background corrected: "
                     f"{'yes' if f['isBackgroundCorrected'] else 'no'}"
                     f"{'; frames permuted (stored order final)' if f['isFramePermutation'] else ''}"
                     f"{'; meandering scan (re-sorted on read)' if getattr(self, '_position_order', None) is not None else ''}"
                     f"{'; conversion factor' if self._conversion is not None else ''}")
        if self.snr is not None:
            s = self.snr[:, :, self.stored_freq_index].ravel()
            L.append(f"  SNR         median {np.median(s):.3g}, max {np.max(s):.3g}, "
                     f"{int(np.sum(s > 1.5))} above 1.5, {int(np.sum(s > 5))} above 5 "
                     f"(of {s.size} frequency x channel x period)")
        if self._extras_index:
            L.append(f"  extras      /_nirmpi: {', '.join(sorted(self._extras_index))}")
        return "\n".join(L)

    def __repr__(self):
        return f"MDFFile({str(self.path)!r}, kind={self.kind!r}, frames={self.num_frames})"


def open(path) -> MDFFile:  # noqa: A001 - the contract's name
    """Read the header of an MDF v2 file (MDFError for anything unreadable or not MDF)."""
    return MDFFile(path)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
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
        h5.create_dataset(name, data=np.ascontiguousarray(np.asarray(value, dtype=dtype)))


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


def write_reconstruction(path, image, grid: Grid, *, params=None, force=False,
                         acquisition: Acquisition | None = None, metadata=None) -> Path:
    """Write a reconstruction: image (*grid.shape) or (Q, *grid.shape) -> /reconstruction/data
    (Q, P, 1) float32, voxels x fastest; parameters (JSON) under /_nirmpi/parameters."""
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
