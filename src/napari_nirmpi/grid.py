"""Regular voxel grids in physical coordinates.

Axis order everywhere is the image order: (y, x) in 2D, (z, y, x) in 3D; lengths in metres.
MDF stores size/FOV/centre as (x, y, z); `Grid.from_mdf` / `Grid.to_mdf` convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import NirmpiError


def _tuple(values, n, name) -> tuple:
    t = tuple(float(v) for v in np.ravel(values))
    if len(t) != n:
        raise NirmpiError(f"grid {name} needs {n} values, got {len(t)}")
    return t


@dataclass(frozen=True)
class Grid:
    """A box of `shape` voxels covering `fov` metres centred at `center` (image axis order)."""

    shape: tuple[int, ...]
    fov: tuple[float, ...]
    center: tuple[float, ...] | None = None

    def __post_init__(self):
        shape = tuple(int(s) for s in self.shape)
        if len(shape) not in (2, 3) or any(s < 1 for s in shape):
            raise NirmpiError(f"grid shape must be 2 or 3 positive sizes, got {self.shape}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "fov", _tuple(self.fov, len(shape), "fov"))
        center = (0.0,) * len(shape) if self.center is None else self.center
        object.__setattr__(self, "center", _tuple(center, len(shape), "center"))
        if any(not np.isfinite(f) or f <= 0 for f in self.fov):
            raise NirmpiError(f"grid field of view must be positive and finite, got {self.fov}")
        if any(not np.isfinite(c) for c in self.center):
            raise NirmpiError(f"grid centre must be finite, got {self.center}")

    # -- basic properties -------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def voxel_size(self) -> tuple[float, ...]:
        return tuple(f / n for f, n in zip(self.fov, self.shape))

    @property
    def origin(self) -> tuple[float, ...]:
        """Centre of the first voxel (metres): what napari calls `translate`."""
        return tuple(c - f / 2 + v / 2 for c, f, v in zip(self.center, self.fov, self.voxel_size))

    @property
    def lower(self) -> tuple[float, ...]:
        return tuple(c - f / 2 for c, f in zip(self.center, self.fov))

    @property
    def upper(self) -> tuple[float, ...]:
        return tuple(c + f / 2 for c, f in zip(self.center, self.fov))

    @property
    def scale_mm(self) -> tuple[float, ...]:
        return tuple(v * 1e3 for v in self.voxel_size)

    @property
    def translate_mm(self) -> tuple[float, ...]:
        return tuple(o * 1e3 for o in self.origin)

    # -- coordinates ------------------------------------------------------------------------
    def axis_centers(self) -> list[np.ndarray]:
        """Voxel-centre positions along each axis, metres."""
        return [o + v * np.arange(n) for o, v, n in zip(self.origin, self.voxel_size, self.shape)]

    def points(self) -> np.ndarray:
        """All voxel centres as an array (*shape, ndim), metres, C order."""
        return np.stack(np.meshgrid(*self.axis_centers(), indexing="ij"), axis=-1)

    def to_normalized(self, points_m: np.ndarray) -> np.ndarray:
        """Map metres to this grid's normalised box: the FOV edges go to -1 and +1."""
        points_m = np.asarray(points_m, dtype=np.float64)
        lo = np.asarray(self.lower)
        return (points_m - lo) / np.asarray(self.fov) * 2.0 - 1.0

    def normalized_coords(self, dtype=np.float32) -> np.ndarray:
        """Voxel centres in [-1, 1]: (i + 1/2)/n * 2 - 1 per axis; shape (*shape, ndim)."""
        axes = [((np.arange(n) + 0.5) / n * 2.0 - 1.0) for n in self.shape]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(dtype)

    # -- derived grids ----------------------------------------------------------------------
    def with_shape(self, shape: Sequence[int]) -> "Grid":
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.ndim:
            raise NirmpiError(f"grid shape {shape} has {len(shape)} axes, expected {self.ndim}")
        return Grid(shape, self.fov, self.center)

    def refined(self, factor: int) -> "Grid":
        return self.with_shape([n * int(factor) for n in self.shape])

    def region(self, lower: Sequence[float], upper: Sequence[float], shape: Sequence[int]) -> "Grid":
        """A grid of `shape` voxels covering the box [lower, upper] (metres, image axis order)."""
        lower = np.asarray(_tuple(lower, self.ndim, "region lower"))
        upper = np.asarray(_tuple(upper, self.ndim, "region upper"))
        if np.any(upper <= lower):
            raise NirmpiError(f"region upper {tuple(upper)} must exceed lower {tuple(lower)}")
        return Grid(tuple(shape), tuple(upper - lower), tuple((upper + lower) / 2))

    # -- MDF (x, y, z) conversion -----------------------------------------------------------
    @classmethod
    def from_mdf(cls, size_xyz, fov_xyz, center_xyz=None) -> "Grid":
        size = [int(s) for s in np.ravel(size_xyz)]
        fov = [float(f) for f in np.ravel(fov_xyz)]
        center = [0.0] * 3 if center_xyz is None else [float(c) for c in np.ravel(center_xyz)]
        if len(size) != 3 or len(fov) != 3 or len(center) != 3:
            raise NirmpiError("MDF size, fieldOfView and fieldOfViewCenter need 3 values (x, y, z)")
        if size[2] == 1:  # 2D grid: drop z
            return cls((size[1], size[0]), (fov[1], fov[0]), (center[1], center[0]))
        return cls((size[2], size[1], size[0]), (fov[2], fov[1], fov[0]), (center[2], center[1], center[0]))

    def to_mdf(self, thickness: float = 1e-3):
        """(size, fov, center) in MDF (x, y, z) order; a 2D grid gets one z slice of `thickness`."""
        if self.ndim == 2:
            (ny, nx), (fy, fx), (cy, cx) = self.shape, self.fov, self.center
            return (np.array([nx, ny, 1], np.int64), np.array([fx, fy, thickness]),
                    np.array([cx, cy, 0.0]))
        return (np.array(self.shape[::-1], np.int64), np.array(self.fov[::-1]),
                np.array(self.center[::-1]))

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "fov": list(self.fov), "center": list(self.center)}

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(tuple(d["shape"]), tuple(d["fov"]), tuple(d.get("center") or [0.0] * len(d["shape"])))


