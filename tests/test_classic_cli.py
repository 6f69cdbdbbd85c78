"""`nirmpi reconstruct` with the classic methods: options, the fine grid, errors."""

import subprocess
import sys

import numpy as np
import pytest

from napari_nirmpi.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    assert main(["simulate", str(d), "--phantom", "point", "--grid", "12", "--seed", "2"]) == 0
    return d


def _base(data):
    return ["reconstruct", "--sm", str(data / "sm.mdf"), "--meas", str(data / "meas.mdf"), "--device", "cpu"]


def test_grid_methods_solve_on_the_fine_grid_unless_upsample(data, tmp_path, capsys):
    out = tmp_path / "tv.npy"
    assert main(_base(data) + ["--method", "pdhg", "--reg", "tv,l1", "--lambda", "auto", "--grid", "24",
                               "--iterations", "80", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "(automatic)" in err and "grid 24x24" in err
    img = np.load(out)
    assert img.shape == (24, 24) and img.min() >= 0 and img.max() > 0
    up = tmp_path / "up.npy"
    assert main(_base(data) + ["--method", "pdhg", "--lambda", "1e-3", "--grid", "24", "--upsample", "bilinear",
                               "--iterations", "80", "--output", str(up)]) == 0
    assert "grid 12x12" in capsys.readouterr().err  # solved natively, then interpolated
    assert np.load(up).shape == (24, 24) and not np.allclose(np.load(up), img)
    # one λ per term, a weighting, and the parameters travel into an MDF reconstruction
    from napari_nirmpi import mdf

    m = tmp_path / "l1.mdf"
    assert main(_base(data) + ["--method", "fista", "--reg", "l1,l2", "--lambda", "0.01,0.001",
                               "--weighting", "snr", "--output", str(m)]) == 0
    img, grid = mdf.open(m).read_reconstruction()
    assert img.shape[-2:] == (12, 12)


def test_kaczmarz_flags_keep_their_meaning(data, tmp_path):
    from napari_nirmpi.preprocess import build_problem
    from napari_nirmpi.resample import upsample
    from napari_nirmpi.solvers import reconstruct_kaczmarz

    out = tmp_path / "k.npy"
    assert main(_base(data) + ["--grid", "20", "--iterations", "10", "--lambda", "0.2", "--output", str(out)]) == 0
    prob = build_problem(data / "sm.mdf", data / "meas.mdf")
    ref, _ = upsample(reconstruct_kaczmarz(prob, iterations=10, lam=0.2), prob.grid, (20, 20), method="bicubic")
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-4, atol=1e-6 * float(np.abs(ref).max()))


@pytest.mark.parametrize("extra, needle", [
    (["--method", "cgnr", "--reg", "l3"], "reg"),
    (["--method", "fista", "--reg", "tv"], "pdhg"),
    (["--method", "cgnr", "--lambda", "abc"], "lambda"),
    (["--method", "cgnr", "--lambda", "-1"], "lambda"),
    (["--method", "pdhg", "--reg", "tv", "--lambda", "1,2"], "lambda"),
    (["--method", "nir", "--reg", "l1"], "--reg"),
    (["--method", "nir", "--upsample", "bicubic"], "--upsample"),
    (["--method", "cgnr", "--l1", "0.1"], "--l1"),
    (["--method", "cgnr", "--iterations", "0"], "iterations"),
    (["--method", "magic"], "method"),
])
def test_bad_options_one_line_exit_2(data, tmp_path, extra, needle):
    r = subprocess.run([sys.executable, "-m", "napari_nirmpi.cli", *_base(data), *extra,
                        "--output", str(tmp_path / "x.npy")], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "x.npy").exists()


def test_batch_with_a_classic_method_and_automatic_lambda(tmp_path):
    from napari_nirmpi import open_series
    from napari_nirmpi.cli import main

    d = tmp_path / "dyn"
    assert main(["simulate", str(d), "--phantom", "bolus", "--grid", "9", "--frames", "2", "--seed", "3"]) == 0
    out = tmp_path / "l1.zarr"
    assert main(["batch", "--sm", str(d / "sm.mdf"), "--meas", str(d / "meas.mdf"), "--method", "fista",
                 "--reg", "l1", "--lambda", "auto", "--workers", "1", "--output", str(out)]) == 0
    arr, grid, attrs = open_series(out)
    frames = arr[:]
    assert frames.shape == (2, 9, 9) and (frames >= 0).all() and frames.max() > 0
    assert attrs["method"] == "fista"
    # a prior for Kaczmarz is refused in one line, before any work
    assert main(["batch", "--sm", str(d / "sm.mdf"), "--meas", str(d / "meas.mdf"), "--method", "kaczmarz",
                 "--reg", "l1", "--output", str(tmp_path / "k.zarr")]) == 2
