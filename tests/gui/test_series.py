"""Frame-series Zarr stores: the reader (lazy, time axis in s, mm scale, frame time shown) and
the "all frames" option of the Baseline and Train widgets (a batch job in a thread worker)."""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.gui

PLUGIN = "napari-nirmpi"
FRAMES = 6


@pytest.fixture(scope="module")
def bolus(tmp_path_factory):
    from napari_nirmpi.simulate import simulate

    d = tmp_path_factory.mktemp("bolus")
    paths = simulate(d, phantom="bolus", grid=9, frames=FRAMES, seed=0)
    return {"sm": str(paths["sm"]), "meas": str(paths["meas"]), "dir": d}


@pytest.fixture(scope="module")
def store(bolus):
    """A store written by reconstruct_series (kaczmarz, one in-process worker: quick to start)."""
    from distributed import Client, LocalCluster

    from napari_nirmpi.batch import reconstruct_series

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                           silence_logs=50)
    client = Client(cluster)
    try:
        res = reconstruct_series(bolus["sm"], bolus["meas"], "kaczmarz", output=bolus["dir"] / "kz.zarr",
                                 client=client, method_kwargs={"iterations": 10}, chunk_frames=2,
                                 progress=False)
    finally:
        client.close()
        cluster.close()
    return res


def test_get_reader_claims_only_series_stores(store, tmp_path):
    import zarr

    from napari_nirmpi._napari.reader import get_reader
    from napari_nirmpi._napari.series import read_series

    assert get_reader(store.path) is read_series
    assert get_reader([store.path, store.path]) is read_series
    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").create_array("reconstruction", shape=(2, 3), dtype="f4")
    assert get_reader(str(other)) is None  # a zarr store without our attrs
    assert get_reader(str(tmp_path)) is None
    assert get_reader([store.path, str(other)]) is None


def test_series_layer_is_lazy_with_time_axis(store):
    from napari_nirmpi._napari.series import series_layer_data

    data, kw, kind = series_layer_data(store.path)
    arr = store.array
    times = np.asarray(arr.attrs["frame_times"], float)
    assert kind == "image"
    assert type(data).__module__.startswith("dask")  # nothing read beyond 3 frames for contrast
    assert data.shape == (FRAMES, 9, 9) == arr.shape
    dt = float(np.median(np.diff(times)))
    assert dt > 0
    assert kw["scale"][0] == pytest.approx(dt) and kw["translate"][0] == pytest.approx(times[0])
    assert np.allclose(kw["scale"][1:], store.grid.scale_mm)
    assert np.allclose(kw["translate"][1:], store.grid.translate_mm)
    assert kw["axis_labels"] == ("t", "y", "x")
    assert kw["metadata"]["nirmpi"]["axis_units"] == ["s", "mm", "mm"]
    meta = kw["metadata"]["nirmpi"]
    assert meta["kind"] == "reconstruction_series" and meta["source"] == os.path.abspath(store.path)
    assert meta["parameters"]["method"] == "kaczmarz"
    assert meta["parameters"]["method_kwargs"] == {"iterations": 10}
    assert meta["frame_times"] == pytest.approx(times.tolist())
    np.testing.assert_allclose(np.asarray(data[3]), np.asarray(arr[3]))
    lo, hi = kw["contrast_limits"]
    assert lo < hi


def test_format_time():
    from napari_nirmpi._napari.series import format_time

    assert format_time(2.5) == "2.5 s" and format_time(0.0006528) == "0.6528 ms"
    assert format_time(0) == "0 s"


def test_open_series_in_viewer_shows_frame_time(make_napari_viewer, store):
    from napari_nirmpi._napari.series import attach_frame_time_overlay

    viewer = make_napari_viewer()
    [layer] = viewer.open(store.path, plugin=PLUGIN)
    attach_frame_time_overlay(viewer)  # the reader hooks napari.current_viewer(); be explicit here
    assert type(layer.data).__module__.startswith("dask")
    times = store.array.attrs["frame_times"]
    assert viewer.dims.axis_labels[0] == "t"
    assert viewer.dims.nsteps[0] == FRAMES
    viewer.dims.set_current_step(0, 4)
    # the world coordinate of the time axis is the frame time (s) ...
    assert viewer.dims.point[0] == pytest.approx(times[4], rel=1e-6, abs=1e-9)
    # ... and the canvas says which frame and when, exactly
    ov = viewer.canvas.overlays.text
    assert ov.visible and "frame 5/6" in ov.text
    assert f"t = {times[4] * 1e3:.4g} ms" in ov.text  # MPI frames: sub-second, shown in ms
    viewer.dims.set_current_step(0, 1)
    assert "frame 2/6" in ov.text
    layer.visible = False
    assert not ov.visible
    layer.visible = True
    viewer.layers.remove(layer)
    assert not ov.visible


def _problem_session(viewer, widget_name, bolus):
    from napari_nirmpi.preprocess import build_problem

    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, widget_name)
    problem = build_problem(bolus["sm"], bolus["meas"])
    w.session.set_problem(problem, problem.params)
    return w


