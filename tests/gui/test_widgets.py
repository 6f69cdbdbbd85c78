"""Dock widgets one by one: layout from the manifest, disabled states, parameter parsing,
errors as notifications."""

import numpy as np
import pytest

from napari_nirmpi.errors import NirmpiError

pytestmark = pytest.mark.gui

PLUGIN = "napari-nirmpi"
WIDGETS = ["1 Preprocess", "2 Baseline (Kaczmarz)", "3 Train NIR", "4 Sample", "5 Compare"]


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def test_all_widgets_dock_and_start_disabled(viewer, notifications, qtbot):
    ws = {n: viewer.window.add_plugin_dock_widget(PLUGIN, n)[1] for n in WIDGETS}
    pre, base, train, samp, cmp_ = ws.values()
    qtbot.waitUntil(lambda: train.ready, timeout=60_000)
    assert pre.info.value == "choose a system matrix and a measurement"
    # one session per viewer, shared by every widget
    assert pre.session is base.session is train.session is samp.session
    assert not pre.build_button.enabled
    assert not base.run_button.enabled
    assert not train.start_button.enabled and not train.stop_button.enabled
    assert not samp.sample_button.enabled
    # invoking anyway explains what is missing
    assert pre.build() is None and base.run() is None and train.start() is None
    assert samp.run() is None
    assert len(notifications) == 4
    assert "Preprocess" in notifications[1] or "problem" in notifications[1]
    assert cmp_.compute_metrics() is None and "ground-truth" in notifications[-1]


def test_train_defaults_and_devices(viewer, qtbot):
    import time

    import torch

    from napari_nirmpi.nir.train import TrainConfig

    t0 = time.perf_counter()
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "3 Train NIR")
    # the dock opens without waiting for PyTorch (imported here already: the time is the
    # widget's own; a first import costs seconds and runs in a thread)
    assert time.perf_counter() - t0 < 2.0
    qtbot.waitUntil(lambda: train.ready, timeout=60_000)
    assert train.start_button.enabled is False and train.net_width.enabled
    from napari_nirmpi._napari.widgets.train import TrainWidget

    early = TrainWidget(viewer)  # a second one (napari would hand back the open dock)
    early.iterations.value = 123  # set while PyTorch may still be loading: kept
    early.device.value = "cpu"
    early.ensure_ready()
    assert early.ready and early.iterations.value == 123 and early.device.value == "cpu"
    assert early.net_width.value == TrainConfig().width
    early.native.close()
    d = TrainConfig()
    cfg = train.config()
    for name in ("width", "depth", "omega0", "lr", "iterations", "max_scale", "operator", "l1_weight", "seed",
                 "preview_every", "early_stopping"):
        assert getattr(cfg, name) == pytest.approx(getattr(d, name)), name
    # the options beyond the paper reach the run's config (and, through it, a series run)
    train.operator.value = "cubic"
    train.l1_weight.value = 0.3
    cfg = train.config()
    assert cfg.operator == "cubic" and cfg.l1_weight == pytest.approx(0.3)
    from napari_nirmpi._napari.widgets.train import series_method_kwargs

    kw = series_method_kwargs(cfg)
    assert kw["operator"] == "cubic" and kw["l1_weight"] == pytest.approx(0.3)
    choices = list(train.device.choices)
    assert choices[:2] == ["auto", "cpu"]
    assert ("cuda" in choices) == torch.cuda.is_available()


def test_preprocess_preview_follows_parameters(viewer, spiral_files):
    viewer.open(spiral_files["sm"], plugin=PLUGIN)
    viewer.open(spiral_files["meas"], plugin=PLUGIN)
    _, pre = viewer.window.add_plugin_dock_widget(PLUGIN, "1 Preprocess")
    assert pre.build_button.enabled
    # both are chosen: the status says so (it used to ask to choose them)
    assert pre.info.value.startswith("ready: sm.mdf + meas.mdf"), pre.info.value
    assert pre.sm_path() == spiral_files["sm"] and pre.meas_path() == spiral_files["meas"]
    pre.snr_threshold.value = 0.0
    wide = pre.preview_rows
    pre.snr_threshold.value = 10.0
    strict = pre.preview_rows
    pre.channels.value = "0"
    one = pre.preview_rows
    pre.max_khz.value = 100.0
    narrow = pre.preview_rows
    assert wide > strict > one > narrow > 0
    assert len(pre.plot.axes.lines) >= 2 and pre.plot.axes.get_yscale() == "log"


