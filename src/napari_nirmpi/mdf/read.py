"""MDFFile: the header of an MDF file, and lazy reads of its data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from ..errors import MDFError, NirmpiError
from ..grid import Grid
from . import compat
from .acquisition import Acquisition
from .header import (_MAX_ABS, _MAX_SAMPLES, _MIN_PIECE, _PIECE_ELEMENTS, _SMALL_EXTRA, _Header,
                     _as_index, _chunks, _h5open, _lenient_flag, _meander_permutation, _per_channel,
                     _prod, _sorted_request, _to_complex, check_alloc, display_path, fmt_bytes)

_MAX_FRAMES = 1 << 31        # /acquisition/numFrames (a 1 kHz scanner makes 8.6e7 frames a day)
_MAX_GRID_SIDE = 1 << 16     # voxels along one axis of a calibration/reconstruction grid
_MAX_VOXELS = 1 << 28
_MIN_FOV, _MAX_FOV = 1e-9, 1e3  # metres: from a nanometre to a kilometre
_SPARSE_RATIO = 1000         # declared/stored bytes above which data are treated as absent
_SPARSE_MIN = 64 << 20       # ... checked for declared data larger than this


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
        self.warnings: list[str] = []
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
        self._data_name = "/measurement/data"
        self._j_axis = True  # MDF v1 measurements may lack the period axis
        self._conversion = None
        if major == "1":
            try:
                compat.read_v1_header(self, h)
            except MDFError as e:
                raise MDFError(f"{e} (an MDF v1 file, version {self.version!r}, read through a "
                               f"translation; if the file is valid v1, convert it with MPIFiles.jl "
                               f"saveasMDF to MDF v2)") from None
            self.frequencies = self.acquisition.frequencies()
            self.frame_times = self._read_frame_times(h)
            self._extras_index = {}
            return
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
        gradient = compat.gradient_3x3(h, J) if h.has("/acquisition/gradient") else None
        tf = None
        if h.has("/acquisition/receiver/transferFunction"):
            tf = h.complex_array("/acquisition/receiver/transferFunction", (C, V // 2 + 1))
        # /measurement/dataConversionFactor: its place in the 2017 drafts before 2017-07-28
        cf_name = next((n for n in ("/acquisition/receiver/dataConversionFactor",
                                    "/measurement/dataConversionFactor") if h.has(n)), None)
        if cf_name is not None:
            cf = h.numbers(cf_name)
            if cf.shape == (2, C) and C != 2:  # written transposed (Julia's C x 2 seen reversed)
                cf = cf.T
            if cf.shape != (C, 2):
                raise h.err(cf_name,
                            f"expected shape (C={C}, 2) (scale, offset), got {cf.shape}")
            self._conversion = self._check_conversion(h, cf.astype(np.float64), cf_name)
        return Acquisition(base, tuple(div), tuple(strength), V, bw, C, drive_phase=phase,
                           gradient=gradient, num_periods=J, num_averages=navg, transfer_function=tf)

    def _check_conversion(self, h: _Header, cf: np.ndarray, name: str) -> np.ndarray | None:
        scale = cf[:, 0]
        if np.any(scale == 0) or np.any(np.abs(scale) < 1e-300):
            raise h.err(name, f"scale {scale.tolist()} is 0 for channel(s) "
                              f"{np.flatnonzero(np.abs(scale) < 1e-300).tolist()}: every sample would "
                              f"become the offset (no signal)")
        if np.any(scale < 0):
            self.warnings.append(f"{name}: negative scale {scale.tolist()} flips the sign of "
                                 f"channel(s) {np.flatnonzero(scale < 0).tolist()}")
        if np.all(cf == np.array([1.0, 0.0])):
            return None  # identity: nothing to apply
        return cf

    def _read_measurement_header(self, h: _Header):
        acq = self.acquisition
        J, C, V, K = acq.num_periods, acq.num_rx_channels, acq.num_sampling_points, acq.num_frequencies
        N = h.scalar("/acquisition/numFrames", integer=True, positive=True)
        if N > _MAX_FRAMES:
            raise h.err("/acquisition/numFrames", f"{N} frames is beyond any acquisition (limit {_MAX_FRAMES})")
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
        self._check_data_layout(h, "/measurement/data", d)
        self._read_background_flags(h, N)
        if h.has("/calibration/snr"):
            self._snr_stored = h.numbers("/calibration/snr")

    def _check_data_layout(self, h: _Header, name: str, d: h5py.Dataset) -> None:
        """Chunk bombs and data declared far beyond what the file stores."""
        h.check_chunks(name, d)
        declared = _prod(d.shape) * d.dtype.itemsize
        if declared > _SPARSE_MIN:
            try:
                stored = d.id.get_storage_size()
            except (OSError, RuntimeError, ValueError) as e:
                raise h.err(name, f"storage cannot be read ({type(e).__name__}: {e})") from None
            if stored * _SPARSE_RATIO < declared:  # a warning: HDF5 reads unwritten chunks as zeros
                self.warnings.append(f"{name} declares {fmt_bytes(declared)} ({tuple(d.shape)} {d.dtype}) "
                                     f"but the file stores only {fmt_bytes(stored)}: unwritten parts "
                                     f"read as zeros (truncated or unfinished file?)")

    def _read_background_flags(self, h: _Header, N: int) -> None:
        # missing: a warning (MPIFiles.jl and older writers may omit it; frames are then all
        # foreground); present but unreadable or malformed: refused, never guessed
        if not h.has("/measurement/isBackgroundFrame"):
            if h.has_group("/measurement/isBackgroundFrame"):
                raise h.err("/measurement/isBackgroundFrame", "expected a dataset (Int8, one flag per "
                                                              "frame), found a group")
            self.is_background_frame = np.zeros(N, dtype=bool)
            if self._j_axis:  # MDF v1 has no background flags by design
                self.warnings.append(f"/measurement/isBackgroundFrame is missing: all {N} frames are "
                                     f"treated as foreground (no background subtraction)")
            return
        bg = h.numbers("/measurement/isBackgroundFrame", integer=True)
        if bg.shape != (N,):
            raise h.err("/measurement/isBackgroundFrame", f"expected shape ({N},) (one flag "
                        f"per frame), got {bg.shape}")
        if np.any((bg != 0) & (bg != 1)):
            raise h.err("/measurement/isBackgroundFrame", "expected flags 0 or 1")
        self.is_background_frame = bg.astype(bool)

    def _read_grid(self, h: _Header, group: str) -> tuple[Grid, list[int]]:
        """size / fieldOfView / fieldOfViewCenter / order of `group`, bounded before any use."""
        size = [int(v) for v in h.numbers(group + "/size", integer=True, shape=(3,))]  # Python ints
        if any(v < 1 or v > _MAX_GRID_SIDE for v in size) or math.prod(size) > _MAX_VOXELS:
            raise h.err(group + "/size", f"expected 3 positive integers (x, y, z) of at most "
                                         f"{_MAX_GRID_SIDE} each and {_MAX_VOXELS} voxels in all, got {size}")
        fov = h.numbers(group + "/fieldOfView", shape=(3,))
        if np.any(~(fov >= _MIN_FOV)) or np.any(fov > _MAX_FOV):
            raise h.err(group + "/fieldOfView", f"expected 3 lengths in metres between {_MIN_FOV:g} and "
                                               f"{_MAX_FOV:g}, got {fov.tolist()}")
        center = (h.numbers(group + "/fieldOfViewCenter", shape=(3,))
                  if h.has(group + "/fieldOfViewCenter") else np.zeros(3))
        if np.any(np.abs(center) > _MAX_FOV):
            raise h.err(group + "/fieldOfViewCenter", f"expected a centre within {_MAX_FOV:g} m, got "
                                                     f"{center.tolist()}")
        order = h.string(group + "/order", default="xyz")
        if order.strip().lower() != "xyz":
            raise h.err(group + "/order", f"expected 'xyz' (x fastest), got {order!r}")
        return Grid.from_mdf(size, fov, center), size

    def _read_calibration_header(self, h: _Header):
        self.grid, size = self._read_grid(h, "/calibration")
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
        self.grid, _ = self._read_grid(h, "/reconstruction")
        P = self.grid.size
        if d.ndim != 3 or d.shape[1] != P or d.shape[0] < 1 or d.shape[2] < 1 or d.dtype.kind not in "iuf":
            raise h.err("/reconstruction/data", f"expected real numbers (Q, P={P}, S) (frames x "
                        f"voxels x spectral channels), got {d.dtype} {d.shape}")
        self._check_data_layout(h, "/reconstruction/data", d)
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
        small = [n for n, (shape, _) in self._extras_index.items() if _prod(shape) <= _SMALL_EXTRA]
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
        d = _Header(h5, self.path).dataset(self._data_name)
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
                    where = f"(channel {c}, period {period}, frames {int(fr[0])}..{int(fr[-1])})"
                    if not np.all(np.isfinite(block)):
                        raise MDFError(f"{display_path(self.path)}: dataset {self._data_name} contains "
                                       f"NaN or Inf {where}")
                    if not fd:
                        block = block.astype(np.float64)
                        if self._conversion is not None:
                            a, b = self._conversion[c]
                            with np.errstate(over="ignore", invalid="ignore"):
                                block = block * a + b
                    self._check_range(block, where)
                    if not fd:
                        block = (np.fft.rfft(block, axis=1) / V)[:, freqs]
                    elif back is not None:
                        block = block[:, back]
                    yield ci, fsl, ksl, block

    def _check_range(self, block: np.ndarray, where: str) -> None:
        """Values (after unit conversion) beyond _MAX_ABS are corruption, not signal."""
        if not block.size:
            return
        with np.errstate(over="ignore", invalid="ignore"):
            peak = float(max(np.abs(block.real).max(), np.abs(block.imag).max()) if block.dtype.kind == "c"
                         else np.abs(block).max())
        if not peak <= _MAX_ABS:
            raise MDFError(f"{display_path(self.path)}: dataset {self._data_name} holds a value of "
                           f"magnitude {peak:.3g} {where}{' after dataConversionFactor' if self._conversion is not None else ''}, "
                           f"beyond any recorded signal (limit {_MAX_ABS:.0e}): corrupt data")

    def _read_piece(self, d, fast, j, c, fr, inn, tail) -> np.ndarray:
        """One h5py read of frames `fr` x inner indices `inn` -> (len(fr), len(inn)[, 2])."""
        if not self._j_axis:  # MDF v1 without a period axis: (N, C, X) or (C, X, N)
            return self._read_piece_v1(d, fast, c, fr, inn, tail)
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

    def _read_piece_v1(self, d, fast, c, fr, inn, tail) -> np.ndarray:
        fs, ins = _as_index(fr), _as_index(inn)
        if not isinstance(fs, slice) and not isinstance(ins, slice):
            if fast:
                return np.stack([d[(c, int(k), fs) + tail] for k in inn], axis=0).swapaxes(0, 1)
            return np.stack([d[(int(n), c, ins) + tail] for n in fr], axis=0)
        if fast:
            return d[(c, ins, fs) + tail].swapaxes(0, 1)
        return d[(fs, c, ins) + tail]

    def _guarded(self, fn: Callable, what: str):
        try:
            with _h5open(self.path) as h5:
                return fn(h5)
        except NirmpiError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            raise MDFError(f"{display_path(self.path)}: dataset {self._data_name}: cannot read {what} "
                           f"({type(e).__name__}: {e})") from None

    def _rows(self, channels, freq_index, frames, period) -> np.ndarray:
        """complex64 (M, len(frames)), rows channel-outer / frequency-inner."""
        p = self._check_period(period)
        ch, ch_order = _sorted_request(range(self.acquisition.num_rx_channels) if channels is None
                                       else channels, self.acquisition.num_rx_channels, "channels", self.path)
        fi, f_order = self._freq_request(freq_index)
        Kf = len(fi)
        check_alloc(display_path(self.path), len(ch) * Kf * len(frames) * 8,
                    f"reading {len(ch) * Kf} rows x {len(frames)} frames (complex64)")
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
        n_fr = self.num_frames if frames is None else int(np.size(frames))
        n_ch = C if channels is None else int(np.size(channels))
        n_fi = len(self.available_freq_index) if freq_index is None else int(np.size(freq_index))
        check_alloc(display_path(self.path), n_fr * n_ch * n_fi * 8,
                    f"reading spectra of {n_fr} frames x {n_ch} channels x {n_fi} frequencies (complex64)")
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
        check_alloc(display_path(self.path), self.num_frames * self.grid.size * 8,
                    f"reading {self.num_frames} reconstructed frames of {self.grid.size} voxels")

        def run(h5):
            d = _Header(h5, self.path).dataset("/reconstruction/data")
            return np.asarray(d[:, :, 0])

        a = self._guarded(run, "reconstruction")
        if not np.all(np.isfinite(a)):
            raise MDFError(f"{display_path(self.path)}: dataset /reconstruction/data contains NaN or Inf")
        return a.astype(np.float32).reshape((a.shape[0],) + self.grid.shape), self.grid

    def probe(self, max_chunks: int = 64) -> int:
        """Read up to `max_chunks` HDF5 chunks of the data (all when there are fewer), spread
        evenly over the dataset, so that a corrupt chunk or NaN/Inf shows at open time rather
        than when a lazy view first touches it. Returns the number of chunks read."""
        name = "/reconstruction/data" if self.kind == "reconstruction" else self._data_name

        def run(h5):
            d = _Header(h5, self.path).dataset(name)
            shape = tuple(int(x) for x in d.shape)
            if not shape or 0 in shape:
                return 0
            chunks = d.chunks
            if chunks is None:  # contiguous: slabs along the first axis of about 4 MB
                row = max(1, _prod(shape[1:]) * d.dtype.itemsize)
                chunks = (max(1, (4 << 20) // row),) + shape[1:]
            counts = [-(-s // c) for s, c in zip(shape, chunks)]
            total = _prod(counts)
            picks = range(total) if total <= max_chunks else \
                sorted({int(round(i * (total - 1) / (max_chunks - 1))) for i in range(max_chunks)})
            for flat in picks:
                idx, rest = [], flat
                for n in reversed(counts):
                    idx.append(rest % n)
                    rest //= n
                idx.reverse()
                sel = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape))
                block = np.asarray(d[sel])
                if block.dtype.kind in "fc" and not np.all(np.isfinite(block)):
                    raise MDFError(f"{display_path(self.path)}: dataset {name} contains NaN or Inf "
                                   f"(HDF5 chunk at {tuple(x.start for x in sel)})")
            return len(picks)

        return self._guarded(run, "a sample of its chunks")

    # -- text summary -----------------------------------------------------------------------------
    def summary(self) -> str:
        L = [display_path(self.path), f"  kind        {self.kind} (MDF {self.version})"]
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
                     f"{'; meandering scan (re-sorted on read)' if getattr(self, '_position_order', None) is not None else ''}")
            if self._conversion is not None:
                L.append("  conversion  dataConversionFactor (scale, offset) per channel: "
                         + ", ".join(f"({a:.4g}, {b:.4g})" for a, b in self._conversion))
        if self.snr is not None:
            s = self.snr[:, :, self.stored_freq_index].ravel()
            L.append(f"  SNR         median {np.median(s):.3g}, max {np.max(s):.3g}, "
                     f"{int(np.sum(s > 1.5))} above 1.5, {int(np.sum(s > 5))} above 5 "
                     f"(of {s.size} frequency x channel x period)")
        if self._extras_index:
            L.append(f"  extras      /_nirmpi: {', '.join(sorted(self._extras_index))}")
        for w in self.warnings:
            L.append(f"  warning     {w}")
        return "\n".join(L)

    def __repr__(self):
        return f"MDFFile({str(self.path)!r}, kind={self.kind!r}, frames={self.num_frames})"


def open(path) -> MDFFile:  # noqa: A001 - the contract's name
    """Read the header of an MDF v2 file (MDFError for anything unreadable or not MDF)."""
    return MDFFile(path)

