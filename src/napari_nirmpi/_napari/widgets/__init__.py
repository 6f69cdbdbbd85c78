"""Dock widgets, one per workflow step: Preprocess -> Baseline -> Train -> Sample -> Compare."""

# Docks are capped in width so the canvas keeps most of the window (Qt gives a dock area the
# widest sizeHint of its docks; a matplotlib canvas or a long label would otherwise widen it).
DOCK_MAX_WIDTH = 360
DOCK_MIN_WIDTH = 260


def fit_dock(widget, max_width: int = DOCK_MAX_WIDTH) -> None:
    """Cap a dock widget's width (a magicgui Container: its native QWidget); once its children
    exist (next event-loop turn), let its labels wrap instead of being cut at the dock's edge."""
    from qtpy.QtCore import QTimer

    native = widget.native
    native.setMinimumWidth(DOCK_MIN_WIDTH)
    native.setMaximumWidth(max_width)
    wrap_labels(widget)
    QTimer.singleShot(0, lambda: _wrap_if_alive(widget))


def _wrap_if_alive(widget) -> None:
    try:
        wrap_labels(widget)
        scroll_in_dock(widget)
    except RuntimeError:  # the Qt widget was deleted before the timer fired
        pass


def scroll_in_dock(widget) -> None:
    """A single step docked on its own (napari puts the widget straight into a QDockWidget)
    gets a vertical scroll area between dock and widget: several steps stacked in one column then
    share the window's height instead of growing it past the screen. The workflow dock scrolls
    its steps itself (their parent is not a dock: nothing happens)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget, QFrame, QScrollArea

    native = widget.native
    dock = native.parentWidget()
    if not isinstance(dock, QDockWidget) or dock.widget() is not native:
        return
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setMinimumWidth(native.minimumWidth() + 16)
    scroll.setMaximumWidth(native.maximumWidth() + 16)
    scroll._magic_widget = widget  # napari's QtViewerDockWidget.inner_widget() looks for it
    scroll.setWidget(native)
    dock.setWidget(scroll)


def wrap_labels(widget) -> None:
    """Word-wrap every magicgui Label inside `widget` (recursively)."""
    from magicgui.widgets import Container, Label

    for child in list(widget) if isinstance(widget, Container) else []:
        if isinstance(child, Label):
            child.native.setWordWrap(True)
        elif isinstance(child, Container):
            wrap_labels(child)


def add_status(widget, *labels) -> None:
    """Put status Labels below a Container's rows at the full width of the dock, word-wrapped.

    In a labelled Container a Label sits in the narrow value column of a form row, where a long
    status is cut off; added to the layout directly it spans the dock and grows in height."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QSizePolicy

    for lab in labels:
        q = lab.native
        q.setWordWrap(True)
        q.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # Ignored width: a long status never widens the dock (which would resize the canvas)
        q.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        q.setContentsMargins(4, 2, 4, 2)
        widget.native.layout().addWidget(q)
