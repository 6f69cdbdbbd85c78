"""The sub-voxel operator D: from the network's values on an s-times finer grid to the native voxel
values c that the system matrix S sees (the forward model is S·D·φθ).

- `pool` (`operator="pool"`, the paper's D): each native voxel gets the mean over its s^ndim
  sub-voxels, i.e. S held constant over a voxel.
- `cubic_pool` (`operator="cubic"`): the adjoint of cubic interpolation, applied axis by axis,
  i.e. S interpolated to the fine grid (model error for an off-centre 1 mm dot 0.4 % vs 2.6 %).

`SubVoxelOperator` picks one of them for a grid and caches the per-axis matrices of each s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pool", "cubic_adjoint_matrix", "cubic_pool", "SubVoxelOperator"]


def pool(fine: torch.Tensor, shape: tuple[int, ...], s: int) -> torch.Tensor:
    """The operator D: mean over each s^ndim block of the (s·shape) image → flat (N,) in C order."""
    if s == 1:
        return fine.reshape(-1)
    img = fine.reshape(1, 1, *[n * s for n in shape])
    pooled = F.avg_pool2d(img, s) if len(shape) == 2 else F.avg_pool3d(img, s)
    return pooled.reshape(-1)


def cubic_adjoint_matrix(n: int, s: int) -> torch.Tensor:
    """(n, n·s) matrix Uᵀ/s of 1D cubic interpolation U from n voxel centres to the n·s
    centres of an s-fold finer grid (torch's bicubic kernel, a = -0.75, edges clamped). Applied
    along every axis it maps a fine image to the native values that `S` sees, S·Uᵀ/s^ndim: the
    system matrix interpolated to the fine grid rather than held constant over each voxel."""
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, 1, n)
    up = F.interpolate(eye, size=(1, n * s), mode="bicubic", align_corners=False)
    return (up.reshape(n, n * s) / s).float()


def cubic_pool(fine: torch.Tensor, shape: tuple[int, ...], s: int,
               mats: list[torch.Tensor]) -> torch.Tensor:
    """The operator D of operator='cubic': apply each axis' cubic_adjoint_matrix → flat (N,)."""
    if s == 1:
        return fine.reshape(-1)
    img = fine.reshape([n * s for n in shape])
    for axis, m in enumerate(mats):
        img = torch.movedim(torch.tensordot(m, img, dims=([1], [axis])), 0, axis)
    return img.reshape(-1)


class SubVoxelOperator:
    """D for one native grid: `op(values_on_fine_grid, s)` → native voxel values (N,).

    kind: "pool" or "cubic" (resolve "auto" before: cubic in 2D, pool in 3D). At s = 1 both are
    the identity."""

    def __init__(self, kind: str, shape: tuple[int, ...], device):
        if kind not in ("pool", "cubic"):
            raise ValueError(f"operator kind must be 'pool' or 'cubic', got {kind!r}")
        self.kind, self.shape, self.device = kind, tuple(shape), device
        self._mats: dict[int, list[torch.Tensor]] = {}

    def __call__(self, fine: torch.Tensor, s: int) -> torch.Tensor:
        if self.kind == "pool" or s == 1:
            return pool(fine, self.shape, s)
        if s not in self._mats:
            self._mats[s] = [cubic_adjoint_matrix(n, s).to(self.device) for n in self.shape]
        return cubic_pool(fine, self.shape, s, self._mats[s])
