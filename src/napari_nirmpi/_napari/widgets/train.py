"""Train: a neural implicit representation on the session's Problem, live in the viewer.

Training runs in a napari generator thread worker over `nir.train`; the GUI thread only
receives throttled `TrainUpdate`s and does cheap things with them (event-loop stalls are what a
user feels): it swaps in the loss-curve image the worker rendered (`_plot.CurveRenderer`),
updates the "NIR (training)" layer in place at most every `PREVIEW_INTERVAL` seconds with
contrast limits computed in the worker, and advances the activity-dock progress bar and the
status text every `PLOT_INTERVAL` seconds, each in its own event-loop turn.
Stop = `worker.quit()`; the best field so far is kept.
"""

from __future__ import annotations

import threading
import time
from functools import partial

import numpy as np
from qtpy.QtCore import QTimer
from magicgui.widgets import (CheckBox, ComboBox, Container, FloatSpinBox, Label, ProgressBar,
                              PushButton, SpinBox)

from ...errors import NirmpiError
from ..layers import image_layer_kwargs, json_safe
from ..session import get_session
from ..workers import notify_error, start_worker, train_updates, warm_up_training
from . import add_status, fit_dock

LIVE_NAME = "NIR (training)"
PLOT_INTERVAL = 1.0     # s between progress-bar / status updates (the curve is rendered off-thread)
START_STAGGER_MS = 60   # the progress bar opens and the thread starts this long after the click
SPINNER_SPEED = 10      # % of normal speed for napari's activity spinner while we train
PREVIEW_INTERVAL = 0.3  # s between live-layer updates (a napari layer refresh costs tens of ms)


def available_devices() -> list[str]:
    import torch

    devs = ["auto", "cpu"]
    if torch.cuda.is_available():
        devs.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devs.append("mps")
    return devs


