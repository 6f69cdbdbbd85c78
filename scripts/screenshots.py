"""Drive a real napari viewer through the workflow and save a screenshot of each step.

Run by hand (not in CI), under a display or Xvfb:

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/screenshots.py [--out docs/images]
        [--iterations 1500] [--quick] [--size 1366x768]

The window has the size of a laptop screen (1366×768) and the plugin's one dock, "MPI
reconstruction (all steps)", open on the step shown; the scale bar is on (mm).
Writes docs/images/{01_sample_data,02_preprocess,02_preprocess_spectrum,03_baseline,04_train_live,05_train_done,
06_sample,07_compare}.png (whole window: canvas + the workflow dock), and for a frame series
(a simulated bolus, Baseline "all frames" -> Zarr store -> time-series layer)
docs/images/series_baseline.png (window) and series_frames.png (canvas at three frames).
`--only series` makes just the series images. `--only volume` makes the 3D images: the 37³
cone of the OpenMPIData-geometry preset (`--quick`: 15³) through Preprocess, Train (the feature
grid, chosen for a volume, with the TV prior 0.3), Sample at 2x, then docs/images/
08_volume_mip.png (3D view, maximum intensity projection of the sampled field) and
09_volume_slices.png (native and sampled volumes side by side, one z slice, mm scale bar).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

PLUGIN = "napari-nirmpi"


def wait_until(app, cond, timeout=600.0, what="condition"):
    t0 = time.perf_counter()
    while not cond():
        app.processEvents()
        time.sleep(0.01)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
    for _ in range(20):  # let repaints and queued signals land
        app.processEvents()
        time.sleep(0.01)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "images"))
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--quick", action="store_true", help="short training (checks the script works)")
    ap.add_argument("--size", default="1366x768", help="window size WxH (default: a laptop screen)")
    ap.add_argument("--only", choices=["workflow", "series", "volume"], default=None,
                    help="make only the workflow (0[1-7]*.png), the series (series_*.png) or the 3D "
                         "(08_*, 09_*) images")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication

    app = None

    def make_viewer():
        nonlocal app
        viewer = napari.Viewer(title="napari-nirmpi", show=True)
        app = QApplication.instance()
        w, h = (int(v) for v in args.size.lower().split("x"))
        viewer.window._qt_window.setGeometry(0, 0, w, h)
        viewer.canvas.overlays.scale_bar.visible = True
        _, flow = viewer.window.add_plugin_dock_widget(PLUGIN, "MPI reconstruction (all steps)")

        def show(name):
            widget = flow.show_step(name)
            if name == "Train":
                wait_until(app, lambda: widget.ready, what="PyTorch")
            app.processEvents()
            return widget

        def shot(name):
            for _ in range(30):
                app.processEvents()
                time.sleep(0.01)
            path = os.path.abspath(os.path.join(args.out, name + ".png"))
            viewer.screenshot(path=path, canvas_only=False, flash=False)
            print("wrote", path)

        def hide_all_but(*names):
            for ly in viewer.layers:
                ly.visible = ly.name in names
            viewer.layers.selection.active = viewer.layers[names[0]]  # its controls on the left

        return viewer, show, shot, hide_all_but

    if args.only in (None, "workflow"):
        viewer, show, shot, hide_all_but = make_viewer()
        workflow(viewer, app, args, show, shot, hide_all_but)
        viewer.close()
    if args.only in (None, "volume"):
        viewer, show, shot, hide_all_but = make_viewer()
        volume(viewer, app, args, show, shot, hide_all_but)
        viewer.close()
    if args.only in (None, "series"):
        # a fresh viewer: after the SM stack, napari's slider keeps stale labels
        viewer, show, shot, _ = make_viewer()
        series(viewer, app, args, show, shot)
        viewer.close()
    return 0


def series(viewer, app, args, show, shot):
    """A frame series: bolus measurement -> Baseline 'all frames' -> Zarr -> scrubbed layer."""
    import tempfile

    import numpy as np
    from PIL import Image

    from napari_nirmpi._napari.layers import set_grid_view
    from napari_nirmpi.simulate import simulate

    set_grid_view(viewer, False)
    tmp = tempfile.mkdtemp(prefix="nirmpi-series-")
    paths = simulate(tmp, phantom="bolus", grid=29, frames=12, seed=0)
    # files, not layers: the SM component stack would share the first slider with the time axis
    pre = show("Preprocess")
    pre.sm_file.value = str(paths["sm"])
    pre.meas_file.value = str(paths["meas"])
    worker = pre.build()
    wait_until(app, worker.done, what="build problem")
    base = show("Baseline")
    base.iterations.value = 30
    base.series.all_frames.value = True
    worker = base.run()
    wait_until(app, worker.done, timeout=600, what="series")
    layer = base.series.layer
    for ly in viewer.layers:
        ly.visible = ly is layer
    viewer.layers.selection.active = layer
    viewer.reset_view()
    n = layer.data.shape[0]
    viewer.dims.set_current_step(0, n // 2)
    shot("series_baseline")
    tiles = []
    for i in (1, n // 2, n - 2):
        viewer.dims.set_current_step(0, i)
        for _ in range(30):
            app.processEvents()
            time.sleep(0.01)
        tiles.append(viewer.screenshot(canvas_only=True, flash=False))
    h = min(t.shape[0] for t in tiles)
    gap = np.full((h, 8, 4), 255, np.uint8)
    row = [tiles[0][:h]]
    for t in tiles[1:]:
        row += [gap, t[:h]]
    montage = np.concatenate(row, axis=1)
    path = os.path.abspath(os.path.join(args.out, "series_frames.png"))
    Image.fromarray(montage).save(path)
    print("wrote", path)


def volume(viewer, app, args, show, shot, hide_all_but):
    """3D: the OpenMPIData-geometry cone -> feature-grid NIR with a TV prior -> 2x sample -> MIP."""
    import tempfile

    from napari_nirmpi.simulate import simulate

    n = 15 if args.quick else 37
    tmp = tempfile.mkdtemp(prefix="nirmpi-volume-")
    paths = simulate(tmp, phantom="cone", grid=(n, n, n), scanner="openmpi", seed=0)
    pre = show("Preprocess")
    pre.sm_file.value = str(paths["sm"])
    pre.meas_file.value = str(paths["meas"])
    worker = pre.build()
    wait_until(app, worker.done, timeout=600, what="build problem")
    train = show("Train")
    assert train.network.value == "grid", train.network.value   # chosen for a volume
    train.tv_weight.value = 0.3
    train.preview_every.value = 50
    if args.quick:
        train.iterations.value = 200
    worker = train.start()
    wait_until(app, worker.done, timeout=1800, what="training")
    samp = show("Sample")
    samp.grid.value = str(2 * n)
    worker = samp.run()
    wait_until(app, worker.done, timeout=600, what="sampling")
    fine = viewer.layers[f"NIR sample {2 * n}x{2 * n}x{2 * n}"]
    native = viewer.layers["NIR (training)"]
    hide_all_but(fine.name)
    fine.rendering, fine.colormap = "mip", "magma"
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    viewer.camera.angles = (-15.0, 35.0, 70.0)
    shot("08_volume_mip")
    viewer.dims.ndisplay = 2
    hide_all_but(native.name, fine.name)
    viewer.canvas.grid.enabled = True
    viewer.dims.set_point(0, 0.0)      # the cone's axis plane (z = 0 mm)
    viewer.reset_view()
    shot("09_volume_slices")
    viewer.canvas.grid.enabled = False


def workflow(viewer, app, args, show, shot, hide_all_but):
    # 1. sample data: the SM stack (component 0 = best SNR) next to the ground truth
    viewer.open_sample(PLUGIN, "spiral")
    wait_until(app, lambda: True, what="slider")
    sm = next(ly for ly in viewer.layers if ly.metadata["nirmpi"]["kind"] == "system_matrix")
    gt = next(ly for ly in viewer.layers if ly.metadata["nirmpi"]["kind"] == "ground_truth")
    hide_all_but(sm.name, gt.name)
    viewer.canvas.grid.enabled = True
    viewer.reset_view()
    shot("01_sample_data")
    viewer.canvas.grid.enabled = False

    # 2. Preprocess
    pre = show("Preprocess")
    hide_all_but(sm.name)
    pre.snr_threshold.value = 1.5
    worker = pre.build()
    wait_until(app, worker.done, what="build problem")
    viewer.reset_view()
    shot("02_preprocess")
    pre.plot_kind.value = "spectrum (measurement)"
    wait_until(app, lambda: pre.meas_path() in pre._spectrum_cache and pre._spectrum_worker is None,
               what="measurement spectrum")
    shot("02_preprocess_spectrum")
    pre.plot_kind.value = "SNR (system matrix)"

    # 3. Baseline
    base = show("Baseline")
    worker = base.run()
    wait_until(app, worker.done, what="Kaczmarz")
    native = viewer.layers["Kaczmarz 29x29"]
    up = next(ly for ly in viewer.layers if ly.name.startswith("Kaczmarz bicubic"))
    hide_all_but(native.name, up.name)
    viewer.canvas.grid.enabled = True
    viewer.reset_view()
    shot("03_baseline")
    viewer.canvas.grid.enabled = False

    # 4. Train: live layer mid-run, then the finished run
    train = show("Train")
    train.iterations.value = 300 if args.quick else args.iterations
    train.preview_every.value = 50
    worker = train.start()
    wait_until(app, lambda: train.num_previews >= 3, what="training previews")
    hide_all_but("NIR (training)")
    viewer.reset_view()
    shot("04_train_live")
    wait_until(app, worker.done, timeout=1800, what="training")
    shot("05_train_done")

    # 5. Sample at 104²
    samp = show("Sample")
    samp.grid.value = "104"
    worker = samp.run()
    wait_until(app, worker.done, what="sampling")
    hide_all_but("NIR sample 104x104")
    viewer.reset_view()
    shot("06_sample")

    # 6. Compare: Kaczmarz bicubic vs NIR vs ground truth, side by side, with a profile
    cmp_ = show("Compare")
    nir = viewer.layers["NIR sample 104x104"]
    cmp_.layers.value = [native, up, nir]
    cmp_.ground_truth.value = gt
    cmp_.compute_metrics()
    cmp_.add_line()
    cmp_.plot_profile()
    cmp_.set_side_by_side(True)
    shot("07_compare")
    for name, r in cmp_.results.items():
        print(f"  {name:32s} PSNR {r['psnr']:6.2f} dB  SSIM {r['ssim']:.3f}")
    cmp_.set_side_by_side(False)


if __name__ == "__main__":
    sys.exit(main())
