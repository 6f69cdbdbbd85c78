"""A small matplotlib canvas for dock widgets (Qt via qtpy; the only QWidget the plugin makes)."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy


class PlotCanvas(FigureCanvasQTAgg):
    """One Axes on a dark background that matches napari's default theme."""

    def __init__(self, width=4.0, height=2.6, dpi=90):
        fig = Figure(figsize=(width, height), dpi=dpi, tight_layout=True)
        fig.patch.set_facecolor("#262930")
        super().__init__(fig)
        self.axes = fig.add_subplot(111)
        self.setMinimumHeight(int(height * dpi * 0.8))
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

    def legend(self):
        leg = self.axes.legend(fontsize=7, facecolor="#262930", edgecolor="#666666")
        for t in leg.get_texts():
            t.set_color("#dddddd")

    def redraw(self):
        self.draw_idle()