def test_preprocess_plots_the_measurement_spectrum(viewer, qtbot, spiral_files):
    """The measurement's spectrum as a plot (frequency in kHz, |u| on a log axis, kept rows
    marked), read in a worker; not an image layer in a viewer of millimetres."""
    viewer.open_sample(PLUGIN, "spiral")
    _, pre = viewer.window.add_plugin_dock_widget(PLUGIN, "1 Preprocess")
    assert pre.meas_path() == spiral_files["meas"]
    pre.channels.value = "0"
    pre.plot_kind.value = "spectrum (measurement)"
    qtbot.waitUntil(lambda: pre.meas_path() in pre._spectrum_cache and pre._spectrum_worker is None,
                    timeout=30_000)
    ax = pre.plot.axes
    labels = [ln.get_label() for ln in ax.lines]
    assert labels[:2] == ["channel 0", "channel 1"] and labels[2].startswith("kept (")
    kept = int(labels[2][6:-1])
    assert kept == pre.preview_rows > 0  # the rows the SNR view counts, on channel 0 only
    assert ax.get_yscale() == "log" and "kHz" in ax.get_xlabel()


def test_parsers():
    from napari_nirmpi._napari.widgets.preprocess import parse_channels, parse_frames
    from napari_nirmpi.grid import parse_region

    assert parse_channels("all") is None and parse_channels("0, 2") == [0, 2]
    assert parse_frames("all") is None and parse_frames("1:5") == slice(1, 5)
    assert parse_frames("0 3") == [0, 3]
    # the CLI's format, x0,x1,y0,y1 in mm (commas or spaces) -> metres in (y, x) order
    assert parse_region("-5, 5, -4, 4", 2) == ((-0.004, -0.005), (0.004, 0.005))
    assert parse_region("5 -5 4 -4", 2) == ((-0.004, -0.005), (0.004, 0.005))
    assert parse_region("0,1,2,3,4,6", 3) == ((0.004, 0.002, 0.0), (0.006, 0.003, 0.001))
    for bad in (lambda: parse_channels("x"), lambda: parse_frames("a:b"),
                lambda: parse_region("1 2 3", 2), lambda: parse_region("1,1,0,2", 2)):
        with pytest.raises(NirmpiError):
            bad()


def test_grid_shapes_and_regions(viewer):
    from napari_nirmpi._napari.layers import rectangle_mm

    _, base = viewer.window.add_plugin_dock_widget(PLUGIN, "2 Baseline (Kaczmarz)")
    base.grid.value = "x4"
    assert base.target_shape((29, 29)) == (116, 116)
    base.grid.value = "50x60"
    assert base.target_shape((29, 29)) == (50, 60)
    base.grid.value = "50x60x70"
    with pytest.raises(NirmpiError):
        base.target_shape((29, 29))
    shapes = viewer.add_shapes([np.array([[-3.0, -2.0], [4.0, 5.0]])], shape_type="rectangle")
    lo, hi = rectangle_mm(shapes)
    assert lo == pytest.approx((-3.0, -2.0)) and hi == pytest.approx((4.0, 5.0))
    _, samp = viewer.window.add_plugin_dock_widget(PLUGIN, "4 Sample")
    samp.region.value = "Shapes rectangle"
    assert samp.shapes.value is shapes
    lo_m, hi_m = samp.region_m(2)
    assert lo_m == pytest.approx((-3e-3, -2e-3)) and hi_m == pytest.approx((4e-3, 5e-3))


def test_bad_checkpoint_is_a_notification(viewer, tmp_path, notifications):
    bad = tmp_path / "field.pt"
    bad.write_bytes(b"not a checkpoint")
    _, samp = viewer.window.add_plugin_dock_widget(PLUGIN, "4 Sample")
    samp.load_file.value = str(bad)
    assert samp.load() is None
    assert len(notifications) == 1 and "field.pt" in notifications[0]
    assert not samp.session.fields