def parse_shape(text: str, ndim: int | None = None, native: Sequence[int] | None = None) -> tuple[int, ...]:
    """Parse '104', '104x104', '13x13x13' (image axis order) or, given the native shape, 'x4'
    (four times the native grid) into a shape tuple."""
    text = str(text).strip().lower().replace("×", "x")
    if text.startswith("x") and native is not None:
        try:
            f = float(text[1:])
        except ValueError:
            raise NirmpiError(f"grid {text!r}: expected xF with a number F, e.g. x4") from None
        if not f > 0:
            raise NirmpiError(f"grid {text!r}: the factor must be positive")
        return tuple(max(1, int(round(n * f))) for n in native)
    try:
        parts = [int(p) for p in text.split("x")]
    except ValueError:
        raise NirmpiError(f"grid {text!r}: expected N, AxB or AxBxC with positive integers") from None
    if any(p < 1 for p in parts) or len(parts) not in (1, 2, 3):
        raise NirmpiError(f"grid {text!r}: expected N, AxB or AxBxC with positive integers")
    if ndim is None and native is not None:
        ndim = len(native)
    if len(parts) == 1:
        parts = parts * (ndim or 2)
    if ndim is not None and len(parts) != ndim:
        raise NirmpiError(f"grid {text!r} has {len(parts)} axes but the system matrix has {ndim}")
    return tuple(parts)


def parse_region(text: str, ndim: int, what: str = "region") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """'x0,x1,y0,y1[,z0,z1]' in mm (commas or spaces; each range in either order) -> (lower, upper)
    in metres, image axis order ((y, x) or (z, y, x)). One format for the CLI and the napari face."""
    axes = "x0,x1,y0,y1" + (",z0,z1" if ndim == 3 else "")
    try:
        v = [float(t) for t in str(text).replace(",", " ").split()]
    except ValueError:
        v = []
    if len(v) != 2 * ndim:
        raise NirmpiError(f"{what} {text!r}: expected {2 * ndim} numbers {axes} in mm")
    pairs = [(v[2 * i], v[2 * i + 1]) for i in range(ndim)][::-1]  # (x, y[, z]) -> image order
    lower = tuple(min(a, b) * 1e-3 for a, b in pairs)
    upper = tuple(max(a, b) * 1e-3 for a, b in pairs)
    if any(hi - lo <= 0 for lo, hi in zip(lower, upper)):
        raise NirmpiError(f"{what} {text!r}: each range ({axes}) must have a positive width")
    return lower, upper