def format_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    m, sec = divmod(int(round(seconds)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def eta_text(iteration: int, total: int, elapsed: float, early_stopping: bool) -> str:
    """'12 s elapsed · about 30 s left' ('≤ 30 s left' when early stopping may end the run
    before its last iteration). One short line: a status that changes its number of lines
    re-lays out the dock on every update (the iteration count is in the progress bar)."""
    head = f"{format_duration(elapsed)} elapsed"
    if iteration <= 0 or elapsed <= 0:
        return head
    left = format_duration((total - iteration) * elapsed / iteration)
    return head + (f" · ≤ {left} left" if early_stopping else f" · about {left} left")


_GC_RUNS = [0]  # training runs in progress in this process (all Train widgets)


def _gc_freeze_during_run(start: bool) -> None:
    """While a run is in progress, the objects alive at its start (napari, Qt, PyTorch,
    matplotlib: millions) are frozen out of the cyclic garbage collector's reach. A full
    collection walks all of them holding the GIL: set off by the training loop's allocations it
    froze the event loop for ~220 ms mid-run (seen with gc.callbacks, 2026-12-03). They are
    unfrozen when the last run ends, so a closed viewer is collected as before."""
    import gc

    if start:
        _GC_RUNS[0] += 1
        if _GC_RUNS[0] == 1:
            gc.freeze()
    elif _GC_RUNS[0] > 0:
        _GC_RUNS[0] -= 1
        if _GC_RUNS[0] == 0:
            gc.unfreeze()


_BACKEND_LOCK = threading.Lock()
_BACKEND: dict = {}


def _load_backend():
    """(TrainConfig defaults, devices, a warmed-up CurveRenderer of its own): the slow imports
    (PyTorch, matplotlib's Agg fonts), run in a thread when the Train step opens; PyTorch once per
    process, a renderer per widget (each is used by its own training worker)."""
    from .._plot import CurveRenderer

    with _BACKEND_LOCK:
        if "defaults" not in _BACKEND:
            from ...nir.train import TrainConfig

            _BACKEND["defaults"], _BACKEND["devices"] = TrainConfig(), available_devices()
    import copy

    devices = list(_BACKEND["devices"])
    renderer = CurveRenderer()
    renderer.render([], [], [], [], 0, (360, 200))
    return copy.copy(_BACKEND["defaults"]), devices, renderer


def series_method_kwargs(cfg) -> dict:
    """TrainConfig fields for batch's NIR method (device goes separately; no previews in batch)."""
    d = cfg.to_dict()
    for k in ("device", "preview_every", "stopping", "log_every"):
        d.pop(k, None)
    return json_safe(d)


class TrainWidget(Container):
    """Network (SIREN or feature grid; width, depth, ω0), optimiser (lr, iterations), max scale, operator D,
    sparsity and TV priors, seed, device,
    preview every K, early stopping; Start/Stop; live layer, loss curve, progress bar."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):  # noqa: F821
        super().__init__(labels=True)
        fit_dock(self)
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.worker = None
        self.state = None          # last TrainState received
        self.num_previews = 0      # live-layer updates in the current run
        self.previews_received = 0  # previews the worker sent (more than shown: throttled)
        self._started = False      # a run was started (status text then reports on it)
        self.cfg = None            # the running (or last) run's TrainConfig
        self._problem_info = {}    # the problem's description as of the run's start
        self._ready = False        # PyTorch imported and the defaults filled in
        # values are TrainConfig's defaults, filled in once PyTorch is imported (in a thread)
        self.network = ComboBox(label="Network", choices=[("SIREN (paper; 2D default)", "siren"),
                                                          ("feature grid (fast; 3D)", "grid")], value="siren")
        self.network.tooltip = ("SIREN: the paper's network, the 2D default. Feature grid: multi-resolution "
                                "grids + a small MLP, one jittered point per voxel and a run that ends at its "
                                "early stop (TrainConfig.fast(): about 60x faster on a 37³ volume, docs/3d.md). "
                                "Chosen by itself for a 3D problem until you pick one.")
        self._network_picked = False   # the user chose a network: a new problem does not change it
        self.net_width = SpinBox(label="Width", value=128, min=4, max=4096, step=16)
        self.net_depth = SpinBox(label="Depth (hidden)", value=3, min=0, max=32)
        self.omega0 = FloatSpinBox(label="ω0", value=10.0, min=0.1, max=1000.0, step=1.0)
        self.lr = FloatSpinBox(label="Learning rate", value=3e-4, min=1e-7, max=1.0, step=1e-4)
        self.lr.native.setDecimals(6)
        self.iterations = SpinBox(label="Iterations", value=2000, min=1, max=10_000_000, step=100)
        self.max_scale = SpinBox(label="Max scale s", value=3, min=1, max=16)
        self.operator = ComboBox(label="Operator D", choices=[("auto (cubic 2D, pool 3D)", "auto"),
                                                              ("pool (paper)", "pool"), ("cubic", "cubic")],
                                 value="auto")
        self.operator.tooltip = ("How the fine samples reach the native grid: pool = the paper's block mean; "
                                 "cubic = the system matrix interpolated inside each voxel (better in 2D, "
                                 "1 dB worse in 3D); auto = cubic in 2D, pool in 3D (docs/benchmarks.md)")
        self.l1_weight = FloatSpinBox(label="Sparsity ℓ1", value=0.0, min=0.0, max=100.0, step=0.05)
        self.l1_weight.tooltip = ("Weight of an ℓ1 term on the field, for sparse tracer distributions "
                                  "(vessels, dots); 0 = off. The stop cannot see its gains: check by eye.")
        self.tv_weight = FloatSpinBox(label="TV prior", value=0.0, min=0.0, max=100.0, step=0.05)
        self.tv_weight.tooltip = ("Weight of a total-variation term on the voxel values, for piecewise-constant "
                                  "objects; 0 = off. With the feature grid: TrainConfig.fast_tv (0.3 on the 37³ cone, docs/3d.md).")
        self.init = ComboBox(label="Start from", choices=[("random weights", "none"), ("PDHG-TV image", "pdhg-tv"),
                                                           ("FISTA-ℓ1 image", "fista-l1"), ("CGNR-ℓ2 image", "cgnr-l2")],
                             value="none")
        self.init.tooltip = ("The network's starting point: random weights, or first fitted to a classic "
                             "reconstruction with automatic λ (TrainConfig.init). The feature grid with a TV prior "
                             "starts from PDHG-TV (TrainConfig.fast_tv, docs/3d.md); with the feature grid a start "
                             "from an image trains on at lr 1e-3 for 600 iterations.")
        self.seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        # the CPU is always there; CUDA/MPS are added once PyTorch is loaded
        self.device = ComboBox(label="Device", choices=["auto", "cpu"], value="auto")
        self.preview_every = SpinBox(label="Preview every", value=100, min=1, max=1_000_000, step=10)
        self.early_stopping = CheckBox(text="early stopping (validation rows)", value=True)
        self.start_button = PushButton(text="Start")
        self.stop_button = PushButton(text="Stop")
        self.progress = ProgressBar(value=0, min=0, max=1, label="Iteration")
        self.progress.native.setTextVisible(True)
        self.progress.native.setFormat("%v / %m")
        self.eta = Label(value="")
        self.info = Label(value="loading PyTorch…")
        # the status lines wrap instead of widening the dock (add_status): a wider dock resizes
        # the OpenGL canvas, a full redraw (~80 ms on software GL) at the first progress report
        from ._series import SeriesOption

        self.series = SeriesOption(self, "nir")
        self._params = [self.network, self.net_width, self.net_depth, self.omega0, self.lr, self.iterations,
                        self.max_scale, self.operator, self.l1_weight, self.tv_weight, self.init, self.seed, self.device,
                        self.preview_every, self.early_stopping]
        self.extend([*self._params, *self.series.widgets,
                     Container(widgets=[self.start_button, self.stop_button], layout="horizontal",
                               labels=False),
                     self.progress])
        add_status(self, self.eta, self.info)
        from .._plot import RgbaView

        self.curve_view = RgbaView(min_height=170)
        self.native.layout().addWidget(self.curve_view)
        self._curve_size = {"size": (360, 200)}  # read by the worker (plain ints)
        self._curve_renderer = None
        self._hist = ([], [], [], [])  # iterations, losses, val iterations, val losses
        self._last_plot = 0.0
        self._last_preview = 0.0
        self._pending_preview = None
        self._preview_scheduled = False
        self._pbar = None
        self._in_progress = False
        self.start_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.network.changed.connect(self._network_changed)
        self.tv_weight.changed.connect(self._tv_changed)
        self.init.changed.connect(self._init_changed)
        self.session.problem_changed.connect(self._update_enabled)
        self.session.problem_changed.connect(self._network_for_problem)
        self.session.problem_changed.connect(lambda *_: QTimer.singleShot(0, self._prepare_live_layer))
        QTimer.singleShot(0, self._prepare_live_layer)
        # what a script (or the user) sets before PyTorch is loaded is kept
        self._placeholders = {id(w): w.value for w in self._params}
        self._network_for_problem()   # a problem built before this dock opened
        self._update_enabled()
        # PyTorch takes seconds to import: in a thread, so the dock opens at once. A plain
        # thread polled by a timer that dies with the widget: a dock closed before the import
        # ends gets no late callback (a Qt worker's signals object may be gone by then)
        loaded: dict = {}
        self._loaded = loaded

        def load():
            try:
                loaded["value"] = _load_backend()
            except BaseException as exc:  # noqa: BLE001 - shown by the GUI thread
                loaded["error"] = exc

        self._loader = threading.Thread(target=load, name="nirmpi-load-torch", daemon=True)
        self._loader.start()
        self._loader_poll = QTimer(self.native)
        self._loader_poll.setInterval(50)
        self._loader_poll.timeout.connect(self._check_loader)
        self._loader_poll.start()

    @property
    def ready(self) -> bool:
        """PyTorch is imported and the parameters show TrainConfig's defaults."""
        return self._ready

    def ensure_ready(self) -> None:
        """Finish the set-up now (a script calling start()/config() before the thread is done):
        wait for the background import rather than run it twice."""
        if not self._ready:
            self._loader.join()
            self._check_loader()
            if "error" in self._loaded:
                raise self._loaded["error"]

    def _check_loader(self):
        if self._ready or self._loader.is_alive():
            return
        self._loader_poll.stop()
        if "value" in self._loaded:
            self._backend_ready(self._loaded["value"])
        elif "error" in self._loaded and not getattr(self, "_load_reported", False):
            self._load_reported = True
            self._backend_failed(self._loaded["error"])

    def _backend_ready(self, loaded):
        if self._ready:
            return
        defaults, devices, renderer = loaded
        d = defaults
        chosen_device = self.device.value
        self.device.choices = devices
        self.device.value = chosen_device if chosen_device in devices else "auto"
        pairs = [(self.net_width, d.width), (self.net_depth, d.depth), (self.omega0, d.omega0),
                 (self.lr, d.lr), (self.iterations, d.iterations), (self.max_scale, d.max_scale),
                 (self.operator, d.operator), (self.l1_weight, d.l1_weight), (self.seed, d.seed),
                 (self.preview_every, d.preview_every), (self.early_stopping, d.early_stopping)]
        for w, default in pairs:  # TrainConfig's defaults, where nothing was set meanwhile
            if w.value == self._placeholders.get(id(w)) and w.value != default:
                w.value = default
        if d.device in devices and chosen_device == "auto":
            self.device.value = d.device
        # one renderer for every run, warmed up in the loader thread: its first draw (figure
        # set-up, fonts) holds the GIL for ~0.2 s, which must not happen while training shares
        # the GIL with the GUI
        self._curve_renderer = renderer
        self._ready = True
        if self.network.value == "grid":
            self._apply_network_preset()
        warm_up_training()
        QTimer.singleShot(0, self._warm_up_progress)
        self.info.value = "build a problem first (Preprocess)"
        self._update_enabled()

    def _net_label(self) -> str:
        c = self.cfg
        if c.network == "grid":
            return f"grid {c.feature_grid.levels}x{c.feature_grid.features}" + (f" TV {c.tv_weight:g}" if c.tv_weight else "")
        return f"w{c.width}d{c.depth}"

    # -- network choice --------------------------------------------------------------------
    def _set_network(self, name: str) -> None:
        """Switch the network and show its preset's settings (SIREN: TrainConfig(); feature grid:
        TrainConfig.fast())."""
        self._setting_network = True
        try:
            self.network.value = name
        finally:
            self._setting_network = False
        self._apply_network_preset()

    def _network_changed(self, *_):
        if not getattr(self, "_setting_network", False):
            self._network_picked = True
            self._apply_network_preset()

    def _apply_network_preset(self):
        grid = self.network.value == "grid"
        for w in (self.net_width, self.net_depth, self.omega0, self.max_scale, self.operator):
            w.enabled = not grid   # SIREN settings; the feature grid samples jittered points
        if not self._ready:
            return
        from ...nir.train import TrainConfig

        init = None if self.init.value == "none" else str(self.init.value)
        if grid and self.tv_weight.value > 0:
            d = TrainConfig.fast_tv(float(self.tv_weight.value), init=init)
        else:
            d = TrainConfig.fast(init=init) if grid else TrainConfig()
        self._setting_init = True
        try:
            self.lr.value, self.iterations.value = d.lr, d.iterations
            self.early_stopping.value, self.init.value = d.early_stopping, d.init or "none"
        finally:
            self._setting_init = False

    def _tv_changed(self, *_):
        # with the feature grid a TV prior is TrainConfig.fast_tv, which starts from PDHG-TV
        if self.network.value == "grid" and self._ready:
            self.init.value = "pdhg-tv" if self.tv_weight.value > 0 else "none"

    def _init_changed(self, *_):
        # a start from a classic image trains on at its own lr and budget (TrainConfig.fast)
        if self.network.value == "grid" and self._ready and not getattr(self, "_setting_init", False):
            self._apply_network_preset()

    def _network_for_problem(self, *_):
        p = self.session.problem
        if p is None or self._network_picked or self.running:
            return
        want = "grid" if p.grid.ndim == 3 else "siren"
        if self.network.value != want:
            self._set_network(want)

    def _backend_failed(self, exc):
        self.info.value = f"PyTorch could not be loaded: {exc}"
        notify_error(exc)

    # -- state -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return (self.worker is not None and not self.worker.done()) or self.series.running

    def _update_enabled(self, *_):
        has = self.session.problem is not None
        self.start_button.enabled = has and not self.running and self._ready
        if not self._ready:
            return
        self.stop_button.enabled = self.running
        if has and not self.running and not self._started and self.series.worker is None:
            self.info.value = f"ready: {self.session.problem.num_rows} rows"

    def config(self):
        self.ensure_ready()
        from ...nir.train import TrainConfig

        common = dict(lr=float(self.lr.value), iterations=int(self.iterations.value),
                      l1_weight=float(self.l1_weight.value), tv_weight=float(self.tv_weight.value),
                      seed=int(self.seed.value), device=str(self.device.value),
                      preview_every=int(self.preview_every.value), early_stopping=bool(self.early_stopping.value),
                      init=None if self.init.value == "none" else str(self.init.value))
        if self.network.value == "grid":
            tv = common.pop("tv_weight")
            return TrainConfig.fast_tv(tv, **common) if tv > 0 else TrainConfig.fast(**common)
        return TrainConfig(width=int(self.net_width.value), depth=int(self.net_depth.value),
                           omega0=float(self.omega0.value), max_scale=int(self.max_scale.value),
                           operator=str(self.operator.value), **common)

    # -- start / stop ----------------------------------------------------------------------
    def start(self, *_, config=None):
        """Start training (optionally with a full TrainConfig); returns the worker."""
        problem = self.session.problem
        if problem is None:
            notify_error(NirmpiError("Train: build a problem first (Preprocess widget)"))
            return None
        if self.running:
            return self.series.worker if self.series.running else self.worker
        self.ensure_ready()
        try:
            cfg = config if config is not None else self.config()
            cfg.validate()
        except NirmpiError as exc:
            notify_error(exc)
            return None
        if self.series.all_frames.value:
            worker = self.series.start(series_method_kwargs(cfg), device=cfg.device)
            self._update_enabled()
            return worker
        self.cfg = cfg
        self._started = True
        self.state = None
        self.num_previews = 0
        self.previews_received = 0
        self._hist = ([], [], [], [])
        self._pending_preview = None
        self._final = None
        self._problem_info = dict(self.session.problem_info)
        self._t0 = time.perf_counter()
        self.progress.max = max(1, int(cfg.iterations))
        self.progress.value = 0
        # a classic start solves and fits an image before the first iteration (tens of seconds at 37³)
        self.eta.value = f"starting from the {cfg.init.upper()} image…" if cfg.init else "starting…"
        self._pbar = None
        from .._plot import CurveRenderer

        self._curve_size["size"] = self.curve_view.target_size()
        if self._curve_renderer is None:
            self._curve_renderer = CurveRenderer()
        # the live layer exists (hidden) since the problem was set; the progress bar opens and the
        # thread starts one event-loop turn later (the click itself was a ~190 ms freeze before)
        self._ensure_live_layer(problem.grid)
        self.worker = start_worker(train_updates, problem, cfg, curve=self._curve_renderer,
                                   curve_size=self._curve_size, start=False,
                                   connect={"yielded": self._on_update, "errored": self._failed,
                                            "finished": self._finished, "aborted": self._aborted})
        self.info.value = f"training on {cfg.device}…"
        self._update_enabled()
        self._scroll_to_curve()
        _gc_freeze_during_run(True)
        self._gc_held = True
        QTimer.singleShot(START_STAGGER_MS, partial(self._launch, self.worker, cfg.iterations))
        return self.worker

    def _scroll_to_curve(self):
        """In a scroll area (the workflow dock on a laptop screen), bring Stop, the progress and
        the loss curve into view: during a run they matter, the parameters do not."""
        from qtpy.QtWidgets import QScrollArea

        w = self.native.parentWidget()
        while w is not None and not isinstance(w, QScrollArea):
            w = w.parentWidget()
        if w is None:
            return
        scroll = w

        def go():  # after the layout settles: Stop, progress, status and curve sit at the bottom
            try:
                bar = scroll.verticalScrollBar()
                bar.setValue(bar.maximum())
                scroll.ensureWidgetVisible(self.stop_button.native, 0, 10)
            except RuntimeError:  # closed meanwhile
                pass

        QTimer.singleShot(0, go)

    @staticmethod
    def _warm_up_progress():
        """napari builds its first progress-bar widget slowly (~80 ms of styling and layout, with a
        processEvents inside): build and drop one when the dock opens, not at the first Start."""
        from napari.utils import progress

        try:
            progress(total=1, desc="warm-up").close()
        except Exception:  # noqa: BLE001 - only a warm-up: the viewer may be closing already
            pass

    def _launch(self, worker, total):
        from napari.utils import progress

        if worker is not self.worker:
            return
        try:
            self._pbar = progress(total=total, desc="NIR training")
            self._slow_spinner(True)
        except RuntimeError:  # the viewer is closing: train anyway, the caller waits for the worker
            self._pbar = None
        worker.start()

    def _slow_spinner(self, slow: bool):
        """napari animates an 'in progress' GIF at ~30 frames/s while any progress bar is open;
        every frame repaints the main window, which recomposes the OpenGL canvas (~12 ms each on
        software GL: 40 % of the GUI thread and a third of the training speed). During our run it
        turns at a tenth of the speed; napari's own progress bars are left alone otherwise."""
        from qtpy.QtWidgets import QLabel

        try:
            window = self.native.window()
            labels = window.findChildren(QLabel) if window is not None else []
        except RuntimeError:  # the window is being destroyed
            return
        for label in labels:
            movie = label.movie()
            if movie is not None:
                movie.setSpeed(SPINNER_SPEED if slow else 100)

    def stop(self, *_):
        """Ask the worker to stop at its next update; the best field so far is kept."""
        if self.series.running:
            self.series.stop()
            return
        if self.worker is not None:
            self.worker.quit()
            self.info.value = "stopping…"

    # -- updates (GUI thread) ----------------------------------------------------------------
    def _on_update(self, upd):
        """Bookkeeping on every update; the curve image when the worker sent one; the layer at
        most every PREVIEW_INTERVAL; label and progress bar at most every PLOT_INTERVAL."""
        it, ls, vi, vl = self._hist
        it.extend(upd.iterations)
        ls.extend(upd.losses)
        vi.extend(upd.val_iterations)
        vl.extend(upd.val_losses)
        self.state = upd.state
        if upd.final is not None:
            self._final = upd.final
        if upd.curve is not None:
            self.curve_view.set_rgba(upd.curve)  # ~1 ms: a pixmap swap
            self._curve_size["size"] = self.curve_view.target_size()
        if upd.preview is not None:
            self.previews_received += 1
            self._queue_preview(upd.preview, upd.preview_limits)
        now = time.perf_counter()
        if upd.done or now - self._last_plot >= PLOT_INTERVAL:
            self._last_plot = now
            if ls:
                st = self.state
                self.info.value = (f"loss {ls[-1]:.3g}"
                                   + (f", held-out {vl[-1]:.3g}" if vl else "")
                                   + (f", best @ {st.best_iteration}" if st is not None else ""))
                self.progress.value = min(int(upd.iteration), self.progress.max)
                self.eta.value = eta_text(upd.iteration, self.cfg.iterations, now - self._t0,
                                          bool(self.cfg.early_stopping))
            # napari's progress bar calls processEvents while it updates: give it its own
            # event-loop turn so no single turn stacks preview + progress
            QTimer.singleShot(0, partial(self._advance_progress, upd.iteration))

    def _queue_preview(self, img, limits):
        """Show the newest preview now, or when PREVIEW_INTERVAL has passed since the last one."""
        self._pending_preview = (img, limits)
        wait = self._last_preview + PREVIEW_INTERVAL - time.perf_counter()
        if wait <= 0:
            self._flush_preview()
        elif not self._preview_scheduled:
            self._preview_scheduled = True
            QTimer.singleShot(int(wait * 1000) + 1, self._flush_preview)

    def _flush_preview(self):
        self._preview_scheduled = False
        pending, self._pending_preview = self._pending_preview, None
        if pending is None or not self.running:  # the run ended: the final image is shown
            return
        self._last_preview = time.perf_counter()
        self._show_preview(*pending)

    def _advance_progress(self, iteration):
        pbar = self._pbar
        if pbar is None:
            return
        self._in_progress = True
        try:
            pbar.update(max(0, iteration - pbar.n))
        finally:
            self._in_progress = False
        if self._pbar is None:  # the run ended during the update: close it now
            pbar.close()

    def _close_progress(self):
        pbar, self._pbar = self._pbar, None
        if pbar is not None:
            self._slow_spinner(False)
        if pbar is not None and not self._in_progress:
            pbar.close()

    def _layer_kwargs(self, grid, extra=None):
        # before the first run and before PyTorch is loaded: no config yet (never import here)
        cfg = self.cfg if self.cfg is not None else (self.config() if self._ready else None)
        info = self._problem_info if self.running else dict(self.session.problem_info)
        params = dict(config=None if cfg is None else json_safe(cfg.to_dict()), problem=info)
        params.update(extra or {})
        src = [s for s in (info.get("sm_path"), info.get("meas_path")) if s]
        return image_layer_kwargs(LIVE_NAME, "reconstruction", grid, source=src or None,
                                  parameters=params, method="nir")

    def _prepare_live_layer(self, *_):
        """Add the live layer, hidden, as soon as a problem exists: adding a napari layer costs the
        GUI thread ~75 ms plus a repaint (~150 ms in all), which at Start was the one stall of a
        run over 100 ms. The first preview of a run makes it visible."""
        problem = self.session.problem
        if problem is None or self.running:
            return
        try:
            self._ensure_live_layer(problem.grid)
        except RuntimeError:  # the viewer is closing
            pass

    def _ensure_live_layer(self, grid):
        """The live layer on `grid`: added hidden and blank if missing, moved to `grid` if the
        problem changed since it was made."""
        if LIVE_NAME not in self.viewer.layers:
            blank = np.zeros(grid.shape, np.float32)
            self.viewer.add_image(blank, colormap="inferno", contrast_limits=(0.0, 1.0), visible=False,
                                  **self._layer_kwargs(grid))
            return
        layer = self.viewer.layers[LIVE_NAME]
        if tuple(layer.data.shape) != tuple(grid.shape) or not np.allclose(layer.scale, grid.scale_mm):
            kw = self._layer_kwargs(grid)
            layer.data = np.zeros(grid.shape, np.float32)
            layer.scale, layer.translate = kw["scale"], kw["translate"]
            layer.metadata = kw["metadata"]
            layer.visible = False

    def _show_preview(self, img, limits=None):
        grid = self.session.problem.grid
        if img.shape != grid.shape:
            grid = grid.with_shape(img.shape)
        self._ensure_live_layer(grid)
        layer = self.viewer.layers[LIVE_NAME]
        layer.data = img
        if limits is not None:  # computed in the worker: no pass over the data here
            layer.contrast_limits = limits
        else:
            layer.reset_contrast_limits()
        if not layer.visible:
            layer.visible = True
        self.num_previews += 1

    def _draw_curve(self):
        """Render the whole curve now (GUI thread; used once at the end when the worker did not)."""
        from .._plot import CurveRenderer

        it, ls, vi, vl = self._hist
        st = self.state
        best = st.best_iteration if st is not None else 0
        self.curve_view.set_rgba(CurveRenderer().render(it, ls, vi, vl, best, self.curve_view.target_size()))

    def _keep_best(self, reason: str):
        st = self.state
        if st is None:
            return None
        fld = st.field
        misfit = st.best_val_loss
        # short enough for the Sample step's list: the held-out misfit tells two runs apart
        label = f"NIR {self._net_label()} @{st.best_iteration}"
        if misfit is not None:
            label += f" · misfit {misfit:.2g}"
        name = self.session.add_field(label, fld, misfit=misfit)
        self._ensure_live_layer(self.session.problem.grid)  # a run may end before its layer turn
        if LIVE_NAME in self.viewer.layers:
            layer = self.viewer.layers[LIVE_NAME]
            # final image = the best field on the native grid (also after Stop); the worker
            # sampled it when the run ended by itself, after Stop it is done here once
            try:
                final = self._final
                if final is None:
                    from ...sample import sample

                    final = sample(fld, fld.grid.shape)
                img, grid = final
                layer.data = img
                layer.reset_contrast_limits()
            except Exception as exc:  # keep the last preview if sampling fails
                notify_error(exc)
                grid = self.session.problem.grid
            layer.metadata = self._layer_kwargs(grid, {"field": name, "stop_reason": reason,
                                                       "best_iteration": int(st.best_iteration),
                                                       "iterations_run": int(st.iteration)})["metadata"]
        return name

    def _release_gc(self):
        if getattr(self, "_gc_held", False):
            self._gc_held = False
            _gc_freeze_during_run(False)

    def _finished(self):
        self._release_gc()
        self._close_progress()
        if self.state is not None:
            reason = self.state.stop_reason or "stopped by user"
            name = self._keep_best(reason)
            if self.worker is None or self.curve_view.rgba is None or self._final is None:
                self._draw_curve()  # stopped: the worker's last image may be a second old
            el = time.perf_counter() - self._t0
            # the stopping rule's own explanation ("max iterations [rule …]") goes to the tooltip
            short = reason.split(" [", 1)[0]
            self.progress.value = min(int(self.state.iteration), self.progress.max)
            self.eta.value = f"{short} at iteration {self.state.iteration} ({format_duration(el)})"
            better = self.session.better_field(name)
            if better is None:
                self.info.value = f"kept '{name}': the Sample step's field"
            else:
                self.info.value = (f"kept '{name}', but its held-out misfit is higher than "
                                   f"'{better}': Sample keeps '{better}' (both are listed there)")
            self.info.tooltip = reason
            self._scroll_to_curve()  # the status grew: keep the final curve in view
        self._update_enabled()

    def _aborted(self):
        pass  # `finished` follows and keeps the best field

    def _failed(self, exc):
        self._release_gc()
        self._close_progress()
        fld = getattr(exc, "field", None)
        if fld is not None:
            self.session.add_field(f"NIR {self._net_label()} (before error)", fld)
        self.state = None
        self.info.value = "training failed (see notification)"
        notify_error(exc)
        self._update_enabled()
