"""Conformance of a file to the tables of the MDF v2.1.0 specification (`nirmpi validate`).

Each table row (group, name, type, dimensions, optional) is restated below; dimensions are
symbols resolved from the file itself (J = numPeriodsPerFrame, N = numFrames, D/C = drive and
receive channels, V = numSamplingPoints, K = V/2 + 1, F = frequencies per drive channel,
Y = gradient time points, A = tracers, O/P = calibration/reconstruction voxels). A dimension "1"
is a 0-d dataset. User-defined names start with "_" and are not checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import MDFError
from .header import _Header, _h5open, display_path

_TYPE_NAMES = {"str": "String", "i64": "Int64", "f64": "Float64", "i8": "Int8",
               "num": "Number", "c128": "Complex128 ({r, i} compound)", "int": "Integer"}

# (dataset, type, dims, optional). dims: () scalar; symbols resolved per file; "Xd" = data.
_SPEC = [
    ("/time", "str", (), False), ("/uuid", "str", (), False), ("/version", "str", (), False),
    ("/study/description", "str", (), False), ("/study/name", "str", (), False),
    ("/study/number", "i64", (), False), ("/study/time", "str", (), True),
    ("/study/uuid", "str", (), False),
    ("/experiment/description", "str", (), False), ("/experiment/isSimulation", "i8", (), False),
    ("/experiment/name", "str", (), False), ("/experiment/number", "i64", (), False),
    ("/experiment/subject", "str", (), False), ("/experiment/uuid", "str", (), False),
    ("/tracer/batch", "str", ("A",), False), ("/tracer/concentration", "f64", ("A",), False),
    ("/tracer/injectionTime", "str", ("A",), True), ("/tracer/name", "str", ("A",), False),
    ("/tracer/solute", "str", ("A",), False), ("/tracer/vendor", "str", ("A",), False),
    ("/tracer/volume", "f64", ("A",), False),
    ("/scanner/boreSize", "f64", (), True), ("/scanner/facility", "str", (), False),
    ("/scanner/manufacturer", "str", (), False), ("/scanner/name", "str", (), False),
    ("/scanner/operator", "str", (), False), ("/scanner/topology", "str", (), False),
    ("/acquisition/gradient", "f64", ("J", "Y", 3, 3), True),
    ("/acquisition/numAverages", "i64", (), False), ("/acquisition/numFrames", "i64", (), False),
    ("/acquisition/numPeriodsPerFrame", "i64", (), False),
    ("/acquisition/offsetField", "f64", ("J", "Y", 3), True),
    ("/acquisition/startTime", "str", (), False),
    ("/acquisition/drivefield/baseFrequency", "f64", (), False),
    ("/acquisition/drivefield/cycle", "f64", (), False),
    ("/acquisition/drivefield/divider", "i64", ("D", "F"), False),
    ("/acquisition/drivefield/numChannels", "i64", (), False),
    ("/acquisition/drivefield/phase", "f64", ("J", "D", "F"), False),
    ("/acquisition/drivefield/strength", "f64", ("J", "D", "F"), False),
    ("/acquisition/drivefield/waveform", "str", ("D", "F"), False),
    ("/acquisition/receiver/bandwidth", "f64", (), False),
    ("/acquisition/receiver/dataConversionFactor", "f64", ("C", 2), True),
    ("/acquisition/receiver/inductionFactor", "f64", ("C",), True),
    ("/acquisition/receiver/numChannels", "i64", (), False),
    ("/acquisition/receiver/numSamplingPoints", "i64", (), False),
    ("/acquisition/receiver/transferFunction", "c128", ("C", "K"), True),
    ("/acquisition/receiver/unit", "str", (), False),
    ("/measurement/isBackgroundCorrected", "i8", (), False),
    ("/measurement/isBackgroundFrame", "i8", ("N",), False),
    ("/measurement/isFastFrameAxis", "i8", (), False),
    ("/measurement/isFourierTransformed", "i8", (), False),
    ("/measurement/isFramePermutation", "i8", (), False),
    ("/measurement/isFrequencySelection", "i8", (), False),
    ("/measurement/isSparsityTransformed", "i8", (), False),   # v2.1.0
    ("/measurement/isSpectralLeakageCorrected", "i8", (), False),
    ("/measurement/isTransferFunctionCorrected", "i8", (), False),
    ("/calibration/deltaSampleSize", "f64", (3,), True), ("/calibration/fieldOfView", "f64", (3,), True),
    ("/calibration/fieldOfViewCenter", "f64", (3,), True), ("/calibration/method", "str", (), False),
    ("/calibration/offsetFields", "f64", ("O", 3), True), ("/calibration/order", "str", (), True),
    ("/calibration/positions", "f64", ("O", 3), True), ("/calibration/size", "i64", (3,), True),
    ("/calibration/snr", "f64", ("J", "C", "K"), True),
    ("/reconstruction/data", "num", ("Q", "P", "S"), False),
    ("/reconstruction/fieldOfView", "f64", (3,), True),
    ("/reconstruction/fieldOfViewCenter", "f64", (3,), True),
    ("/reconstruction/isOverscanRegion", "i8", ("P",), True), ("/reconstruction/order", "str", (), True),
    ("/reconstruction/positions", "f64", ("P", 3), True), ("/reconstruction/size", "i64", (3,), True),
]
_CONDITIONAL = {  # dataset -> flag that makes it mandatory
    "/measurement/framePermutation": ("/measurement/isFramePermutation", "i64", ("N",)),
    "/measurement/frequencySelection": ("/measurement/isFrequencySelection", "i64", ("Ks",)),
    "/measurement/sparsityTransformation": ("/measurement/isSparsityTransformed", "str", ()),
}
_MANDATORY_GROUPS = ("/study", "/experiment", "/scanner", "/acquisition", "/acquisition/drivefield",
                     "/acquisition/receiver")
_OPTIONAL_GROUPS = ("/tracer", "/measurement", "/calibration", "/reconstruction")
_KNOWN = ({n for n, *_ in _SPEC} | set(_CONDITIONAL) | set(_MANDATORY_GROUPS) | set(_OPTIONAL_GROUPS)
          | {"/measurement/data", "/measurement/subsamplingIndices", "/acquisition/drivefield/customWaveform",
             "/acquisition/receiver/transferFunctionFileName"})


@dataclass(frozen=True)
class Deviation:
    """One difference from the specification: the HDF5 path and what is wrong."""

    path: str
    message: str

    def __str__(self):
        return f"{self.path}: {self.message}"


def _type_ok(kind: str, dt: np.dtype) -> bool:
    if kind == "str":
        return h5py.check_string_dtype(dt) is not None
    if kind == "i64":
        return dt.kind == "i" and dt.itemsize == 8
    if kind == "f64":
        return dt.kind == "f" and dt.itemsize == 8
    if kind == "i8":
        return dt.kind == "i" and dt.itemsize == 1
    if kind == "c128":
        return dt.kind == "c" and dt.itemsize == 16
    if kind == "int":
        return dt.kind in "iu"
    return dt.kind in "iufc"  # Number


def _describe(dt: np.dtype) -> str:
    if h5py.check_string_dtype(dt) is not None:
        return "a string"
    if dt.kind == "b":
        return "an HDF5 boolean (enum)"
    return str(dt)


class _Validator:
    def __init__(self, h: _Header):
        self.h = h
        self.out: list[Deviation] = []
        self.dims: dict[str, int] = {}

    def add(self, path: str, msg: str):
        self.out.append(Deviation(path, msg))

    def value(self, name, integer=True):
        try:
            if self.h.has(name):
                a = self.h.numbers(name, integer=integer)
                if a.size == 1:
                    return int(a.ravel()[0]) if integer else float(a.ravel()[0])
        except MDFError:
            pass
        return None

    def shape(self, name):
        try:
            return tuple(self.h.dataset(name).shape) if self.h.has(name) else None
        except MDFError:
            return None

    def resolve_dims(self):
        v, d = self.value, self.dims
        for sym, name in (("J", "/acquisition/numPeriodsPerFrame"), ("N", "/acquisition/numFrames"),
                          ("D", "/acquisition/drivefield/numChannels"),
                          ("C", "/acquisition/receiver/numChannels"),
                          ("V", "/acquisition/receiver/numSamplingPoints")):
            x = v(name)
            if x is not None:
                d[sym] = x
        if "V" in d:
            d["K"] = d["V"] // 2 + 1
        for sym, name, axis in (("F", "/acquisition/drivefield/divider", 1),
                                ("Y", "/acquisition/gradient", 1), ("A", "/tracer/name", 0),
                                ("Ks", "/measurement/frequencySelection", 0),
                                ("Q", "/reconstruction/data", 0), ("S", "/reconstruction/data", 2)):
            s = self.shape(name)
            if s is not None and len(s) > axis:
                d[sym] = s[axis]
        for sym, grp in (("O", "/calibration"), ("P", "/reconstruction")):
            try:
                if self.h.has(grp + "/size"):
                    size = self.h.numbers(grp + "/size", integer=True)
                    if size.shape == (3,) and np.all(size > 0):
                        d[sym] = math.prod(int(x) for x in size)
            except MDFError:
                pass

    def check(self, name, kind, dims, optional, group_present=True):
        h = self.h
        try:
            present = h.has(name)
            if not present and h.has_group(name):
                self.add(name, "expected a dataset, found a group")
                return
        except MDFError as e:
            self.add(name, str(e).split(": ", 1)[-1])
            return
        if not present:
            if not optional and group_present:
                self.add(name, f"missing (mandatory {_TYPE_NAMES[kind]})")
            return
        try:
            d = h.dataset(name)
            dt, shape = d.dtype, tuple(d.shape)
        except MDFError as e:
            self.add(name, str(e).split(": ", 1)[-1])
            return
        if not _type_ok(kind, dt):
            self.add(name, f"expected {_TYPE_NAMES[kind]}, got {_describe(dt)}")
        want = tuple(self.dims.get(x, x) if isinstance(x, str) else x for x in dims)
        if any(isinstance(x, str) for x in want):  # a dimension the file does not define
            if len(shape) != len(want):
                self.add(name, f"expected {len(want)} dimensions {dims}, got shape {shape}")
        elif shape != want:
            if want == () and shape in ((1,), (1, 1)):
                self.add(name, f"expected a scalar (0-d dataset, the spec's dimension 1), got a "
                               f"one-element array of shape {shape}")
            else:
                self.add(name, f"expected shape {want} ({' x '.join(map(str, dims)) or 'scalar'}), got {shape}")

    def run(self):
        h = self.h
        version = None
        try:
            version = h.string("/version") if h.has("/version") else None
        except MDFError:
            pass
        if version is None:
            self.add("/version", "missing: not an MDF file")
            return self.out
        parts = version.strip().lstrip("vV").split(".")
        if parts[0] != "2":
            self.add("/version", f"{version!r}: this validator checks MDF 2.x (v1 files are read "
                                 f"through a translation; convert with MPIFiles.jl saveasMDF)")
            return self.out
        minor = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.resolve_dims()
        groups = {}
        for g in _MANDATORY_GROUPS + _OPTIONAL_GROUPS:
            try:
                groups[g] = h.has_group(g)
            except MDFError as e:
                groups[g] = False
                self.add(g, str(e).split(": ", 1)[-1])
            if g in _MANDATORY_GROUPS and not groups[g]:
                self.add(g, "missing (mandatory group)")
        for name, kind, dims, optional in _SPEC:
            grp = name.rsplit("/", 1)[0] or "/"
            if name == "/measurement/isSparsityTransformed" and minor < 1:
                optional = True  # added in v2.1.0
            self.check(name, kind, dims, optional, group_present=groups.get(grp, True))
        for name, (flag, kind, dims) in _CONDITIONAL.items():
            on = self.value(flag) == 1
            self.check(name, kind, dims, optional=not on, group_present=groups["/measurement"])
        if groups["/measurement"]:
            self.check_data()
        if groups["/calibration"] and not groups["/measurement"]:
            self.add("/measurement/data", "a calibration group without /measurement/data (the "
                                          "system matrix is stored in the measurement group)")
        self.check_consistency(groups)
        self.check_unknown()
        return self.out

    def check_data(self):
        h, d = self.h, self.dims
        name = "/measurement/data"
        try:
            if not h.has(name):
                self.add(name, "missing (mandatory Number) in /measurement")
                return
            ds = h.dataset(name)
        except MDFError as e:
            self.add(name, str(e).split(": ", 1)[-1])
            return
        fd, fast = self.value("/measurement/isFourierTransformed"), self.value("/measurement/isFastFrameAxis")
        if self.value("/measurement/isSparsityTransformed") == 1:
            return  # J x C x K x B: B is the file's own choice
        if any(x not in d for x in "JCVN") or fd not in (0, 1) or fast not in (0, 1):
            return  # the missing pieces are reported above
        X = (d.get("Ks", d["K"]) if self.value("/measurement/isFrequencySelection") == 1 else d["K"]) \
            if fd else d["V"]
        want = (d["J"], d["C"], X, d["N"]) if fast else (d["N"], d["J"], d["C"], X)
        shape, dt = tuple(ds.shape), ds.dtype
        if shape == want + (2,) and dt.kind == "f" and fd:
            self.add(name, "complex data stored as a trailing axis of 2 (a 2017 draft layout); "
                           "the spec's complex type is the {r, i} compound")
        elif shape != want:
            self.add(name, f"expected shape {want} ({'J x C x ' if fast else 'N x J x C x '}"
                           f"{'K' if fd else 'V'}{' x N' if fast else ''}), got {shape}")
        if not _type_ok("num", dt):
            self.add(name, f"expected Number, got {_describe(dt)}")

    def check_consistency(self, groups):
        h, v, d = self.h, self.value, self.dims
        base = v("/acquisition/drivefield/baseFrequency", integer=False)
        cycle = v("/acquisition/drivefield/cycle", integer=False)
        try:
            div = h.numbers("/acquisition/drivefield/divider", integer=True) \
                if h.has("/acquisition/drivefield/divider") else None
        except MDFError:
            div = None
        if base and cycle and div is not None and div.size and np.all(div > 0):
            want = math.lcm(*(int(x) for x in div.ravel())) / base
            if not np.isclose(cycle, want, rtol=1e-6):
                self.add("/acquisition/drivefield/cycle", f"{cycle} s, but lcm(divider)/baseFrequency = {want} s")
        for name in [n for n, k, *_ in _SPEC if k == "i8"]:
            x = v(name)
            if x is not None and x not in (0, 1):
                self.add(name, f"flag must be 0 or 1, got {x}")
        try:
            if h.has("/measurement/isBackgroundFrame"):
                bg = h.numbers("/measurement/isBackgroundFrame", integer=True)
                if np.any((bg != 0) & (bg != 1)):
                    self.add("/measurement/isBackgroundFrame", "flags must be 0 or 1")
                elif groups["/calibration"] and "O" in d and bg.ndim == 1 and int(np.sum(bg == 0)) != d["O"]:
                    self.add("/measurement/isBackgroundFrame", f"{int(np.sum(bg == 0))} foreground frames, "
                                                               f"but /calibration/size has {d['O']} voxels")
            if h.has("/measurement/frequencySelection") and "K" in d:
                sel = h.numbers("/measurement/frequencySelection", integer=True)
                if sel.size and (sel.min() < 1 or sel.max() > d["K"]):
                    self.add("/measurement/frequencySelection", f"indices must lie in [1, {d['K']}], "
                                                                f"got {sel.min()}..{sel.max()}")
        except MDFError as e:
            self.add("/measurement", str(e).split(": ", 1)[-1])
        if "/reconstruction" in groups and groups["/reconstruction"] and "P" in d:
            s = self.shape("/reconstruction/data")
            if s is not None and len(s) == 3 and s[1] != d["P"]:
                self.add("/reconstruction/data", f"P = {s[1]} voxels, but /reconstruction/size has {d['P']}")

    def check_unknown(self):
        names = []

        def visit(name, obj):
            names.append("/" + name)
        try:
            self.h.h5.visititems(visit)
        except (KeyError, OSError, RuntimeError, ValueError, TypeError):
            return
        for n in names:
            if n in _KNOWN or any(part.startswith("_") for part in n.split("/")):
                continue
            if n.startswith("/tracer/") or n.startswith("/measurement/_"):
                continue
            self.add(n, "not in the MDF v2.1.0 specification (user-defined names start with '_')")


def validate(path) -> list[Deviation]:
    """Every deviation of `path` from the MDF v2.1.0 tables (empty when it conforms).
    MDFError when the file cannot be read at all (not HDF5, missing, not a regular file)."""
    path = Path(path)
    with _h5open(path) as h5:
        try:
            return _Validator(_Header(h5, path)).run()
        except MDFError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            raise MDFError(f"{display_path(path)}: cannot be validated ({type(e).__name__}: {e})") from None
