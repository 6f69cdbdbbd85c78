"""Continuous tracer phantoms for simulated MPI data.

Every phantom is defined in physical coordinates (metres, image axis order (y, x)) and renders
its ground truth on ANY `Grid` as the fraction of each voxel it fills (a concentration in
[0, 1]; shapes of constant concentration 1), by supersampling a point-in-shape test
(default 8 x 8 sub-samples per voxel in 2D). The same phantom therefore yields consistent
ground truth at 29², 54², 104², ... and the simulator measures it on a grid finer than the
native one (no inverse crime).

3D grids: the 2D shape is extruded along z over a slab of `thickness` metres centred at z = 0
(the slab's voxel fraction is exact, so a 3D render is slab_fraction(z) * render_2d(y, x)).
The volume phantoms "cone", "cubes" and "tubes" (after OpenMPIData's shape, concentration and
resolution phantoms) are true 3D shapes; on a 2D grid they render their z = 0 section.

Dynamic phantoms (`dynamic = True`, e.g. "bolus") take a normalised time t in [0, 1] (the
progress through the frame series; frame i of F is at t = i / (F - 1)).

    PHANTOMS["spiral"]()                       -> Spiral with the defaults
    phantom.render(grid, t=None)               -> float32 (*grid.shape) in [0, 1]
    phantom.render_frames(grid, times)         -> float32 (F, *grid.shape)
    phantom.to_dict() / phantom_from_dict(d)   -> JSON-serialisable spec and back
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Sequence

import numpy as np

from .errors import NirmpiError
from .grid import Grid

__all__ = [
    "Phantom", "Spiral", "Resolution", "Point", "Ellipses", "Bolus", "Composite",
    "VolumePhantom", "Cone", "Cubes", "Tubes",
    "PHANTOMS", "make_phantom", "phantom_from_dict",
]

_MM = 1e-3


def _lists(value):
    """Tuples -> lists recursively (JSON)."""
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class Phantom:
    """Base class: subclasses implement `_value(y, x, t)` on 2D point arrays (metres)."""

    name: ClassVar[str] = "phantom"
    dynamic: ClassVar[bool] = False
    thickness: float = 4 * _MM  # slab thickness (m) when rendered on a 3D grid

    # -- to implement -------------------------------------------------------------------------
    def _value(self, y: np.ndarray, x: np.ndarray, t: float) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def area(self, t: float | None = None) -> float:
        """Integral of the 2D concentration (m²), analytic where possible."""
        raise NotImplementedError  # pragma: no cover

    def volume(self, t: float | None = None) -> float:
        """Integral of the extruded 3D concentration (m³)."""
        return self.area(t) * self.thickness

    # -- rendering ------------------------------------------------------------------------------
    def render(self, grid: Grid, t: float | None = None, supersample: int | None = None) -> np.ndarray:
        """Voxel fractions (concentration) on `grid`, float32 of grid.shape, values in [0, 1]."""
        if not isinstance(grid, Grid):
            raise NirmpiError(f"phantom {self.name}: render needs a Grid, got {type(grid).__name__}")
        t = self._check_t(t)
        s = int(supersample or 8)
        if s < 1:
            raise NirmpiError(f"phantom {self.name}: supersample must be >= 1, got {supersample}")
        if grid.ndim == 2:
            return self._render2d(grid, t, s)
        # 3D: exact slab fraction along z times the 2D fractions in (y, x)
        plane = Grid(grid.shape[1:], grid.fov[1:], grid.center[1:])
        img2 = self._render2d(plane, t, s)
        zc = grid.axis_centers()[0]
        dz = grid.voxel_size[0]
        lo = np.maximum(zc - dz / 2, -self.thickness / 2)
        hi = np.minimum(zc + dz / 2, self.thickness / 2)
        slab = np.clip(hi - lo, 0.0, None) / dz
        return (slab[:, None, None] * img2[None]).astype(np.float32)

    def render_frames(self, grid: Grid, times: Sequence[float], supersample: int | None = None) -> np.ndarray:
        """Ground truth per frame: float32 (F, *grid.shape)."""
        return np.stack([self.render(grid, t, supersample) for t in times]).astype(np.float32)

    def _check_t(self, t):
        if t is None:
            return 0.0
        t = float(t)
        if not np.isfinite(t):
            raise NirmpiError(f"phantom {self.name}: time must be finite, got {t}")
        return t

    def _render2d(self, grid: Grid, t: float, s: int) -> np.ndarray:
        ny, nx = grid.shape
        vy, vx = grid.voxel_size
        u = ((np.arange(s) + 0.5) / s - 0.5)
        cy, cx = grid.axis_centers()
        ys = (cy[:, None] + u[None, :] * vy).ravel()   # (ny*s,)
        xs = (cx[:, None] + u[None, :] * vx).ravel()   # (nx*s,)
        out = np.empty((ny, nx), np.float64)
        rows = max(1, int(2_000_000 // max(1, nx * s * s)))  # voxel rows per chunk (memory)
        for r0 in range(0, ny, rows):
            r1 = min(ny, r0 + rows)
            yy = ys[r0 * s:r1 * s, None]
            vals = self._value(np.broadcast_to(yy, (yy.shape[0], xs.size)),
                               np.broadcast_to(xs[None, :], (yy.shape[0], xs.size)), t)
            out[r0:r1] = np.asarray(vals, np.float64).reshape(r1 - r0, s, nx, s).mean(axis=(1, 3))
        return out.astype(np.float32)

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"name": self.name, "params": {k: _lists(v) for k, v in asdict(self).items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Phantom":
        return phantom_from_dict(d)


def _tuple_params(cls, params: dict) -> dict:
    """JSON lists back to tuples (hashable, frozen dataclasses)."""
    out = {}
    names = {f.name for f in fields(cls)}
    for k, v in params.items():
        if k not in names:
            raise NirmpiError(f"phantom {cls.name}: unknown parameter {k!r} (expected one of {sorted(names)})")
        out[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
    return out


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spiral(Phantom):
    """Archimedean spiral tube r = r0 + pitch * θ / 2π, θ in [0, 2π turns], rounded ends.

    Defaults follow the paper's 29 x 29 mm spiral: line width 0.7 mm (below the 1 mm native
    voxel pitch), 2.25 turns, pitch 4 mm, outer radius 10.5 mm (inside the 24 mm drive FOV).
    The pitch is chosen so that the default simulated scanner (25 nm cores, 1 T/m) resolves the
    turns at the native 29² grid with Kaczmarz; at 3 mm the inner turns merge.
    """

    name: ClassVar[str] = "spiral"
    r0: float = 1.5 * _MM
    pitch: float = 4.0 * _MM
    turns: float = 2.25
    width: float = 0.7 * _MM
    rotation: float = 0.0          # rad, angle of the start point
    center: tuple = (0.0, 0.0)     # (y, x) m

    def _r(self, theta):
        return self.r0 + self.pitch * theta / (2 * np.pi)

    def _value(self, y, x, t):
        dy, dx = y - self.center[0], x - self.center[1]
        rho = np.hypot(dy, dx)
        phi = np.mod(np.arctan2(dy, dx) - self.rotation, 2 * np.pi)
        tmax = 2 * np.pi * self.turns
        k = self.pitch / (2 * np.pi)
        dist = np.full(rho.shape, np.inf)
        for n in range(int(math.ceil(self.turns)) + 1):
            th = phi + 2 * np.pi * n
            r = self._r(th)
            # radial gap times cos(pitch angle) = perpendicular distance to first order
            d = np.abs(rho - r) * r / np.sqrt(r * r + k * k)
            dist = np.minimum(dist, np.where(th <= tmax, d, np.inf))
        for th in (0.0, tmax):  # rounded end caps
            r = self._r(th)
            py, px = r * np.sin(th + self.rotation), r * np.cos(th + self.rotation)
            dist = np.minimum(dist, np.hypot(dy - py, dx - px))
        return (dist <= self.width / 2).astype(np.float32)

    def length(self) -> float:
        th = np.linspace(0.0, 2 * np.pi * self.turns, 200001)
        k = self.pitch / (2 * np.pi)
        ds = np.sqrt(self._r(th) ** 2 + k * k)
        return float(np.sum((ds[1:] + ds[:-1]) / 2 * np.diff(th)))

    def area(self, t=None) -> float:
        return self.length() * self.width + np.pi * self.width ** 2 / 4


@dataclass(frozen=True)
class Resolution(Phantom):
    """Pairs of dots at decreasing centre-to-centre spacing, one pair per row."""

    name: ClassVar[str] = "resolution"
    spacings: tuple = (8.0 * _MM, 6.0 * _MM, 4.5 * _MM, 3.5 * _MM, 2.5 * _MM)
    rows: tuple = (-8.0 * _MM, -4.0 * _MM, 0.0, 4.0 * _MM, 8.0 * _MM)   # y of each pair
    diameter: float = 1.0 * _MM

    def __post_init__(self):
        if len(self.spacings) != len(self.rows):
            raise NirmpiError(f"phantom resolution: {len(self.spacings)} spacings but {len(self.rows)} rows")
        if min(self.spacings) <= self.diameter:
            raise NirmpiError("phantom resolution: every spacing must exceed the dot diameter")

    def centers(self):
        return [(yr, sx * sp / 2) for sp, yr in zip(self.spacings, self.rows) for sx in (-1, 1)]

    def _value(self, y, x, t):
        inside = np.zeros(y.shape, bool)
        r2 = (self.diameter / 2) ** 2
        for cy, cx in self.centers():
            inside |= (y - cy) ** 2 + (x - cx) ** 2 <= r2
        return inside.astype(np.float32)

    def area(self, t=None) -> float:
        return len(self.centers()) * np.pi * self.diameter ** 2 / 4


@dataclass(frozen=True)
class Point(Phantom):
    """A single small dot off the centre (point spread / FWHM)."""

    name: ClassVar[str] = "point"
    diameter: float = 1.0 * _MM
    center: tuple = (2.6 * _MM, -3.4 * _MM)   # (y, x), deliberately not on a voxel centre

    def _value(self, y, x, t):
        return (((y - self.center[0]) ** 2 + (x - self.center[1]) ** 2) <= (self.diameter / 2) ** 2).astype(np.float32)

    def area(self, t=None) -> float:
        return np.pi * self.diameter ** 2 / 4


# modified Shepp-Logan (Toft): value, semi-axis along x, semi-axis along y, x0, y0, angle (deg)
_SHEPP_LOGAN = (
    (1.0, .6900, .9200, 0.00, 0.0000, 0.0),
    (-.8, .6624, .8740, 0.00, -.0184, 0.0),
    (-.2, .1100, .3100, 0.22, 0.0000, -18.0),
    (-.2, .1600, .4100, -.22, 0.0000, 18.0),
    (0.1, .2100, .2500, 0.00, 0.3500, 0.0),
    (0.1, .0460, .0460, 0.00, 0.1000, 0.0),
    (0.1, .0460, .0460, 0.00, -.1000, 0.0),
    (0.1, .0460, .0230, -.08, -.6050, 0.0),
    (0.1, .0230, .0230, 0.00, -.6060, 0.0),
    (0.1, .0230, .0460, 0.06, -.6050, 0.0),
)


@dataclass(frozen=True)
class Ellipses(Phantom):
    """Shepp-Logan-like sum of ellipses (modified intensities, values in [0, 1]).

    `ellipses`: (value, a_x, b_y, x0, y0, angle_deg) in units of `scale` metres.
    """

    name: ClassVar[str] = "ellipses"
    scale: float = 10.5 * _MM
    ellipses: tuple = _SHEPP_LOGAN

    def _value(self, y, x, t):
        out = np.zeros(y.shape, np.float32)
        for v, a, b, x0, y0, ang in self.ellipses:
            c, s = math.cos(math.radians(ang)), math.sin(math.radians(ang))
            dx, dy = x - x0 * self.scale, y - y0 * self.scale
            u, w = c * dx + s * dy, -s * dx + c * dy
            out += np.float32(v) * ((u / (a * self.scale)) ** 2 + (w / (b * self.scale)) ** 2 <= 1.0)
        return np.clip(out, 0.0, 1.0)  # guards float round-off; the nesting keeps the sum in [0, 1]

    def area(self, t=None) -> float:
        return float(sum(v * np.pi * a * b for v, a, b, *_ in self.ellipses) * self.scale ** 2)


@dataclass(frozen=True)
class Bolus(Phantom):
    """A tracer bolus moving along a curved (circular-arc) vessel; t in [0, 1] is the progress.

    The vessel is the arc of radius `radius` around `arc_center` (y, x) between `angles` (rad),
    `width` wide; the bolus fills an arc-length `length` of it. At t = 0 its tail is at the
    vessel's start, at t = 1 its head at the vessel's end; flat ends, so its area is exactly
    length * width at every t.
    """

    name: ClassVar[str] = "bolus"
    dynamic: ClassVar[bool] = True
    radius: float = 9.0 * _MM
    arc_center: tuple = (-4.0 * _MM, 0.0)
    angles: tuple = (math.radians(20.0), math.radians(160.0))
    width: float = 1.5 * _MM
    length: float = 4.0 * _MM

    def __post_init__(self):
        if self.length >= self.radius * (self.angles[1] - self.angles[0]):
            raise NirmpiError("phantom bolus: the bolus length must be shorter than the vessel")

    def head_tail(self, t: float):
        a0, a1 = self.angles
        span = self.length / self.radius
        t = min(max(float(t), 0.0), 1.0)
        tail = a0 + t * (a1 - a0 - span)
        return tail + span, tail

    def _value(self, y, x, t):
        head, tail = self.head_tail(t)
        dy, dx = y - self.arc_center[0], x - self.arc_center[1]
        rho = np.hypot(dy, dx)
        ang = np.arctan2(dy, dx)
        inside = (np.abs(rho - self.radius) <= self.width / 2) & (ang >= tail) & (ang <= head)
        return inside.astype(np.float32)

    def area(self, t=None) -> float:
        return self.length * self.width


@dataclass(frozen=True)
class Composite(Phantom):
    """The sum of other phantoms (given as their dicts); may exceed 1 where parts overlap."""

    name: ClassVar[str] = "sum"
    parts: tuple = ()

    @property
    def _parts(self):
        return [phantom_from_dict(json.loads(p) if isinstance(p, str) else p) for p in self.parts]

    @property
    def dynamic(self):  # type: ignore[override]
        return any(p.dynamic for p in self._parts)

    def _value(self, y, x, t):
        out = np.zeros(y.shape, np.float32)
        for p in self._parts:
            out += p._value(y, x, t)
        return out

    def area(self, t=None) -> float:
        return float(sum(p.area(t) for p in self._parts))

    @classmethod
    def of(cls, *phantoms: Phantom, thickness: float = 4 * _MM) -> "Composite":
        return cls(thickness=thickness, parts=tuple(p.to_json() for p in phantoms))


# ---------------------------------------------------------------------------------------------
# Volume phantoms after OpenMPIData's three printed phantoms (docs/3d.md cites the figures).
# Coordinates are metres in image order (z, y, x) about the FOV centre; OpenMPIData's x is our x.
class VolumePhantom(Phantom):
    """Base class of true 3D shapes: subclasses implement `_value3(z, y, x)`. On a 2D grid the
    phantom renders its z = 0 section; on a 3D grid voxel fractions come from `supersample`^3
    sub-samples per voxel (default 4), evaluated slab by slab to bound memory."""

    def _value3(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _value(self, y, x, t):
        return self._value3(np.zeros_like(y), y, x)

    def volume(self, t: float | None = None) -> float:  # pragma: no cover - subclasses are analytic
        raise NotImplementedError

    def area(self, t=None) -> float:
        """Area of the z = 0 section (m²), numerically on a 0.05 mm lattice of the bounding box."""
        h = 0.05 * _MM
        lo, hi = self._bounds()
        ys = np.arange(lo[1], hi[1], h) + h / 2
        xs = np.arange(lo[2], hi[2], h) + h / 2
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        return float(self._value(yy, xx, 0.0).sum() * h * h)

    def _bounds(self):  # pragma: no cover
        raise NotImplementedError

    def render(self, grid: Grid, t: float | None = None, supersample: int | None = None) -> np.ndarray:
        if not isinstance(grid, Grid):
            raise NirmpiError(f"phantom {self.name}: render needs a Grid, got {type(grid).__name__}")
        self._check_t(t)
        if grid.ndim == 2:
            return super().render(grid, t, supersample)
        s = int(supersample or 4)
        if s < 1:
            raise NirmpiError(f"phantom {self.name}: supersample must be >= 1, got {supersample}")
        u = (np.arange(s) + 0.5) / s - 0.5
        zc, yc, xc = grid.axis_centers()
        vz, vy, vx = grid.voxel_size
        cz, cy, cx = grid.center
        ys = (yc[:, None] + u * vy).ravel() - cy
        xs = (xc[:, None] + u * vx).ravel() - cx
        nz, ny, nx = grid.shape
        out = np.zeros(grid.shape, np.float32)
        # skip slabs outside the shape's z extent: most of a 148³ measurement grid is empty
        lo, hi = self._bounds()
        for iz in range(nz):
            zs = zc[iz] + u * vz - cz
            if zs.max() < lo[0] or zs.min() > hi[0]:
                continue
            zz, yy, xx = np.meshgrid(zs, ys, xs, indexing="ij", sparse=True)
            vals = np.asarray(self._value3(zz, yy, xx), np.float32)
            vals = np.broadcast_to(vals, (s, ny * s, nx * s))
            out[iz] = vals.reshape(s, ny, s, nx, s).mean(axis=(0, 2, 4))
        return out


@dataclass(frozen=True)
class Cone(VolumePhantom):
    """OpenMPIData's shape phantom: a cone along x with a 1 mm tip radius, 10° half-angle
    (apex angle as published) and 22 mm height: volume 683.9 µL as published. Tip at
    x = center_x - height/2."""

    name: ClassVar[str] = "cone"
    tip_radius: float = 1.0 * _MM
    half_angle_deg: float = 10.0
    height: float = 22.0 * _MM
    value: float = 1.0
    center: tuple = (0.0, 0.0, 0.0)          # (z, y, x) of the axis midpoint

    def _radius(self, x):
        return self.tip_radius + (x + self.height / 2) * math.tan(math.radians(self.half_angle_deg))

    def _value3(self, z, y, x):
        z, y, x = z - self.center[0], y - self.center[1], x - self.center[2]
        r2 = z * z + y * y
        inside = (np.abs(x) <= self.height / 2) & (r2 <= self._radius(x) ** 2)
        return inside.astype(np.float32) * self.value

    def _bounds(self):
        r = self._radius(self.height / 2)
        c = np.asarray(self.center)
        return c - (r, r, self.height / 2), c + (r, r, self.height / 2)

    def volume(self, t=None) -> float:
        r1, r2 = self.tip_radius, self._radius(self.height / 2)
        return math.pi * self.height / 3 * (r1 * r1 + r1 * r2 + r2 * r2) * self.value


# published concentrations (mmol/l) of chambers 1..8, relative to the highest
_OPENMPI_CONC = (100.0, 66.6, 44.4, 29.6, 19.7, 13.1, 8.77, 5.85)


@dataclass(frozen=True)
class Cubes(VolumePhantom):
    """OpenMPIData's concentration phantom: eight 2 mm cubes, centres 12 mm apart in x and y
    and 6 mm apart in z, concentrations 100 ... 5.85 mmol/l (relative: 1 ... 0.0585). Chamber 1
    is the upper layer (+z) at +x, +y; numbering runs clockwise seen from +z; 5 is the lower
    layer's +x, +y chamber."""

    name: ClassVar[str] = "cubes"
    edge: float = 2.0 * _MM
    spacing_xy: float = 12.0 * _MM
    spacing_z: float = 6.0 * _MM
    values: tuple = tuple(c / 100.0 for c in _OPENMPI_CONC)

    def centers(self):
        """(8, 3) chamber centres (z, y, x) in chamber order."""
        a, h = self.spacing_xy / 2, self.spacing_z / 2
        ring = ((a, a), (-a, a), (-a, -a), (a, -a))   # (y, x): +x+y, then clockwise seen from +z
        return np.array([(zz, y, x) for zz in (h, -h) for (y, x) in ring])

    def _value3(self, z, y, x):
        out = 0.0
        for (cz, cy, cx), v in zip(self.centers(), self.values):
            d = self.edge / 2
            inside = (np.abs(z - cz) <= d) & (np.abs(y - cy) <= d) & (np.abs(x - cx) <= d)
            out = out + inside.astype(np.float32) * np.float32(v)
        return out

    def _bounds(self):
        r = np.array([self.spacing_z, self.spacing_xy, self.spacing_xy]) / 2 + self.edge / 2
        return -r, r

    def volume(self, t=None) -> float:
        return float(sum(self.values)) * self.edge ** 3