def test_compare_metrics_resample_to_ground_truth(viewer, notifications):
    from napari_nirmpi import Grid
    from napari_nirmpi._napari.layers import image_layer_kwargs

    g = Grid((29, 29), (0.028, 0.028))
    fine = g.with_shape((87, 87))
    yy, xx = np.meshgrid(*[np.linspace(-1, 1, 87)] * 2, indexing="ij")
    truth = np.exp(-(xx ** 2 + yy ** 2) * 4).astype(np.float32)
    coarse = truth.reshape(29, 3, 29, 3).mean(axis=(1, 3))
    gt = viewer.add_image(truth, **image_layer_kwargs("GT", "ground_truth", fine))
    a = viewer.add_image(coarse, **image_layer_kwargs("coarse", "reconstruction", g))
    noisy = truth + np.random.default_rng(0).normal(0, 0.2, truth.shape).astype(np.float32)
    b = viewer.add_image(noisy, **image_layer_kwargs("noisy", "reconstruction", fine))
    _, cmp_ = viewer.window.add_plugin_dock_widget(PLUGIN, "5 Compare")
    assert cmp_.ground_truth.value is gt
    cmp_.layers.value = [a, b]
    res = cmp_.compute_metrics()
    assert res["coarse"]["psnr"] > res["noisy"]["psnr"]  # a smooth image up-samples well
    assert res["coarse"]["grid"] == "29x29"
    assert cmp_.table.shape[0] == 2
    assert cmp_.warning == ""
    cmp_.add_line()
    prof = cmp_.plot_profile()
    d, v = prof["GT"]
    assert d[-1] == pytest.approx(28.0, rel=0.05) and v.max() == pytest.approx(1.0, abs=0.05)
    assert not notifications
    # the profile legend sits under the axes, not over the curves
    leg = cmp_.plot.axes.get_legend()
    assert leg is not None and leg.get_bbox_to_anchor().y0 < cmp_.plot.axes.bbox.y0


def test_compare_ground_truth_without_scale_warns(viewer, monkeypatch):
    """A ground truth added without its voxel size (scale 1 per pixel) sits at the origin, beside
    the mm images: a warning, not a silent 7 dB."""
    import napari.utils.notifications as nt

    from napari_nirmpi import Grid
    from napari_nirmpi._napari.layers import image_layer_kwargs

    warned = []
    monkeypatch.setattr(nt, "show_warning", lambda msg, *a, **k: warned.append(str(msg)))
    g = Grid((29, 29), (0.028, 0.028))
    rec = viewer.add_image(np.ones((29, 29), np.float32), **image_layer_kwargs("rec", "reconstruction", g))
    _, cmp_ = viewer.window.add_plugin_dock_widget(PLUGIN, "5 Compare")
    first = viewer.add_image(np.ones((29, 29), np.float32), **image_layer_kwargs("GT1", "ground_truth", g))
    assert cmp_.ground_truth.value is first
    bare = viewer.add_image(np.ones((104, 104), np.float32), name="truth.tif",
                            metadata={"nirmpi": {"kind": "ground_truth"}})
    assert cmp_.ground_truth.value is bare  # the ground truth just added is selected
    cmp_.layers.value = [rec]
    res = cmp_.compute_metrics()
    assert res == {} and "rec" in cmp_.warning and "no scale" in cmp_.warning
    assert warned and warned[-1] == cmp_.warning and cmp_.warning in cmp_.info.value


def test_training_error_becomes_notification(viewer, wait_worker, spiral_files, notifications, qtbot):
    import torch

    from napari_nirmpi.nir.train import TrainConfig
    from napari_nirmpi.preprocess import build_problem

    missing = "cuda" if not torch.cuda.is_available() else "mps"
    mps = getattr(torch.backends, "mps", None)
    if missing == "mps" and mps is not None and mps.is_available():
        pytest.skip("both CUDA and MPS exist here: no unavailable device to request")
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "3 Train NIR")
    problem = build_problem(spiral_files["sm"], spiral_files["meas"])
    train.session.set_problem(problem, problem.params)
    qtbot.waitUntil(lambda: train.ready, timeout=60_000)
    assert train.start_button.enabled
    worker = train.start(config=TrainConfig(width=16, depth=1, iterations=10, device=missing))
    wait_worker(worker)
    assert len(notifications) == 1 and missing in notifications[0].lower()
    assert "failed" in train.info.value
    assert train.start_button.enabled and not train.stop_button.enabled
    assert not train.session.fields


