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


def test_nan_frame_reported_by_index_others_complete(series, client, clean, tmp_path, capsys):
    ref = clean[0].array[:]
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
    assert "frame 5" in capsys.readouterr().err


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