@dataclass(frozen=True)
class Tubes(VolumePhantom):
    """OpenMPIData's resolution phantom: five tubes from one origin: one along +y, two in the
    xy plane at 20° and 30° from it (towards +x and -x) and two in the yz plane at 10° and 15°
    (towards +z and -z): z, the strong-gradient axis, gets the smaller angles, as published.
    Tube radius and length are not published: 0.5 mm and 20 mm here."""

    name: ClassVar[str] = "tubes"
    radius: float = 0.5 * _MM
    length: float = 20.0 * _MM
    origin: tuple = (0.0, -10.0 * _MM, 0.0)     # (z, y, x)
    xy_angles: tuple = (20.0, -30.0)             # degrees from +y towards +x
    yz_angles: tuple = (10.0, -15.0)             # degrees from +y towards +z

    def directions(self):
        """(5, 3) unit vectors (z, y, x)."""
        d = [(0.0, 1.0, 0.0)]
        d += [(0.0, math.cos(math.radians(a)), math.sin(math.radians(a))) for a in self.xy_angles]
        d += [(math.sin(math.radians(a)), math.cos(math.radians(a)), 0.0) for a in self.yz_angles]
        return np.array(d)

    def _value3(self, z, y, x):
        pz, py, px = z - self.origin[0], y - self.origin[1], x - self.origin[2]
        out = np.zeros(np.broadcast_shapes(np.shape(z), np.shape(y), np.shape(x)), bool)
        for dz, dy, dx in self.directions():
            t = pz * dz + py * dy + px * dx
            d2 = (pz - t * dz) ** 2 + (py - t * dy) ** 2 + (px - t * dx) ** 2
            out |= (t >= 0) & (t <= self.length) & (d2 <= self.radius ** 2)
        return out.astype(np.float32)

    def _bounds(self):
        o = np.asarray(self.origin)
        ends = o + self.length * self.directions()
        return np.minimum(ends.min(0), o) - self.radius, np.maximum(ends.max(0), o) + self.radius

    def volume(self, t=None) -> float:
        """Sum of the tube volumes (the overlap near the common origin counted once per tube)."""
        return 5 * math.pi * self.radius ** 2 * self.length


