import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from napari_nirmpi import mdf
from napari_nirmpi.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    assert main(["simulate", str(d), "--phantom", "spiral", "--grid", "15", "--seed", "1"]) == 0
    return d


def _digest(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def test_simulate_writes_files(data):
    assert {"sm.mdf", "meas.mdf", "phantom.npy"} <= set(os.listdir(data))
    assert mdf.open(data / "sm.mdf").grid.shape == (15, 15)
    assert np.load(data / "phantom.npy").shape == (15, 15)


def test_info(data, capsys):
    assert main(["info", str(data / "sm.mdf")]) == 0
    out = capsys.readouterr().out
    assert "calibration" in out.lower() and "15" in out


@pytest.mark.parametrize("ext", [".npy", ".mdf", ".tif"])
def test_reconstruct_kaczmarz_upsampled(data, tmp_path, ext):
    out = tmp_path / f"rec{ext}"
    before = _digest(data / "meas.mdf")
    rc = main(["reconstruct", "--sm", str(data / "sm.mdf"), "--meas", str(data / "meas.mdf"),
               "--method", "kaczmarz", "--grid", "40x40", "--iterations", "20", "--output", str(out)])
    assert rc == 0 and out.exists()
    assert _digest(data / "meas.mdf") == before  # inputs never modified
    if ext == ".npy":
        img = np.load(out)
        assert img.shape == (40, 40) and img.dtype == np.float32 and img.max() > 0
    elif ext == ".mdf":
        img, grid = mdf.open(out).read_reconstruction()
        assert img.shape[-2:] == (40, 40)
        assert grid.fov == pytest.approx(mdf.open(data / "sm.mdf").grid.fov)
    # never overwrite without --force
    assert main(["reconstruct", "--sm", str(data / "sm.mdf"), "--meas", str(data / "meas.mdf"),
                 "--iterations", "1", "--output", str(out)]) == 2


def _run(*args):
    return subprocess.run([sys.executable, "-m", "napari_nirmpi.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args", [
    ["info", "/no/such/file.mdf"],
    ["reconstruct", "--sm", "/no/sm.mdf", "--meas", "/no/meas.mdf", "--output", "x.npy"],
    ["reconstruct", "--sm", "SM", "--meas", "SM", "--output", "x.npy", "--channels", "a,b"],
    ["reconstruct", "--method", "magic"],
    ["simulate", "OUT", "--phantom", "unicorn"],
])
def test_bad_input_one_line_exit_2(args, data):
    args = [str(data / "sm.mdf") if a == "SM" else a for a in args]
    r = _run(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in r.stderr


def test_not_hdf5_is_clear_error(tmp_path):
    bad = tmp_path / "junk.mdf"
    bad.write_bytes(b"not an hdf5 file")
    r = _run("info", str(bad))
    assert r.returncode == 2 and "junk.mdf" in r.stderr


def test_batch_cli_writes_zarr_and_resumes(tmp_path):
    import zarr

    d = tmp_path / "bolus"
    assert main(["simulate", str(d), "--phantom", "bolus", "--grid", "9", "--frames", "6"]) == 0
    out = tmp_path / "series.zarr"
    args = ["batch", "--sm", str(d / "sm.mdf"), "--meas", str(d / "meas.mdf"), "--method", "kaczmarz",
            "--iterations", "5", "--workers", "1", "--threads-per-worker", "1", "--output", str(out)]
    assert main(args) == 0
    arr = zarr.open_group(str(out), mode="r")["reconstruction"]
    assert arr.shape == (6, 9, 9) and arr.dtype == np.float32
    assert np.isfinite(arr[:]).all()
    assert main(args) == 0  # resumes: nothing left to do, same data
    assert np.array_equal(zarr.open_group(str(out), mode="r")["reconstruction"][:], arr[:])
    assert main(args[:-2] + ["--lambda", "0.1", "--output", str(out)]) == 2  # other parameters


def test_reconstruct_nir_checkpoint_and_sample(data, tmp_path):
    field = tmp_path / "field.pt"
    out = tmp_path / "nir.npy"
    rc = main(["reconstruct", "--sm", str(data / "sm.mdf"), "--meas", str(data / "meas.mdf"), "--method", "nir",
               "--iterations", "40", "--seed", "3", "--device", "cpu", "--grid", "30x30",
               "--checkpoint", str(field), "--output", str(out)])
    assert rc == 0 and field.exists()
    img = np.load(out)
    assert img.shape == (30, 30) and np.isfinite(img).all() and img.min() >= 0  # non-negative output
    # the checkpoint renders the same field again, and a sub-region in mm
    again = tmp_path / "again.npy"
    assert main(["sample", str(field), "--grid", "30x30", "--output", str(again)]) == 0
    np.testing.assert_allclose(np.load(again), img, rtol=1e-5, atol=1e-6)
    region = tmp_path / "region.npy"
    assert main(["sample", str(field), "--grid", "16x8", "--region=-4,4,-2,6", "--output", str(region)]) == 0
    assert np.load(region).shape == (16, 8)
    assert main(["sample", str(field), "--grid", "8", "--region", "1,2,3", "--output", str(tmp_path / "r.npy")]) == 2
    assert main(["sample", str(data / "sm.mdf"), "--grid", "8", "--output", str(tmp_path / "f.npy")]) == 2


def test_demo_quick_writes_figure_and_metrics(tmp_path):
    import json

    assert main(["demo", str(tmp_path), "--quick", "--device", "cpu"]) == 0
    assert (tmp_path / "comparison.png").stat().st_size > 10_000
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["grid"] for r in m["rows"]] == ["29x29", "54x54", "79x79", "104x104"]
    assert all(np.isfinite(r["nir_psnr"]) and np.isfinite(r["kaczmarz_psnr"]) for r in m["rows"])
    assert {"sm.mdf", "meas.mdf", "phantom.npy"} <= set(os.listdir(tmp_path))


def test_reconstruct_nir_options_reach_the_field(data, tmp_path, capsys):
    from napari_nirmpi.nir.checkpoint import load

    field = tmp_path / "cubic.pt"
    base = ["reconstruct", "--sm", str(data / "sm.mdf"), "--meas", str(data / "meas.mdf")]
    assert main(base + ["--method", "nir", "--iterations", "20", "--device", "cpu", "--operator", "cubic",
                        "--l1", "0.1", "--checkpoint", str(field), "--output", str(tmp_path / "c.npy")]) == 0
    cfg = load(field).config
    assert cfg["operator"] == "cubic" and cfg["l1_weight"] == pytest.approx(0.1)
    capsys.readouterr()
    # NIR-only options are refused for Kaczmarz, and a bad weight is a one-line error (exit 2)
    assert main(base + ["--operator", "cubic", "--output", str(tmp_path / "k.npy")]) == 2
    assert "--operator applies to --method nir only" in capsys.readouterr().err
    assert main(base + ["--method", "nir", "--l1", "-1", "--output", str(tmp_path / "n.npy")]) == 2
    assert "l1_weight" in capsys.readouterr().err
    assert not (tmp_path / "k.npy").exists() and not (tmp_path / "n.npy").exists()
    assert main(["batch", "--sm", str(data / "sm.mdf"), "--meas", str(data / "meas.mdf"), "--method", "kaczmarz",
                 "--l1", "0.1", "--output", str(tmp_path / "s.zarr")]) == 2
    assert "--l1 applies to --method nir only" in capsys.readouterr().err
