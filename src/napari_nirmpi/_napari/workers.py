"""Thread-worker plumbing: long work runs off the GUI thread, the GUI only receives results.

`train_updates` wraps `nir.train` so the GUI gets at most ~`max_rate` updates per second (plus
every preview and the final state): each `TrainUpdate` carries the loss history since the last
one, so the curve stays complete while the event loop stays light.
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
    state: Any = None                                # the latest nir TrainState
    done: bool = False


def gui_torch_threads() -> int | None:
    """Intra-op threads for CPU training behind a GUI: all cores but one, which stays free for
    the event loop (and the OpenGL canvas); None on a single core (leave torch's default)."""
    n = os.cpu_count() or 1
    return n - 1 if n > 1 else None


def train_updates(problem, config, min_interval: float = 0.25):
    """Generator over `nir.train(problem, config)` yielding throttled `TrainUpdate`s
    (at most one per `min_interval` seconds, plus every preview and the final state)."""
    import torch

    from ..nir.train import resolve_device, train

    threads = gui_torch_threads() if resolve_device(config.device).type == "cpu" else None
    old_threads = torch.get_num_threads()
    if threads is not None and threads < old_threads:
        torch.set_num_threads(threads)
    gen = train(problem, config)
    upd = TrainUpdate(0)
    last = time.perf_counter()
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
                upd.preview = st.preview
            upd.state = st
            now = time.perf_counter()
            if st.stop_reason is not None:
                upd.done = True
                st.field  # noqa: B018 - build the best field here, not in the GUI thread
            if upd.done or st.preview is not None or now - last >= min_interval:
                yield upd
                upd = TrainUpdate(st.iteration)
                last = now
    finally:
        gen.close()
        if torch.get_num_threads() != old_threads:
            torch.set_num_threads(old_threads)


def start_worker(func: Callable, *args, connect: dict | None = None, progress=None, **kwargs):
    """napari `create_worker` with an `errored` handler wired at creation (so superqt does not
    re-raise in the GUI thread) and started at once; returns the worker."""
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
