"""Compare: layers side by side, line profiles, PSNR/SSIM against a ground-truth layer.

Every image is first resampled onto the ground truth's grid in physical coordinates (its Grid
comes from layer metadata, or from scale/translate for foreign layers), so a 29² Kaczmarz
image, its 104² up-sampling and a 104² NIR sample are compared on the same voxels.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, Select, Table

from ...errors import NirmpiError
from ..layers import (grid_from_layer, grid_view_enabled, image_2d_or_3d, image_layers, layer_kind,
                      line_mm, set_grid_view, shapes_layers, spatial_units)
from ..workers import notify_error
from . import add_status, fit_dock

PROFILE_LAYER = "profile line"
MIN_OVERLAP = 0.5  # a layer covering less of the ground truth's FOV is not compared


def overlap_fraction(grid, ref) -> float:
    """Fraction of `ref`'s field of view (its last axes) that `grid` covers."""
    nd = min(grid.ndim, ref.ndim)
    lo = np.maximum(np.asarray(grid.lower)[-nd:], np.asarray(ref.lower)[-nd:])
    hi = np.minimum(np.asarray(grid.upper)[-nd:], np.asarray(ref.upper)[-nd:])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    area = float(np.prod(np.asarray(ref.upper)[-nd:] - np.asarray(ref.lower)[-nd:]))
    return inter / area if area > 0 else 0.0


