"""GUI responsiveness while NIR training runs in the Train widget of a real napari viewer.

A QTimer ticks every 10 ms in the GUI thread; each gap between ticks beyond the interval is an
event-loop stall (what a user feels as a frozen window). The figures: longest stall, 99th
percentile, stalls over 100 ms, plus training speed in the viewer vs. the same config headless
(the price of the GUI). Goal: longest stall < 100 ms.

    xvfb-run -a .venv/bin/python benchmarks/gui_responsiveness.py [--quick] [--iterations N]
        [--width W] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

PLUGIN = "napari-nirmpi"


def headless_rate(problem, cfg) -> float:
    from napari_nirmpi.nir.train import train

    t0 = time.perf_counter()
    last = None
    for last in train(problem, cfg):
        pass
    return last.iteration / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (checks the script works)")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--width", type=int, default=None, help="network width (default: TrainConfig)")
    ap.add_argument("--preview-every", type=int, default=25)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    iterations = 150 if args.quick else args.iterations

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.open_sample(PLUGIN, "spiral")
    _, pre = viewer.window.add_plugin_dock_widget(PLUGIN, "1 Preprocess")
    worker = pre.build()
    while not worker.done():
        app.processEvents()
        time.sleep(0.005)
    _, tw = viewer.window.add_plugin_dock_widget(PLUGIN, "3 Train NIR")
    tw.iterations.value = iterations
    tw.preview_every.value = args.preview_every
    tw.device.value = args.device if args.device in tw.device.choices else "auto"
    tw.early_stopping.value = False
    if args.width:
        tw.net_width.value = args.width
    cfg = tw.config()

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    for _ in range(50):
        app.processEvents()
    # idle baseline: the same loop with nothing running (machine noise)
    timer.start()
    t_idle = time.perf_counter()
    while time.perf_counter() - t_idle < 2.0:
        app.processEvents()
        time.sleep(0.002)
    timer.stop()
    idle = np.diff(np.asarray(ticks)) * 1e3 if len(ticks) > 1 else np.zeros(1)
    ticks.clear()
    timer.start()
    t0 = time.perf_counter()
    worker = tw.start()
    while not worker.done():
        app.processEvents()
        time.sleep(0.002)  # this loop stands in for Qt's own exec(); it never blocks long
    elapsed = time.perf_counter() - t0
    timer.stop()
    it_done = tw.state.iteration if tw.state is not None else 0
    previews = tw.num_previews

    gaps = np.diff(np.asarray(ticks)) * 1e3 if len(ticks) > 1 else np.zeros(1)
    stall = np.maximum(gaps - 10.0, 0.0)
    gui_rate = it_done / elapsed if elapsed > 0 else float("nan")
    problem = tw.session.problem
    viewer.close()

    bare_rate = headless_rate(problem, cfg)
    res = {
        "iterations": int(it_done), "width": cfg.width, "depth": cfg.depth, "device": cfg.device,
        "preview_every": cfg.preview_every, "previews_shown": int(previews),
        "timer_ticks": int(len(ticks)), "max_gap_ms": float(gaps.max()),
        "p99_gap_ms": float(np.percentile(gaps, 99)), "median_gap_ms": float(np.median(gaps)),
        "max_stall_ms": float(stall.max()), "stalls_over_100ms": int(np.sum(gaps > 100.0)),
        "train_seconds_in_viewer": float(elapsed), "it_per_s_in_viewer": float(gui_rate),
        "it_per_s_headless": float(bare_rate),
        "gui_overhead_percent": float(100.0 * (1.0 - gui_rate / bare_rate)) if bare_rate > 0 else None,
        "stall_times_s": [float(np.asarray(ticks)[i] - t0) for i in np.flatnonzero(gaps > 100.0)],
        "idle_max_gap_ms": float(idle.max()), "idle_p99_gap_ms": float(np.percentile(idle, 99)),
        "cpu_count": os.cpu_count(), "goal_max_gap_ms": 100.0,
    }
    print(f"training {it_done} iterations (width {cfg.width}, depth {cfg.depth}, device {cfg.device}, "
          f"preview every {cfg.preview_every}) in a real viewer: {elapsed:.1f} s, {previews} live previews")
    print(f"event loop (10 ms timer, {len(ticks)} ticks): longest gap {gaps.max():.1f} ms, "
          f"p99 {np.percentile(gaps, 99):.1f} ms, median {np.median(gaps):.1f} ms, "
          f"gaps > 100 ms: {int(np.sum(gaps > 100.0))}")
    print(f"idle baseline (no training, 2 s): longest gap {idle.max():.1f} ms, "
          f"p99 {np.percentile(idle, 99):.1f} ms")
    print(f"training speed: {gui_rate:.1f} it/s in the viewer vs {bare_rate:.1f} it/s headless")
    ts = np.asarray(ticks)
    late = np.flatnonzero(gaps > 100.0)[:8]
    if late.size:
        print("stalls > 100 ms at t =", ", ".join(f"{ts[i] - t0:.2f} s ({gaps[i]:.0f} ms)" for i in late))
    print("goal (longest gap < 100 ms):", "MET" if gaps.max() < 100.0 else "NOT MET")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