PHANTOMS: dict[str, type[Phantom]] = {
    "spiral": Spiral,
    "resolution": Resolution,
    "point": Point,
    "ellipses": Ellipses,
    "bolus": Bolus,
    "sum": Composite,
    "cone": Cone,
    "cubes": Cubes,
    "tubes": Tubes,
}


def make_phantom(phantom: "str | dict | Phantom", **params) -> Phantom:
    """A Phantom from a name (+ parameters), a spec dict or a Phantom."""
    if isinstance(phantom, Phantom):
        return phantom
    if isinstance(phantom, dict):
        return phantom_from_dict(phantom)
    if phantom not in PHANTOMS:
        raise NirmpiError(f"unknown phantom {phantom!r}: expected one of {', '.join(PHANTOMS)}")
    return PHANTOMS[phantom](**params)


def phantom_from_dict(d: dict) -> Phantom:
    if not isinstance(d, dict) or "name" not in d:
        raise NirmpiError(f"phantom spec must be a dict with a 'name', got {d!r}")
    name = d["name"]
    extra = sorted(set(d) - {"name", "params"})
    if extra:  # a parameter beside "params" would otherwise be dropped without a word
        raise NirmpiError(f"phantom spec: unknown key(s) {extra}: parameters go under 'params', "
                          f"e.g. {{'name': {name!r}, 'params': {{{extra[0]!r}: ...}}}}")
    if name not in PHANTOMS:
        raise NirmpiError(f"phantom spec: unknown phantom {name!r}: expected one of {', '.join(PHANTOMS)}")
    cls = PHANTOMS[name]
    return cls(**_tuple_params(cls, dict(d.get("params") or {})))
