"""Every layout of the compatibility table in docs/mdf-support.md, built by these tests (no
copied data): MDF 2.1.0 as written here, 2.0.0, the 2017 v2 drafts MPIFiles.jl wrote until
mid-2018, a robot calibration (9 x 1 x 1, one channel, time domain, no background) and MDF v1.
Each is read to the same arrays as the 2.1.0 original; our own files validate and are read by a
reader that follows the specification literally (as the format authors' python/reco.py)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from napari_nirmpi import mdf
from napari_nirmpi.cli import main
from napari_nirmpi.errors import MDFError, ProblemMismatch
from napari_nirmpi.grid import Grid
from napari_nirmpi.preprocess import build_problem

V, K = 32, 17
GRID = Grid((3, 3), (0.03, 0.03))


def _acq(C=2, J=1):
    return mdf.Acquisition(2.5e6, (102, 96), (12e-3, 12e-3), V, 1.25e6, C, num_periods=J,
                           drive_phase=(0.0, 0.5), gradient=np.diag([-1.0, -1.0, 2.0]))


def _cal(tmp_path, name="cal.mdf", grid=GRID, C=2, nb=2, **kw):
    rng = np.random.default_rng(1)
    N = grid.size + nb
    sm = (rng.standard_normal((1, C, K, N)) + 1j * rng.standard_normal((1, C, K, N))).astype(np.complex64)
    bg = np.r_[np.zeros(grid.size, bool), np.ones(nb, bool)]
    snr = None if nb >= 2 else np.ones((1, C, K))
    return mdf.write_calibration(tmp_path / name, sm, grid=grid, acquisition=_acq(C), snr=snr,
                                 is_background_frame=bg, **kw)


def _meas(tmp_path, name="meas.mdf", C=2, **kw):
    rng = np.random.default_rng(2)
    td = rng.standard_normal((6, 1, C, V)).astype(np.float32)
    return mdf.write_measurement(tmp_path / name, td, acquisition=_acq(C),
                                 is_background_frame=np.r_[np.zeros(4, bool), np.ones(2, bool)], **kw)


def _reread(path):
    f = mdf.open(path)
    out = {"spectra": f.read_spectra()}
    if f.kind == "calibration":
        out["sm"] = f.read_system_matrix(subtract_background=False)
    return f, out


def _rewrite(h5, name, value, dtype=None):
    del h5[name]
    h5.create_dataset(name, data=value, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# writing exactly per spec
# ----------------------------------------------------------------------------------------------
def test_written_scalars_are_0d_and_files_validate(tmp_path):
    paths = [_cal(tmp_path), _meas(tmp_path),
             mdf.write_reconstruction(tmp_path / "reco.mdf", np.ones(GRID.shape), GRID,
                                      params={"meas_path": str(tmp_path / "meas.mdf")})]
    for p in paths:
        assert mdf.validate(p) == [], p
        with h5py.File(p) as h:
            for n in ("/acquisition/numFrames", "/study/number", "/experiment/isSimulation"):
                assert h[n].shape == (), n
            if "acquisition" in h and "receiver" in h["acquisition"]:
                assert h["/acquisition/receiver/numSamplingPoints"].shape == ()


def test_literal_spec_reader_reads_our_files(tmp_path):
    """What python/reco.py (MagneticParticleImaging/MDF) does, under numpy 2: scalars via [()]
    into round()/float()/arange, the background mask via .view(bool), the SM squeezed."""
    sm, meas = _cal(tmp_path), _meas(tmp_path)
    with h5py.File(sm) as fS, h5py.File(meas) as fM:
        S = fS["/measurement/data"][:, :, :, :].squeeze()
        is_bg = fS["/measurement/isBackgroundFrame"][:].view(bool)
        S = S[:, :, ~is_bg]
        u = np.fft.rfft(fM["/measurement/data"][:, :, :, :].squeeze())
        num_freq = round(fM["/acquisition/receiver/numSamplingPoints"][()] / 2) + 1
        bw = float(fM["/acquisition/receiver/bandwidth"][()])
        freq = np.arange(0, num_freq) / (num_freq - 1) * bw
        n_frames = int(fS["/acquisition/numFrames"][()])
    assert S.shape == (2, K, GRID.size) and S.dtype.kind == "c"
    assert u.shape == (6, 2, K) and freq.shape == (K,) and n_frames == GRID.size + 2


def test_validate_lists_deviations_with_paths(tmp_path):
    p = _meas(tmp_path)
    with h5py.File(p, "a") as h:
        _rewrite(h, "/acquisition/numFrames", np.array([6], np.int64))       # (1,) not 0-d
        _rewrite(h, "/acquisition/receiver/bandwidth", np.float32(1.25e6))   # Float32
        del h["/scanner/topology"]
        _rewrite(h, "/measurement/isFastFrameAxis", np.array(False))         # HDF5 boolean
    out = [str(d) for d in mdf.validate(p)]
    assert any(s.startswith("/acquisition/numFrames: expected a scalar (0-d") for s in out), out
    assert any(s.startswith("/acquisition/receiver/bandwidth: expected Float64") for s in out), out
    assert any(s.startswith("/scanner/topology: missing") for s in out), out
    assert any(s.startswith("/measurement/isFastFrameAxis: expected Int8") for s in out), out
    # and the reader still reads it: these are tolerated variants
    assert mdf.open(p).read_spectra().shape == (6, 2, K)


def test_validate_cli_exit_codes(tmp_path, capsys):
    p = _cal(tmp_path)
    assert main(["validate", str(p)]) == 0
    with h5py.File(p, "a") as h:
        _rewrite(h, "/acquisition/drivefield/cycle", np.float64(1.0))
    assert main(["validate", str(p)]) == 1
    out = capsys.readouterr().out
    assert "/acquisition/drivefield/cycle: 1.0 s, but lcm(divider)/baseFrequency" in out
    (tmp_path / "x.mdf").write_bytes(b"not hdf5")
    assert main(["validate", str(tmp_path / "x.mdf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable HDF5 file" in err


def test_simulated_files_validate(tmp_path):
    from napari_nirmpi.simulate import simulate

    paths = simulate(tmp_path / "sim", grid=5, noise="low")
    for k in ("sm", "meas"):
        assert mdf.validate(paths[k]) == [], k


# ----------------------------------------------------------------------------------------------
# the layouts of the table
# ----------------------------------------------------------------------------------------------
def _as_v2_0_0(h):
    _rewrite(h, "/version", "2.0.0", h5py.string_dtype())
    del h["/measurement/isSparsityTransformed"]


def _as_2017_draft(h):
    """MDF v2 as MPIFiles.jl wrote it before mid-2018."""
    _rewrite(h, "/version", np.bytes_(b"2.0.0"))                        # fixed-length string
    J = int(h["/acquisition/numPeriodsPerFrame"][()])
    del h["/acquisition/numPeriodsPerFrame"]
    h["/acquisition/numPeriods"] = np.array([J], np.int64)           # old name, (1,) scalar
    _rewrite(h, "/acquisition/gradient", np.array([[-1.0, -1.0, 2.0]]))  # J x 3 diagonal
    del h["/acquisition/offsetField"]
    fast = int(h["/measurement/isFastFrameAxis"][()])
    del h["/measurement/isFastFrameAxis"]
    h["/measurement/isTransposed"] = np.array([fast], np.int8)
    _rewrite(h, "/measurement/isBackgroundCorrected", np.array(False))  # HDF5 boolean
    for n in ("/acquisition/receiver/numChannels", "/acquisition/receiver/numSamplingPoints",
              "/acquisition/numFrames"):
        _rewrite(h, n, np.array([int(h[n][()])], np.int64))
    _rewrite(h, "/acquisition/receiver/bandwidth", np.array([float(h["/acquisition/receiver/bandwidth"][()])]))
    _rewrite(h, "/scanner/name", np.array([b"draft scanner"], dtype="S16"))  # fixed, padded
    h["/experiment/_opaque"] = np.void(b"\x00\x01")                     # opaque metadata
    d = h["/measurement/data"][()]
    if d.dtype.kind == "c":                                            # trailing axis of 2
        del h["/measurement/data"]
        h["/measurement/data"] = np.stack([d.real, d.imag], axis=-1).astype(np.float32)
    _rewrite(h, "/study/description", np.array(["vlen", "array"], dtype=object), h5py.string_dtype())


@pytest.mark.parametrize("layout", ["2.0.0", "draft2017"])
@pytest.mark.parametrize("kind", ["cal", "meas"])
def test_older_v2_layouts_read_to_same_arrays(tmp_path, layout, kind):
    p = _cal(tmp_path) if kind == "cal" else _meas(tmp_path)
    _, want = _reread(p)
    q = tmp_path / f"{layout}.mdf"
    shutil.copyfile(p, q)
    with h5py.File(q, "a") as h:
        (_as_v2_0_0 if layout == "2.0.0" else _as_2017_draft)(h)
    f, got = _reread(q)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    assert np.allclose(f.acquisition.gradient, np.diag([-1.0, -1.0, 2.0]))
    f.summary()
    if layout == "2.0.0":
        assert mdf.validate(q) == []   # isSparsityTransformed is new in 2.1.0
    else:
        assert mdf.validate(q)         # the draft deviates from 2.x, and validate says where


def test_robot_calibration_time_domain_one_channel_no_background(tmp_path):
    """The 2018 MPIFiles.jl robot calibration of #18: 9 x 1 x 1 grid, C = 1, time-domain data,
    no background frames, gradient (1, 3)."""
    grid = Grid((1, 9), (0.001, 0.009))
    rng = np.random.default_rng(5)
    td = rng.standard_normal((1, 1, V, grid.size)).astype(np.float32)
    p = mdf.write_calibration(tmp_path / "robot.mdf", td, grid=grid, acquisition=_acq(C=1),
                              is_background_frame=np.zeros(grid.size, bool), fourier=False,
                              snr=np.ones((1, 1, K)))
    assert mdf.validate(p) == []
    with h5py.File(p, "a") as h:
        _rewrite(h, "/acquisition/gradient", np.array([[-0.5, -0.5, 1.0]]))
        _rewrite(h, "/version", "2.0.0", h5py.string_dtype())
    f = mdf.open(p)
    assert f.grid.shape == (1, 9) and f.acquisition.num_rx_channels == 1
    S = f.read_system_matrix()
    want = (np.fft.rfft(td[0, 0].astype(np.float64), axis=0) / V).astype(np.complex64)
    np.testing.assert_allclose(S, want, rtol=1e-5, atol=1e-6)
    assert np.allclose(f.acquisition.gradient, np.diag([-0.5, -0.5, 1.0]))


@pytest.mark.parametrize("shape", [(3, 3, 1), (4, 1, 1), (2, 2, 2), (1, 1, 5)])
def test_grids_1d_2d_3d_round_trip(tmp_path, shape):
    nx, ny, nz = shape
    grid = Grid.from_mdf([nx, ny, nz], [0.01 * nx, 0.01 * ny, 0.01 * nz])
    p = _cal(tmp_path, grid=grid, C=1)
    f = mdf.open(p)
    assert f.grid.size == nx * ny * nz and mdf.validate(p) == []
    assert f.read_system_matrix().shape == (K, nx * ny * nz)


def _write_v1(path, kind, td):
    """An MDF v1.0.5 file from the v1 tables (h5py order = the spec's row-major order)."""
    C = 2
    with h5py.File(path, "w") as h:
        s = h5py.string_dtype()
        for n, v in (("/version", "1.0.5"), ("/uuid", "0"), ("/date", "2016-06-08T00:00:00.000"),
                     ("/study/name", "v1"), ("/study/experiment", "1"), ("/scanner/model", "old"),
                     ("/scanner/manufacturer", "Bruker"), ("/scanner/topology", "FFP")):
            h.create_dataset(n, data=v, dtype=s)
        h["/acquisition/numFrames"] = np.int64(td.shape[0] if kind == "meas" else 1)
        h["/acquisition/numPatches"] = np.int64(1)
        h["/acquisition/gradient"] = np.array([-1.0, -1.0, 2.0])
        h["/acquisition/drivefield/numChannels"] = np.int64(2)
        h["/acquisition/drivefield/strength"] = np.array([12e-3, 12e-3])
        h["/acquisition/drivefield/baseFrequency"] = 2.5e6
        h["/acquisition/drivefield/divider"] = np.array([102, 96], np.int64)
        h["/acquisition/drivefield/period"] = math.lcm(102, 96) / 2.5e6
        h["/acquisition/drivefield/averages"] = np.int64(1)
        h["/acquisition/receiver/numChannels"] = np.int64(C)
        h["/acquisition/receiver/bandwidth"] = np.array([1.25e6, 1.25e6])   # "1 or C"
        h["/acquisition/receiver/numSamplingPoints"] = np.int64(V)
        if kind == "meas":
            h["/measurement/dataTD"] = td                                   # (N, C, V)
        else:
            h["/calibration/dataFD"] = np.stack([td.real, td.imag], axis=-1)  # (C, K, N, 2)
            h["/calibration/size"] = np.array([3, 3, 1], np.int64)
            h["/calibration/fieldOfView"] = np.array([0.03, 0.03, 0.001])
            h["/calibration/snrFD"] = np.ones((C, K))


def test_mdf_v1_measurement_and_calibration(tmp_path):
    rng = np.random.default_rng(9)
    td = rng.standard_normal((5, 2, V)).astype(np.float32)
    _write_v1(tmp_path / "m1.mdf", "meas", td)
    f = mdf.open(tmp_path / "m1.mdf")
    assert f.kind == "measurement" and f.version == "1.0.5" and any("v1" in w for w in f.warnings)
    np.testing.assert_allclose(f.read_spectra(), (np.fft.rfft(td.astype(np.float64), axis=-1) / V),
                               rtol=1e-5, atol=1e-6)
    fd = (rng.standard_normal((2, K, 9)) + 1j * rng.standard_normal((2, K, 9))).astype(np.complex64)
    _write_v1(tmp_path / "c1.mdf", "cal", fd)
    c = mdf.open(tmp_path / "c1.mdf")
    assert c.kind == "calibration" and c.grid.shape == (3, 3) and c.snr.shape == (1, 2, K)
    np.testing.assert_array_equal(c.read_system_matrix(), fd.reshape(2 * K, 9))
    prob = build_problem(c, f, snr_threshold=0, min_freq=0, max_freq=1e9)
    assert prob.S.shape[1] == 9


def test_mdf_v1_unmappable_variant_names_dataset(tmp_path):
    rng = np.random.default_rng(9)
    _write_v1(tmp_path / "m1.mdf", "meas", rng.standard_normal((5, 2, V)).astype(np.float32))
    with h5py.File(tmp_path / "m1.mdf", "a") as h:
        _rewrite(h, "/acquisition/receiver/bandwidth", np.array([1.25e6, 1e6]))
    with pytest.raises(MDFError, match=r"/acquisition/receiver/bandwidth.*MPIFiles.jl"):
        mdf.open(tmp_path / "m1.mdf")


def test_calibration_given_as_measurement_is_refused(tmp_path):
    sm = _cal(tmp_path, "sm.mdf")
    with pytest.raises(ProblemMismatch, match=r"^sm\.mdf is a system matrix \(calibration\), not a measurement"):
        build_problem(sm, sm, snr_threshold=0)


def test_info_has_no_dangling_conversion_line(tmp_path, capsys):
    rng = np.random.default_rng(3)
    p = mdf.write_measurement(tmp_path / "raw.mdf", rng.integers(-9, 9, (3, 1, 2, V)).astype(np.int16),
                              acquisition=_acq(), is_background_frame=np.zeros(3, bool),
                              conversion_factor=[[1e-3, 0.0], [2e-3, 0.5]])
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "conversion  dataConversionFactor (scale, offset) per channel: (0.001, 0), (0.002, 0.5)" in out
    assert "; conversion factor" not in out
    assert main(["info", str(_meas(tmp_path))]) == 0
    assert "conversion" not in capsys.readouterr().out  # identity: nothing to say


def test_validate_runs_as_a_module_command(tmp_path):
    p = _meas(tmp_path)
    r = subprocess.run([sys.executable, "-m", "napari_nirmpi.cli", "validate", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "conforms to MDF 2.1.0" in r.stdout


@pytest.mark.parametrize("storage,fast", [("compound", True), ("trailing", False), ("compound", False)])
def test_round_trip_write_validate_read(tmp_path, storage, fast):
    rng = np.random.default_rng(11)
    N = GRID.size + 2
    sm = (rng.standard_normal((1, 2, K, N)) + 1j * rng.standard_normal((1, 2, K, N))).astype(np.complex64)
    p = mdf.write_calibration(tmp_path / "c.mdf", sm, grid=GRID, acquisition=_acq(),
                              is_background_frame=np.r_[np.zeros(GRID.size, bool), np.ones(2, bool)],
                              complex_storage=storage, frame_axis_last=fast)
    deviations = mdf.validate(p)
    if storage == "compound":
        assert deviations == []
    else:  # the trailing axis is readable but not the spec's complex type: validate says so
        assert [d.path for d in deviations] == ["/measurement/data"]
    f = mdf.open(p)
    np.testing.assert_array_equal(f.read_system_matrix(subtract_background=False), sm[0, :, :, :GRID.size].reshape(2 * K, -1))
    np.testing.assert_array_equal(f.read_background(), sm[0, :, :, GRID.size:].reshape(2 * K, -1))
    td = rng.standard_normal((3, 1, 2, V)).astype(np.float32)
    q = mdf.write_measurement(tmp_path / "m.mdf", td, acquisition=_acq(), is_background_frame=np.zeros(3, bool))
    assert mdf.validate(q) == []
    np.testing.assert_allclose(mdf.open(q).read_spectra(), np.fft.rfft(td[:, 0].astype(np.float64), axis=-1) / V,
                               rtol=1e-5, atol=1e-6)
    img = rng.random((2, *GRID.shape)).astype(np.float32)
    r = mdf.write_reconstruction(tmp_path / "r.mdf", img, GRID, acquisition=_acq())
    assert mdf.validate(r) == []
    got, grid = mdf.open(r).read_reconstruction()
    np.testing.assert_array_equal(got, img)
    assert grid == GRID


def test_cli_reconstruction_output_validates(tmp_path):
    from napari_nirmpi.simulate import simulate

    paths = simulate(tmp_path / "sim", grid=5, noise="low")
    out = tmp_path / "reco.mdf"
    assert main(["reconstruct", "--sm", paths["sm"], "--meas", paths["meas"], "--iterations", "3",
                 "--output", str(out)]) == 0
    assert mdf.validate(out) == []
    assert mdf.open(out).acquisition.num_sampling_points == mdf.open(paths["meas"]).acquisition.num_sampling_points


@pytest.mark.parametrize("change", ["x10", "sign", "zero", "phase"])
def test_check_compatible_compares_gradient_and_phase(tmp_path, change):
    sm, meas = _cal(tmp_path), _meas(tmp_path)
    with h5py.File(meas, "a") as h:
        g = h["/acquisition/gradient"]
        if change == "phase":
            h["/acquisition/drivefield/phase"][...] = h["/acquisition/drivefield/phase"][()] + 0.5
        else:
            g[...] = {"x10": 10 * g[()], "sign": -g[()], "zero": 0 * g[()]}[change]
    with pytest.raises(ProblemMismatch, match="phases" if change == "phase" else "gradients"):
        build_problem(sm, meas, snr_threshold=0)
    with h5py.File(meas, "a") as h:  # a phase of -pi equals one of pi: not a mismatch
        h["/acquisition/gradient"][...] = np.diag([-1.0, -1.0, 2.0])
        h["/acquisition/drivefield/phase"][...] = np.array([0.0, 0.5])[None, :, None] + \
            (2 * np.pi if change == "phase" else 0)
    build_problem(sm, meas, snr_threshold=0, min_freq=0)
