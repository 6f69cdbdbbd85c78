"""Reliability: malformed MDF files give MDFError (never another exception) and stay untouched.

Every case is made from a tiny valid file (3x3 grid, V=32) by one deterministic mutation:
missing datasets, wrong dtypes and shapes, NaN/Inf, bad flags and indices, v1 and compressed
files, truncation, garbage bytes, directories. Each file is opened and every read method run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_nirmpi import mdf
from napari_nirmpi.errors import MDFError
from napari_nirmpi.grid import Grid

V, K, C, J = 32, 17, 2, 1
GRID = Grid((3, 3), (0.03, 0.03))
NB = 2                   # background frames of the calibration bases
N_CAL = GRID.size + NB   # 11 frames; every axis length differs so layouts cannot be confused
N_MEAS = 5
SEL = np.array([1, 2, 4, 7, 9, 12])


def _acq(tf=False):
    return mdf.Acquisition(2.5e6, (102, 96), (12e-3, 12e-3), V, 1.25e6, C,
                           drive_phase=(0.0, 0.5), gradient=np.diag([-1.0, -1.0, 2.0]),
                           transfer_function=np.ones((C, K), complex) if tf else None)


def _make_bases(d: Path) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    bg = np.r_[np.zeros(GRID.size, bool), np.ones(NB, bool)]
    sm = (rng.standard_normal((J, C, K, N_CAL)) + 1j * rng.standard_normal((J, C, K, N_CAL)))
    out = {
        # FD, {r, i} compound, fast frame axis, transfer function
        "cal": mdf.write_calibration(d / "cal.mdf", sm, grid=GRID, acquisition=_acq(tf=True),
                                     is_background_frame=bg),
        # FD, trailing axis of 2, frame axis first, frequency selection
        "calsel": mdf.write_calibration(d / "calsel.mdf", sm, grid=GRID, acquisition=_acq(),
                                        is_background_frame=bg, complex_storage="trailing",
                                        frame_axis_last=False, frequency_selection=SEL),
        # TD int16 with dataConversionFactor and frame times
        "meas": mdf.write_measurement(d / "meas.mdf", rng.integers(-99, 99, (N_MEAS, J, C, V)).astype(np.int16),
                                      acquisition=_acq(), is_background_frame=np.r_[np.ones(1), np.zeros(4)],
                                      conversion_factor=[[1e-3, 0.0], [2e-3, 0.1]],
                                      frame_times=np.arange(N_MEAS) * 0.1),
        "reco": mdf.write_reconstruction(d / "reco.mdf", rng.random((2, 3, 3)), GRID,
                                         params={"lam": 0.5}),
    }
    return out


# ----------------------------------------------------------------------------------------------
# mutation primitives
# ----------------------------------------------------------------------------------------------
def _set(h5, name, value, dtype=None):
    if name in h5:
        del h5[name]
    if isinstance(value, str):
        h5.create_dataset(name, data=value, dtype=h5py.string_dtype())
    else:
        h5.create_dataset(name, data=np.asarray(value, dtype=dtype))


def op_delete(name):
    def f(h5):
        del h5[name]
    return f


def op_set(name, value, dtype=None):
    def f(h5):
        _set(h5, name, value, dtype)
    return f


def op_edit(name, fn):
    """Replace a dataset by fn(its current value)."""
    def f(h5):
        v = h5[name][()]
        _set(h5, name, fn(np.array(v)))
    return f


def op_poke(name, index, value):
    """Write one element in place (e.g. NaN into the data)."""
    def f(h5):
        d = h5[name]
        if d.dtype.kind == "c":
            d[index] = np.asarray(value, dtype=d.dtype)
        else:
            d[index] = value
    return f


def op_group(name):
    """Replace a dataset by a group of the same name."""
    def f(h5):
        del h5[name]
        h5.create_group(name).create_dataset("x", data=1)
    return f


def op_many(*ops):
    def f(h5):
        for o in ops:
            o(h5)
    return f


def _bytes(fn):
    """A mutation on the raw bytes of the file instead of the HDF5 content."""
    fn.raw = True
    return fn


# ----------------------------------------------------------------------------------------------
# the cases
# ----------------------------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
REQUIRED_COMMON = ["/version", "/acquisition/numFrames", "/acquisition/drivefield/numChannels",
                   "/acquisition/drivefield/baseFrequency", "/acquisition/drivefield/divider",
                   "/acquisition/drivefield/strength", "/acquisition/receiver/numChannels",
                   "/acquisition/receiver/numSamplingPoints", "/acquisition/receiver/bandwidth",
                   "/measurement/data", "/measurement/isFourierTransformed",
                   "/measurement/isBackgroundCorrected",
                   "/measurement/isFrequencySelection"]
REQUIRED = {  # (numPeriodsPerFrame, numAverages, isFastFrameAxis default as in MPIFiles.jl)
    "cal": REQUIRED_COMMON + ["/measurement/isFastFrameAxis"] + ["/calibration/size", "/calibration/fieldOfView",
                              "/measurement/isBackgroundFrame"],
    "calsel": REQUIRED_COMMON + ["/calibration/size", "/calibration/fieldOfView",
                                 "/measurement/isBackgroundFrame", "/measurement/frequencySelection"],
    "meas": REQUIRED_COMMON,
    "reco": ["/version", "/reconstruction/data", "/reconstruction/size", "/reconstruction/fieldOfView"],
}
FLOAT_FIELDS = {  # header floats where NaN/Inf must be refused (name -> whether named in the error)
    "/acquisition/drivefield/baseFrequency": True, "/acquisition/receiver/bandwidth": True,
    "/acquisition/drivefield/strength": True, "/acquisition/drivefield/phase": True,
    "/acquisition/gradient": True, "/calibration/fieldOfView": True,
    "/calibration/fieldOfViewCenter": True, "/calibration/snr": True,
}
INT_FIELDS = ["/acquisition/numPeriodsPerFrame", "/acquisition/numAverages", "/acquisition/numFrames",
              "/acquisition/drivefield/numChannels", "/acquisition/receiver/numChannels",
              "/acquisition/receiver/numSamplingPoints"]
FLAGS = ["/measurement/isFourierTransformed", "/measurement/isFastFrameAxis",
         "/measurement/isBackgroundCorrected", "/measurement/isFrequencySelection"]
BASES = ["cal", "calsel", "meas"]


def _cases():
    cases = []  # (id, base, op, expected text in the message or None)

    def add(cid, base, op, expect=None):
        cases.append((f"{base}-{cid}", base, op, expect))

    for base in ["cal", "calsel", "meas", "reco"]:
        for name in REQUIRED[base]:
            add(f"missing{name}", base, op_delete(name), name if name != "/measurement/isBackgroundFrame" else None)
            add(f"group{name}", base, op_group(name))
        # the version: v1, unknown majors, wrong types
        for v in ["1.0.5", "1.0", "0.9", "3.0.0", "", "two", "2x"]:
            add(f"version={v!r}", base, op_set("/version", v), "version" if v not in ("1.0.5", "1.0") else "MDF v1")
        add("version-int", base, op_set("/version", 2, np.int64), "/version")
        add("version-float", base, op_set("/version", 2.1), "/version")
        add("no-version-no-mdf", base, op_many(op_delete("/version"), op_delete("/uuid")), "not an MDF")

    for base in BASES:
        for name, named in FLOAT_FIELDS.items():
            if base == "meas" and name.startswith("/calibration"):
                continue
            for bad in (NAN, INF, -INF):
                add(f"{bad}{name}", base, op_edit(name, lambda a, b=bad: np.where(np.ones_like(a, bool), b, a)
                                                  if a.ndim == 0 else np.r_[[b], a.ravel()[1:]].reshape(a.shape)),
                    name if named else None)
        for name in ["/acquisition/drivefield/baseFrequency", "/acquisition/receiver/bandwidth"]:
            for bad in (0.0, -1.0):
                add(f"{bad}{name}", base, op_set(name, bad), name)
            add(f"string{name}", base, op_set(name, "fast"), name)
            add(f"array{name}", base, op_set(name, [1e6, 2e6]), name)
            add(f"compound{name}", base, op_set(name, np.zeros(1, [("a", "f8"), ("b", "f8")])), name)
        for name in INT_FIELDS:
            for bad in (0, -1):
                add(f"{bad}{name}", base, op_set(name, bad, np.int64), None)
            add(f"frac{name}", base, op_set(name, 2.5), name)
            add(f"nan{name}", base, op_set(name, NAN), name)
            add(f"string{name}", base, op_set(name, "3"), name)
            add(f"vector{name}", base, op_set(name, [1, 2], np.int64), name)
            if name != "/acquisition/numAverages" and not (base == "calsel" and "Sampling" in name):
                add(f"plus2{name}", base, op_edit(name, lambda a: a + 2), None)
        # (a frequency-selected file cannot reveal V unless the selection falls outside K)
        for vbad in (1, 2, 2**40) if base == "calsel" else (30, 36, 1, 2, 64, 2**40):
            add(f"V={vbad}", base, op_set("/acquisition/receiver/numSamplingPoints", vbad, np.int64))
        for flag in FLAGS:
            if flag != "/measurement/isBackgroundCorrected":  # either value is readable
                add(f"flip{flag}", base, op_edit(flag, lambda a: 1 - a), None)
            for bad in (2, -1):
                add(f"{bad}{flag}", base, op_set(flag, bad, np.int8), flag)
            add(f"string{flag}", base, op_set(flag, "yes"), flag)
            add(f"vector{flag}", base, op_set(flag, [0, 1], np.int8), flag)
        add("giant-bandwidth-dataset", base, _giant("/acquisition/receiver/bandwidth"),
            "/acquisition/receiver/bandwidth")
        add("giant-isBackgroundFrame", base, _giant("/measurement/isBackgroundFrame"),
            "/measurement/isBackgroundFrame")
        add("isTransposed-only-bad", base, op_many(op_delete("/measurement/isFastFrameAxis"),
                                                   op_set("/measurement/isTransposed", 7, np.int8)),
            "/measurement/isTransposed")
        add("sparsity", base, op_set("/measurement/isSparsityTransformed", 1, np.int8), "not supported")
        add("sparsity-full", base, op_many(op_set("/measurement/isSparsityTransformed", 1, np.int8),
                                           op_set("/measurement/sparsityTransformation", "DCT-IV"),
                                           op_set("/measurement/subsamplingIndices", np.arange(4))),
            "not supported")
        add("framePermutation-flag-3", base, op_set("/measurement/isFramePermutation", 3, np.int8),
            "/measurement/isFramePermutation")
        # divider / strength / phase / gradient / transfer function shapes and values
        for bad in ([[0], [96]], [[-5], [96]], [[102]], [[102], [96], [99]], [[1.5], [96.0]]):
            add(f"divider={bad}", base, op_set("/acquisition/drivefield/divider", bad), "/acquisition/drivefield/divider")
        add("strength-shape", base, op_set("/acquisition/drivefield/strength", np.ones((1, 3, 1))), "strength")
        add("phase-shape", base, op_set("/acquisition/drivefield/phase", np.ones((4, 4))), "phase")
        add("gradient-shape", base, op_set("/acquisition/gradient", np.ones(5)), "gradient")
        add("drive-channels", base, op_set("/acquisition/drivefield/numChannels", 3, np.int64), None)
        # frame flags
        N = N_MEAS if base == "meas" else N_CAL
        for bad in (np.zeros(N - 1), np.zeros(N + 1), np.zeros((N, 1)), np.full(N, 2), np.full(N, -1)):
            add(f"bgframe-{bad.shape}-{int(bad.ravel()[0])}", base,
                op_set("/measurement/isBackgroundFrame", bad.astype(np.int8)), "/measurement/isBackgroundFrame")
        add("bgframe-string", base, op_set("/measurement/isBackgroundFrame", "0" * N), "/measurement/isBackgroundFrame")
        add("bgframe-nan", base, op_set("/measurement/isBackgroundFrame", np.full(N, NAN)), "/measurement/isBackgroundFrame")
        # data: dtype and shape
        add("data-string", base, op_edit("/measurement/data", lambda a: np.full(a.shape[:2], "x", object).astype(bytes)))
        add("data-bool", base, op_edit("/measurement/data", lambda a: np.ones(a.shape, bool)))
        add("data-compound-ab", base, op_edit("/measurement/data", lambda a: np.zeros(a.shape[:4], [("a", "f4"), ("b", "f4")])),
            "/measurement/data")
        add("data-scalar", base, op_set("/measurement/data", 1.0), "/measurement/data")
        add("data-1d", base, op_edit("/measurement/data", lambda a: a.ravel()), "/measurement/data")
        add("data-extra-axis", base, op_edit("/measurement/data", lambda a: a[None]), "/measurement/data")
        add("data-drop-axis", base, op_edit("/measurement/data", lambda a: a[0]), "/measurement/data")
        for ax in range(4):
            add(f"data-axis{ax}+1", base, op_edit("/measurement/data", lambda a, ax=ax: np.concatenate([a, a.take([0], axis=ax)], axis=ax)),
                "/measurement/data")
            add(f"data-axis{ax}-1", base, op_edit("/measurement/data",
                                                  lambda a, ax=ax: a.take(np.arange(a.shape[ax] - 1), axis=ax)),
                "/measurement/data")
        add("data-complex-trailing3", base, op_edit("/measurement/data", lambda a: np.zeros(a.shape[:4] + (3,), np.float32)),
            "/measurement/data")
        # NaN / Inf inside the data (position chosen by seed): named as /measurement/data
        for seed in range(5):
            for bad in (NAN, INF, -INF):
                add(f"data-{bad}-seed{seed}", base, _poke_data(seed, bad), "/measurement/data")
        add("data-all-nan", base, op_edit("/measurement/data", lambda a: np.full(a.shape, np.nan)),
            "/measurement/data")
        # isFrequencySelection switched on with a missing / bad selection
        if base != "calsel":
            add("freqsel-on-without-list", base, op_set("/measurement/isFrequencySelection", 1, np.int8), None)
        # the measurement must be a calibration for these
        if base == "meas":
            add("tf-shape", base, op_set("/acquisition/receiver/transferFunction", np.ones((C, K + 1), complex)),
                "transferFunction")
            for cf in (np.ones((C, 3)), np.ones((C + 1, 2)), np.ones(2), np.array([[NAN, 0], [1, 0]]),
                       np.array([[1, INF], [1, 0]]), np.array([["a", "b"], ["c", "d"]], dtype=object).astype(bytes)):
                add(f"conversion-{cf.shape}-{cf.ravel()[0]!r}-{cf.ravel()[1]!r}", base,
                    op_set("/acquisition/receiver/dataConversionFactor", cf), "dataConversionFactor")
            for ft in (np.zeros(N_MEAS - 1), np.full(N_MEAS, NAN), np.full(N_MEAS, INF), np.zeros((N_MEAS, 2))):
                add(f"frameTimes-{ft.shape}-{ft.ravel()[0]}", base, op_set("/_nirmpi/frameTimes", ft), "/_nirmpi/frameTimes")
            add("frequency-selection-time-domain", base, op_many(
                op_set("/measurement/isFrequencySelection", 1, np.int8),
                op_set("/measurement/frequencySelection", np.arange(1, 5))), "isFrequencySelection")
        else:
            if base == "cal":
                add("tf-nan", base, op_poke("/acquisition/receiver/transferFunction", (0, 3), NAN),
                    "transferFunction")
            for sz in ([3, 3, 2], [0, 3, 1], [-3, -3, 1], [3, 3], [3.5, 3, 1], [9, 1, 1, 1]):
                add(f"size={sz}", base, op_set("/calibration/size", sz), "/calibration/size" if sz != [9, 1, 1, 1] else None)
            for fov in ([0, 0.03, 0.001], [-0.03, 0.03, 0.001], [0.03, 0.03], "big"):
                add(f"fov={fov}", base, op_set("/calibration/fieldOfView", fov), "/calibration/fieldOfView")
            add("center-shape", base, op_set("/calibration/fieldOfViewCenter", [0.0, 0.0]), "fieldOfViewCenter")
            for order in ("zyx", "yxz", "xy", "x"):
                add(f"order={order}", base, op_set("/calibration/order", order), "/calibration/order")
            add("order-int", base, op_set("/calibration/order", 3), "/calibration/order")
            for snr in (np.ones((J, C, K - 3)), np.ones((J + 1, C, K)), np.ones(K), -np.ones((J, C, K))):
                add(f"snr-{snr.shape}-{snr.ravel()[0]}", base, op_set("/calibration/snr", snr), "/calibration/snr")
            add("snr-string", base, op_set("/calibration/snr", "high"), "/calibration/snr")
            add("meander-flag-2", base, op_set("/calibration/isMeanderingGrid", 2, np.int8),
                "/calibration/isMeanderingGrid")
            add("all-foreground", base, op_edit("/measurement/isBackgroundFrame", lambda a: np.zeros_like(a)), None)
            add("all-background", base, op_edit("/measurement/isBackgroundFrame", lambda a: np.ones_like(a)), None)
        if base == "calsel":
            K_SEL = len(SEL)
            for sel in ([0, 2, 3, 5, 8, 10], [1, 2, 3, 5, 8, K + 1], [2, 2, 3, 5, 8, 10], [-1, 2, 3, 5, 8, 10],
                        [2, 3, 5, 8, 10], [2, 3, 5, 8, 10, 11, 13], [], [[2, 3, 5], [8, 10, 13]],
                        [2.5, 3, 5, 8, 10, 13]):
                add(f"freqsel={sel}", base, op_set("/measurement/frequencySelection", np.asarray(sel)),
                    "/measurement/frequencySelection" if len(np.ravel(sel)) == K_SEL or len(sel) == 0 else None)
            add("freqsel-nan", base, op_set("/measurement/frequencySelection", np.r_[NAN, SEL[1:] + 1.0]),
                "/measurement/frequencySelection")
            add("freqsel-string", base, op_set("/measurement/frequencySelection", "1,2,3"),
                "/measurement/frequencySelection")
            add("freqsel-off", base, op_set("/measurement/isFrequencySelection", 0, np.int8), "/measurement/data")

    # reconstruction files
    for seed in range(6):
        add(f"nan-seed{seed}", "reco", op_poke("/reconstruction/data", (seed % 2, (seed * 5) % 9, 0),
                                               [NAN, INF, -INF][seed % 3]), "/reconstruction/data")
    for bad, expect in [(np.zeros((2, 8, 1)), "/reconstruction/data"), (np.zeros((2, 9)), "/reconstruction/data"),
                        (np.zeros((0, 9, 1)), "/reconstruction/data"), (np.zeros((2, 9, 1), complex), "/reconstruction/data"),
                        (np.zeros((2, 9, 0)), "/reconstruction/data")]:
        add(f"data-{bad.shape}-{bad.dtype}", "reco", op_set("/reconstruction/data", bad), expect)
    add("data-string", "reco", op_set("/reconstruction/data", "image"), "/reconstruction/data")
    for sz in ([3, 3, 2], [0, 3, 1], [3, 3]):
        add(f"size={sz}", "reco", op_set("/reconstruction/size", np.asarray(sz, np.int64)), None)
    for fov in ([NAN, 0.03, 0.001], [0.03, INF, 0.001], [0.0, 0.03, 0.001], [0.03, 0.03]):
        add(f"fov={fov}", "reco", op_set("/reconstruction/fieldOfView", fov), "/reconstruction/fieldOfView")
    add("center-nan", "reco", op_set("/reconstruction/fieldOfViewCenter", [NAN, 0, 0]), "fieldOfViewCenter")
    add("order", "reco", op_set("/reconstruction/order", "zyx"), "/reconstruction/order")

    # not an MDF file at all, or not a file
    for base in ["cal", "calsel", "meas", "reco"]:
        for frac in (0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999):
            add(f"truncated-{frac}", base, _truncate(frac), None)
        add("truncated-minus1", base, _truncate(None), None)
        add("zeroed-superblock", base, _zero_bytes(0, 64), None)
    for seed in range(10):
        add(f"random-bytes-{seed}", "cal", _garbage(seed), None)
    add("empty-file", "cal", _raw_replace(b""), "HDF5")
    add("text-file", "cal", _raw_replace(b"version = 2.1.0\n" * 20), "HDF5")
    add("png", "cal", _raw_replace(b"\x89PNG\r\n\x1a\n" + bytes(100)), "HDF5")
    add("hdf5-signature-only", "cal", _raw_replace(b"\x89HDF\r\n\x1a\n" + bytes(40)), "HDF5")
    add("directory", "cal", _directory(), "directory")
    add("missing-file", "cal", _missing(), "does not exist")
    add("empty-hdf5", "cal", _h5_new(lambda h5: None), "not an MDF")
    add("foreign-hdf5", "cal", _h5_new(lambda h5: h5.create_dataset("images", data=np.zeros((4, 4)))), "not an MDF")
    add("version-but-nothing", "cal", _h5_new(lambda h5: _set(h5, "/version", "2.1.0")), "/measurement/data")
    add("v1-layout", "cal", _h5_new(lambda h5: (_set(h5, "/version", "1.0.5"),
                                                _set(h5, "/measurement/dataFD", np.zeros((4, 2, 17, 2))))), "MDF v1")
    add("v1-calibration", "cal", _h5_new(lambda h5: (_set(h5, "/version", "1.0.1"),
                                                     _set(h5, "/calibration/dataFD", np.zeros((9, 2, 17, 2))),
                                                     _set(h5, "/calibration/size", [3, 3, 1]))), "MDF v1")
    return cases


def _giant(name):
    """A declared-but-unwritten chunked dataset of 2^34 elements: must not be loaded."""
    def f(h5):
        del h5[name]
        h5.create_dataset(name, shape=(1 << 34,), dtype=np.float64, chunks=(1 << 16,))
    return f


def _poke_data(seed, bad):
    def f(h5):
        d = h5["/measurement/data"]
        r = np.random.default_rng(seed)
        idx = tuple(int(r.integers(0, s)) for s in d.shape)
        if d.dtype.kind == "c":
            d[idx] = np.asarray(complex(bad, 0) if seed % 2 else complex(0, bad), d.dtype)
        elif d.dtype.kind in "iu":  # integers cannot hold NaN: store the data as float then
            a = d[()].astype(np.float32)
            a[idx] = bad
            _set(h5, "/measurement/data", a)
        else:
            d[idx] = bad
    return f


def _truncate(frac):
    @_bytes
    def f(path):
        b = path.read_bytes()
        path.write_bytes(b[: len(b) - 1] if frac is None else b[: int(len(b) * frac)])
        return path
    return f


def _zero_bytes(start, stop):
    @_bytes
    def f(path):
        b = bytearray(path.read_bytes())
        b[start:stop] = bytes(stop - start)
        path.write_bytes(bytes(b))
        return path
    return f


def _garbage(seed):
    @_bytes
    def f(path):
        path.write_bytes(np.random.default_rng(seed).integers(0, 256, 200 + 500 * seed, np.uint8).tobytes())
        return path
    return f


def _raw_replace(content):
    @_bytes
    def f(path):
        path.write_bytes(content)
        return path
    return f


def _directory():
    @_bytes
    def f(path):
        path.unlink()
        path.mkdir()
        return path
    return f


def _missing():
    @_bytes
    def f(path):
        path.unlink()
        return path.with_name("does-not-exist.mdf")
    return f


def _h5_new(fill):
    @_bytes
    def f(path):
        path.unlink()
        with h5py.File(path, "w") as h5:
            fill(h5)
        return path
    return f


CASES = _cases()


def test_enough_cases():
    assert len(CASES) >= 500, len(CASES)
    assert len({c[0] for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return _make_bases(tmp_path_factory.mktemp("mdf-bases"))


def _digest(path: Path):
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return ("dir" if path.is_dir() else "none")


def _exercise(path: Path):
    f = mdf.open(path)
    f.summary()
    f.extras
    if f.kind == "reconstruction":
        f.read_reconstruction()
    else:
        f.read_system_matrix()
        f.read_background()
        f.read_spectra()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("mdf-fuzz")


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_malformed_file_gives_mdf_error(workdir, bases, index):
    cid, base, op, expect = CASES[index]
    path = workdir / str(index) / f"{base}.mdf"   # a module-wide dir: tmp_path per case is slow
    path.parent.mkdir()
    shutil.copyfile(bases[base], path)
    if getattr(op, "raw", False):
        path = op(path)
    else:
        with h5py.File(path, "a") as h5:
            op(h5)
    before = _digest(path)
    with pytest.raises(MDFError) as info:
        _exercise(path)
    msg = str(info.value)
    assert str(path) in msg, msg            # every message names the file
    if expect is not None:
        assert expect in msg, msg
    assert _digest(path) == before          # the input is never modified


def test_bases_are_valid(bases):
    for p in bases.values():
        _exercise(p)


def test_random_garbage_never_escapes(tmp_path, bases):
    """Random replacements of random datasets: either readable or MDFError, nothing else."""
    rng = np.random.default_rng(2024)
    values = [lambda r: float(r.standard_normal()), lambda r: int(r.integers(-3, 40)),
              lambda r: r.standard_normal(int(r.integers(0, 5))), lambda r: "x" * int(r.integers(0, 3)),
              lambda r: r.integers(-2, 3, (int(r.integers(1, 4)), int(r.integers(1, 4)))),
              lambda r: np.full(int(r.integers(1, 12)), np.nan), lambda r: np.zeros(2, [("r", "f4"), ("i", "f4")]),
              lambda r: np.array([True, False])]
    names = {}
    for base, p in bases.items():
        with h5py.File(p, "r") as h5:
            names[base] = [n for n in _walk(h5)]
    outcomes = {"ok": 0, "MDFError": 0}
    for i in range(150):
        base = ["cal", "calsel", "meas", "reco"][i % 4]
        path = tmp_path / f"{i}.mdf"
        shutil.copyfile(bases[base], path)
        with h5py.File(path, "a") as h5:
            for _ in range(int(rng.integers(1, 3))):
                name = names[base][int(rng.integers(len(names[base])))]
                if name in h5:
                    _set(h5, name, values[int(rng.integers(len(values)))](rng))
        before = _digest(path)
        try:
            _exercise(path)
            outcomes["ok"] += 1
        except MDFError:
            outcomes["MDFError"] += 1
        assert _digest(path) == before
        os.unlink(path)
    assert outcomes["MDFError"] > 50


def _walk(h5):
    out = []
    h5.visititems(lambda n, o: out.append("/" + n) if isinstance(o, h5py.Dataset) else None)
    return out
