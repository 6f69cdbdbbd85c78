"""Baseline: a classic reconstruction of the session's Problem — Kaczmarz, CGNR (ℓ2), FISTA (ℓ1) or
PDHG (TV, ℓ1) with a relative λ or an automatic one — on the native grid, on a finer grid (the
system matrix interpolated) or up-sampled; with "all frames" (Kaczmarz), every frame of the
measurement into a Zarr time series."""

from __future__ import annotations

import math

from magicgui.widgets import (CheckBox, ComboBox, Container, Label, LineEdit, LogSlider, PushButton,
                              SpinBox)

from ...errors import NirmpiError
from ...grid import parse_shape
from ..layers import image_layer_kwargs, set_or_add_image
from ..workers import notify_error, start_worker
from ._base import StepWidget

# prior choices per method, the method's default first
PRIORS = {"kaczmarz": ["l2"], "cgnr": ["l2"], "fista": ["l1", "l1,l2", "l2"],
          "pdhg": ["tv", "tv,l1", "l1", "l2", "tv,l2"]}
LABELS = {"kaczmarz": "Kaczmarz", "cgnr": "CGNR", "fista": "FISTA", "pdhg": "PDHG"}
ITERATIONS = {"kaczmarz": 150, "cgnr": 100, "fista": 300, "pdhg": 500}
LAM_DEFAULT = {"kaczmarz": "0.5", "cgnr": "auto", "fista": "auto", "pdhg": "auto"}
SOLVE = "solve on grid"


