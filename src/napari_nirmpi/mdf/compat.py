"""Older MDF layouts mapped onto the one in-memory model of MDF v2.1.0.

The table in docs/mdf-support.md lists every dataset whose name, shape or type changed between
MDF v1.0.x, the v2 drafts of 2017 (written by MPIFiles.jl until mid-2018), v2.0.0 and v2.1.0;
this module holds the mappings that need more than a default. Facts come from the history of
specification/MDF.tex (MagneticParticleImaging/MDF) and MPIFiles.jl's version switches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import MDFError
from .acquisition import Acquisition
from .header import _MAX_SAMPLES, _Header, _per_channel, display_path

if TYPE_CHECKING:  # pragma: no cover
    from .read import MDFFile


def gradient_3x3(h: _Header, J: int) -> np.ndarray:
    """Selection-field gradient of the first period as a 3 x 3 Jacobian.

    v2.0.0+: J x Y x 3 x 3. The 2017 v2 drafts and MDF v1: Y x 3 or J x 3 (or 3), the diagonal
    (x, y, z) gradient strengths. A bare 3 x 3 (some writers drop J and Y) is the matrix."""
    name = "/acquisition/gradient"
    g = h.numbers(name)
    if g.ndim >= 2 and g.shape[-2:] == (3, 3) and g.size >= 9:
        return g.reshape(-1, 3, 3)[0].astype(np.float64)
    if g.shape == (3,) or (g.ndim == 2 and g.shape[1] == 3 and g.shape[0] >= 1):
        return np.diag(g.reshape(-1, 3)[0].astype(np.float64))
    raise h.err(name, f"expected J x Y x 3 x 3 (MDF 2.0.0+) or J x 3 / 3 (diagonal, MDF v1 and "
                      f"2017 drafts), got shape {g.shape}")


def _per_receiver(h: _Header, name: str, C: int, *, integer: bool) -> float | int:
    """MDF v1 allowed `1 or C` values (receivers with different settings); one value is needed."""
    a = h.numbers(name, integer=integer)
    if a.size == 1:
        return int(a.ravel()[0]) if integer else float(a.ravel()[0])
    if a.shape == (C,) and np.all(a == a[0]):
        return int(a[0]) if integer else float(a[0])
    raise h.err(name, f"receive channels with different settings ({a.ravel()[:6].tolist()}) are not "
                      f"supported; convert with MPIFiles.jl (saveasMDF) and split the channels")


def _v1_data(h: _Header) -> tuple[str, str]:
    """-> (dataset name, kind) of the one data set a v1 file holds."""
    for name, kind in (("/calibration/dataFD", "calibration"), ("/calibration/dataTD", "calibration"),
                       ("/measurement/dataFD", "measurement"), ("/measurement/dataTD", "measurement")):
        if h.has(name):
            return name, kind
    if h.has("/reconstruction/data"):
        raise h.err("/reconstruction/data", "MDF v1 reconstructions are not read; reconstruct the "
                                            "measurement again or convert the file with MPIFiles.jl "
                                            "(saveasMDF) to MDF v2")
    raise MDFError(f"{display_path(h.path)}: MDF v1 file without /measurement/dataFD, /measurement/dataTD, "
                   f"/calibration/dataFD or /calibration/dataTD; nothing to read")


def read_v1_header(mf: "MDFFile", h: _Header) -> None:
    """Fill `mf` from an MDF v1.0.x file, as if it were v2: calibration data have the frame
    (position) axis last, measurement data the frame axis first, FD data a trailing axis of 2
    (real, imag), no background frames (v1 could not store them) and calibrations count as
    background corrected (as MPIFiles.jl reads them)."""
    mf.metadata = mf._read_metadata(h)
    name, kind = _v1_data(h)
    mf.kind = kind
    mf._data_name = name
    fd = name.endswith("FD")
    D = h.scalar("/acquisition/drivefield/numChannels", integer=True, positive=True)
    base = h.scalar("/acquisition/drivefield/baseFrequency", positive=True)
    div = h.numbers("/acquisition/drivefield/divider", integer=True).ravel()
    if div.shape != (D,) or np.any(div < 1):
        raise h.err("/acquisition/drivefield/divider", f"expected {D} positive integers, got {div[:6]}")
    J = h.scalar("/acquisition/numPatches", integer=True, positive=True, default=1)
    strength = _per_channel(h, "/acquisition/drivefield/strength", D, J)
    navg = h.scalar("/acquisition/drivefield/averages", integer=True, positive=True, default=1)
    C = h.scalar("/acquisition/receiver/numChannels", integer=True, positive=True)
    V = _per_receiver(h, "/acquisition/receiver/numSamplingPoints", C, integer=True)
    if not 2 <= V <= _MAX_SAMPLES:
        raise h.err("/acquisition/receiver/numSamplingPoints", f"expected 2 <= V <= {_MAX_SAMPLES}, got {V}")
    bw = _per_receiver(h, "/acquisition/receiver/bandwidth", C, integer=False)
    if not bw > 0:
        raise h.err("/acquisition/receiver/bandwidth", f"expected a positive value, got {bw}")
    gradient = gradient_3x3(h, J) if h.has("/acquisition/gradient") else None
    K = V // 2 + 1
    tf = None
    if h.has("/acquisition/receiver/transferFunction"):
        tf = h.complex_array("/acquisition/receiver/transferFunction", (C, K))
    mf.acquisition = Acquisition(base, tuple(div), tuple(strength), V, bw, C, gradient=gradient,
                                 num_periods=J, num_averages=navg, transfer_function=tf)
    d = h.dataset(name)
    shape, dt = tuple(d.shape), d.dtype
    X = K if fd else V
    calib = kind == "calibration"
    tail = (2,) if fd else ()
    core = len(shape) - len(tail)
    if fd and (not shape or shape[-1] != 2 or dt.kind not in "iuf"):
        raise h.err(name, f"expected real numbers with a trailing axis of 2 (real, imag), got {dt} {shape}")
    if not fd and dt.kind not in "iuf":
        raise h.err(name, f"expected real numbers, got {dt}")
    if core == 3:
        mf._j_axis = False
        ok = shape[:2] == (C, X) if calib else shape[1:3] == (C, X)
        N = shape[2] if calib else shape[0]
        want = f"(C={C}, {'K' if fd else 'V'}={X}, N)" if calib else f"(N, C={C}, {'K' if fd else 'V'}={X})"
    elif core == 4:
        ok = shape[:3] == (J, C, X) if calib else shape[1:4] == (J, C, X)
        N = shape[3] if calib else shape[0]
        want = (f"(J={J}, C={C}, {'K' if fd else 'V'}={X}, N)" if calib
                else f"(N, J={J}, C={C}, {'K' if fd else 'V'}={X})")
    else:
        ok, N, want = False, 0, "3 or 4 axes"
    if not ok or N < 1:
        raise h.err(name, f"MDF v1 layout {want}{' + (2,)' if fd else ''} expected, got {dt} {shape}; "
                          f"convert the file with MPIFiles.jl (saveasMDF) to MDF v2")
    mf._storage = "trailing" if fd else "real"
    mf._data_dtype, mf._data_shape = str(dt), shape
    mf._check_data_layout(h, name, d)
    mf.num_frames = int(N)
    mf.is_background_frame = np.zeros(N, dtype=bool)
    mf.flags = {"isFourierTransformed": fd, "isFastFrameAxis": calib, "isBackgroundCorrected": calib,
                "isFrequencySelection": False, "isSpectralLeakageCorrected": False,
                "isTransferFunctionCorrected": False, "isFramePermutation": False,
                "isSparsityTransformed": False}
    mf.stored_freq_index = np.arange(K)
    mf._pos_of = np.arange(K)
    mf.grid, mf.snr, mf._snr_stored, mf._position_order = None, None, None, None
    if calib:
        mf.grid, size = mf._read_grid(h, "/calibration")
        if mf.grid.size != N:
            raise h.err(name, f"has {N} frames but /calibration/size {tuple(size)} needs {mf.grid.size}")
        if h.has("/calibration/snrFD"):
            s = h.numbers("/calibration/snrFD")
            if s.shape == (C, K):
                s = s[None]
            if s.shape != (J, C, K) or np.any(s < 0):
                raise h.err("/calibration/snrFD", f"expected non-negative (C={C}, K={K}), got {s.shape}")
            mf.snr = s.astype(np.float64)
    mf.warnings.append(f"MDF v{mf.version} file read through the v1 translation ({name}); phase and "
                       f"background frames are not stored in v1")
