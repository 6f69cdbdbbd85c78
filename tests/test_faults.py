"""Fault injection, fast subset (the whole set: `python -m benchmarks.fault_probe`).

Malformed variants of a small simulated pair are run in-process through `nirmpi info` and a
reconstruction: each is refused with one clear line (a NirmpiError subclass naming the file) or
accepted with the clean result or with a warning; inputs are never modified. The variant
catalogue lives in benchmarks/fault_probe.py (loaded here by path)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_nirmpi import mdf
from napari_nirmpi.cli import main
from napari_nirmpi.errors import MDFError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fault_probe", ROOT / "benchmarks" / "fault_probe.py")
fp = importlib.util.module_from_spec(_spec)
sys.modules["fault_probe"] = fp  # dataclasses look their module up there
_spec.loader.exec_module(fp)

FAST = [v for v in fp.variants() if v.fast and "FIFO" not in v.name]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return fp.make_bases(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def reference(bases):
    r = fp.run_pipeline(str(bases["sm"]), str(bases["meas"]))
    assert r["status"] == "ok" and not r["warnings"], r
    return np.asarray(r["image"])


@pytest.mark.parametrize("index", range(len(FAST)), ids=[v.name for v in FAST])
def test_fast_fault_subset(bases, reference, tmp_path, index):
    v = FAST[index]
    sm, meas = fp.prepare(v, bases, tmp_path / "v")
    before = {p: fp.sha(Path(p)) for p in (sm, meas)}
    result = fp.run_pipeline(sm, meas)
    outcome = fp.classify(v, result, reference, [Path(sm).name, Path(meas).name])
    assert outcome in ("refused", "identical", "warning"), (outcome, result.get("message"))
    if v.must_refuse:
        assert outcome == "refused", result
    assert all(fp.sha(Path(p)) == h for p, h in before.items())


def test_enough_variants_for_the_probe():
    vs = fp.variants()
    assert len(vs) >= 100 and len(FAST) >= 15
    assert len({v.name for v in vs}) == len(vs)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_named_mdf_does_not_block(tmp_path):
    fifo = tmp_path / "x.mdf"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "napari_nirmpi.cli", "info", str(fifo)], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 2 and "is a FIFO (named pipe)" in r.stderr and r.stderr.count("\n") == 1


def test_newline_in_file_name_keeps_one_error_line(tmp_path, capsys):
    p = tmp_path / "bad\nname.mdf"
    p.write_bytes(b"not an hdf5 file")
    assert main(["info", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad\\nname.mdf" in err


def test_no_runtime_warning_before_the_error_line(bases, tmp_path, capsys):
    v = next(v for v in fp.variants() if v.name == "meas: dataConversionFactor scale 1e40")
    sm, meas = fp.prepare(v, bases, tmp_path / "v")
    assert main(["info", meas]) == 0  # the header is fine; the data are not
    capsys.readouterr()
    rc = main(["reconstruct", "--sm", sm, "--meas", meas, "--output", str(tmp_path / "x.npy"), "--iterations", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "RuntimeWarning" not in err
    assert "holds a value of magnitude" in err and "meas.mdf" in err


def test_missing_background_flags_warn_in_info_and_layer_metadata(bases, tmp_path, capsys):
    sm, meas = fp.prepare(next(v for v in fp.variants() if v.name == "meas: isBackgroundFrame missing"),
                          bases, tmp_path / "v")
    f = mdf.open(meas)
    assert f.warnings and "isBackgroundFrame is missing" in f.warnings[0]
    assert main(["info", meas]) == 0
    assert "warning     /measurement/isBackgroundFrame is missing" in capsys.readouterr().out
    from napari_nirmpi._napari.reader import header_dict
    assert header_dict(f)["warnings"] == f.warnings


def test_valid_soft_link_reads_like_the_original(bases, tmp_path):
    a = mdf.open(bases["sm"]).read_system_matrix()
    sm, _ = fp.prepare(next(v for v in fp.variants() if v.name == "sm: data valid soft link"), bases, tmp_path / "v")
    np.testing.assert_array_equal(mdf.open(sm).read_system_matrix(), a)


def test_memory_limit_names_the_number(bases, tmp_path, monkeypatch):
    monkeypatch.setenv("NIRMPI_MAX_MEMORY", "10K")
    with pytest.raises(MDFError, match=r"needs .* of memory, above the limit of 10.2 kB"):
        mdf.open(bases["meas"]).read_spectra()


def test_corrupt_chunk_found_by_probe(tmp_path):
    p = tmp_path / "c.mdf"
    rng = np.random.default_rng(0)
    with h5py.File(p, "w") as h:
        h.create_dataset("x", data=rng.standard_normal((64, 64)).astype(np.float32), chunks=(8, 64),
                         compression="gzip")
    from napari_nirmpi.grid import Grid
    acq = mdf.Acquisition(2.5e6, (102, 96), (0.012, 0.012), 32, 1.25e6, 1)
    sm = np.ones((1, 1, 17, 18), np.complex64) * (1 + rng.random((1, 1, 17, 18)))
    q = mdf.write_calibration(tmp_path / "sm.mdf", sm, grid=Grid((4, 4), (0.01, 0.01)), acquisition=acq,
                              is_background_frame=np.r_[np.zeros(16, bool), np.ones(2, bool)])
    with h5py.File(q) as h:  # rewrite the data gzip-chunked, then damage one chunk's bytes
        data = h["/measurement/data"][()]
    with h5py.File(q, "a") as h:
        del h["/measurement/data"]
        d = h.create_dataset("/measurement/data", data=data, chunks=(1, 1, 1, 18), compression="gzip")
        offset, size = d.id.get_chunk_info(5).byte_offset, d.id.get_chunk_info(5).size
    b = bytearray(q.read_bytes())
    b[offset:offset + size] = bytes(size)
    q.write_bytes(bytes(b))
    f = mdf.open(q)
    with pytest.raises(MDFError, match="sm.mdf"):
        f.probe()
