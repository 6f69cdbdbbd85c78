"""Baseline: Kaczmarz-ℓ2 on the session's Problem, plus an up-sampled copy on a finer grid;
or, with "all frames", every frame of the measurement into a Zarr time series."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, LineEdit, PushButton, SpinBox

from ...errors import NirmpiError
from ...grid import parse_shape
from ..layers import image_layer_kwargs, set_or_add_image
from ..workers import notify_error, start_worker
from ._base import StepWidget


class BaselineWidget(StepWidget):
    """Kaczmarz λ, sweeps, real/positive projections; adds the native image and an up-sampled
    image (bilinear/bicubic) at the chosen grid. Runs in a thread worker."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):  # noqa: F821
        super().__init__(napari_viewer)
        self.lam = FloatSpinBox(label="λ (relative)", value=0.5, min=0.0, max=1e4, step=0.05)
        self.iterations = SpinBox(label="Sweeps", value=150, min=1, max=100000)
        self.enforce_real = CheckBox(text="real", value=True)
        self.enforce_positive = CheckBox(text="positive", value=True)
        self.method = ComboBox(label="Up-sampling", choices=["bicubic", "bilinear", "none"], value="bicubic")
        self.grid = LineEdit(label="Up-sampled grid", value="104", tooltip="N, AxB, or xF for a factor")
        self.run_button = PushButton(text="Reconstruct")
        self.stop_button = PushButton(text="Stop series")
        self.info = Label(value="build a problem first (Preprocess)")
        from ._series import SeriesOption

        self.series = SeriesOption(self, "kaczmarz")
        self.extend([self.lam, self.iterations, self.enforce_real, self.enforce_positive, self.method,
                     self.grid, *self.series.widgets,
                     Container(widgets=[self.run_button, self.stop_button], layout="horizontal",
                               labels=False),
                     self.info])
        self.run_button.changed.connect(self.run)
        self.stop_button.changed.connect(self.series.stop)
        self.session.problem_changed.connect(self._update_enabled)
        self._update_enabled()

    def _update_enabled(self, *_):
        busy = (self.worker is not None and not self.worker.done()) or self.series.running
        has = self.session.problem is not None
        self.run_button.enabled = has and not busy
        self.stop_button.enabled = self.series.running
        if has and not busy and self.series.worker is None:
            self.info.value = f"problem: {self.session.problem.num_rows} rows, grid " \
                              f"{'x'.join(map(str, self.session.problem.grid.shape))}"

    def target_shape(self, native_shape):
        return parse_shape(self.grid.value, native=native_shape)

    def kaczmarz_kwargs(self) -> dict:
        return dict(lam=float(self.lam.value), iterations=int(self.iterations.value),
                    enforce_real=bool(self.enforce_real.value),
                    enforce_positive=bool(self.enforce_positive.value))

    def run(self, *_):
        problem = self.session.problem
        if problem is None:
            notify_error(NirmpiError("Baseline: build a problem first (Preprocess widget)"))
            return None
        if self.series.all_frames.value:
            worker = self.series.start(self.kaczmarz_kwargs())
            self._update_enabled()
            return worker
        try:
            shape = None if self.method.value == "none" else self.target_shape(problem.grid.shape)
        except NirmpiError as exc:
            notify_error(exc)
            return None
        kw = self.kaczmarz_kwargs()
        method = self.method.value

        def work():
            import numpy as np

            from ...solvers import reconstruct_kaczmarz

            img = np.asarray(reconstruct_kaczmarz(problem, **kw))
            if img.dtype.kind == "c":
                img = np.abs(img)
            img = img.astype(np.float32)
            up = None
            if shape is not None:
                from ...resample import upsample

                up = upsample(img, problem.grid, shape, method=method)
            return img, up

        self.info.value = "reconstructing…"
        self.run_button.enabled = False
        self._params = dict(kw, problem=dict(self.session.problem_info))
        self.worker = start_worker(work, connect={"returned": self._done, "errored": self._failed,
                                                  "finished": self._update_enabled})
        return self.worker

    def _done(self, result):
        img, up = result
        problem = self.session.problem
        params = self._params
        src = [params["problem"].get("sm_path"), params["problem"].get("meas_path")]
        src = [s for s in src if s]
        g = problem.grid
        name = f"Kaczmarz {'x'.join(map(str, g.shape))}"
        kw = image_layer_kwargs(name, "reconstruction", g, source=src or None,
                                parameters=dict(params, method="kaczmarz"), method="kaczmarz")
        set_or_add_image(self.viewer, img, colormap="inferno", **kw)
        if up is not None:
            uimg, ugrid = up
            m = self.method.value
            uname = f"Kaczmarz {m} {'x'.join(map(str, ugrid.shape))}"
            ukw = image_layer_kwargs(uname, "reconstruction", ugrid, source=src or None,
                                     parameters=dict(params, method="kaczmarz", upsampling=m,
                                                     native_shape=list(g.shape)),
                                     method=f"kaczmarz+{m}")
            set_or_add_image(self.viewer, uimg.astype("float32"), colormap="inferno", **ukw)
        self.info.value = f"done: {name}" + ("" if up is None else f" + {uname}")

    def _failed(self, exc):
        self.info.value = "failed (see notification)"
        notify_error(exc)
