"""Frame series on Dask distributed into Zarr: kill a worker, interrupt and resume, NaN frames."""

import os
import shutil
import signal

import h5py

import numpy as np
import pytest

from napari_nirmpi import batch
from napari_nirmpi.errors import NirmpiError, ProblemMismatch

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

FRAMES = 12          # foreground frames of the simulated bolus
CHUNK = 2            # output frames per task → 6 chunks
KZ = {"iterations": 30, "lam": 0.1}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A tiny dynamic measurement (bolus) plus a copy whose frame 5 is NaN."""
    from napari_nirmpi import mdf
    from napari_nirmpi.simulate import simulate


    d = tmp_path_factory.mktemp("bolus")
    paths = simulate(d, phantom="bolus", grid=9, frames=FRAMES, seed=0)
    sm, meas = str(paths["sm"]), str(paths["meas"])
    is_bg = np.asarray(mdf.open(meas).is_background_frame, bool)
    # a copy whose 6th foreground frame is NaN (the writers refuse NaN, so patch the dataset)
    bad = str(d / "meas_nan.mdf")
    shutil.copyfile(meas, bad)
    with h5py.File(bad, "r+") as h5:
        dset = h5["/measurement/data"]
        assert dset.dtype.kind == "f" and dset.shape[0] == is_bg.size  # time domain, frame axis first
        dset[int(np.flatnonzero(~is_bg)[5])] = np.nan
    return {"sm": sm, "meas": meas, "meas_nan": bad, "dir": d, "is_bg": is_bg}


@pytest.fixture(scope="module")
def client():
    """A 2-worker LocalCluster with processes, loopback only; always closed."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None, silence_logs=50,
                                       env={"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"})
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _wait_workers(client, n=2, timeout=60):
    client.wait_for_workers(n, timeout=timeout)


@pytest.fixture(scope="module")
def clean(series, client, tmp_path_factory):
    """A clean Kaczmarz run; later tests compare against it."""
    out = tmp_path_factory.mktemp("clean") / "clean.zarr"
    before = client.run(batch.worker_stats)
    res = batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", output=out, client=client,
                                   method_kwargs=KZ, chunk_frames=CHUNK, progress=False)
    after = client.run(batch.worker_stats)
    return res, before, after


def test_plan_frames_foreground_selection_and_blocks():
    is_bg = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0], bool)
    times = np.arange(9) * 0.5
    p = batch.plan_frames(is_bg, times)
    assert p["raw_blocks"] == [[2], [3], [4], [6], [7], [8]]
    p = batch.plan_frames(is_bg, times, frames="1:5", average=2)
    assert p["fg_blocks"] == [[1, 2], [3, 4]] and p["raw_blocks"] == [[3, 4], [6, 7]]
    np.testing.assert_allclose(p["times"], [1.75, 3.25])
    p = batch.plan_frames(is_bg, times, frames=range(0, 6), average=4)
    assert p["raw_blocks"] == [[2, 3, 4, 6]] and p["dropped"] == 2
    with pytest.raises(NirmpiError, match="frames"):
        batch.plan_frames(is_bg, times, frames="a:b")
    with pytest.raises(NirmpiError, match="out of range"):
        batch.plan_frames(is_bg, times, frames=[7])
    with pytest.raises(NirmpiError, match="average"):
        batch.plan_frames(is_bg, times, average=7)


