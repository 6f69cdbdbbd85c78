"""Thread-worker plumbing: long work runs off the GUI thread, the GUI only receives results.

`train_updates` drives the `nir.train` generator (the stream underneath `nir.fit`) so the GUI gets at most one update per `min_interval` (plus
every preview and the final state): each `TrainUpdate` carries the loss history since the last
one, so the curve stays complete while the event loop stays light. Work that would otherwise
land in the GUI thread is done here, in the worker: the loss curve is rendered to an RGBA image
(`_plot.CurveRenderer`, about once a second) and the preview's contrast limits are computed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class TrainUpdate:
    iteration: int
    iterations: list = field(default_factory=list)   # history chunk since the last update
    losses: list = field(default_factory=list)
    val_iterations: list = field(default_factory=list)
    val_losses: list = field(default_factory=list)
    preview: np.ndarray | None = None
    preview_limits: tuple | None = None              # (min, max) of the preview, for contrast
    curve: np.ndarray | None = None                  # RGBA image of the whole loss curve
    final: tuple | None = None                       # (image, grid) of the best field, at the end
    state: Any = None                                # the latest nir TrainState
    done: bool = False


def gui_torch_threads() -> int | None:
    """Intra-op threads for a frame series run behind the GUI (several trainings at once): all
    cores but one, which stays free for the event loop; None on a single core."""
    n = os.cpu_count() or 1
    return n - 1 if n > 1 else None


def _limits(img: np.ndarray) -> tuple[float, float]:
    finite = img[np.isfinite(img)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo, lo + 1e-6 + abs(lo) * 1e-6)


def _final_image(state):
    """(image float32, grid) of the state's best field on its native grid, or None on failure
    (the GUI then keeps the last preview)."""
    try:
        from ..sample import sample

        fld = state.field
        img, grid = sample(fld, fld.grid.shape)
        return np.asarray(img, np.float32), grid
    except Exception:  # noqa: BLE001 - a display nicety; the field itself is still kept
        return None


def train_updates(problem, config, min_interval: float = 0.25, curve=None, curve_size=None,
                  curve_interval: float = 1.0):
    """Generator over `nir.train(problem, config)` yielding throttled `TrainUpdate`s
    (at most one per `min_interval` seconds, plus every preview and the final state).

    curve: a `_plot.CurveRenderer`; then the whole loss curve is rendered here at most every
    `curve_interval` s (and at the end) at `curve_size["size"]` = (width, height) px, which the
    GUI keeps up to date (plain ints: no Qt call from this thread)."""
    from ..nir.train import train

    # all of torch's threads: with napari's activity spinner slowed down (Train widget) the GUI
    # thread needs little, and measured on 2 cores training ran 1.5x faster than with one core
    # kept free, with the longest event-loop gap 61 vs 49 ms (benchmarks/gui_responsiveness.py)
    gen = train(problem, config)
    upd = TrainUpdate(0)
    last = time.perf_counter()
    last_curve = 0.0
    hist = ([], [], [], [])  # the whole history, for the curve
    last_val = None  # val_loss is repeated between validation checks: record each check once
    try:
        for st in gen:
            upd.iteration = st.iteration
            upd.iterations.append(st.iteration)
            upd.losses.append(float(st.loss))
            if st.val_loss is not None and st.val_loss != last_val:
                upd.val_iterations.append(st.iteration)
                upd.val_losses.append(float(st.val_loss))
                last_val = st.val_loss
            if st.preview is not None:
                upd.preview = np.asarray(st.preview, np.float32)
                upd.preview_limits = _limits(upd.preview)
            upd.state = st
            now = time.perf_counter()
            if st.stop_reason is not None:
                upd.done = True
                upd.final = _final_image(st)  # the best field and its image: not in the GUI thread
            if upd.done or st.preview is not None or now - last >= min_interval:
                if curve is not None:
                    for h, new in zip(hist, (upd.iterations, upd.losses, upd.val_iterations, upd.val_losses)):
                        h.extend(new)
                    if upd.done or now - last_curve >= curve_interval:
                        size = (curve_size or {}).get("size", (360, 200))
                        upd.curve = curve.render(*hist, st.best_iteration, size)
                        last_curve = time.perf_counter()
                yield upd
                upd = TrainUpdate(st.iteration)
                last = now
    finally:
        gen.close()


def start_worker(func: Callable, *args, connect: dict | None = None, progress=None, start: bool = True,
                 **kwargs):
    """napari `create_worker` with an `errored` handler wired at creation (so superqt does not
    re-raise in the GUI thread), started at once unless `start=False`; returns the worker."""
    from napari.qt.threading import create_worker

    connect = dict(connect or {})
    connect.setdefault("errored", _notify_exception)
    done = {"flag": False}

    def _mark_done():  # runs in the GUI thread, after the returned/errored handlers
        done["flag"] = True

    fin = connect.get("finished")
    # first, so the widgets' own `finished` handlers already see done() == True
    connect["finished"] = [_mark_done, *(fin if isinstance(fin, (list, tuple)) else [fin] if fin else [])]
    kw = {"_connect": connect, "_start_thread": False}
    if progress is not None:
        kw["_progress"] = progress
    worker = create_worker(func, *args, **kw, **kwargs)
    worker.done = lambda: done["flag"]  # True once `finished` reached the GUI thread
    if start:
        worker.start()
    return worker


def _notify_exception(exc: BaseException) -> None:
    notify_error(exc)


def notify_error(exc) -> None:
    """A napari error notification carrying only the message (our errors name file/parameter)."""
    from napari.utils.notifications import show_error

    msg = str(exc) if str(exc) else type(exc).__name__
    show_error(msg if _is_ours(exc) else f"{type(exc).__name__}: {msg}")


def _is_ours(exc) -> bool:
    from ..errors import NirmpiError

    return isinstance(exc, NirmpiError)


# -- frame series (all frames of a measurement into a Zarr store) ----------------------------
@dataclass
class SeriesUpdate:
    frames_done: int
    frames_total: int
    chunk: dict | None = None      # the finished chunk's summary (reconstruct_series on_chunk)
    result: Any = None             # the SeriesResult, on the last update
    done: bool = False


class SeriesCancelled(Exception):
    """Raised inside reconstruct_series (from on_chunk) when the user stops the job."""


def series_total_frames(meas, frames=None, average=None) -> int:
    """Output frames reconstruct_series will make for `meas` (its foreground frames)."""
    from ..series import count_output_frames

    return count_output_frames(meas, frames, average)


def series_updates(sm, meas, method: str, *, output, preprocess: dict, method_kwargs: dict,
                   average=None, device: str = "auto", chunk_frames=None, overwrite=False,
                   poll: float = 0.2, stop=None):
    """Generator (for a napari thread worker) over `batch.reconstruct_series`, yielding a
    `SeriesUpdate` per finished chunk and a heartbeat every `poll` s.

    stop: a `threading.Event`; once set (the GUI's Stop, or this generator being closed) the
    job ends after its current chunk and the store stays resumable; the generator returns when
    the job has ended. Stop by setting it rather than by `worker.quit()`: superqt stops driving
    an aborted generator (without closing it) while the job thread would go on.

    The job runs on a one-worker in-process Dask cluster (threads, no child processes): it
    starts in well under a second, needs no `__main__` guard in whatever launched napari, and
    leaves one core to the event loop (compute threads = cores - 1).
    """
    import queue
    import threading

    total = series_total_frames(meas, average=average)
    if chunk_frames is None:  # batch's defaults, made explicit to count frames per chunk
        from ..series import default_chunk_frames

        chunk_frames = default_chunk_frames(method)
    chunk_frames = max(1, min(int(chunk_frames), total))
    q: queue.Queue = queue.Queue()
    stop = threading.Event() if stop is None else stop

    def on_chunk(summary):
        q.put(("chunk", summary))
        if stop.is_set():
            raise SeriesCancelled("stopped by user")

    def run():
        try:
            from ..series import close_client, make_client, reconstruct_series

            client, _ = make_client(in_process=True)  # the core's one-thread cluster, as batch has it
            try:
                res = reconstruct_series(sm, meas, method, output=output, average=average, client=client,
                                         threads_per_worker=gui_torch_threads(), device=device,
                                         preprocess=preprocess, method_kwargs=method_kwargs,
                                         chunk_frames=chunk_frames, overwrite=overwrite, progress=False,
                                         on_chunk=on_chunk)
            finally:
                close_client(client)
            q.put(("done", res))
        except BaseException as exc:  # noqa: BLE001 - handed to the GUI thread as the worker's error
            q.put(("error", exc))

    thread = threading.Thread(target=run, name="nirmpi-series", daemon=True)
    thread.start()
    done = 0
    yield SeriesUpdate(0, total)
    try:
        while True:
            try:
                kind, val = q.get(timeout=poll)
            except queue.Empty:
                if stop.is_set() and not thread.is_alive():
                    return
                yield SeriesUpdate(done, total)  # heartbeat: lets quit() take effect
                continue
            if kind == "chunk":
                c = int(val.get("chunk", 0))
                done += max(0, min(chunk_frames, total - c * chunk_frames))
                yield SeriesUpdate(min(done, total), total, chunk=val)
            elif kind == "done":
                yield SeriesUpdate(total, total, result=val, done=True)
                return
            else:
                if isinstance(val, SeriesCancelled):
                    return
                raise val
    finally:
        stop.set()  # a quit() while a chunk runs: reconstruct_series stops after that chunk



_WARMED = False


def warm_up_training() -> None:
    """Run a 2-iteration training on a tiny problem in a background thread, once per process.

    The first optimiser step imports a lot of torch (and sympy) lazily: about a second of module
    execution holding the GIL. Done here, when the Train widget opens, it does not stall the
    event loop while a real training shares the GIL with the GUI."""
    global _WARMED
    if _WARMED:
        return
    _WARMED = True
    import threading

    def run():
        try:
            from ..grid import Grid
            from ..nir.train import TrainConfig, fit
            from ..problem import Problem

            rng = np.random.default_rng(0)
            S = (rng.normal(size=(6, 4)) + 1j * rng.normal(size=(6, 4))).astype(np.complex64)
            p = Problem(S, S @ np.ones(4, np.complex64), Grid((2, 2), (2e-3, 2e-3)), np.arange(6.0),
                        np.zeros(6, int), np.arange(6))
            cfg = TrainConfig(width=8, depth=1, iterations=2, val_fraction=0.0, early_stopping=False,
                              device="cpu", log_every=1, preview_every=1, max_scale=2)
            fit(p, cfg)
        except Exception:  # a warm-up only: the real run reports its own errors
            pass

    threading.Thread(target=run, name="nirmpi-warm-up", daemon=True).start()