def test_baseline_all_frames_runs_batch_and_opens_store(make_napari_viewer_proxy, wait_worker, bolus,
                                                        tmp_path, notifications):
    from napari_nirmpi.batch import series_status

    viewer = make_napari_viewer_proxy()
    base = _problem_session(viewer, "2 Baseline (Kaczmarz)", bolus)
    # default store: next to the measurement
    assert base.series.output_path() == os.path.splitext(bolus["meas"])[0] + "_kaczmarz.zarr"
    assert not base.series.output.enabled
    base.series.all_frames.value = True
    assert base.series.output.enabled
    out = tmp_path / "series.zarr"
    base.series.output.value = str(out)
    base.iterations.value = 7
    base.lam.value = 0.2
    worker = base.run()
    assert base.stop_button.enabled and not base.run_button.enabled
    wait_worker(worker, timeout=60_000)
    assert not notifications, notifications
    st = series_status(out)
    assert st["complete"] and st["frames_total"] == FRAMES
    layer = base.series.layer
    assert layer is not None and layer in viewer.layers
    assert layer.data.shape == (FRAMES, 9, 9) and type(layer.data).__module__.startswith("dask")
    md = layer.metadata["nirmpi"]
    assert md["kind"] == "reconstruction_series"
    assert md["parameters"]["method_kwargs"]["iterations"] == 7
    assert md["parameters"]["method_kwargs"]["lam"] == pytest.approx(0.2)
    assert md["parameters"]["preprocess"]["snr_threshold"] == base.session.problem_info["snr_threshold"]
    assert np.isfinite(np.asarray(layer.data)).all()
    assert base.series.pbar is None  # progress closed
    assert base.series.last_update.frames_done == FRAMES
    assert f"{FRAMES} frames" in base.info.value
    assert base.run_button.enabled and not base.stop_button.enabled
    # again with other parameters: the store is replaced, and the layer with it
    base.iterations.value = 3
    wait_worker(base.run(), timeout=60_000)
    assert not notifications, notifications
    series_layers = [ly for ly in viewer.layers if ly.metadata["nirmpi"]["kind"] == "reconstruction_series"]
    assert len(series_layers) == 1
    assert series_layers[0].metadata["nirmpi"]["parameters"]["method_kwargs"]["iterations"] == 3
    # the final update reaching the GUI after `finished` still opens the store (once seen under load)
    final = base.series.last_update
    assert final.done
    viewer.layers.remove(series_layers[0])
    base.series.last_update = type(final)(FRAMES - 1, FRAMES)
    base.series._finished()
    assert "stopped" in base.info.value
    base.series._on_update(final)
    assert base.series.layer in viewer.layers and f"{FRAMES} frames" in base.info.value


def test_train_all_frames_nir_series(make_napari_viewer_proxy, wait_worker, bolus, tmp_path,
                                     notifications):
    viewer = make_napari_viewer_proxy()
    train = _problem_session(viewer, "3 Train NIR", bolus)
    assert train.series.output_path().endswith("_nir.zarr")
    train.net_width.value = 16
    train.net_depth.value = 1
    train.iterations.value = 16
    train.max_scale.value = 1
    train.device.value = "cpu"
    train.early_stopping.value = False
    train.series.all_frames.value = True
    train.series.output.value = str(tmp_path / "nir.zarr")
    worker = train.start()
    assert train.stop_button.enabled and not train.start_button.enabled
    wait_worker(worker, timeout=90_000)
    assert not notifications, notifications
    layer = train.series.layer
    assert layer is not None and layer.data.shape == (FRAMES, 9, 9)
    md = layer.metadata["nirmpi"]["parameters"]
    assert md["method"] == "nir" and md["method_kwargs"]["width"] == 16
    assert np.isfinite(np.asarray(layer.data)).all()
    assert train.start_button.enabled and not train.stop_button.enabled


def test_series_refuses_foreign_directory(make_napari_viewer_proxy, bolus, tmp_path, notifications):
    viewer = make_napari_viewer_proxy()
    base = _problem_session(viewer, "2 Baseline (Kaczmarz)", bolus)
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "data.txt").write_text("keep me")
    base.series.all_frames.value = True
    base.series.output.value = str(foreign)
    assert base.run() is None
    assert len(notifications) == 1 and "not a nirmpi series store" in notifications[0]
    assert (foreign / "data.txt").read_text() == "keep me"


def test_shared_time_axis_is_detected(make_napari_viewer, store):
    from napari_nirmpi._napari.widgets._series import shared_time_axis

    viewer = make_napari_viewer()
    [series] = viewer.open(store.path, plugin=PLUGIN)
    assert shared_time_axis(viewer, series) == []
    viewer.add_image(np.zeros((5, 9, 9), np.float32), name="stack")  # component axis, step 1
    viewer.add_image(np.zeros((9, 9), np.float32), name="plane")     # 2D: no clash
    assert shared_time_axis(viewer, series) == ["stack"]


def test_stop_series_then_resume(make_napari_viewer_proxy, wait_worker, bolus, tmp_path, notifications):
    """Stop ends the job after its current chunk; without 'replace' a re-run resumes the store."""
    from napari_nirmpi.batch import series_status

    viewer = make_napari_viewer_proxy()
    base = _problem_session(viewer, "2 Baseline (Kaczmarz)", bolus)
    base.iterations.value = 5
    base.series.all_frames.value = True
    base.series.chunk_frames = 2  # 3 chunks
    out = tmp_path / "stop.zarr"
    base.series.output.value = str(out)
    worker = base.run()
    base.stop_button.changed.emit(True)  # Stop comes long before the first chunk ends (cluster start-up)
    wait_worker(worker, timeout=60_000)
    assert not notifications, notifications
    st = series_status(out)
    assert st["chunks_total"] == 3 and st["chunks_done"] == 1 and not st["complete"]
    assert "stopped" in base.info.value and base.series.layer is None
    assert base.run_button.enabled and not base.stop_button.enabled
    base.series.replace.value = False  # resume: only the missing chunks are computed
    wait_worker(base.run(), timeout=60_000)
    assert not notifications, notifications
    assert series_status(out)["complete"]
    res = base.series.last_update.result
    assert res.chunks_computed == 2 and res.chunks_skipped == 1
    assert base.series.layer is not None and np.isfinite(np.asarray(base.series.layer.data)).all()