def test_kaczmarz_series_equals_per_frame_and_attrs(series, clean):
    from napari_nirmpi.preprocess import build_problem
    from napari_nirmpi.solvers import reconstruct_kaczmarz

    res, before, after = clean
    arr = res.array
    assert arr.shape == (FRAMES, 9, 9) and arr.dtype == np.float32
    assert arr.chunks == (CHUNK, 9, 9)
    data = arr[:]
    assert np.isfinite(data).all() and data.max() > 0
    for i in (0, 5, FRAMES - 1):
        p = build_problem(series["sm"], series["meas"], frames=[i])
        ref = reconstruct_kaczmarz(p, **KZ)
        np.testing.assert_allclose(data[i], ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    # the bolus moves: frames differ
    assert np.abs(data[0] - data[-1]).max() > 0.1 * data.max()
    a = dict(arr.attrs)
    for key in ("grid", "voxel_size_m", "voxel_size_mm", "fov_m", "fov_mm", "fov_center_m",
                "fov_center_mm", "frame_indices", "frame_times", "method", "method_kwargs",
                "preprocess", "sources", "failed_frames", "runs", "problem_params", "average"):
        assert key in a, key
    fg = np.flatnonzero(~series["is_bg"])
    assert a["frame_indices"] == fg.tolist()
    assert len(a["frame_times"]) == FRAMES and np.all(np.diff(a["frame_times"]) > 0)
    assert a["method"] == "kaczmarz" and a["method_kwargs"] == KZ
    assert a["sources"]["sm"]["path"] == os.path.abspath(series["sm"])
    assert len(a["sources"]["meas"]["sha256_head_tail_4MiB"]) == 64
    np.testing.assert_allclose(a["voxel_size_mm"], np.array(a["voxel_size_m"]) * 1e3)
    assert a["failed_frames"] == [] and a["runs"][-1]["chunks_computed"] == FRAMES // CHUNK
    # each worker built the Problem at most once for the whole series (not once per task)
    builds = sum(after[w]["problem_builds"] - before.get(w, {"problem_builds": 0})["problem_builds"]
                 for w in after)
    assert 1 <= builds <= len(after)
    st = batch.series_status(res.path)
    assert st["complete"] and st["frames_done"] == FRAMES


def test_killed_worker_mid_run_writes_every_frame_once(series, client, clean, tmp_path):
    ref = clean[0].array[:]
    _wait_workers(client)
    killed, lost, by_pid = [], [], {}

    def kill_busy_worker(info):
        by_pid[info["chunk"]] = info["pid"]
        if killed:
            return
        busy = [w for w, tasks in client.processing().items() if tasks]
        if not busy:
            return
        # the chunks this worker holds right now die with it and must be rerun elsewhere
        lost.extend(int(str(k).split("-")[2]) for k in client.processing()[busy[0]])
        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    out = tmp_path / "killed.zarr"
    res = batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", output=out, client=client,
                                   method_kwargs={**KZ, "iterations": 200}, chunk_frames=1,
                                   progress=False, on_chunk=kill_busy_worker)
    assert killed, "no worker was busy to kill"
    assert lost and any(by_pid[c] != killed[0] for c in lost)   # its work was rerun by another process
    g = zarr.open_group(str(out), mode="r")
    done = g["done"][:]
    assert done.tolist() == [1] * FRAMES                     # every chunk written by this run, once
    assert res.chunks_computed == FRAMES and res.failed_frames == []
    clean200 = batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", output=tmp_path / "c.zarr",
                                        client=client, method_kwargs={**KZ, "iterations": 200},
                                        chunk_frames=4, progress=False)
    np.testing.assert_array_equal(res.array[:], clean200.array[:])
    assert ref.shape == res.array.shape
    _wait_workers(client)


class _Stop(Exception):
    pass


def test_interrupted_run_resumes_without_recomputing(series, client, clean, tmp_path):
    ref = clean[0].array[:]
    out = tmp_path / "resume.zarr"
    seen = []

    def stop_after_two(info):
        seen.append(info["chunk"])
        if len(seen) == 2:
            raise _Stop

    kw = dict(output=out, client=client, method_kwargs=KZ, chunk_frames=CHUNK, progress=False)
    with pytest.raises(_Stop):
        batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", on_chunk=stop_after_two, **kw)
    g = zarr.open_group(str(out), mode="a")
    done = g["done"][:]
    assert (done == 1).sum() == 2
    # a run killed between writing a chunk's data and its marker: data there, marker not
    first_done = int(np.flatnonzero(done)[0])
    g["done"][first_done] = 0
    kept = int(np.flatnonzero(g["done"][:])[0])
    nchunks = FRAMES // CHUNK
    recomputed = []
    res = batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz",
                                   on_chunk=lambda i: recomputed.append(i["chunk"]), **kw)
    assert sorted(recomputed) == sorted(set(range(nchunks)) - {kept})
    assert res.chunks_computed == nchunks - 1 and res.chunks_skipped == 1
    done = zarr.open_group(str(out), mode="r")["done"][:]
    assert done[kept] == 1 and (np.delete(done, kept) == 2).all()
    runs = res.array.attrs["runs"]
    assert [r["chunks_computed"] for r in runs] == [2, nchunks - 1]
    np.testing.assert_array_equal(res.array[:], ref)
    # a third run has nothing to do
    res3 = batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", **kw)
    assert res3.chunks_computed == 0 and res3.chunks_skipped == nchunks


