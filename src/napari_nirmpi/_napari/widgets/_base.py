"""The common start of the step widgets."""

from magicgui.widgets import Container

from ..session import get_session
from . import fit_dock


class StepWidget(Container):
    """A labelled, width-capped Container bound to the viewer's session (Problem, fields)."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        fit_dock(self)
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.worker = None
