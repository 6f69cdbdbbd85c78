"""The whole workflow in a real viewer: sample data -> Preprocess -> Baseline -> Train (live,
Stop) -> Sample at 104² -> Compare. One viewer, steps in order, as a user would go."""

import numpy as np
import pytest

pytestmark = pytest.mark.gui

PLUGIN = "napari-nirmpi"


def _edges(layer):
    """Physical box (mm) covered by the last two axes: voxel-centre extent ± half a voxel."""
    ext = np.asarray(layer.extent.world, float)[:, -2:]
    half = np.asarray(layer.scale, float)[-2:] / 2
    return np.stack([ext[0] - half, ext[1] + half])


def _dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def test_full_workflow(make_napari_viewer_proxy, qtbot, wait_worker, spiral_files, notifications,
                       tmp_path):
    # the proxy forbids private access and setting napari state from worker threads
    viewer = make_napari_viewer_proxy()
    viewer.open_sample(PLUGIN, "spiral")
    kinds = sorted(ly.metadata["nirmpi"]["kind"] for ly in viewer.layers)
    # the measurement is not a layer (a spectrum has no axis in mm); the SM layer names it
    assert kinds == ["ground_truth", "system_matrix"]
    gt = next(ly for ly in viewer.layers if ly.metadata["nirmpi"]["kind"] == "ground_truth")
    sm = next(ly for ly in viewer.layers if ly.metadata["nirmpi"]["kind"] == "system_matrix")
    assert gt.data.shape == (104, 104)
    # ground truth and the 29² system matrix cover the same physical extent (mm)
    ext_gt = _edges(gt)
    ext_sm = _edges(sm)
    np.testing.assert_allclose(ext_gt, ext_sm, atol=1e-6)

    # -- Preprocess, in the one dock of all steps
    _, flow = viewer.window.add_plugin_dock_widget(PLUGIN, "MPI reconstruction (all steps)")
    pre = flow.step("Preprocess")
    train = flow.step("Train")
    qtbot.waitUntil(lambda: train.ready, timeout=60_000)
    assert not train.start_button.enabled  # no Problem yet
    assert pre.sm_layer.value is sm and pre.build_button.enabled
    assert pre.meas_path() == spiral_files["meas"]
    assert pre.info.value.startswith("ready:"), pre.info.value
    pre.snr_threshold.value = 3.0
    assert pre.preview_rows > 0
    wait_worker(pre.build())
    problem = pre.session.problem
    assert problem is not None and problem.grid.shape == (29, 29)
    assert problem.params["snr_threshold"] == 3.0
    assert str(problem.num_rows) in pre.info.value
    assert train.start_button.enabled

    # -- Baseline
    base = flow.show_step("Baseline")
    base.iterations.value = 20
    base.grid.value = "104"
    wait_worker(base.run())
    native = viewer.layers["Kaczmarz 29x29"]
    up = viewer.layers["Kaczmarz bicubic 104x104"]
    assert native.data.shape == (29, 29) and up.data.shape == (104, 104)
    assert native.metadata["nirmpi"]["parameters"]["iterations"] == 20
    np.testing.assert_allclose(_edges(up), ext_gt, atol=1e-6)

    # -- Train: a tiny run to the end, live layer updated in place
    train.net_width.value = 32
    train.net_depth.value = 2
    train.iterations.value = 100
    train.preview_every.value = 25
    train.max_scale.value = 2
    train.device.value = "cpu"
    train.early_stopping.value = False
    worker = train.start()
    assert train.stop_button.enabled and not train.start_button.enabled
    wait_worker(worker, timeout=90_000)
    assert not notifications, notifications
    live = viewer.layers["NIR (training)"]
    # 4 previews sent; shown at most every PREVIEW_INTERVAL (the final image replaces them)
    assert train.previews_received >= 3 and 1 <= train.num_previews <= train.previews_received
    assert live.data.shape == (29, 29) and np.isfinite(live.data).all()
    assert train.state.stop_reason.startswith("max iterations")
    assert train.eta.value.startswith("max iterations at iteration 100"), train.eta.value
    assert train.progress.value == 100 == train.progress.max
    first_name = list(train.session.fields)[0]
    assert train.info.value == f"kept '{first_name}': the Sample step's field"
    assert "misfit" in first_name  # the selection misfit is part of the name
    assert live.metadata["nirmpi"]["parameters"]["config"]["width"] == 32
    assert len(train.session.fields) == 1
    assert len(train._hist[0]) > 5  # loss curve history arrived

    # Stop mid-run keeps the best field
    train.iterations.value = 100_000
    train.preview_every.value = 10
    first = worker
    worker = train.start()
    assert worker is not None and worker is not first, "Start did not start a second run"
    qtbot.waitUntil(lambda: train.num_previews >= 2, timeout=60_000)
    train.stop()
    wait_worker(worker, timeout=30_000)
    assert train.state.iteration < 100_000
    assert len(train.session.fields) == 2, (list(train.session.fields), train.info.value, notifications)
    assert "stopped by user" in train.eta.value
    second_name = list(train.session.fields)[1]
    m1, m2 = (train.session.field_info[n]["misfit"] for n in (first_name, second_name))

    # -- Sample the first field at 104², and a sub-region from mm numbers
    samp = flow.show_step("Sample")
    # a worse second run is listed but does not silently become the field to sample
    assert samp.field.value == (first_name if m2 > m1 else second_name)
    if m2 > m1:
        assert f"'{first_name}'" in train.info.value and "higher" in train.info.value
    assert None not in samp.field.choices and len(samp.field.choices) == 2
    samp.field.value = first_name
    samp.grid.value = "104"
    wait_worker(samp.run())
    nir = viewer.layers["NIR sample 104x104"]
    assert nir.data.shape == (104, 104)
    np.testing.assert_allclose(_edges(nir), ext_gt, atol=1e-6)
    assert nir.metadata["nirmpi"]["parameters"]["shape"] == [104, 104]
    samp.region.value = "mm values"
    samp.region_mm.value = "-5, 5, -5, 5"  # x0, x1, y0, y1 as the CLI
    samp.grid.value = "40"
    wait_worker(samp.run())
    reg = viewer.layers["NIR sample 40x40 region"]
    np.testing.assert_allclose(_edges(reg), [[-5, -5], [5, 5]], atol=1e-6)
    samp.save_file.value = str(tmp_path / "field.pt")
    assert samp.save() is not None
    samp.load_file.value = str(tmp_path / "field.pt")
    assert samp.load().startswith("loaded")

    # the writer: NIR sample -> MDF reconstruction -> back through the reader, same grid
    out = tmp_path / "nir104.mdf"
    viewer.layers.selection = {nir}
    saved = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert saved == [str(out)]
    [back] = viewer.open(str(out), plugin=PLUGIN)
    np.testing.assert_allclose(back.data, nir.data, rtol=1e-6)
    np.testing.assert_allclose(_edges(back), ext_gt, atol=1e-6)
    viewer.layers.remove(back)

    # -- Compare against the ground truth
    cmp_ = flow.show_step("Compare")
    cmp_.layers.value = [native, up, nir]
    assert cmp_.ground_truth.value is gt
    res = cmp_.compute_metrics()
    assert set(res) == {native.name, up.name, nir.name}
    for r in res.values():
        assert np.isfinite(r["psnr"]) and 0 < r["psnr"] < 80 and -1 <= r["ssim"] <= 1
    line = cmp_.add_line()
    assert line.name == "profile line"
    prof = cmp_.plot_profile()
    assert set(prof) == {gt.name, native.name, up.name, nir.name}
    # numbers as text with sensible digits, every row shown
    t = cmp_.table.native
    assert t.rowCount() == 3 and t.height() >= t.horizontalHeader().height() + sum(
        t.rowHeight(r) for r in range(3))
    from qtpy.QtCore import QLocale, Qt

    shown = t.itemDelegate().displayText(t.item(0, 1).data(Qt.ItemDataRole.DisplayRole), QLocale())
    assert shown == f"{res[native.name]['psnr']:.2f}", shown
    assert cmp_.set_side_by_side(True) is True
    assert not sm.visible and nir.visible and gt.visible
    assert nir.name_overlay.visible and gt.name_overlay.visible  # cells are titled
    assert not line.visible  # no cell of its own
    cmp_.add_line()  # in grid mode: back to the overlay view, where the line lies on the images
    assert not cmp_.side_by_side.value and line.visible
    assert cmp_.set_side_by_side(False) is False
    assert not nir.name_overlay.visible
    assert not notifications, notifications