class CompareWidget(Container):
    def __init__(self, napari_viewer: "napari.viewer.Viewer"):  # noqa: F821
        super().__init__(labels=True)
        fit_dock(self, max_width=440)  # the metrics table needs a little more room
        self.viewer = napari_viewer
        self.layers = Select(label="Layers", choices=self._image_choices, allow_multiple=True)
        self.layers.native.setMaximumHeight(110)
        self.ground_truth = ComboBox(label="Ground truth", choices=self._image_choices, nullable=True)
        self.method = ComboBox(label="Resampling", choices=["bicubic", "bilinear"], value="bicubic",
                               tooltip="how images are brought onto the ground truth's grid")
        self.side_by_side = CheckBox(text="side by side (grid view)", value=False)
        self.metrics_button = PushButton(text="PSNR / SSIM")
        self.table = Table(value={"data": [], "columns": ["layer", "PSNR (dB)", "SSIM"]})
        self.table.native.setMinimumHeight(60)
        self.shapes = ComboBox(label="Line (Shapes)", choices=self._shapes_choices, nullable=True)
        self.add_line_button = PushButton(text="Add line")
        self.profile_button = PushButton(text="Plot profile")
        self.info = Label(value="")
        self.extend([self.layers, self.ground_truth, self.method, self.side_by_side,
                     self.metrics_button, self.shapes,
                     Container(widgets=[self.add_line_button, self.profile_button], layout="horizontal",
                               labels=False)])
        # the table and the status span the dock (not the value column of a form row)
        self.native.layout().insertWidget(self.native.layout().count() - 2, self.table.native)
        add_status(self, self.info)
        from .._plot import PlotCanvas

        self.plot = PlotCanvas(height=2.6)
        self.native.layout().addWidget(self.plot)
        self._fit_table()
        self.results: dict[str, dict] = {}
        self.warning = ""
        self.metrics_button.changed.connect(self.compute_metrics)
        self.profile_button.changed.connect(self.plot_profile)
        self.add_line_button.changed.connect(self.add_line)
        self.side_by_side.changed.connect(self.set_side_by_side)
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self._layers_changed()

    # -- choices ---------------------------------------------------------------------------
    def _image_choices(self, _=None):
        return [(ly.name, ly) for ly in image_layers(self.viewer)
                if layer_kind(ly) not in ("system_matrix", "measurement")]

    def _shapes_choices(self, _=None):
        return [(ly.name, ly) for ly in shapes_layers(self.viewer)]

    def _layers_changed(self, event=None):
        new = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        self.layers.reset_choices()
        self.ground_truth.reset_choices()
        self.shapes.reset_choices()
        if new is not None and layer_kind(new) == "ground_truth" and new in [v for _, v in self._image_choices()]:
            self.ground_truth.value = new  # a ground truth just added is the one to compare with
        elif self.ground_truth.value is None:
            gts = [v for _, v in self._image_choices() if layer_kind(v) == "ground_truth"]
            if gts:
                self.ground_truth.value = gts[-1]
        if self.shapes.value is None and self.shapes.choices:
            self.shapes.value = self.shapes.choices[-1]
        if not self.layers.value:
            recon = [v for _, v in self._image_choices() if layer_kind(v) == "reconstruction"]
            if recon:
                self.layers.value = recon

    def chosen(self) -> list:
        return list(self.layers.value or [])

    # -- side by side ------------------------------------------------------------------------
    def set_side_by_side(self, enabled=None):
        enabled = self.side_by_side.value if enabled is None else bool(enabled)
        show = self.chosen() + ([self.ground_truth.value] if self.ground_truth.value is not None else [])
        if enabled and show:
            # grid view gives every visible layer a cell: show only the compared ones, each titled;
            # the profile line would get a cell of its own (empty but for the line): hidden
            for ly in self.viewer.layers:
                ly.visible = ly in show
                ly.name_overlay.visible = ly in show
        elif not enabled:
            for ly in self.viewer.layers:
                ly.name_overlay.visible = False
            if PROFILE_LAYER in self.viewer.layers:
                self.viewer.layers[PROFILE_LAYER].visible = True
        set_grid_view(self.viewer, enabled)
        if self.side_by_side.value != enabled:  # called from code: keep the checkbox in step
            with self.side_by_side.changed.blocked():
                self.side_by_side.value = enabled
        self.viewer.reset_view()
        return grid_view_enabled(self.viewer)

    # -- metrics ---------------------------------------------------------------------------
    def _on_gt(self, layer, gt_grid):
        from ...resample import resample_to_grid

        img = image_2d_or_3d(layer)
        g = grid_from_layer(layer)
        if img.shape != g.shape:
            raise NirmpiError(f"layer {layer.name!r}: data {img.shape} is not one image on grid {g.shape}; "
                              "choose a single 2D/3D image")
        if g == gt_grid:
            return img
        return resample_to_grid(img, g, gt_grid, method=self.method.value).astype(np.float64)

    def compute_metrics(self, *_):
        """PSNR/SSIM (after least-squares intensity fit) of each chosen layer vs the ground truth."""
        from ...metrics import psnr, ssim

        gt_layer = self.ground_truth.value
        skipped = []
        try:
            if gt_layer is None:
                raise NirmpiError("Compare: choose a ground-truth layer")
            layers = [ly for ly in self.chosen() if ly is not gt_layer]
            if not layers:
                raise NirmpiError("Compare: choose at least one layer to compare")
            gt_grid = grid_from_layer(gt_layer)
            gt = image_2d_or_3d(gt_layer)
            results = {}
            for ly in layers:
                frac = overlap_fraction(grid_from_layer(ly), gt_grid)
                if frac < MIN_OVERLAP:
                    skipped.append((ly.name, frac))
                    continue
                img = self._on_gt(ly, gt_grid)
                results[ly.name] = {"grid": "x".join(map(str, image_2d_or_3d(ly).shape)),
                                    "psnr": float(psnr(img, gt)), "ssim": float(ssim(img, gt))}
        except Exception as exc:
            notify_error(exc)
            return None
        self.results = results
        # layer names as a stretching first column (not row headers): all columns fit the dock;
        # numbers as text with the digits that mean something (a float cell shows "10.7500")
        self.table.value = {"data": [[name, f"{r['psnr']:.2f}", f"{r['ssim']:.3f}"]
                                     for name, r in results.items()],
                            "index": [str(i + 1) for i in range(len(results))],  # hidden
                            "columns": ["layer", "PSNR (dB)", "SSIM"]}
        self._fit_table()
        msg = f"vs {gt_layer.name} on its {'x'.join(map(str, gt.shape))} grid " \
              f"({self.method.value} resampling, intensity fitted)"
        warn = self._overlap_warning(gt_layer, gt_grid, skipped)
        if warn:
            from napari.utils.notifications import show_warning

            show_warning(warn)
            msg = warn + ("\n" + msg if results else "")
        self.info.value = msg
        self.warning = warn
        return results

    @staticmethod
    def _overlap_warning(gt_layer, gt_grid, skipped) -> str:
        if not skipped:
            return ""
        lo, hi = np.asarray(gt_grid.lower) * 1e3, np.asarray(gt_grid.upper) * 1e3
        box = " × ".join(f"{a:.3g}…{b:.3g}" for a, b in zip(lo[::-1], hi[::-1]))
        names = ", ".join(f"'{n}' ({100 * f:.0f} %)" for n, f in skipped)
        hint = ""
        if tuple(np.asarray(gt_layer.scale, float)[-gt_grid.ndim:]) == (1.0,) * gt_grid.ndim:
            hint = " The ground truth has no scale (1 per pixel): give it its voxel size in mm."
        return (f"not compared: the field of view of {names} covers less than "
                f"{100 * MIN_OVERLAP:.0f} % of the ground truth's ({box} mm).{hint}")

    def _fit_table(self):
        """Columns: the name stretches, numbers fit; height: every row, no scroll bar."""
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QHeaderView

        from qtpy.QtWidgets import QStyledItemDelegate

        t = self.table.native
        if type(t.itemDelegate()) is not QStyledItemDelegate:
            # magicgui's delegate pads every number to 4 decimals ("10.7500"): show the text as is
            t.setItemDelegate(QStyledItemDelegate(t))
        t.verticalHeader().setVisible(False)
        t.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        t.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        h = t.horizontalHeader()
        if h.count() >= 3:
            h.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
            for c in (1, 2):
                h.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        t.resizeRowsToContents()
        rows = sum(t.rowHeight(r) for r in range(t.rowCount()))
        height = h.height() + rows + 2 * t.frameWidth() + 2
        t.setMinimumHeight(height)
        t.setMaximumHeight(height)

    # -- profile ---------------------------------------------------------------------------
    def add_line(self, *_):
        """A Shapes layer with a horizontal line through the FOV centre of the ground truth
        (or first chosen layer), ready to be moved."""
        ref = self.ground_truth.value or (self.chosen() or [None])[0]
        if ref is None:
            notify_error(NirmpiError("Compare: no image layer to place a line on"))
            return None
        if grid_view_enabled(self.viewer):
            # napari's grid gives every visible layer its own cell: a line layer would sit in an
            # empty one. The line is drawn (and moved) over the images, in the overlay view.
            self.set_side_by_side(False)
            self.info.value = "side by side is off while you place the line (tick it again after)"
        g = grid_from_layer(ref)
        lo, hi = np.asarray(g.lower) * 1e3, np.asarray(g.upper) * 1e3
        c = (lo + hi) / 2
        line = np.array([[c[-2], lo[-1]], [c[-2], hi[-1]]])
        if PROFILE_LAYER in self.viewer.layers:
            layer = self.viewer.layers[PROFILE_LAYER]
            layer.data = [line]
            layer.shape_type = ["line"]
        else:
            layer = self.viewer.add_shapes([line], shape_type="line", name=PROFILE_LAYER,
                                           edge_color="cyan", edge_width=0.6,
                                           units=spatial_units(2))
        layer.visible = True
        self.shapes.value = layer
        return layer

    def plot_profile(self, *_):
        from ...metrics import line_profile

        try:
            layers = self.chosen()
            if self.ground_truth.value is not None and self.ground_truth.value not in layers:
                layers = [self.ground_truth.value] + layers
            if not layers:
                raise NirmpiError("Compare: choose layers for the profile")
            start, end = line_mm(self.shapes.value, 2)
            ax = self.plot.clear()
            profiles = {}
            for ly in layers:
                img = image_2d_or_3d(ly)
                g = grid_from_layer(ly)
                if img.ndim != 2:
                    raise NirmpiError(f"line profile: layer {ly.name!r} is not a 2D image")
                d, v = line_profile(img, g, start, end, num=300)
                peak = float(np.max(np.abs(v))) or 1.0
                profiles[ly.name] = (d, v)
                ax.plot(d, v / peak, lw=1.2 if layer_kind(ly) != "ground_truth" else 1.8,
                        label=ly.name, ls="--" if layer_kind(ly) == "ground_truth" else "-")
            ax.set_xlabel("distance along line (mm)")
            ax.set_ylabel("normalised intensity")
            self.plot.legend(below=True)
            self.plot.redraw()
        except Exception as exc:
            notify_error(exc)
            return None
        self.profiles = profiles
        return profiles
