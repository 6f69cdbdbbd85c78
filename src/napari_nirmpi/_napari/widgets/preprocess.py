"""Preprocess: system matrix + measurement + row selection -> the session's Problem."""

from __future__ import annotations

import os

import numpy as np
from magicgui.widgets import (ComboBox, FileEdit, FloatSpinBox, Label, LineEdit,
                              PushButton, SpinBox)

from ...errors import NirmpiError
from ..layers import json_safe, layers_of_kind, nirmpi_meta
from ..workers import notify_error, start_worker
from . import add_status
from ._base import StepWidget

FILE_FILTER = "*.mdf *.h5 *.hdf5"
PLOT_SNR, PLOT_SPECTRUM = "SNR (system matrix)", "spectrum (measurement)"


def parse_channels(text: str) -> list[int] | None:
    """'all' / '' -> None; '0,1' or '0 1' -> [0, 1]."""
    t = str(text).strip().lower()
    if t in ("", "all", "*"):
        return None
    try:
        return [int(p) for p in t.replace(",", " ").split()]
    except ValueError:
        raise NirmpiError(f"channels {text!r}: expected 'all' or receive channel numbers like '0,1'") from None


def parse_frames(text: str):
    """'all' / '' -> None; '0:10' -> slice(0, 10); '0,2,5' -> [0, 2, 5]."""
    t = str(text).strip().lower()
    if t in ("", "all", "*"):
        return None
    try:
        if ":" in t:
            parts = [int(p) if p.strip() else None for p in t.split(":")]
            return slice(*parts)
        return [int(p) for p in t.replace(",", " ").split()]
    except (ValueError, TypeError):
        raise NirmpiError(f"frames {text!r}: expected 'all', 'start:stop' or indices like '0,1,2'") from None


def _file_value(w: FileEdit) -> str | None:
    v = str(w.value or "").strip()
    return None if v in ("", ".") or os.path.isdir(v) else v


