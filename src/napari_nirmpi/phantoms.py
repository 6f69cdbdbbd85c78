"""Continuous tracer phantoms for simulated MPI data.

Every phantom is defined in physical coordinates (metres, image axis order (y, x)) and renders
its ground truth on ANY `Grid` as the fraction of each voxel it fills (a concentration in
[0, 1]; shapes of constant concentration 1), by supersampling a point-in-shape test
(default 8 x 8 sub-samples per voxel in 2D). The same phantom therefore yields consistent
ground truth at 29², 54², 104², ... and the simulator measures it on a grid finer than the
native one (no inverse crime).

3D grids: the 2D shape is extruded along z over a slab of `thickness` metres centred at z = 0
(the slab's voxel fraction is exact, so a 3D render is slab_fraction(z) * render_2d(y, x)).

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


PHANTOMS: dict[str, type[Phantom]] = {
    "spiral": Spiral,
    "resolution": Resolution,
    "point": Point,
    "ellipses": Ellipses,
    "bolus": Bolus,
    "sum": Composite,
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