_KILLED_RUN = """
import sys, time
from napari_nirmpi import batch
batch.reconstruct_series(sys.argv[1], sys.argv[2], "kaczmarz", output=sys.argv[3], scheduler=sys.argv[4],
                         method_kwargs={"iterations": 30, "lam": 0.1}, chunk_frames=1, progress=False,
                         on_chunk=lambda info: time.sleep(0.4))  # slow the client so it can be killed mid-run
"""


def test_killed_client_process_resumes(series, client, clean, tmp_path):
    """SIGKILL the process running the command mid-run; the re-run computes only what is missing."""
    import subprocess
    import sys
    import time

    out = tmp_path / "k.zarr"
    addr = client.scheduler.address
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, series["sm"], series["meas"], str(out), addr])
    try:
        deadline = time.monotonic() + 60
        done_at_kill = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = zarr.open_group(str(out), mode="r")["done"][:]
            except Exception:  # store not created yet
                done = np.zeros(1)
            if (done > 0).sum() >= 3:
                proc.kill()
                proc.wait(10)
                done_at_kill = zarr.open_group(str(out), mode="r")["done"][:]
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert done_at_kill is not None, "the run finished or stalled before it could be killed"
    assert 3 <= (done_at_kill > 0).sum() < FRAMES
    recomputed = []
    res = batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", output=out, client=client,
                                   method_kwargs=KZ, chunk_frames=1, progress=False,
                                   on_chunk=lambda i: recomputed.append(i["chunk"]))
    assert sorted(recomputed) == np.flatnonzero(done_at_kill == 0).tolist()
    np.testing.assert_array_equal(res.array[:], clean[0].array[:])
    assert batch.series_status(out)["complete"]


def test_parameter_mismatch_needs_overwrite(series, client, clean, tmp_path):
    out = tmp_path / "m.zarr"
    kw = dict(output=out, client=client, chunk_frames=CHUNK, progress=False, frames="0:4")
    batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", method_kwargs=KZ, **kw)
    with pytest.raises(ProblemMismatch, match="method_kwargs"):
        batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", method_kwargs={**KZ, "lam": 1.0}, **kw)
    res = batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", method_kwargs={**KZ, "lam": 1.0},
                                   overwrite=True, **kw)
    assert res.chunks_computed == 2 and res.array.attrs["method_kwargs"]["lam"] == 1.0
    with pytest.raises(NirmpiError, match="not kaczmarz settings"):
        batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", method_kwargs={"sweeps": 3},
                                 output=tmp_path / "x.zarr", client=client, progress=False)