class PreprocessWidget(StepWidget):
    """Choose SM and measurement (layers or files), band, SNR threshold, channels, background
    and frames; "Build problem" makes the Problem every later step uses."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):  # noqa: F821
        super().__init__(napari_viewer)
        self.sm_layer = ComboBox(label="System matrix", choices=self._sm_choices, nullable=True)
        self.sm_file = FileEdit(label="…or SM file", mode="r", filter=FILE_FILTER)
        self.meas_layer = ComboBox(label="Measurement", choices=self._meas_choices, nullable=True)
        self.meas_file = FileEdit(label="…or meas. file", mode="r", filter=FILE_FILTER)
        self.min_khz = FloatSpinBox(label="Min freq. (kHz)", value=20.0, min=0.0, max=1e5, step=5.0)
        self.max_khz = FloatSpinBox(label="Max freq. (kHz)", value=380.0, min=0.0, max=1e5, step=5.0)
        self.snr_threshold = FloatSpinBox(label="SNR threshold", value=1.5, min=0.0, max=1e6, step=0.5)
        self.channels = LineEdit(label="Channels", value="all", tooltip="'all' or e.g. '0,1'")
        self.background = ComboBox(label="Background", choices=["auto", "none"], value="auto",
                                   tooltip="auto: subtract the mean of the measurement's background frames")
        self.frames = LineEdit(label="Frames", value="all",
                               tooltip="foreground frames: 'all', 'start:stop' or '0,1,2'")
        self.average = SpinBox(label="Average (0 = all)", value=0, min=0, max=100000,
                               tooltip="0 averages the selected frames into one; K averages blocks of K")
        self.build_button = PushButton(text="Build problem")
        self.info = Label(value="no problem yet")
        self.extend([self.sm_layer, self.sm_file, self.meas_layer, self.meas_file, self.min_khz,
                     self.max_khz, self.snr_threshold, self.channels, self.background, self.frames,
                     self.average, self.build_button])
        add_status(self, self.info)
        self.plot_kind = ComboBox(label="Plot", choices=[PLOT_SNR, PLOT_SPECTRUM], value=PLOT_SNR,
                                  tooltip="the system matrix's SNR per row, or the measurement's mean "
                                          "spectrum |u| (foreground frames); kept rows in red")
        self.append(self.plot_kind)
        from .._plot import PlotCanvas

        self.plot = PlotCanvas(height=2.4)
        self.native.layout().addWidget(self.plot)
        self._snr_cache: dict[str, tuple] = {}
        self._spectrum_cache: dict[str, tuple] = {}
        self._spectrum_worker = None
        self.plot_kind.changed.connect(self.update_preview)
        self.meas_file.changed.connect(self._meas_changed)
        self.meas_layer.changed.connect(self._meas_changed)

        self.build_button.changed.connect(self.build)
        for w in (self.sm_layer, self.sm_file, self.min_khz, self.max_khz, self.snr_threshold,
                  self.channels):
            w.changed.connect(self.update_preview)
        for w in (self.sm_layer, self.sm_file, self.meas_layer, self.meas_file):
            w.changed.connect(self._update_enabled)
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self._layers_changed()

    # -- choices ---------------------------------------------------------------------------
    def _sm_choices(self, _=None):
        return [(ly.name, ly) for ly in layers_of_kind(self.viewer, "system_matrix")]

    def _meas_choices(self, _=None):
        # any layer type: a measurement may come as a handle without pixels (no axis in mm)
        return [(ly.name, ly) for ly in layers_of_kind(self.viewer, "measurement", None)]

    def _layers_changed(self, event=None):
        self.sm_layer.reset_choices()
        self.meas_layer.reset_choices()
        if self.sm_layer.value is None and self.sm_layer.choices:
            self.sm_layer.value = self.sm_layer.choices[-1]
        if self.meas_layer.value is None and self.meas_layer.choices:
            self.meas_layer.value = self.meas_layer.choices[-1]
        # the sample data's system matrix names its measurement: show it as the chosen file
        companion = nirmpi_meta(self.sm_layer.value).get("measurement") if self.sm_layer.value is not None \
            else None
        if companion and self.meas_layer.value is None and not _file_value(self.meas_file):
            self.meas_file.value = companion
        self._update_enabled()
        self.update_preview()

    def sm_path(self) -> str | None:
        f = _file_value(self.sm_file)
        if f:
            return f
        return nirmpi_meta(self.sm_layer.value).get("source") if self.sm_layer.value is not None else None

    def meas_path(self) -> str | None:
        f = _file_value(self.meas_file)
        if f:
            return f
        if self.meas_layer.value is not None:
            return nirmpi_meta(self.meas_layer.value).get("source")
        # the sample data's system matrix names its measurement (not a layer: no axis in mm)
        if self.sm_layer.value is not None:
            return nirmpi_meta(self.sm_layer.value).get("measurement")
        return None

    def _update_enabled(self, *_):
        sm, meas = self.sm_path(), self.meas_path()
        busy = self.worker is not None and not self.worker.done()
        self.build_button.enabled = bool(sm and meas) and not busy
        if busy:
            return
        if not (sm and meas):
            missing = " and ".join(w for w, p in (("a system matrix", sm), ("a measurement", meas)) if not p)
            self.info.value = f"choose {missing}"
        elif self.session.problem is None or not self._built_from(sm, meas):
            self.info.value = (f"ready: {os.path.basename(sm)} + {os.path.basename(meas)}; "
                               "press Build problem")

    def _built_from(self, sm, meas) -> bool:
        info = self.session.problem_info or {}
        same = lambda a, b: bool(a) and os.path.abspath(a) == os.path.abspath(b)  # noqa: E731
        return same(info.get("sm_path"), sm) and same(info.get("meas_path"), meas)

    # -- parameters ------------------------------------------------------------------------
    def parameters(self) -> dict:
        return dict(min_freq=self.min_khz.value * 1e3, max_freq=self.max_khz.value * 1e3,
                    snr_threshold=self.snr_threshold.value, channels=parse_channels(self.channels.value),
                    background=self.background.value, frames=parse_frames(self.frames.value),
                    average=None if self.average.value == 0 else int(self.average.value))

    def _snr_table(self, path):
        """(channel, frequency Hz, snr) arrays of the SM, from layer metadata or the file."""
        if path in self._snr_cache:
            return self._snr_cache[path]
        rows = None
        lay = self.sm_layer.value
        if lay is not None and nirmpi_meta(lay).get("source") == path:
            rows = nirmpi_meta(lay).get("rows")
        if rows is not None:
            tab = (np.asarray(rows["channel"]), np.asarray(rows["frequency_hz"], float),
                   np.array([np.nan if v is None else v for v in rows["snr"]], float))
        else:
            from ... import mdf

            f = mdf.open(path)
            if f.snr is None:
                tab = None
            else:
                snr = np.asarray(f.snr, float)
                snr = snr[0] if snr.ndim == 3 else snr
                C, K = snr.shape
                ch, k = np.meshgrid(np.arange(C), np.arange(K), indexing="ij")
                tab = (ch.ravel(), np.asarray(f.frequencies, float)[k.ravel()], snr.ravel())
        self._snr_cache[path] = tab
        return tab

    def _meas_changed(self, *_):
        if self.plot_kind.value == PLOT_SPECTRUM:
            self.update_preview()

    def _spectrum(self, path):
        """(frequencies Hz, |mean foreground spectrum| (C, K)) of a measurement, read in a worker
        the first time (a long measurement takes a while); None until it is there."""
        if path in self._spectrum_cache:
            return self._spectrum_cache[path]
        if self._spectrum_worker is None:
            def work():
                from ... import mdf
                from ..reader import mean_spectrum

                f = mdf.open(path)
                mag = np.asarray(mean_spectrum(f), float)
                freqs = np.asarray(f.frequencies, float)
                sel = getattr(f, "available_freq_index", None)
                if sel is not None and len(sel) == mag.shape[1]:
                    freqs = freqs[np.asarray(sel)]
                return path, freqs, mag

            def done(result):
                p, freqs, mag = result
                self._spectrum_cache[p] = (freqs, mag)

            def finished():
                self._spectrum_worker = None
                self.update_preview()

            self._spectrum_worker = start_worker(work, connect={"returned": done, "finished": finished,
                                                                "errored": self._spectrum_failed})
        return None

    def _spectrum_failed(self, exc):
        self._spectrum_cache[self.meas_path()] = exc

    def update_preview(self, *_):
        """Redraw the plot (SNR of the system matrix, or the measurement's spectrum) with the
        current band/threshold and the kept rows marked."""
        ax = self.plot.clear()
        path = self.sm_path()
        if self.plot_kind.value == PLOT_SPECTRUM:
            self._draw_spectrum(ax, path)
            return
        if not path:
            self.plot.redraw()
            return
        try:
            tab = self._snr_table(path)
            chans = parse_channels(self.channels.value)
        except Exception as exc:  # a preview must not raise into Qt
            ax.set_title(str(exc)[:60], fontsize=8)
            self.plot.redraw()
            return
        if tab is None:
            ax.set_title("no SNR stored in the system matrix", fontsize=8)
            self.plot.redraw()
            return
        ch, fr, snr = tab
        lo, hi, thr = self.min_khz.value * 1e3, self.max_khz.value * 1e3, self.snr_threshold.value
        sel = (fr >= lo) & (fr <= hi) & (np.nan_to_num(snr, nan=-1) > thr)
        if chans is not None:
            sel &= np.isin(ch, chans)
        colors = ["#4fc3f7", "#ffb74d", "#81c784"]
        for c in np.unique(ch):
            m = ch == c
            o = np.argsort(fr[m])
            ax.semilogy(fr[m][o] / 1e3, np.maximum(snr[m][o], 1e-3), lw=0.6,
                        color=colors[int(c) % 3], alpha=0.5, label=f"channel {int(c)}")
        ax.plot(fr[sel] / 1e3, np.maximum(snr[sel], 1e-3), ".", ms=2.5, color="#ff5252",
                label=f"kept ({int(sel.sum())})")
        ax.axvspan(lo / 1e3, hi / 1e3, color="#ffffff", alpha=0.07)
        ax.axhline(max(thr, 1e-3), color="#ff5252", lw=0.8, ls="--")
        positive = snr[np.isfinite(snr) & (snr > 0)]
        if positive.size:  # no empty decades under the curves
            ax.set_ylim(bottom=max(1e-3, 0.5 * float(positive.min())))
        ax.set_xlabel("frequency (kHz)")
        ax.set_ylabel("SNR")
        self.plot.legend()
        self.plot.redraw()
        self.preview_rows = int(sel.sum())

    def _kept_rows(self, sm_path):
        """(channel, frequency Hz) arrays of the rows the current settings keep, or None."""
        try:
            tab = self._snr_table(sm_path) if sm_path else None
            chans = parse_channels(self.channels.value)
        except Exception:  # noqa: BLE001 - a preview only
            return None
        if tab is None:
            return None
        ch, fr, snr = tab
        sel = (fr >= self.min_khz.value * 1e3) & (fr <= self.max_khz.value * 1e3) \
            & (np.nan_to_num(snr, nan=-1) > self.snr_threshold.value)
        if chans is not None:
            sel &= np.isin(ch, chans)
        return ch[sel], fr[sel]

    def _draw_spectrum(self, ax, sm_path):
        meas = self.meas_path()
        if not meas:
            ax.set_title("choose a measurement", fontsize=8)
            self.plot.redraw()
            return
        spec = self._spectrum(meas)
        if spec is None:
            ax.set_title("reading the measurement…", fontsize=8)
            self.plot.redraw()
            return
        if isinstance(spec, Exception):
            ax.set_title(str(spec)[:60], fontsize=8)
            self.plot.redraw()
            return
        freqs, mag = spec
        colors = ["#4fc3f7", "#ffb74d", "#81c784"]
        floor = max(float(np.nanmax(mag)) * 1e-9, np.finfo(float).tiny)
        for c in range(mag.shape[0]):
            ax.semilogy(freqs / 1e3, np.maximum(mag[c], floor), lw=0.6, color=colors[c % 3], alpha=0.7,
                        label=f"channel {c}")
        kept = self._kept_rows(sm_path)
        if kept is not None and len(kept[0]):
            kc, kf = kept
            idx = np.clip(np.searchsorted(freqs, kf), 0, freqs.size - 1)
            ok = (kc < mag.shape[0]) & np.isclose(freqs[idx], kf, rtol=1e-6)
            ax.plot(kf[ok] / 1e3, np.maximum(mag[kc[ok], idx[ok]], floor), ".", ms=2.5, color="#ff5252",
                    label=f"kept ({int(ok.sum())})")
        ax.axvspan(self.min_khz.value, self.max_khz.value, color="#ffffff", alpha=0.07)
        ax.set_xlabel("frequency (kHz)")
        ax.set_ylabel("|u| (mean spectrum)")
        self.plot.legend()
        self.plot.redraw()

    # -- build -------------------------------------------------------------------------------
    def build(self, *_):
        """Build the Problem in a worker; returns the worker (tests wait on `finished`)."""
        sm, meas = self.sm_path(), self.meas_path()
        if not sm or not meas:
            notify_error(NirmpiError("Preprocess: choose a system matrix and a measurement first"))
            return None
        try:
            params = self.parameters()
        except NirmpiError as exc:
            notify_error(exc)
            return None

        def work():
            from ...preprocess import build_problem

            return build_problem(sm, meas, **params)

        self.info.value = "building…"
        self.build_button.enabled = False
        self.worker = start_worker(work, connect={"returned": self._done, "errored": self._failed,
                                                  "finished": self._update_enabled})
        return self.worker

    def _done(self, problem):
        info = json_safe(dict(problem.params))
        self.session.set_problem(problem, info)
        chans = sorted(set(int(c) for c in np.asarray(problem.channels)))
        f = np.asarray(problem.frequencies, float)
        self.info.value = (f"{problem.num_rows} rows kept · channels {chans} · "
                           f"{f.min() / 1e3:.0f}–{f.max() / 1e3:.0f} kHz · grid "
                           f"{'x'.join(map(str, problem.grid.shape))}")
        self.update_preview()

    def _failed(self, exc):
        self.info.value = "build failed (see notification)"
        notify_error(exc)
