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
    except RuntimeError:  # the Qt widget was deleted before the timer fired
        pass


def wrap_labels(widget) -> None:
    """Word-wrap every magicgui Label inside `widget` (recursively)."""
    from magicgui.widgets import Container, Label

    for child in list(widget) if isinstance(widget, Container) else []:
        if isinstance(child, Label):
            child.native.setWordWrap(True)
        elif isinstance(child, Container):
            wrap_labels(child)