def test_session_is_per_viewer(make_napari_viewer):
    import gc

    from napari_nirmpi._napari.session import _SESSIONS, get_session

    v1 = make_napari_viewer()
    _, w1 = v1.window.add_plugin_dock_widget(PLUGIN, "2 Baseline (Kaczmarz)")
    v2 = make_napari_viewer()
    _, w2 = v2.window.add_plugin_dock_widget(PLUGIN, "2 Baseline (Kaczmarz)")
    assert w1.session is get_session(v1) and w1.session is not w2.session
    w1.session.problem = object()
    assert get_session(v2).problem is None
    key = hash(v1)
    assert key in _SESSIONS
    from napari_nirmpi._napari.session import drop_session

    drop_session(v1)
    gc.collect()
    assert key not in _SESSIONS and get_session(v1).problem is None


def test_training_slows_napari_spinner_and_keeps_dock_width(viewer, qtbot, wait_worker, spiral_files):
    """While we train, napari's activity spinner turns slowly (each frame repaints the window); the
    status line wraps instead of widening the dock (which would resize the canvas)."""
    from qtpy.QtWidgets import QLabel

    from napari_nirmpi._napari.widgets.train import LIVE_NAME, SPINNER_SPEED
    from napari_nirmpi.nir.train import TrainConfig
    from napari_nirmpi.preprocess import build_problem

    viewer.open_sample(PLUGIN, "spiral")  # the docks and layers of the usual workflow
    viewer.window.add_plugin_dock_widget(PLUGIN, "1 Preprocess")
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "3 Train NIR")
    problem = build_problem(spiral_files["sm"], spiral_files["meas"])
    train.session.set_problem(problem, problem.params)
    window = train.native.window()

    def speeds():
        return {lab.movie().speed() for lab in window.findChildren(QLabel) if lab.movie() is not None}

    assert speeds() == {100}
    # the live layer is made, hidden, when the problem is set (not at the click)
    qtbot.waitUntil(lambda: LIVE_NAME in viewer.layers, timeout=10_000)
    live = viewer.layers[LIVE_NAME]
    assert not live.visible and live.data.shape == problem.grid.shape
    canvas = viewer.window._qt_viewer.canvas.native
    resized = []
    canvas.resized.connect(lambda *_: resized.append(canvas.size()))
    worker = train.start(config=TrainConfig(width=16, depth=1, iterations=4000, device="cpu",
                                            early_stopping=False, val_fraction=0.0, log_every=10,
                                            preview_every=20))
    qtbot.waitUntil(lambda: train.num_previews >= 1, timeout=60_000)
    assert speeds() == {SPINNER_SPEED}
    assert viewer.layers[LIVE_NAME] is live and live.visible
    train.info.value = "a status line far longer than the dock is wide " * 4
    qtbot.wait(100)
    assert resized == []  # status updates never resize the OpenGL canvas (a full redraw)
    train.stop()
    wait_worker(worker)
    assert speeds() == {100}


def test_live_layer_follows_a_new_problem_grid(viewer, qtbot, spiral_files):
    from napari_nirmpi import Grid, Problem
    from napari_nirmpi._napari.widgets.train import LIVE_NAME
    from napari_nirmpi.preprocess import build_problem

    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "3 Train NIR")
    problem = build_problem(spiral_files["sm"], spiral_files["meas"])
    train.session.set_problem(problem, problem.params)
    qtbot.waitUntil(lambda: LIVE_NAME in viewer.layers, timeout=10_000)
    live = viewer.layers[LIVE_NAME]
    assert live.data.shape == problem.grid.shape
    grid = Grid((8, 10), (0.016, 0.02))  # another grid: other shape and voxel size
    M = 40
    rng = np.random.default_rng(0)
    S = (rng.normal(size=(M, grid.size)) + 1j * rng.normal(size=(M, grid.size))).astype(np.complex64)
    small = Problem(S, S @ np.ones(grid.size, np.complex64), grid, np.arange(M, dtype=float),
                    np.zeros(M, int), np.arange(M), params={"source": "synthetic"})
    train.session.set_problem(small, small.params)
    qtbot.waitUntil(lambda: viewer.layers[LIVE_NAME].data.shape == (8, 10), timeout=10_000)
    assert viewer.layers[LIVE_NAME] is live and not live.visible
    assert np.allclose(live.scale, grid.scale_mm)


