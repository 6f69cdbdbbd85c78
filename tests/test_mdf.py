"""MDF v2 reading/writing: round trips over every storage layout, laziness, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import time
import tracemalloc

import h5py
import numpy as np
import pytest

from napari_nirmpi import mdf
from napari_nirmpi.errors import MDFError, NirmpiError
from napari_nirmpi.grid import Grid

V = 32
K = V // 2 + 1


def make_acq(C=2, J=1, tf=False, V=V):
    Kx = V // 2 + 1
    return mdf.Acquisition(
        base_frequency=2.5e6, dividers=(102, 96), drive_strength=(12e-3, 12e-3),
        num_sampling_points=V, bandwidth=1.25e6, num_rx_channels=C, num_periods=J,
        gradient=np.diag([-1.0, -1.0, 2.0]),
        transfer_function=(np.ones((C, Kx)) * (1 + 0.5j)) if tf else None)


def cplx(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def compound_names(dset):
    t = dset.id.get_type()
    assert t.get_class() == h5py.h5t.COMPOUND
    return [t.get_member_name(i) for i in range(t.get_nmembers())]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def sm_reference(data, bg, J=0):
    """Expected (C, K, O) background-corrected SM from (J, C, K, N) data."""
    fg = data[J][..., ~bg]
    if bg.any():
        fg = fg - data[J][..., bg].mean(-1, keepdims=True)
    return fg


# ---------------------------------------------------------------------------------------------
# calibration round trips
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["compound", "trailing"])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("ndim", [2, 3])
def test_calibration_roundtrip_layouts(tmp_path, rng, storage, fast, ndim):
    grid = Grid((3, 4), (0.03, 0.04), (0.001, -0.002)) if ndim == 2 else Grid((2, 3, 4), (0.02, 0.03, 0.04))
    acq = make_acq(C=3, J=2, tf=True)
    B = 3
    N = grid.size + B
    data = cplx(rng, (2, 3, K, N))
    bg = np.r_[np.zeros(grid.size, bool), np.ones(B, bool)]
    p = mdf.write_calibration(tmp_path / "sm.mdf", data, grid=grid, acquisition=acq,
                              is_background_frame=bg, complex_storage=storage, frame_axis_last=fast,
                              metadata={"experiment_name": "rt", "tracer_name": "Perimag"},
                              extras={"note": "hello", "vec": np.arange(4)})
    f = mdf.open(p)
    assert f.kind == "calibration" and f.version == "2.1.0"
    assert f.grid == grid
    assert f.frequency_selection is None and np.array_equal(f.available_freq_index, np.arange(K))
    assert f.flags["isFastFrameAxis"] is fast
    assert f.num_frames == N and f.num_background_frames == B and f.num_foreground_frames == grid.size
    assert np.array_equal(f.background_frames, np.arange(grid.size, N))
    assert f.acquisition.num_periods == 2 and f.acquisition.dividers == (102, 96)
    assert np.allclose(f.acquisition.gradient, np.diag([-1.0, -1.0, 2.0]))
    assert np.allclose(f.acquisition.transfer_function, 1 + 0.5j)
    assert f.metadata["experiment_name"] == "rt" and f.metadata["tracer_name"] == "Perimag"
    assert f.snr.shape == (2, 3, K) and np.all(f.snr > 0)
    assert np.allclose(f.frequencies, np.arange(K) * 1.25e6 / (K - 1))
    ex = f.extras
    assert ex["note"] == "hello" and np.array_equal(ex["vec"], np.arange(4))
    for period in (0, 1):
        ref = sm_reference(data, bg, period)
        S = f.read_system_matrix(period=period)
        assert S.dtype == np.complex64 and S.shape == (3 * K, grid.size)
        assert np.allclose(S, ref.reshape(3 * K, -1), atol=1e-5)
    # subset, unsorted channel and frequency lists: rows channel-outer / frequency-inner
    S = f.read_system_matrix(channels=[2, 0], freq_index=[9, 1, 4])
    ref = sm_reference(data, bg)
    assert np.allclose(S, np.concatenate([ref[2][[9, 1, 4]], ref[0][[9, 1, 4]]]), atol=1e-5)
    raw = f.read_system_matrix(channels=[1], freq_index=[3], subtract_background=False)
    assert np.allclose(raw, data[0, 1, 3, :grid.size][None])
    bgd = f.read_background(channels=[1], freq_index=[3, 5])
    assert bgd.shape == (2, B) and np.allclose(bgd, data[0, 1, [3, 5]][:, grid.size:])
    # the same data through read_spectra: (F, C', K')
    spec = f.read_spectra(frames=[N - 1, 0], channels=[1], freq_index=[2, 3])
    assert np.allclose(spec[:, 0, :], data[0, 1][[2, 3]][:, [N - 1, 0]].T)


def test_calibration_without_background_and_explicit_snr(tmp_path, rng):
    grid = Grid((3, 3), (0.03, 0.03))
    acq = make_acq(C=1)
    data = cplx(rng, (1, 1, K, 9))
    snr = rng.random((1, 1, K)) * 10
    f = mdf.open(mdf.write_calibration(tmp_path / "sm.mdf", data, grid=grid, acquisition=acq,
                                       is_background_frame=np.zeros(9, bool), snr=snr))
    assert f.read_background() is None
    assert np.allclose(f.snr, snr)
    assert np.allclose(f.read_system_matrix(), data[0, 0])
    # SNR is needed when it cannot be computed
    with pytest.raises(MDFError, match="snr"):
        mdf.write_calibration(tmp_path / "sm2.mdf", data, grid=grid, acquisition=acq,
                              is_background_frame=np.zeros(9, bool))


def test_calibration_frequency_selection(tmp_path, rng):
    grid = Grid((3, 3), (0.03, 0.03))
    acq = make_acq(C=2)
    N = 11
    bg = np.r_[np.zeros(9, bool), np.ones(2, bool)]
    data = cplx(rng, (1, 2, K, N))
    sel = np.array([1, 2, 5, 8, 9, 12])
    p = mdf.write_calibration(tmp_path / "sm.mdf", data, grid=grid, acquisition=acq,
                              is_background_frame=bg, frequency_selection=sel)
    with h5py.File(p, "r") as h5:  # stored 1-based, MPIFiles.jl style, and only those rows
        assert np.array_equal(h5["/measurement/frequencySelection"][()], sel + 1)
        assert h5["/measurement/data"].shape == (1, 2, len(sel), N)
        assert h5["/calibration/snr"].shape == (1, 2, len(sel))
    f = mdf.open(p)
    assert f.flags["isFrequencySelection"]
    assert np.array_equal(f.available_freq_index, sel)
    assert np.array_equal(f.frequency_selection, sel)      # what preprocess looks for
    assert f.snr.shape == (1, 2, K) and np.all(f.snr[:, :, [0, 3]] == 0)
    ref = sm_reference(data, bg)
    S = f.read_system_matrix()
    assert S.shape == (2 * len(sel), 9)
    assert np.allclose(S, ref[:, sel].reshape(-1, 9), atol=1e-5)
    S = f.read_system_matrix(channels=[1], freq_index=[12, 2])
    assert np.allclose(S, ref[1][[12, 2]], atol=1e-5)
    with pytest.raises(MDFError, match=r"frequency index \[3\].*not stored"):
        f.read_system_matrix(freq_index=[2, 3])
    # data given with only the selected frequencies gives the same file content
    p2 = mdf.write_calibration(tmp_path / "sm2.mdf", data[:, :, sel], grid=grid, acquisition=acq,
                               is_background_frame=bg, frequency_selection=sel)
    assert np.allclose(mdf.open(p2).read_system_matrix(), f.read_system_matrix())


def test_unsorted_frequency_selection_in_file(tmp_path, rng):
    """Other writers may store the selection in any order (e.g. sorted by SNR)."""
    grid = Grid((2, 2), (0.02, 0.02))
    acq = make_acq(C=1)
    data = cplx(rng, (1, 1, K, 4))
    p = mdf.write_calibration(tmp_path / "sm.mdf", data, grid=grid, acquisition=acq,
                              is_background_frame=np.zeros(4, bool), snr=np.ones((1, 1, K)),
                              frequency_selection=[2, 5, 7])
    with h5py.File(p, "a") as h5:
        d = h5["/measurement/data"]
        d[...] = d[()][:, :, [2, 0, 1]]
        del h5["/measurement/frequencySelection"]
        h5["/measurement/frequencySelection"] = np.array([8, 3, 6])
    f = mdf.open(p)
    assert np.array_equal(f.available_freq_index, [2, 5, 7])
    assert np.allclose(f.read_system_matrix(freq_index=[7, 2, 5]), data[0, 0][[7, 2, 5]])
    assert np.allclose(f.read_spectra(freq_index=[5, 7])[:, 0], data[0, 0][[5, 7]].T)


@pytest.mark.parametrize("fast", [False, True])
def test_time_domain_calibration_with_conversion(tmp_path, rng, fast):
    grid = Grid((2, 3), (0.02, 0.03))
    acq = make_acq(C=2)
    bg = np.r_[np.zeros(6, bool), np.ones(2, bool)]
    raw = rng.integers(-1000, 1000, size=(1, 2, V, 8)).astype(np.int16)
    cf = np.array([[1e-3, 0.5], [2e-3, -0.1]])
    p = mdf.write_calibration(tmp_path / "sm.mdf", raw, grid=grid, acquisition=acq,
                              is_background_frame=bg, fourier=False, conversion_factor=cf,
                              frame_axis_last=fast)
    f = mdf.open(p)
    assert not f.flags["isFourierTransformed"]
    volts = raw[0].astype(np.float64) * cf[:, :1, None] + cf[:, 1:, None]   # (C, V, N)
    spec = np.fft.rfft(volts, axis=1) / V                                   # (C, K, N)
    ref = spec[..., ~bg] - spec[..., bg].mean(-1, keepdims=True)
    S = f.read_system_matrix(freq_index=[1, 4, 16])
    assert np.allclose(S, ref[:, [1, 4, 16]].reshape(-1, 6), atol=1e-5)
    assert f.snr.shape == (1, 2, K) and np.all(np.isfinite(f.snr))


# ---------------------------------------------------------------------------------------------
# measurement round trips
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fast", [False, True])
def test_measurement_time_domain(tmp_path, rng, fast):
    acq = make_acq(C=2, J=2)
    N = 7
    td = rng.standard_normal((N, 2, 2, V)).astype(np.float32)
    bg = np.array([1, 0, 0, 0, 0, 0, 1], bool)
    times = np.linspace(0, 1, N)
    p = mdf.write_measurement(tmp_path / "m.mdf", td, acquisition=acq, is_background_frame=bg,
                              frame_times=times, frame_axis_last=fast)
    f = mdf.open(p)
    assert f.kind == "measurement" and f.grid is None and f.snr is None
    assert np.array_equal(f.is_background_frame, bg)
    assert np.allclose(f.frame_times, times)
    ref = np.fft.rfft(td.astype(np.float64), axis=-1) / V                      # (N, J, C, K)
    for period in (0, 1):
        u = f.read_spectra(period=period)
        assert u.shape == (N, 2, K) and u.dtype == np.complex64
        assert np.allclose(u, ref[:, period], atol=1e-5)
    u = f.read_spectra(frames=[5, 2, 3], channels=[1], freq_index=[16, 0])
    assert np.allclose(u, ref[[5, 2, 3], 0][:, [1]][:, :, [16, 0]], atol=1e-5)
    # measurement rows as a "system matrix": (M, foreground frames)
    S = f.read_system_matrix(channels=[0], freq_index=[3], subtract_background=False)
    assert np.allclose(S, ref[~bg, 0, 0, 3][None], atol=1e-5)


def test_measurement_default_frame_times(tmp_path, rng):
    acq = make_acq(C=1, J=2)
    acq.num_averages = 3
    f = mdf.open(mdf.write_measurement(tmp_path / "m.mdf", rng.standard_normal((4, 2, 1, V)),
                                       acquisition=acq, is_background_frame=np.zeros(4, bool)))
    cycle = 1632 / 2.5e6  # lcm(102, 96) / base frequency
    assert np.isclose(f.acquisition.cycle, cycle)
    assert np.allclose(f.frame_times, np.arange(4) * cycle * 2 * 3)


def test_measurement_int_data_conversion_factor(tmp_path, rng):
    acq = make_acq(C=2)
    raw = rng.integers(-30000, 30000, size=(3, 1, 2, V)).astype(np.int16)
    cf = np.array([[1e-4, 0.25], [3e-4, 0.0]])
    f = mdf.open(mdf.write_measurement(tmp_path / "m.mdf", raw, acquisition=acq,
                                       is_background_frame=np.zeros(3, bool), conversion_factor=cf))
    with h5py.File(f.path, "r") as h5:
        assert h5["/measurement/data"].dtype == np.int16
    volts = raw.astype(np.float64) * cf[None, None, :, :1] + cf[None, None, :, 1:]
    assert np.allclose(f.read_spectra(), (np.fft.rfft(volts, axis=-1) / V)[:, 0], atol=1e-6)


@pytest.mark.parametrize("storage", ["compound", "trailing"])
@pytest.mark.parametrize("fast", [False, True])
def test_measurement_fourier_and_selection(tmp_path, rng, storage, fast):
    acq = make_acq(C=2)
    N = 5
    spec = cplx(rng, (N, 1, 2, K))
    sel = [0, 3, 4, 10]
    f = mdf.open(mdf.write_measurement(tmp_path / "m.mdf", spec, acquisition=acq, fourier=True,
                                       is_background_frame=np.zeros(N, bool), complex_storage=storage,
                                       frame_axis_last=fast, frequency_selection=sel))
    with h5py.File(f.path, "r") as h5:
        d = h5["/measurement/data"]
        if storage == "compound":
            assert compound_names(d) == [b"r", b"i"]
        else:
            assert d.shape[-1] == 2 and d.dtype == np.float32
    u = f.read_spectra(frames=[4, 0], freq_index=[10, 3])
    assert np.allclose(u, spec[[4, 0], 0][:, :, [10, 3]])
    with pytest.raises(MDFError, match="not stored"):
        f.read_spectra(freq_index=[1])


def test_argument_errors(tmp_path, rng):
    acq = make_acq(C=2)
    f = mdf.open(mdf.write_measurement(tmp_path / "m.mdf", rng.standard_normal((3, 1, 2, V)),
                                       acquisition=acq, is_background_frame=np.zeros(3, bool)))
    for kw in ({"channels": [2]}, {"freq_index": [K]}, {"frames": [-1]}, {"period": 1},
               {"frames": [[0, 1]]}, {"channels": ["a"]}):
        with pytest.raises(MDFError, match=str(f.path)):
            f.read_spectra(**kw)
    with pytest.raises(MDFError, match="reconstruction"):
        f.read_reconstruction()


# ---------------------------------------------------------------------------------------------
# reconstruction
# ---------------------------------------------------------------------------------------------
def test_reconstruction_roundtrip_2d_3d(tmp_path, rng):
    g2 = Grid((3, 5), (0.03, 0.05), (0.001, 0.002))
    img = rng.random(g2.shape).astype(np.float32)
    p = mdf.write_reconstruction(tmp_path / "r.mdf", img, g2, params={"method": "kaczmarz", "lam": 0.5,
                                                                      "arr": np.arange(2)})
    with h5py.File(p, "r") as h5:
        assert h5["/reconstruction/data"].shape == (1, 15, 1)
        assert list(h5["/reconstruction/size"][()]) == [5, 3, 1]           # x, y, z
        assert np.allclose(h5["/reconstruction/data"][0, :5, 0], img[0])  # x fastest
        assert h5["/reconstruction/order"][()] == b"xyz"
    f = mdf.open(p)
    assert f.kind == "reconstruction" and f.acquisition is None
    out, grid = f.read_reconstruction()
    assert grid == g2 and out.shape == (1, 3, 5) and np.allclose(out[0], img)
    assert json.loads(f.extras["parameters"]) == {"method": "kaczmarz", "lam": 0.5, "arr": [0, 1]}
    assert "reconstruction" in f.summary()
    g3 = Grid((2, 3, 4), (0.02, 0.03, 0.04))
    series = rng.random((3,) + g3.shape)
    f3 = mdf.open(mdf.write_reconstruction(tmp_path / "r3.mdf", series, g3, acquisition=make_acq()))
    out, grid = f3.read_reconstruction()
    assert grid == g3 and np.allclose(out, series, atol=1e-6) and f3.num_frames == 3
    assert f3.acquisition is not None
    with pytest.raises(MDFError, match="shape"):
        mdf.write_reconstruction(tmp_path / "bad.mdf", np.zeros((4, 4)), g2)


# ---------------------------------------------------------------------------------------------
# MDF v2.1.0 structure that MPIFiles.jl expects
# ---------------------------------------------------------------------------------------------
MANDATORY = {
    "/version": "S", "/uuid": "S", "/time": "S",
    "/study/name": "S", "/study/number": "i", "/study/uuid": "S", "/study/description": "S",
    "/experiment/name": "S", "/experiment/number": "i", "/experiment/uuid": "S",
    "/experiment/description": "S", "/experiment/subject": "S", "/experiment/isSimulation": "b",
    "/scanner/facility": "S", "/scanner/operator": "S", "/scanner/manufacturer": "S",
    "/scanner/name": "S", "/scanner/topology": "S",
    "/acquisition/numAverages": "i", "/acquisition/numFrames": "i",
    "/acquisition/numPeriodsPerFrame": "i", "/acquisition/startTime": "S",
    "/acquisition/drivefield/numChannels": "i", "/acquisition/drivefield/strength": "f",
    "/acquisition/drivefield/phase": "f", "/acquisition/drivefield/baseFrequency": "f",
    "/acquisition/drivefield/divider": "i", "/acquisition/drivefield/waveform": "S",
    "/acquisition/drivefield/cycle": "f",
    "/acquisition/receiver/numChannels": "i", "/acquisition/receiver/bandwidth": "f",
    "/acquisition/receiver/numSamplingPoints": "i", "/acquisition/receiver/unit": "S",
    "/measurement/data": "c", "/measurement/isFourierTransformed": "b",
    "/measurement/isFastFrameAxis": "b", "/measurement/isBackgroundCorrected": "b",
    "/measurement/isSpectralLeakageCorrected": "b", "/measurement/isTransferFunctionCorrected": "b",
    "/measurement/isFrequencySelection": "b", "/measurement/isFramePermutation": "b",
    "/measurement/isSparsityTransformed": "b", "/measurement/isBackgroundFrame": "b",
    "/calibration/size": "i", "/calibration/fieldOfView": "f", "/calibration/fieldOfViewCenter": "f",
    "/calibration/order": "S", "/calibration/snr": "f", "/calibration/method": "S",
    "/calibration/deltaSampleSize": "f", "/calibration/offsetFields": "f",
}


def test_written_calibration_has_mandatory_mdf_datasets(tmp_path, rng):
    grid = Grid((3, 3), (0.03, 0.03))
    p = mdf.write_calibration(tmp_path / "sm.mdf", cplx(rng, (1, 2, K, 11)), grid=grid,
                              acquisition=make_acq(), is_background_frame=np.r_[np.zeros(9), np.ones(2)])
    with h5py.File(p, "r") as h5:
        assert not h5.attrs.keys() or set(h5.attrs.keys()) == set()
        for name, kind in MANDATORY.items():
            assert name in h5, name
            dt = h5[name].dtype
            if kind == "S":
                assert h5py.check_string_dtype(dt) is not None, name
            elif kind == "b":
                assert dt == np.int8, name
            elif kind == "i":
                assert dt == np.int64, name
            elif kind == "f":
                assert dt == np.float64, name
            elif kind == "c":
                assert compound_names(h5[name]) == [b"r", b"i"], name
        assert h5["/version"][()] == b"2.1.0"
        assert h5["/calibration/method"][()] == b"simulation"
        assert h5["/calibration/offsetFields"].shape == (9, 3)
        assert h5["/acquisition/drivefield/strength"].shape == (1, 2, 1)   # J x D x F
        assert h5["/acquisition/drivefield/divider"].shape == (2, 1)       # D x F
        # offset field moves the FFP to each position: G r + H = 0
        G = np.diag([-1.0, -1.0, 2.0])
        pos = h5["/calibration/positions"][()]
        assert np.allclose(pos @ G.T + h5["/calibration/offsetFields"][()], 0)


def test_summary_mentions_everything(tmp_path, rng):
    grid = Grid((3, 3), (0.03, 0.03), (0.0, 0.001))
    f = mdf.open(mdf.write_calibration(tmp_path / "sm.mdf", cplx(rng, (1, 2, K, 11)), grid=grid,
                                       acquisition=make_acq(), is_background_frame=np.r_[np.zeros(9), np.ones(2)],
                                       frequency_selection=[1, 2, 3], frame_axis_last=True))
    s = f.summary()
    for text in ("calibration", "2.1.0", "24.510, 26.042 kHz", "12.00, 12.00 mT", "2 channel(s)",
                 "V = 32", "K = 17", "1.25 MHz", "9 foreground, 2 background", "3 x 3",
                 "FOV 30 x 30 mm", "centre (0, 1) mm", "frequency domain", "fast frame axis",
                 "3 of 17 frequencies", "{r, i} compound", "SNR", "median", "above 1.5", "above 5"):
        assert text in s, (text, s)


def test_legacy_names_and_flags(tmp_path, rng):
    """isTransposed (older writers), isBackgroundCorrected, extras larger than the inline limit."""
    grid = Grid((2, 2), (0.02, 0.02))
    data = cplx(rng, (1, 1, K, 6))
    bg = np.r_[np.zeros(4, bool), np.ones(2, bool)]
    p = mdf.write_calibration(tmp_path / "sm.mdf", data, grid=grid, acquisition=make_acq(C=1),
                              is_background_frame=bg, extras={"big": np.zeros(70000, np.uint8)})
    with h5py.File(p, "a") as h5:
        h5.move("/measurement/isFastFrameAxis", "/measurement/isTransposed")
        h5["/measurement/isBackgroundCorrected"][()] = 1
    f = mdf.open(p)
    assert f.flags["isFastFrameAxis"] and f.flags["isBackgroundCorrected"]
    assert np.allclose(f.read_system_matrix(), data[0, 0, :, :4])   # no subtraction
    ref = f.extras["big"]
    assert isinstance(ref, mdf.ExtraRef) and ref.shape == (70000,) and ref.read().sum() == 0


# ---------------------------------------------------------------------------------------------
# laziness and read-only access
# ---------------------------------------------------------------------------------------------
def test_reads_only_requested_rows(tmp_path, rng, monkeypatch):
    grid = Grid((3, 4), (0.03, 0.04))
    N = 14
    data = cplx(rng, (1, 3, K, N))
    bg = np.r_[np.zeros(12, bool), np.ones(2, bool)]
    p = mdf.write_calibration(tmp_path / "sm.mdf", data, grid=grid, acquisition=make_acq(C=3),
                              is_background_frame=bg)
    f = mdf.open(p)
    read = []
    orig = h5py.Dataset.__getitem__

    def spy(self, sel, *a, **kw):
        out = orig(self, sel, *a, **kw)
        if self.name == "/measurement/data":
            read.append(np.asarray(out).size)
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    S = f.read_system_matrix(channels=[2, 0], freq_index=[11, 3, 7])
    monkeypatch.setattr(h5py.Dataset, "__getitem__", orig)
    assert S.shape == (6, 12)
    # exactly the 2 x 3 requested rows, over foreground plus background frames
    assert sum(read) == 2 * 3 * N
    assert np.allclose(S, np.concatenate([sm_reference(data, bg)[c][[11, 3, 7]] for c in (2, 0)]),
                       atol=1e-5)


def test_huge_dataset_reads_few_rows_fast(tmp_path):
    """A 2.7 GB (declared) system matrix: reading 10 rows touches only those rows."""
    grid = Grid((40, 40, 40), (0.04, 0.04, 0.04))
    N = grid.size
    Vbig = 8192
    Kbig = Vbig // 2 + 1
    acq = make_acq(C=1, V=Vbig)
    small = Grid((2, 2), (0.01, 0.01))
    p = mdf.write_calibration(tmp_path / "sm.mdf", np.ones((1, 1, Kbig, 4), np.complex64), grid=small,
                              acquisition=acq, is_background_frame=np.zeros(4, bool),
                              snr=np.ones((1, 1, Kbig)))
    with h5py.File(p, "a") as h5:   # replace by a chunked, mostly unallocated dataset
        del h5["/measurement/data"], h5["/measurement/isBackgroundFrame"], h5["/calibration/snr"]
        d = h5.create_dataset("/measurement/data", shape=(1, 1, Kbig, N), dtype=np.complex64,
                              chunks=(1, 1, 1, N))
        d[0, 0, 100] = np.arange(N).astype(np.complex64)
        h5["/measurement/isBackgroundFrame"] = np.zeros(N, np.int8)
        h5["/acquisition/numFrames"][()] = N
        h5["/calibration/size"][...] = [40, 40, 40]
        h5["/calibration/fieldOfView"][...] = [0.04] * 3
    f = mdf.open(p)
    assert f.grid == grid
    rows = np.arange(95, 105)
    tracemalloc.start()
    t0 = time.perf_counter()
    S = f.read_system_matrix(freq_index=rows)
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert S.shape == (10, N) and np.allclose(S[5].real, np.arange(N)) and not S[0].any()
    assert dt < 5.0
    assert peak < 3 * S.nbytes + (8 << 20), (peak, S.nbytes)   # the full matrix would be 2.7 GB


def test_reading_never_modifies_the_file(tmp_path, rng):
    grid = Grid((2, 2), (0.02, 0.02))
    p = mdf.write_calibration(tmp_path / "sm.mdf", cplx(rng, (1, 1, K, 6)), grid=grid,
                              acquisition=make_acq(C=1), is_background_frame=np.r_[np.zeros(4), np.ones(2)])
    before, mtime = sha(p), os.stat(p).st_mtime_ns
    os.chmod(p, 0o444)   # read-only is enough
    try:
        f = mdf.open(p)
        f.read_system_matrix(), f.read_background(), f.read_spectra(), f.summary(), f.extras
    finally:
        os.chmod(p, 0o644)
    assert sha(p) == before and os.stat(p).st_mtime_ns == mtime


# ---------------------------------------------------------------------------------------------
# writers: no overwrite without force, atomic replacement
# ---------------------------------------------------------------------------------------------
def test_no_overwrite_without_force(tmp_path, rng):
    g = Grid((2, 2), (0.02, 0.02))
    p = tmp_path / "r.mdf"
    mdf.write_reconstruction(p, np.ones(g.shape), g)
    before = sha(p)
    with pytest.raises(MDFError, match="exists"):
        mdf.write_reconstruction(p, np.zeros(g.shape), g)
    assert sha(p) == before
    mdf.write_reconstruction(p, np.zeros(g.shape), g, force=True)
    assert np.all(mdf.open(p).read_reconstruction()[0] == 0)
    assert os.stat(p).st_mode & 0o644 == 0o644   # not mkstemp's private 0600
    assert sorted(os.listdir(tmp_path)) == ["r.mdf"]
    with pytest.raises(MDFError, match="directory"):
        mdf.write_reconstruction(tmp_path, np.zeros(g.shape), g, force=True)


def test_failed_write_leaves_nothing(tmp_path, rng):
    grid = Grid((2, 2), (0.02, 0.02))
    acq = make_acq(C=1)
    data = cplx(rng, (1, 1, K, 6))
    data[0, 0, 5, 1] = np.nan   # detected while copying the data, after the temp file exists
    p = tmp_path / "sm.mdf"
    with pytest.raises(MDFError, match="NaN"):
        mdf.write_calibration(p, data, grid=grid, acquisition=acq,
                              is_background_frame=np.r_[np.zeros(4), np.ones(2)])
    assert os.listdir(tmp_path) == []
    p.write_bytes(b"precious")
    with pytest.raises(MDFError, match="NaN"):
        mdf.write_calibration(p, data, grid=grid, acquisition=acq,
                              is_background_frame=np.r_[np.zeros(4), np.ones(2)], force=True)
    assert p.read_bytes() == b"precious" and os.listdir(tmp_path) == ["sm.mdf"]


def test_writer_input_validation(tmp_path, rng):
    grid = Grid((2, 2), (0.02, 0.02))
    acq = make_acq(C=1)
    bad = [
        dict(data=cplx(rng, (1, 2, K, 6))),                          # wrong channel count
        dict(data=cplx(rng, (1, 1, K, 7))),                          # foreground != voxels
        dict(is_background_frame=np.zeros(5)),                       # flags length
        dict(frequency_selection=[3, 1]),                            # unsorted selection
        dict(snr=np.full((1, 1, K), np.inf)),
        dict(acquisition="not an acquisition"),
        dict(metadata={"nonsense": 1}),
    ]
    for change in bad:
        kw = dict(data=cplx(rng, (1, 1, K, 6)), grid=grid, acquisition=acq,
                  is_background_frame=np.r_[np.zeros(4), np.ones(2)])
        kw.update(change)
        with pytest.raises(NirmpiError):
            mdf.write_calibration(tmp_path / "x.mdf", kw.pop("data"), **kw)
    assert os.listdir(tmp_path) == []
    with pytest.raises(NirmpiError, match="bandwidth"):
        mdf.Acquisition(2.5e6, (102,), (0.01,), 32, float("nan"), 1)


@pytest.mark.parametrize("layout", ["fd-compound-fast", "fd-trailing-first", "fd-compound-first",
                                    "td-fast", "td-first"])
def test_chunked_reads_match_whole_reads(tmp_path, rng, monkeypatch, layout):
    """Tiny read pieces: chunk boundaries, and index lists on two axes at once, give the same numbers."""
    acq = make_acq(C=3)
    N = 23
    fd = layout.startswith("fd")
    fast = layout.endswith("fast")
    bg = np.zeros(N, bool)
    bg[[4, 11, 22]] = True
    if fd:
        data = cplx(rng, (N, 1, 3, K))
        ref = data[:, 0]
        kw = dict(fourier=True, complex_storage=layout.split("-")[1])
    else:
        data = rng.standard_normal((N, 1, 3, V)).astype(np.float32)
        ref = np.fft.rfft(data[:, 0].astype(np.float64), axis=-1) / V
        kw = {}
    f = mdf.open(mdf.write_measurement(tmp_path / "m.mdf", data, acquisition=acq, is_background_frame=bg,
                                       frame_axis_last=fast, **kw))
    monkeypatch.setattr(mdf.read, "_PIECE_ELEMENTS", 7)
    monkeypatch.setattr(mdf.read, "_MIN_PIECE", 1)
    frames = [0, 2, 3, 9, 17, 21, 22]
    freqs = [1, 2, 5, 9, 16, 0]
    u = f.read_spectra(frames=frames, channels=[2, 0], freq_index=freqs)
    assert np.allclose(u, ref[frames][:, [2, 0]][:, :, freqs], atol=1e-5)
    S = f.read_system_matrix(channels=[1, 2], freq_index=freqs)
    fg = ref[~bg] - ref[bg].mean(0)
    assert np.allclose(S, np.concatenate([fg[:, c, freqs].T for c in (1, 2)]), atol=1e-5)
    assert np.allclose(f.read_background(channels=[0], freq_index=[3]), ref[bg][:, 0, 3][None], atol=1e-5)


def test_frame_permutation_flag_and_meandering_grid(tmp_path, rng):
    """isFramePermutation = 1 (MPIFiles' processed SMs) means the stored order is final; a
    meandering (snake) robot scan without it is re-sorted to x-fastest order on reading."""
    grid = Grid((2, 3, 4), (0.02, 0.03, 0.04))           # (z, y, x): nx=4, ny=3, nz=2
    data = cplx(rng, (1, 1, K, grid.size + 2))
    bg = np.r_[np.zeros(grid.size, bool), np.ones(2, bool)]
    p = mdf.write_calibration(tmp_path / "sm.mdf", data, grid=grid, acquisition=make_acq(C=1),
                              is_background_frame=bg)
    with h5py.File(p, "a") as h5:
        h5["/measurement/isFramePermutation"][()] = 1
        h5["/measurement/framePermutation"] = np.arange(1, grid.size + 3)
        h5["/calibration/isMeanderingGrid"] = np.int8(1)
    ref = sm_reference(data, bg)[0]                       # (K, O) in grid order
    f = mdf.open(p)
    assert np.allclose(f.read_system_matrix(), ref, atol=1e-5)
    assert "frames permuted" in f.summary()
    # snake order: store position (ix, iy, iz) at the scan index of a meandering robot path
    scan = []
    for iz in range(2):
        ys = range(3) if iz % 2 == 0 else range(2, -1, -1)
        for n_line, iy in enumerate(ys):
            forward = (iy + iz) % 2 == 0
            xs = range(4) if forward else range(3, -1, -1)
            scan += [ix + 4 * (iy + 3 * iz) for ix in xs]
    assert sorted(scan) == list(range(grid.size))
    stored = data.copy()
    stored[..., :grid.size] = data[..., scan]             # stored frame j = grid position scan[j]
    p2 = mdf.write_calibration(tmp_path / "snake.mdf", stored, grid=grid, acquisition=make_acq(C=1),
                               is_background_frame=bg)
    with h5py.File(p2, "a") as h5:
        h5["/calibration/isMeanderingGrid"] = np.int8(1)
    f2 = mdf.open(p2)
    assert "meandering" in f2.summary()
    assert np.allclose(f2.read_system_matrix(), ref, atol=1e-5)
