"""The "all frames" option of the Baseline and Train widgets: a frame-series batch job.

Every foreground frame of the session's measurement is reconstructed with the widget's method
parameters and the session Problem's preprocessing parameters (`series.reconstruct_series` on a
one-worker in-process Dask cluster, see `workers.series_updates`), written to an OME-Zarr store
(default ``<measurement>_<method>.zarr`` next to the measurement) and opened through the
plugin's reader as a lazy time-series layer. Progress goes to napari's activity dock; Stop ends
the job after the current chunk (re-running with the same parameters resumes the store).
"""

from __future__ import annotations

import os
from pathlib import Path

from magicgui.widgets import CheckBox, FileEdit

from ...errors import NirmpiError
from ..workers import notify_error, series_updates, start_worker

PLUGIN = "napari-nirmpi"
# Problem.params keys that are build_problem keywords (frames/average are series options)
PREPROCESS_KEYS = ("min_freq", "max_freq", "snr_threshold", "channels", "background", "normalize_rows",
                   "period")


def preprocess_from_info(info: dict) -> dict:
    """build_problem keywords of the session's Problem (from its params)."""
    return {k: info[k] for k in PREPROCESS_KEYS if k in info and info[k] is not None}


def default_output(meas_path: str | None, method: str) -> str:
    if not meas_path:
        return ""
    stem = os.path.splitext(os.path.abspath(meas_path))[0]
    return f"{stem}_{method}.zarr"


