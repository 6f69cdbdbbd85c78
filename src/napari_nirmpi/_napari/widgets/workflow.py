"""One dock for the whole workflow: the steps as tabs, each in a vertical scroll area.

Five docks stacked in one column grow the main window past a laptop screen (1000 -> 2659 px
as they open). Here the steps share one dock: only the open step takes room, and a step taller
than the screen scrolls instead of pushing buttons below its edge. The tabs keep the order of
the workflow (Preprocess -> Baseline -> Train -> Sample -> Compare); a step's widget is built the
first time its tab is shown, so opening the dock costs only Preprocess (Train's PyTorch import
then runs in a background thread, see `train.TrainWidget`).
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QLabel, QScrollArea, QSizePolicy, QTabWidget, QVBoxLayout, QWidget

from . import DOCK_MAX_WIDTH, DOCK_MIN_WIDTH

# (tab title, tooltip, module, class); the Baseline body is its own module's business
STEPS = (
    ("Preprocess", "1 · system matrix + measurement → the problem", "preprocess", "PreprocessWidget"),
    ("Baseline", "2 · classic reconstruction (Kaczmarz)", "baseline", "BaselineWidget"),
    ("Train", "3 · train the neural implicit representation", "train", "TrainWidget"),
    ("Sample", "4 · the trained field on any grid", "sample", "SampleWidget"),
    ("Compare", "5 · side by side, profiles, PSNR/SSIM", "compare", "CompareWidget"),
)
WORKFLOW_MAX_WIDTH = 440  # Compare's table wants a little more than DOCK_MAX_WIDTH


def _step_class(module: str, cls: str):
    import importlib

    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


class WorkflowWidget(QWidget):
    """The plugin's main dock: one tab per step; `step(name)` gives a step's widget (built on
    demand), `show_step(name)` opens its tab."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):  # noqa: F821
        super().__init__()
        self.viewer = napari_viewer
        self.setMinimumWidth(DOCK_MIN_WIDTH)
        self.setMaximumWidth(WORKFLOW_MAX_WIDTH)
        # never taller than it must be: the main window's minimum height is the sum of its
        # docks' minimum heights, and a laptop screen is 768 px
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Ignored)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.tabs = QTabWidget()
        self.tabs.setUsesScrollButtons(True)
        self.tabs.setDocumentMode(True)
        self.tabs.tabBar().setExpanding(False)
        layout.addWidget(self.tabs)
        self._widgets: dict[str, object] = {}
        self._scrolls: dict[str, QScrollArea] = {}
        for title, tip, _, _ in STEPS:
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            scroll.setMinimumHeight(0)
            placeholder = QLabel(f"{title}…")
            placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
            scroll.setWidget(placeholder)
            self._scrolls[title] = scroll
            i = self.tabs.addTab(scroll, title)
            self.tabs.setTabToolTip(i, tip)
        self.tabs.currentChanged.connect(self._on_tab)
        self._on_tab(0)

    # -- steps -------------------------------------------------------------------------------
    def _on_tab(self, index: int) -> None:
        if 0 <= index < len(STEPS):
            self.step(STEPS[index][0])

    def step(self, name: str):
        """The step's widget (a magicgui Container), built on first use."""
        key = self._key(name)
        if key not in self._widgets:
            _, _, module, cls = next(s for s in STEPS if s[0] == key)
            widget = _step_class(module, cls)(self.viewer)
            native = widget.native
            # inside a scroll area the step may be as wide as the dock: the per-dock cap of the
            # single-step docks would leave a gap or a horizontal scroll bar
            native.setMaximumWidth(WORKFLOW_MAX_WIDTH)
            native.setMinimumWidth(DOCK_MIN_WIDTH - 20)
            # rows keep their natural height; the space below a short step stays empty (a
            # scroll area that fits its widget to the viewport would spread the rows apart)
            page = QWidget()
            page_layout = QVBoxLayout(page)
            page_layout.setContentsMargins(0, 0, 0, 0)
            page_layout.addWidget(native)
            page_layout.addStretch(1)
            self._scrolls[key].setWidget(page)
            self._widgets[key] = widget
        return self._widgets[key]

    def show_step(self, name: str):
        key = self._key(name)
        self.tabs.setCurrentIndex([s[0] for s in STEPS].index(key))
        return self.step(key)

    def scroll_area(self, name: str) -> QScrollArea:
        return self._scrolls[self._key(name)]

    @staticmethod
    def _key(name: str) -> str:
        for title, *_ in STEPS:
            if name.lower() in (title.lower(), title.lower()[:4]):
                return title
        raise KeyError(f"no step {name!r}; steps: {[s[0] for s in STEPS]}")

    @property
    def step_names(self) -> list[str]:
        return [s[0] for s in STEPS]


__all__ = ["WorkflowWidget", "STEPS", "DOCK_MAX_WIDTH"]