def test_eta_text():
    from napari_nirmpi._napari.widgets.train import eta_text, format_duration

    assert format_duration(5.2) == "5 s" and format_duration(125) == "2 min 05 s"
    assert format_duration(7260) == "2 h 01 min"
    assert eta_text(0, 100, 0.0, True) == "0 s elapsed"
    # a quarter done in 10 s: 30 s to go at this rate; early stopping makes it a bound
    assert eta_text(25, 100, 10.0, False) == "10 s elapsed · about 30 s left"
    assert eta_text(25, 100, 10.0, True) == "10 s elapsed · ≤ 30 s left"


def test_loss_curve_follows_the_data_down():
    """The curve's y range follows the losses on every render (a fixed range hid the end of a
    run under the axis), in whole decades so that a labelled tick is always in view."""
    from napari_nirmpi._napari._plot import CurveRenderer

    r = CurveRenderer()
    it = np.arange(1, 100)
    r.render(it, 0.5 * np.exp(-it / 30) + 0.01, [], [], 50, (340, 200))
    assert r.ax.get_ylim() == pytest.approx((1e-2, 1.0))
    it = np.arange(1, 1500)
    r.render(it, 0.5 * np.exp(-it / 100) + 5e-5, [], [], 50, (340, 200))
    assert r.ax.get_ylim() == pytest.approx((1e-5, 1.0))


def test_train_picks_the_feature_grid_for_a_volume_and_shows_it_in_mm(viewer, qtbot, wait_worker):
    from napari_nirmpi._napari.widgets.train import LIVE_NAME
    from napari_nirmpi.simulate import simulate_case

    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "3 Train NIR")
    qtbot.waitUntil(lambda: train.ready, timeout=60_000)
    assert train.network.value == "siren" and train.lr.value == pytest.approx(3e-4)
    problem = simulate_case("cone", grid=(7, 7, 7), scanner="openmpi", seed=1, noise="low").problem()
    train.session.set_problem(problem, problem.params)
    # a volume takes the feature grid (TrainConfig.fast()) until the user picks a network
    assert train.network.value == "grid"
    assert train.lr.value == pytest.approx(3e-2) and train.iterations.value == 1200
    assert not train.net_width.enabled and not train.operator.enabled
    train.iterations.value, train.preview_every.value = 40, 10
    cfg = train.config()
    assert cfg.network == "grid" and cfg.sampling == "jitter" and cfg.iterations == 40
    train.tv_weight.value = 0.3        # TrainConfig.fast_tv: from the PDHG-TV image, its own lr and budget
    assert not train.early_stopping.value and train.init.value == "pdhg-tv"
    from napari_nirmpi.nir.config import INIT_METHODS
    assert tuple(train.init.choices) == ("none",) + INIT_METHODS
    assert train.lr.value == pytest.approx(1e-3) and train.iterations.value == 600
    train.tv_weight.value = 0.0        # back to TrainConfig.fast()
    assert train.init.value == "none" and train.lr.value == pytest.approx(3e-2) and train.iterations.value == 1200
    train.init.value = "fista-l1"      # a start from an image trains on at its own lr and budget
    assert train.lr.value == pytest.approx(1e-3) and train.iterations.value == 600
    assert train.config().init == "fista-l1" and train.config().tv_weight == 0
    train.tv_weight.value = 0.3
    train.iterations.value = 40
    cfg = train.config()
    assert cfg.tv_weight == 0.3 and cfg.snr_weight is None and cfg.jitter_points == 2 and cfg.iterations == 40
    assert cfg.init == "pdhg-tv" and cfg.val_fraction == 0.0
    worker = train.start()
    assert train.eta.value == "starting from the PDHG-TV image…"
    wait_worker(worker)
    live = viewer.layers[LIVE_NAME]
    assert live.data.shape == (7, 7, 7) and train.num_previews >= 1
    assert np.allclose(live.scale, problem.grid.scale_mm)        # (z, y, x) in mm
    assert list(train.session.fields.values())[-1].network_config()["network"] == "grid"
    # a choice the user made stays when the next problem comes
    train.network.value = "siren"
    assert train.net_width.enabled and train.lr.value == pytest.approx(3e-4)
    train.session.set_problem(problem, problem.params)
    assert train.network.value == "siren"