class SeriesOption:
    """Widgets (checkbox, output store, replace) + the job; owned by a dock widget."""

    def __init__(self, owner, method: str):
        self.owner = owner              # the dock widget (has .viewer, .session, .info)
        self.method = method
        self.all_frames = CheckBox(text="all frames → Zarr series", value=False,
                                   tooltip="reconstruct every foreground frame of the measurement into a "
                                           "Zarr store and open it as a time series")
        self.output = FileEdit(label="Series store", mode="w", filter="*.zarr",
                               tooltip="Zarr directory to write (default: next to the measurement)")
        self.replace = CheckBox(text="replace an existing series store", value=True,
                                tooltip="off: resume a store written with the same parameters")
        self.chunk_frames = None        # frames per task/zarr chunk (None: the method's default)
        self.worker = None
        self.pbar = None
        self.layer = None               # the layer opened from the finished store
        self.last_update = None
        self._auto = ""                 # the output path we filled in (replaced when the problem changes)
        self.all_frames.changed.connect(self._sync)
        owner.session.problem_changed.connect(self._problem_changed)
        self._problem_changed()

    @property
    def widgets(self) -> list:
        return [self.all_frames, self.output, self.replace]

    @property
    def running(self) -> bool:
        return self.worker is not None and not self.worker.done()

    def _sync(self, *_):
        on = bool(self.all_frames.value)
        self.output.enabled = on
        self.replace.enabled = on

    def _problem_changed(self, *_):
        cur = self.output_path()
        auto = default_output(self.owner.session.problem_info.get("meas_path"), self.method)
        if not cur or cur == self._auto:
            self.output.value = auto or ""
            self._auto = self.output_path()  # as FileEdit normalised it ("" may become the cwd)
        self._sync()

    def output_path(self) -> str:
        v = str(self.output.value or "").strip()
        return "" if v in ("", ".") else os.path.abspath(v)

    # -- the job ---------------------------------------------------------------------------------
    def start(self, method_kwargs: dict, device: str = "auto"):
        """Submit the series job; returns the worker (None with a notification on bad input)."""
        from ...series import default_chunk_frames
        from .. import series

        info = self.owner.session.problem_info
        sm, meas = info.get("sm_path"), info.get("meas_path")
        if self.owner.session.problem is None or not sm or not meas:
            notify_error(NirmpiError("all frames: build a problem from files first (Preprocess widget)"))
            return None
        out = self.output_path()
        if not out:
            notify_error(NirmpiError("all frames: choose an output Zarr store (Series store)"))
            return None
        exists = os.path.exists(out)
        if exists and not series.looks_like_series(out):
            # reconstruct_series would refuse a foreign non-empty directory anyway; never replace one
            if not (os.path.isdir(out) and not os.listdir(out)):
                notify_error(NirmpiError(f"all frames: {out} exists and is not a nirmpi series store; "
                                         "choose another Series store"))
                return None
        average = info.get("average")
        average = int(average) if isinstance(average, int) and average > 0 else None
        import threading

        self.layer = None
        self.last_update = None
        self._stop = threading.Event()
        self.worker = start_worker(
            series_updates, sm, meas, self.method, output=out, preprocess=preprocess_from_info(info),
            method_kwargs=dict(method_kwargs), average=average, device=device, stop=self._stop,
            chunk_frames=self.chunk_frames or default_chunk_frames(self.method),
            overwrite=bool(self.replace.value) and exists and series.looks_like_series(out),
            connect={"yielded": self._on_update, "errored": self._failed, "finished": self._finished})
        self._out = out
        self.owner.info.value = f"all frames ({self.method}) → {Path(out).name}…"
        return self.worker

    def stop(self):
        """End the job after its current chunk (the store stays resumable)."""
        if self.worker is not None:
            # the batch thread checks it after each chunk; the worker keeps running until the
            # job has really ended (so `finished` means the store is consistent), no quit()
            self._stop.set()
            self.owner.info.value = "stopping the series after the current chunk…"

    def _on_update(self, upd):
        self.last_update = upd
        if upd.done and upd.result is not None and self.worker is not None and self.worker.done():
            self._completed(upd.result)   # the final update came after `finished` (seen once under load)
            return
        if self.pbar is None and not upd.done:
            from napari.utils import progress

            self.pbar = progress(total=upd.frames_total, desc=f"series ({self.method})")
        if self.pbar is not None and upd.frames_done > self.pbar.n:
            self.pbar.update(upd.frames_done - self.pbar.n)
            self.owner.info.value = f"all frames ({self.method}): {upd.frames_done}/{upd.frames_total}"

    def _close_progress(self):
        pbar, self.pbar = self.pbar, None
        if pbar is not None:
            pbar.close()

    def _failed(self, exc):
        self._close_progress()
        self.owner.info.value = "series failed (see notification)"
        notify_error(exc)

    def _completed(self, res):
        self._close_progress()
        self.layer = self.open_store(res.path)
        msg = f"series: {res.frames_total} frames → {Path(res.path).name}"
        if res.failed_frames:
            msg += f" ({len(res.failed_frames)} failed)"
        self.owner.info.value = msg
        self._refresh_owner()

    def _refresh_owner(self):
        update = getattr(self.owner, "_update_enabled", None)
        if update is not None:
            update()

    def _finished(self):
        self._close_progress()
        upd = self.last_update
        if upd is not None and upd.done and upd.result is not None:
            self._completed(upd.result)
            return
        if upd is not None and not upd.done and "failed" not in str(self.owner.info.value):
            self.owner.info.value = (f"series stopped at {upd.frames_done}/{upd.frames_total} frames; "
                                     "run again without 'replace' to resume")
        self._refresh_owner()

    def open_store(self, path):
        """Open the store through the plugin's reader (replacing an older layer of it)."""
        from ..series import attach_frame_time_overlay

        viewer = self.owner.viewer
        src = os.path.abspath(path)
        for ly in list(viewer.layers):
            md = (ly.metadata or {}).get("nirmpi", {})
            if md.get("kind") == "reconstruction_series" and md.get("source") == src:
                viewer.layers.remove(ly)
        layers = viewer.open(src, plugin=PLUGIN)
        attach_frame_time_overlay(viewer)
        layer = layers[0] if layers else None
        if layer is not None:
            clash = shared_time_axis(viewer, layer)
            if clash:
                from napari.utils.notifications import show_info

                show_info(f"{layer.name}: its time axis shares napari's first slider with "
                          f"{', '.join(clash)} (napari aligns layers by their last axes); remove "
                          "those layers, or open the store in a new viewer, to scrub the frames")
        return layer


def shared_time_axis(viewer, layer) -> list[str]:
    """Names of other layers whose axis lies on the series' time axis with another step
    (e.g. a system-matrix component stack): together they make the slider unusable."""
    t_scale = float(layer.scale[0])
    out = []
    for ly in viewer.layers:
        if ly is layer or ly.ndim < layer.ndim:
            continue
        if (ly.metadata or {}).get("nirmpi", {}).get("kind") == "reconstruction_series":
            continue
        if abs(float(ly.scale[ly.ndim - layer.ndim]) - t_scale) > 1e-9 * max(1.0, t_scale):
            out.append(ly.name)
    return out
