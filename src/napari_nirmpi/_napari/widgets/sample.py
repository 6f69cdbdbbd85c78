"""Sample: render a trained field on any grid (or sub-region) of its FOV; load/save fields."""

from __future__ import annotations

import os

from magicgui.widgets import ComboBox, FileEdit, Label, LineEdit, PushButton

from ...errors import NirmpiError
from ...grid import parse_region, parse_shape
from ..layers import image_layer_kwargs, rectangle_mm, set_or_add_image, shapes_layers
from ..workers import notify_error, start_worker
from . import add_status
from ._base import StepWidget

REGION_FULL, REGION_SHAPES, REGION_MM = "full field of view", "Shapes rectangle", "mm values"


class SampleWidget(StepWidget):
    """Pick a field (trained in this session or loaded from a checkpoint), a grid (N, AxB or a
    factor xF of the native grid) and a region; "Sample" adds a layer in mm."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):  # noqa: F821
        super().__init__(napari_viewer)
        # not nullable: a nullable ComboBox lists a blank entry; with no field it is simply empty
        self.field = ComboBox(label="Field", choices=self._field_choices)
        self.field.native.setSizeAdjustPolicy(
            self.field.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.field.native.setMinimumContentsLength(12)
        self.grid = LineEdit(label="Grid", value="104", tooltip="N, AxB (AxBxC), or xF = F times the native grid")
        self.region = ComboBox(label="Region", choices=[REGION_FULL, REGION_SHAPES, REGION_MM],
                               value=REGION_FULL)
        self.shapes = ComboBox(label="Shapes layer", choices=self._shapes_choices, nullable=True)
        self.region_mm = LineEdit(label="Region (mm)", value="",
                                  tooltip="x0, x1, y0, y1 (3D: then z0, z1), as nirmpi sample --region")
        self.sample_button = PushButton(text="Sample")
        self.load_file = FileEdit(label="Checkpoint", mode="r", filter="*.pt")
        self.load_button = PushButton(text="Load field")
        self.save_file = FileEdit(label="Save as", mode="w", filter="*.pt")
        self.save_button = PushButton(text="Save field")
        self.info = Label(value="train a field (Train) or load a checkpoint")
        self.extend([self.field, self.grid, self.region, self.shapes, self.region_mm,
                     self.sample_button, self.load_file, self.load_button, self.save_file,
                     self.save_button])
        add_status(self, self.info)
        self.sample_button.changed.connect(self.run)
        self.load_button.changed.connect(self.load)
        self.save_button.changed.connect(self.save)
        self.region.changed.connect(self._update_enabled)
        self.session.fields_changed.connect(self._fields_changed)
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self._layers_changed()
        self._fields_changed()

    def _field_choices(self, _=None):
        return list(self.session.fields)

    def _shapes_choices(self, _=None):
        return [(ly.name, ly) for ly in shapes_layers(self.viewer)]

    def _fields_changed(self, *_):
        self.field.reset_choices()
        preferred = self.session.preferred_field()
        if preferred is not None:
            self.field.value = preferred
            newest = list(self.session.fields)[-1]
            if preferred != newest:
                info = self.session.field_info
                self.info.value = (f"'{newest}' is listed, but '{preferred}' stays selected: its held-out "
                                   f"misfit is lower ({info[preferred]['misfit']:.3g} vs "
                                   f"{info[newest]['misfit']:.3g})")
        self._update_enabled()

    def _layers_changed(self, *_):
        self.shapes.reset_choices()
        if self.shapes.value is None and self.shapes.choices:
            self.shapes.value = self.shapes.choices[-1]

    def _update_enabled(self, *_):
        has = self.field.value is not None
        busy = self.worker is not None and not self.worker.done()
        self.sample_button.enabled = has and not busy
        self.save_button.enabled = has
        self.shapes.visible = self.region.value == REGION_SHAPES
        self.region_mm.visible = self.region.value == REGION_MM

    def current_field(self):
        if self.field.value is None:
            raise NirmpiError("Sample: no field; train one (Train widget) or load a checkpoint")
        return self.session.fields[self.field.value]

    def target_shape(self, native_shape):
        return parse_shape(self.grid.value, native=native_shape)

    def region_m(self, ndim):
        """(lower, upper) in metres, or None for the full FOV."""
        if self.region.value == REGION_FULL:
            return None
        if self.region.value == REGION_SHAPES:
            lo, hi = rectangle_mm(self.shapes.value, ndim)
            return tuple(v * 1e-3 for v in lo), tuple(v * 1e-3 for v in hi)
        return parse_region(self.region_mm.value, ndim)

    def run(self, *_):
        try:
            fld = self.current_field()
            shape = self.target_shape(fld.grid.shape)
            region = self.region_m(fld.grid.ndim)
        except NirmpiError as exc:
            notify_error(exc)
            return None
        name_field = self.field.value

        def work():
            from ...sample import sample

            return sample(fld, shape, region)

        self._params = dict(field=name_field, shape=list(shape),
                            region_m=None if region is None else [list(region[0]), list(region[1])],
                            config=fld.config, problem=fld.params)
        self.sample_button.enabled = False
        self.info.value = "sampling…"
        self.worker = start_worker(work, connect={"returned": self._done, "errored": self._failed,
                                                  "finished": self._update_enabled})
        return self.worker

    def _done(self, result):
        img, grid = result
        p = self._params
        tag = "x".join(map(str, grid.shape)) + ("" if p["region_m"] is None else " region")
        name = f"NIR sample {tag}"
        src = [s for s in (p["problem"].get("sm_path"), p["problem"].get("meas_path")) if s]
        kw = image_layer_kwargs(name, "reconstruction", grid, source=src or None, parameters=p,
                                method="nir")
        set_or_add_image(self.viewer, img, colormap="inferno", **kw)
        self.info.value = f"added '{name}'"

    def _failed(self, exc):
        self.info.value = "sampling failed (see notification)"
        notify_error(exc)

    def load(self, *_):
        path = str(self.load_file.value or "")
        try:
            if not path or os.path.isdir(path):
                raise NirmpiError("Load field: choose a checkpoint file (*.pt)")
            from ...nir.checkpoint import load

            fld = load(path)
        except Exception as exc:
            notify_error(exc)
            return None
        name = self.session.add_field(f"loaded {os.path.basename(path)}", fld)
        self.info.value = f"loaded '{name}'"
        return name

    def save(self, *_):
        path = str(self.save_file.value or "")
        try:
            if not path or os.path.isdir(path):
                raise NirmpiError("Save field: choose a file name (*.pt)")
            from ...nir.checkpoint import save

            out = save(self.current_field(), path, force=True)
        except Exception as exc:
            notify_error(exc)
            return None
        self.info.value = f"saved {out}"
        return out
