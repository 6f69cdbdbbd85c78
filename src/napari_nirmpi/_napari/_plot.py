"""Plots for dock widgets: a small matplotlib Qt canvas, and a loss-curve renderer that draws
in a worker thread (Agg, no Qt) into an RGBA array shown by `RgbaView` (a QLabel)."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QLabel, QSizePolicy


class PlotCanvas(FigureCanvasQTAgg):
    """One Axes on a dark background that matches napari's default theme."""

    def __init__(self, width=4.0, height=2.6, dpi=90):
        fig = Figure(figsize=(width, height), dpi=dpi, tight_layout=True)
        fig.patch.set_facecolor("#262930")
        super().__init__(fig)
        self.axes = fig.add_subplot(111)
        self._base_min_height = int(height * dpi * 0.8)
        self.setMinimumHeight(self._base_min_height)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.clear()

    def clear(self):
        ax = self.axes
        ax.clear()
        ax.set_facecolor("#262930")
        for spine in ax.spines.values():
            spine.set_color("#aaaaaa")
        ax.tick_params(colors="#dddddd", labelsize=8)
        ax.xaxis.label.set_color("#dddddd")
        ax.yaxis.label.set_color("#dddddd")
        ax.title.set_color("#dddddd")
        return ax

    def legend(self, below: bool = False):
        """The legend inside the axes, or (below=True, for long layer names) under them, one
        entry per row, the canvas made taller by as much so the plot keeps its height."""
        if below:
            n = len(self.axes.get_legend_handles_labels()[1])
            leg = self.axes.legend(fontsize=7, facecolor="#262930", edgecolor="#666666",
                                   loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=1,
                                   frameon=False)
            self.setMinimumHeight(self._base_min_height + 14 * n)
        else:
            leg = self.axes.legend(fontsize=7, facecolor="#262930", edgecolor="#666666")
        for t in leg.get_texts():
            t.set_color("#dddddd")

    def redraw(self):
        self.draw_idle()


class CurveRenderer:
    """The loss curve drawn OFF the GUI thread: a matplotlib Agg figure (no Qt) rendered to an
    RGBA array that the widget shows in a QLabel. A matplotlib redraw costs tens of ms; done in
    the training worker it costs the event loop nothing (only a ~1 ms pixmap swap).
    Use from one thread only (the worker); lines are updated in place between renders."""

    def __init__(self, dpi: int = 90):
        self.dpi = dpi
        self.fig = None

    def _setup(self):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fig = Figure(dpi=self.dpi)
        fig.patch.set_facecolor("#262930")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(111)
        ax.set_facecolor("#262930")
        for spine in ax.spines.values():
            spine.set_color("#aaaaaa")
        ax.tick_params(colors="#dddddd", labelsize=8)
        ax.set_yscale("log")
        # minor ticks unlabelled: "6×10⁻¹" labels are wider than the margin and push the axis
        # title out of the image
        from matplotlib.ticker import LogFormatterSciNotation, NullFormatter

        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(LogFormatterSciNotation())
        ax.set_xlabel("iteration", color="#dddddd", fontsize=9)
        ax.set_ylabel("relative misfit", color="#dddddd", fontsize=9)
        self.train, = ax.plot([], [], color="#4fc3f7", lw=1.0, label="training")
        self.val, = ax.plot([], [], "o-", color="#ffb74d", ms=2.5, lw=1.0, label="validation")
        self.best = ax.axvline(0, color="#81c784", lw=0.8, ls="--", label="best")
        leg = ax.legend(fontsize=7, facecolor="#262930", edgecolor="#666666", loc="upper right")
        for t in leg.get_texts():
            t.set_color("#dddddd")
        self.fig, self.ax = fig, ax
        self._size = None

    def render(self, iterations, losses, val_iterations, val_losses, best_iteration, size_px):
        """(h, w, 4) uint8 image of the curve at `size_px` = (width, height) pixels."""
        import numpy as np

        if self.fig is None:
            self._setup()
        w, h = max(int(size_px[0]), 120), max(int(size_px[1]), 90)
        if self._size != (w, h):
            self.fig.set_size_inches(w / self.dpi, h / self.dpi)
            # fixed pixel margins: tight_layout costs ~100 ms of GIL-holding Python per call
            # room for the tick labels (1e-03) and the axis titles at 9 pt
            self.fig.subplots_adjust(left=min(0.45, 64 / w), bottom=min(0.45, 42 / h),
                                     right=1 - min(0.2, 8 / w), top=1 - min(0.2, 8 / h))
            self._size = (w, h)
        self.train.set_data(iterations, np.maximum(losses, 1e-12) if len(losses) else [])
        self.val.set_data(val_iterations, np.maximum(val_losses, 1e-12) if len(val_losses) else [])
        b = best_iteration or 0
        self.best.set_xdata([b, b])
        self.best.set_visible(bool(b))
        self.ax.relim()
        self.ax.set_autoscaley_on(True)  # set_ylim below switches it off for the next render
        self.ax.autoscale_view()
        if len(losses):  # at least one decade, so a major (labelled) tick is always in view
            lo, hi = self.ax.get_ylim()
            import math

            self.ax.set_ylim(10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi)))
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba()).copy()


class RgbaView(QLabel):
    """Shows an RGBA uint8 array (e.g. a `CurveRenderer` image); reports the size it wants."""

    def __init__(self, min_height: int = 170):
        super().__init__()
        self.setMinimumHeight(min_height)
        # Ignored: the pixmap's size must not widen the dock (it is rendered to fit the label)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
        self.setStyleSheet("background-color: #262930;")
        self.rgba = None

    def target_size(self) -> tuple[int, int]:
        return max(self.width(), 120), max(self.height(), self.minimumHeight())

    def set_rgba(self, rgba) -> None:
        import numpy as np
        from qtpy.QtGui import QImage, QPixmap

        rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
        h, w = rgba.shape[:2]
        img = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
        self.setPixmap(QPixmap.fromImage(img))  # fromImage copies: `rgba` may be freed
        self.rgba = rgba