class BaselineWidget(StepWidget):
    """Method, prior, λ (a number on any scale, e.g. 1e-5, or "auto"; the slider moves it on a log
    scale), iterations, non-negativity; the image on the native grid plus, at the chosen grid,
    either the image solved there or an up-sampled copy. Runs in a thread worker."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):  # noqa: F821
        super().__init__(napari_viewer)
        self.solver_method = ComboBox(label="Method", choices=list(PRIORS), value="kaczmarz",
                                      tooltip="kaczmarz: the paper's baseline (Tikhonov); cgnr: Tikhonov by "
                                              "conjugate gradients; fista: sparsity (l1); pdhg: total variation")
        self.prior = ComboBox(label="Prior", choices=PRIORS["kaczmarz"], value="l2",
                              tooltip="l2: Tikhonov; l1: sparsity (dots); tv: piecewise-constant objects")
        self.lam = LineEdit(label="λ (relative)", value="0.5",
                            tooltip="a number >= 0 (e.g. 0.5, 1e-5), one per prior term comma-separated, or "
                                    "auto: chosen from the measurement's noise, no ground truth needed")
        self.lam_slider = LogSlider(label="λ (log scale)", min=1e-6, max=10.0, value=0.5,
                                    tooltip="drag to set λ on a log scale (1e-6 … 10)")
        self.iterations = SpinBox(label="Iterations", value=150, min=1, max=100000,
                                  tooltip="Kaczmarz sweeps (150), CGNR (100), FISTA (300), PDHG (500)")
        self.enforce_real = CheckBox(text="real", value=True)
        self.enforce_positive = CheckBox(text="positive", value=True)
        self.method = ComboBox(label="Finer grid", choices=["bicubic", "bilinear", SOLVE, "none"],
                               value="bicubic",
                               tooltip="bicubic/bilinear: interpolate the native image; solve on grid: "
                                       "reconstruct directly on the finer grid (system matrix interpolated); "
                                       "none: native only")
        self.grid = LineEdit(label="Finer grid size", value="104", tooltip="N, AxB, or xF for a factor")
        self.run_button = PushButton(text="Reconstruct")
        self.stop_button = PushButton(text="Stop series")
        self.info = Label(value="build a problem first (Preprocess)")
        self.info.native.setWordWrap(True)
        self._message = None  # the last run's outcome, kept until the problem changes
        from ._series import SeriesOption

        self.series = SeriesOption(self, "kaczmarz")
        self.extend([self.solver_method, self.prior, self.lam, self.lam_slider, self.iterations,
                     Container(widgets=[self.enforce_real, self.enforce_positive], layout="horizontal",
                               labels=False),
                     self.method, self.grid, *self.series.widgets,
                     Container(widgets=[self.run_button, self.stop_button], layout="horizontal",
                               labels=False),
                     self.info])
        self.solver_method.changed.connect(self._method_changed)
        self.lam_slider.changed.connect(self._slider_moved)
        self.lam.changed.connect(self._lam_typed)
        self.run_button.changed.connect(self.run)
        self.stop_button.changed.connect(self.series.stop)
        self.session.problem_changed.connect(self._problem_changed)
        self._update_enabled()

    # -- state ----------------------------------------------------------------------------------
    def _problem_changed(self, *_):
        self._message = None
        self._update_enabled()

    def _update_enabled(self, *_):
        busy = (self.worker is not None and not self.worker.done()) or self.series.running
        has = self.session.problem is not None
        self.run_button.enabled = has and not busy
        self.stop_button.enabled = self.series.running
        if has and not busy and self.series.worker is None:
            p = self.session.problem
            problem = f"problem: {p.num_rows} rows, grid {'x'.join(map(str, p.grid.shape))}"
            # a finished run's message stays until the problem changes (it used to be replaced at once)
            self.info.value = problem if self._message is None else self._message

    def _method_changed(self, *_):
        m = self.solver_method.value
        old_lam = str(self.lam.value).strip()
        self.prior.choices = PRIORS[m]
        self.prior.value = PRIORS[m][0]
        self.iterations.value = ITERATIONS[m]
        if old_lam in LAM_DEFAULT.values():
            self.lam.value = LAM_DEFAULT[m]
        self.enforce_real.enabled = m == "kaczmarz"
        if m != "kaczmarz" and self.method.value == "bicubic":
            self.method.value = SOLVE
        elif m == "kaczmarz" and self.method.value == SOLVE:
            self.method.value = "bicubic"

    def _slider_moved(self, *_):
        text = f"{float(self.lam_slider.value):.2g}"  # the signal's argument is the linear position
        if str(self.lam.value).strip() != text:
            self.lam.value = text

    def _lam_typed(self, text):
        try:
            v = float(str(text).split(",")[0])
        except ValueError:
            return  # "auto" or a term list: the slider keeps its place
        if math.isfinite(v) and 1e-6 <= v <= 10 and abs(math.log10(v) - math.log10(self.lam_slider.value)) > 0.02:
            with self.lam_slider.changed.blocked():
                self.lam_slider.value = v

    # -- parameters -----------------------------------------------------------------------------
    def target_shape(self, native_shape):
        return parse_shape(self.grid.value, native=native_shape)

    def lam_value(self):
        """'auto', a float, or a list of floats (one per prior term); NirmpiError if neither."""
        from ...classic import parse_lam, parse_reg

        regs = parse_reg(self.prior.value, self.solver_method.value)
        spec = parse_lam(str(self.lam.value), regs)
        if spec == "auto":
            return "auto"
        vals = [spec[r] for r in regs]
        return vals[0] if len(set(vals)) == 1 else vals

    def kaczmarz_kwargs(self) -> dict:
        lam = self.lam_value()
        if lam == "auto" or isinstance(lam, list):
            raise NirmpiError("all frames: Kaczmarz series take one λ value (not auto)")
        return dict(lam=float(lam), iterations=int(self.iterations.value),
                    enforce_real=bool(self.enforce_real.value),
                    enforce_positive=bool(self.enforce_positive.value))

    def run(self, *_):
        problem = self.session.problem
        if problem is None:
            notify_error(NirmpiError("Baseline: build a problem first (Preprocess widget)"))
            return None
        method = self.solver_method.value
        if self.series.all_frames.value:
            if method != "kaczmarz":
                notify_error(NirmpiError("all frames: the series runs Kaczmarz; choose Method kaczmarz"))
                return None
            try:
                kw = self.kaczmarz_kwargs()
            except NirmpiError as exc:
                notify_error(exc)
                return None
            self._message = None
            worker = self.series.start(kw)
            self._update_enabled()
            return worker
        try:
            lam = self.lam_value()
            finer = self.method.value
            shape = None if finer == "none" else self.target_shape(problem.grid.shape)
        except NirmpiError as exc:
            notify_error(exc)
            return None
        if shape == tuple(problem.grid.shape):
            shape = None
        reg = self.prior.value
        iterations = int(self.iterations.value)
        nonneg = bool(self.enforce_positive.value)
        real = bool(self.enforce_real.value)

        def work():
            import numpy as np

            from ...classic import reconstruct

            if method == "kaczmarz" and not real and not nonneg:
                from ...solvers import reconstruct_kaczmarz  # complex image: its magnitude is shown

                img = np.abs(reconstruct_kaczmarz(problem, lam=float(lam), iterations=iterations,
                                                  enforce_real=False, enforce_positive=False))
                res = None
            else:
                res = reconstruct(problem, method, reg, lam, iterations=iterations, nonneg=nonneg)
                img = res.image
            fine = None
            if shape is not None and finer == SOLVE:
                fine = reconstruct(problem, method, reg, lam if res is None else res.lam, grid=shape,
                                   iterations=iterations, nonneg=nonneg)
                fine = (fine.image, fine.grid)
            elif shape is not None:
                from ...resample import upsample

                fine = upsample(np.asarray(img, np.float32), problem.grid, shape, method=finer)
            return np.asarray(img, np.float32), fine, res

        self.info.value = "reconstructing…" + (" (choosing λ)" if lam == "auto" else "")
        self.run_button.enabled = False
        self._message = None
        self._params = dict(method=method, reg=reg, lam=lam, iterations=iterations,
                            enforce_real=real, enforce_positive=nonneg, finer=finer,
                            problem=dict(self.session.problem_info))
        self.worker = start_worker(work, connect={"returned": self._done, "errored": self._failed,
                                                  "finished": self._update_enabled})
        return self.worker

    def _done(self, result):
        img, fine, res = result
        problem = self.session.problem
        params = dict(self._params)
        m, finer = params["method"], params.pop("finer")
        if res is not None:
            params.update(lam=res.lam, lam_rule=res.info["lam_rule"], seconds=round(res.info["seconds"], 2))
        src = [params["problem"].get("sm_path"), params["problem"].get("meas_path")]
        src = [s for s in src if s]
        label = LABELS[m] if m == "kaczmarz" else f"{LABELS[m]}-{params['reg']}"
        g = problem.grid
        name = f"{label} {'x'.join(map(str, g.shape))}"
        kw = image_layer_kwargs(name, "reconstruction", g, source=src or None,
                                parameters=dict(params, method=m), method=m)
        set_or_add_image(self.viewer, img, colormap="inferno", **kw)
        uname = None
        if fine is not None:
            uimg, ugrid = fine
            how = "" if finer == SOLVE else f" {finer}"
            uname = f"{label}{how} {'x'.join(map(str, ugrid.shape))}"
            ukw = image_layer_kwargs(uname, "reconstruction", ugrid, source=src or None,
                                     parameters=dict(params, method=m, native_shape=list(g.shape),
                                                     **({"solved_on": list(ugrid.shape)} if finer == SOLVE
                                                        else {"upsampling": finer})),
                                     method=m if finer == SOLVE else f"{m}+{finer}")
            set_or_add_image(self.viewer, uimg.astype("float32"), colormap="inferno", **ukw)
        lam = params["lam"]
        lam_txt = (f"{lam:.2g}" if isinstance(lam, float) else
                   ", ".join(f"{k} {v:.2g}" for k, v in lam.items()) if isinstance(lam, dict) else str(lam))
        auto = " (auto)" if self._params["lam"] == "auto" else ""
        self._message = f"done: {name}" + ("" if uname is None else f" + {uname}") + f"; λ {lam_txt}{auto}"
        self.info.value = self._message

    def _failed(self, exc):
        self._message = "failed (see notification)"
        self.info.value = self._message
        notify_error(exc)