def test_nan_frame_reported_by_index_others_complete(series, client, clean, tmp_path, capsys, caplog):
    ref = clean[0].array[:]
    with caplog.at_level("INFO", logger="napari_nirmpi.series"):
        res = batch.reconstruct_series(series["sm"], series["meas_nan"], "kaczmarz", output=tmp_path / "n.zarr",
                                       client=client, method_kwargs=KZ, chunk_frames=CHUNK, progress=True)
    assert [f["frame"] for f in res.failed_frames] == [5]
    assert "NaN" in res.failed_frames[0]["message"]
    stored = res.array.attrs["failed_frames"]
    assert [f["frame"] for f in stored] == [5] and stored[0]["raw_frames"] == [int(np.flatnonzero(~series["is_bg"])[5])]
    data = res.array[:]
    assert np.isnan(data[5]).all()
    others = np.delete(np.arange(FRAMES), 5)
    # the NaN frame's chunk partner (frame 4) is solved alone, the rest together: same results
    np.testing.assert_allclose(data[others], ref[others], rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    # the library does not print: the failure and the progress go to the "napari_nirmpi.series" logger
    assert capsys.readouterr().err == ""
    assert any("frame 5" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert sum("chunk" in r.getMessage() and r.levelname == "INFO" for r in caplog.records) == FRAMES // CHUNK


def test_nir_series_warm_start(series, client, tmp_path):
    nir = {"width": 16, "depth": 1, "iterations": 20, "warm_iterations": 8, "max_scale": 2,
           "val_fraction": 0.0, "seed": 0}
    res = batch.reconstruct_series(series["sm"], series["meas"], "nir", output=tmp_path / "nir.zarr",
                                   client=client, method_kwargs={**nir, "grid": "12x12"}, frames="0:4",
                                   chunk_frames=2, device="cpu", progress=False)
    data = res.array[:]
    assert data.shape == (4, 12, 12) and np.isfinite(data).all()
    assert res.array.attrs["grid"]["shape"] == [12, 12]
    steps = res.array.attrs["nir_steps"]
    assert sorted(steps) == ["0", "1"] and all(s == [20, 8] for s in steps.values())


def test_warm_start_starts_from_previous_field(series):
    """With a tiny learning rate, one warm step returns (almost) the previous frame's image."""
    from napari_nirmpi.preprocess import build_problem, measurement_frames
    from napari_nirmpi.sample import sample

    p = build_problem(series["sm"], series["meas"], frames=[0])
    u, _, _ = measurement_frames(series["meas"], p, frames=[0, 6], average=1)
    cold, warm = batch.nir_configs({"width": 16, "depth": 1, "iterations": 60, "val_fraction": 0.0,
                                    "warm_iterations": 1, "warm_lr": 1e-9, "seed": 0}, "cpu")
    s0 = batch.train_frame(p.with_u(u[0]), cold)
    s1 = batch.train_frame(p.with_u(u[1]), warm, init_field=s0.field)
    img0, _ = sample(s0.field, (9, 9))
    img1, _ = sample(s1.field, (9, 9))
    np.testing.assert_allclose(img1, img0, rtol=1e-4, atol=1e-5 * np.abs(img0).max())
    cold1 = batch.train_frame(p.with_u(u[1]), warm)        # same budget from scratch: far off
    imgc, _ = sample(cold1.field, (9, 9))
    assert np.abs(imgc - img0).max() > 10 * np.abs(img1 - img0).max()


def test_nir_configs_warm_defaults_and_unknown_keys():
    cold, warm = batch.nir_configs({"iterations": 800, "lr": 2e-3, "grid": "64x64"}, "cpu")
    assert (cold.iterations, warm.iterations) == (800, 100)
    assert warm.lr == pytest.approx(2e-4) and cold.lr == pytest.approx(2e-3)
    _, warm = batch.nir_configs({"iterations": 800, "warm_iterations": 30, "warm_lr": 1e-5}, "cpu")
    assert (warm.iterations, warm.lr) == (30, 1e-5)
    with pytest.raises(NirmpiError, match="not TrainConfig settings"):
        batch.nir_configs({"sweeps": 3})
    # the feature-grid preset (nirmpi batch --network grid, or auto on a 3D system matrix)
    cold, warm = batch.nir_configs({"preset": "fast", "tv_weight": 0.3}, "cpu")
    assert cold.network == "grid" and cold.sampling == "jitter" and cold.tv_weight == 0.3
    assert (cold.iterations, warm.iterations) == (1200, 150) and warm.lr == pytest.approx(3e-3)
    cold, warm = batch.nir_configs({"preset": "fast_tv", "tv_weight": 0.2}, "cpu")
    assert cold.tv_weight == 0.2 and cold.snr_weight is None and cold.jitter_points == 2
    # the first frame starts from PDHG-TV; the others from the previous frame's field
    assert cold.init == "pdhg-tv" and (warm.iterations, warm.lr) == (75, pytest.approx(1e-4))
    with pytest.raises(NirmpiError, match="preset"):
        batch.nir_configs({"preset": "turbo"})


# ---------------------------------------------------------------------------------------------
# OME-Zarr layout, checksums, --verify
# ---------------------------------------------------------------------------------------------
def test_store_is_ngff_with_mm_and_seconds(clean):
    """The store is an NGFF 0.5 image: axes t/y/x in s and mm, transforms from the grid and the
    frame times, dimension names on the array (what napari-ome-zarr and other viewers read)."""
    import json
    from pathlib import Path

    res = clean[0]
    root = json.loads((Path(res.path) / "zarr.json").read_text())
    assert root["zarr_format"] == 3 and root["node_type"] == "group"
    ome = root["attributes"]["ome"]
    assert ome["version"] == "0.5"
    [ms] = ome["multiscales"]
    assert ms["axes"] == [{"name": "t", "type": "time", "unit": "second"},
                          {"name": "y", "type": "space", "unit": "millimeter"},
                          {"name": "x", "type": "space", "unit": "millimeter"}]
    [ds] = ms["datasets"]
    assert ds["path"] == "reconstruction"
    scale, trans = ds["coordinateTransformations"]
    times = np.asarray(res.array.attrs["frame_times"])
    assert scale["type"] == "scale" and trans["type"] == "translation"
    np.testing.assert_allclose(scale["scale"], [np.median(np.diff(times)), *res.grid.scale_mm])
    np.testing.assert_allclose(trans["translation"], [times[0], *res.grid.translate_mm])
    assert root["attributes"]["nirmpi"]["kind"] == "reconstruction_series"
    g = zarr.open_group(res.path, mode="r")
    assert g[ds["path"]].metadata.dimension_names == ("t", "y", "x")
    # mm on the spatial axes: scale * (n - 1) spans the FOV between voxel centres
    np.testing.assert_allclose(np.array(scale["scale"][1:]) * 9, np.array(res.grid.fov) * 1e3)


def _chunk_file(store, c):
    return os.path.join(store, "reconstruction", "c", str(c), "0", "0")


def _damage_three_ways(out):
    """Chunk 1: 16 flipped bytes; chunk 4: replaced by chunk 3's file; chunk 5: deleted."""
    p = _chunk_file(out, 1)
    raw = bytearray(open(p, "rb").read())
    mid = len(raw) // 2
    for i in range(mid, mid + 16):
        raw[i] ^= 0xFF
    open(p, "wb").write(bytes(raw))
    shutil.copyfile(_chunk_file(out, 3), _chunk_file(out, 4))
    os.remove(_chunk_file(out, 5))


def test_damaged_chunks_are_found_and_recomputed(series, client, clean, tmp_path, capsys):
    from napari_nirmpi.cli import main

    ref = clean[0].array[:]
    out = str(tmp_path / "d.zarr")
    kw = dict(output=out, client=client, method_kwargs=KZ, chunk_frames=CHUNK, progress=False)
    batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", **kw)
    assert batch.verify_series(out)["ok"]
    assert main(["batch", "--verify", "--output", out]) == 0
    assert "intact" in capsys.readouterr().out
    _damage_three_ways(out)
    # the done markers alone still say "complete"; the checksums do not
    assert batch.series_status(out)["complete"]
    st = batch.series_status(out, verify=True)
    assert not st["complete"] and sorted(st["damaged"]) == [1, 4, 5]
    r = batch.verify_series(out)
    assert not r["ok"] and sorted(r["damaged"]) == [1, 4, 5]
    assert r["damaged_frames"] == [2, 3, 8, 9, 10, 11]
    with pytest.raises(SystemExit) as e:
        main(["batch", "--verify", "--output", out])
    assert e.value.code == 1
    text = capsys.readouterr().out
    assert "damaged chunk 1" in text and "damaged chunk 4" in text and "damaged chunk 5" in text
    recomputed = []
    res = batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz",
                                   on_chunk=lambda i: recomputed.append(i["chunk"]), **kw)
    assert sorted(recomputed) == [1, 4, 5] and sorted(res.chunks_damaged) == [1, 4, 5]
    assert res.chunks_computed == 3 and res.chunks_skipped == FRAMES // CHUNK - 3
    np.testing.assert_array_equal(res.array[:], ref)
    assert res.array.attrs["runs"][-1]["chunks_damaged"].keys() == {"1", "4", "5"}
    assert batch.verify_series(out)["ok"] and batch.series_status(out, verify=True)["complete"]


def test_damaged_marker_or_checksum_means_recompute(series, client, clean, tmp_path):
    """A deleted done marker or a deleted checksum: that chunk is recomputed, never trusted."""
    ref = clean[0].array[:]
    out = str(tmp_path / "m.zarr")
    kw = dict(output=out, client=client, method_kwargs=KZ, chunk_frames=CHUNK, progress=False)
    batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz", **kw)
    os.remove(os.path.join(out, "checksums", "c", "2", "0"))
    with open(os.path.join(out, "done", "c", "0"), "r+b") as f:   # garbage instead of a marker
        f.write(b"\xff" * 64)
    r = batch.verify_series(out)
    assert r["damaged"] == {2: "checksum missing or unreadable"} and r["todo"] == [0]
    recomputed = []
    res = batch.reconstruct_series(series["sm"], series["meas"], "kaczmarz",
                                   on_chunk=lambda i: recomputed.append(i["chunk"]), **kw)
    assert sorted(recomputed) == [0, 2]
    np.testing.assert_array_equal(res.array[:], ref)
    assert batch.verify_series(out)["ok"]


def test_verify_refuses_what_is_not_a_store(tmp_path, capsys):
    from napari_nirmpi.cli import main

    assert main(["batch", "--verify", "--output", str(tmp_path / "nothing.zarr")]) == 2
    assert "not a nirmpi series store" in capsys.readouterr().err
    assert main(["batch", "--output", str(tmp_path / "x.zarr")]) == 2
    assert "--sm and --meas required" in capsys.readouterr().err


def test_old_import_paths_and_methods_table():
    from napari_nirmpi import open_series, reconstruct_series
    from napari_nirmpi import series as s

    assert reconstruct_series is s.reconstruct_series is batch.reconstruct_series
    assert open_series is s.open_series
    for name in ("plan_frames", "parse_frames", "file_identity", "nir_configs", "train_frame", "run_chunk",
                 "worker_stats", "make_client", "close_client", "series_status", "SeriesResult"):
        assert callable(getattr(batch, name)), name
    table = s.methods()
    assert {"kaczmarz", "nir"} <= set(table)
    assert (table["kaczmarz"].chunk_frames, table["nir"].chunk_frames) == (8, 4)
    assert s.default_chunk_frames("nir") == 4
    with pytest.raises(NirmpiError, match="expected one of"):
        s.get_method("sart")


def test_a_method_is_one_table_entry(series, monkeypatch, tmp_path):
    """A new method plugs in as one `Method` entry: planned, solved, stored and resumed like the
    built-in ones (here a fake classic module, as `napari_nirmpi.classic` will provide)."""
    import sys
    import types

    from napari_nirmpi import series as s
    from napari_nirmpi.solvers import reconstruct_kaczmarz

    calls = []

    def reconstruct(problem, method="kaczmarz", reg=("l2",), lam=0.5, grid=None, iterations=None,
                    device="auto", **kw):
        calls.append((method, lam))
        img = reconstruct_kaczmarz(problem, iterations=iterations or 10, lam=lam)
        return types.SimpleNamespace(image=img, grid=problem.grid, lam=lam, info={})

    fake = types.ModuleType("napari_nirmpi.classic")
    fake.METHODS, fake.REGS, fake.reconstruct = ("kaczmarz", "cgnr"), ("l2",), reconstruct
    monkeypatch.setitem(sys.modules, "napari_nirmpi.classic", fake)
    import napari_nirmpi

    # `from .. import classic` finds the package attribute first once the real module was imported
    monkeypatch.setattr(napari_nirmpi, "classic", fake, raising=False)
    assert "cgnr" in s.methods() and s.methods()["kaczmarz"].solve is s.tasks._solve_kaczmarz
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                       dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster)
    try:
        res = s.reconstruct_series(series["sm"], series["meas"], "cgnr", output=tmp_path / "cg.zarr", client=c,
                                   frames="0:3", method_kwargs={"lam": 0.1, "iterations": 5}, progress=False)
    finally:
        c.close()
        cluster.close()
    assert res.array.shape == (3, 9, 9) and np.isfinite(res.array[:]).all()
    assert calls == [("cgnr", 0.1)] * 3 and res.array.attrs["method"] == "cgnr"
    assert s.verify_series(res.path)["ok"]


def test_store_opens_with_ome_zarr_tools(clean):
    """Other NGFF tools read the store (skipped where they are not installed; checked on
    2026-12-03 with ome-zarr 0.18.0, ome-zarr-models 1.7 and napari-ome-zarr 0.10.0)."""
    ome_zarr = pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    res = clean[0]
    [node] = list(Reader(parse_url(res.path))())
    np.testing.assert_array_equal(np.asarray(node.data[0]), res.array[:])
    assert [a["unit"] for a in node.metadata["axes"]] == ["second", "millimeter", "millimeter"]
    models = pytest.importorskip("ome_zarr_models")
    image = models.open_ome_zarr(zarr.open_group(res.path, mode="r"))   # validates against NGFF 0.5
    assert [a.name for a in image.ome_attributes.multiscales[0].axes] == ["t", "y", "x"]
    nz = pytest.importorskip("napari_ome_zarr._reader")
    [(data, kw, kind)] = nz.napari_get_reader(res.path)(res.path)
    assert kind == "image" and tuple(kw["units"]) == ("second", "millimeter", "millimeter")
    np.testing.assert_allclose(kw["scale"][1:], res.grid.scale_mm)   # voxel size in mm
    del ome_zarr
