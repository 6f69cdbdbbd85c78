"""The forward model of the classic solvers as a real torch operator, on the native or a finer grid.

Complex rows are used as real ones, as the NIR engine does: A = W·[Re S; Im S] (2M, N) acting on a
real concentration c, so ‖A c − b‖² = ‖W (S c − u)‖² for b = W·[Re u; Im u] (W: optional row
weights, the same on both halves of a row).

On a finer grid of the same field of view (m_a voxels per axis instead of n_a) the unknown is the
fine image and the system matrix is interpolated to it: A_fine = A·D, D = ⊗_a D_a with D_a the
(n_a, m_a) adjoint of cubic interpolation scaled by n_a/m_a (`napari_nirmpi.nir`'s
`cubic_adjoint_matrix` for integer factors; the same torch bicubic kernel otherwise). S·D is the
system matrix sampled between the calibration voxel centres (divided by the number of fine voxels
per native one, so the concentration keeps its units); D is applied separably, so a fine-grid
product costs a native one plus a few small matrix products per axis.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NirmpiError, ProblemMismatch
from ..grid import Grid

try:  # the operators are moving out of the training module
    from ..nir.operators import cubic_adjoint_matrix
except ImportError:  # pragma: no cover - versions that keep them in nir.train
    from ..nir.train import cubic_adjoint_matrix

__all__ = ["interp_adjoint_matrix", "fine_system_matrix", "ForwardOperator", "row_weights",
           "resolve_device", "grad", "grad_adjoint", "total_variation"]


def resolve_device(device="auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NirmpiError(f"device {name!r} requested but CUDA is not available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise NirmpiError("device 'mps' requested but MPS is not available")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise NirmpiError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {name!r}")
    return torch.device(name)


def interp_adjoint_matrix(n: int, m: int) -> torch.Tensor:
    """(n, m) float64: Uᵀ·n/m for U the cubic interpolation (torch bicubic, a = −0.75, edges
    clamped) from n voxel centres to the m voxel centres of the same interval. For m = n·s this is
    `cubic_adjoint_matrix(n, s)`; m = n gives the identity."""
    n, m = int(n), int(m)
    if n < 1 or m < n:
        raise NirmpiError(f"fine grid: {m} voxels on an axis of {n} native voxels (must be >= {n})")
    if m == n:
        return torch.eye(n, dtype=torch.float64)
    if m % n == 0:
        return cubic_adjoint_matrix(n, m // n).double()
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, 1, n)
    up = F.interpolate(eye, size=(1, m), mode="bicubic", align_corners=False)
    return up.reshape(n, m) * (n / m)


def _apply_axes(img: torch.Tensor, mats, transpose: bool) -> torch.Tensor:
    """Apply one matrix per trailing image axis: mats[a] (n_a, m_a) maps m_a -> n_a (or its
    transpose n_a -> m_a); img has a leading batch axis."""
    lead = img.ndim - len(mats)
    for a, m in enumerate(mats):
        mm = m.T if transpose else m
        img = torch.movedim(torch.tensordot(mm, img, dims=([1], [lead + a])), 0, lead + a)
    return img


def fine_system_matrix(S, grid: Grid, shape) -> np.ndarray:
    """S·D: the (M, prod(shape)) system matrix interpolated to `shape` voxels over `grid`'s FOV
    (same dtype as S; complex rows interpolated as real and imaginary parts)."""
    S = np.asarray(S)
    shape = tuple(int(s) for s in shape)
    if S.ndim != 2 or S.shape[1] != grid.size:
        raise ProblemMismatch(f"system matrix {S.shape} does not match grid {grid.shape}")
    if len(shape) != grid.ndim:
        raise ProblemMismatch(f"fine grid {shape} has {len(shape)} axes, the system matrix {grid.ndim}")
    mats = [interp_adjoint_matrix(n, m) for n, m in zip(grid.shape, shape)]
    parts = []
    for part in ((S.real, S.imag) if np.iscomplexobj(S) else (S,)):
        rows = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float64)).reshape(-1, *grid.shape)
        parts.append(_apply_axes(rows, mats, transpose=True).reshape(S.shape[0], -1).numpy())
    out = parts[0] + 1j * parts[1] if len(parts) == 2 else parts[0]
    return out.astype(S.dtype)


def row_weights(problem, weighting) -> np.ndarray | None:
    """Row weights for the data term, or None.

    "snr": w_m = snr_m/√(snr_m² + 30²), the NIR engine's noise model (calibration noise 1/snr_m
    per row on a 3 % model-error floor); "noise": whitening by the background noise,
    w_m = min σ / σ_m (MPIReco's WhiteningWeighting); None: unweighted (MPIReco's default)."""
    if weighting in (None, "none"):
        return None
    M = problem.S.shape[0]
    if weighting == "snr":
        if problem.snr is None:
            raise ProblemMismatch("row weighting 'snr' needs the system matrix's SNR, which this problem lacks")
        snr = np.nan_to_num(np.asarray(problem.snr, np.float64), nan=0.0, posinf=1e6)
        return snr / np.sqrt(snr ** 2 + 30.0 ** 2)
    if weighting == "noise":
        if problem.noise_std is None:
            raise ProblemMismatch("row weighting 'noise' needs background frames (the problem has no noise_std)")
        sd = np.asarray(problem.noise_std, np.float64)
        ok = np.isfinite(sd) & (sd > 0)
        if not ok.any():
            raise ProblemMismatch("row weighting 'noise': no row has a positive noise level")
        w = np.zeros(M)
        w[ok] = sd[ok].min() / sd[ok]
        return w
    raise NirmpiError(f"weighting must be None, 'snr' or 'noise', got {weighting!r}")


class ForwardOperator:
    """A·D as a torch operator: `forward(c)` (image → 2M data), `adjoint(r)` (2M → image).

    S: (M, N_native) complex; grid: its Grid; shape: the image shape solved for (default native);
    weights: (M,) row weights or None. Float32 on the device (float64 with ``dtype``)."""

    def __init__(self, S, grid: Grid, shape=None, weights=None, device="auto", dtype=torch.float32):
        S = np.asarray(S)
        if S.ndim != 2 or S.shape[1] != grid.size:
            raise ProblemMismatch(f"system matrix {S.shape} does not match grid {grid.shape}")
        if not np.all(np.isfinite(S)):
            raise ProblemMismatch("system matrix contains NaN or Inf entries")
        self.device = resolve_device(device)
        self.dtype = dtype
        self.native_grid = grid
        self.shape = tuple(grid.shape) if shape is None else tuple(int(s) for s in shape)
        if len(self.shape) != grid.ndim:
            raise ProblemMismatch(f"grid {self.shape} has {len(self.shape)} axes, the system matrix {grid.ndim}")
        self.grid = grid.with_shape(self.shape)
        self.M = S.shape[0]
        w = np.ones(self.M) if weights is None else np.asarray(weights, np.float64)
        self.weights = w
        Sw = S * w[:, None]
        A = np.concatenate([Sw.real, Sw.imag], axis=0) if np.iscomplexobj(S) else Sw
        self.A = torch.from_numpy(np.ascontiguousarray(A, dtype=np.float64)).to(self.device, dtype)
        self.fine = self.shape != tuple(grid.shape)
        self.mats = ([interp_adjoint_matrix(n, m).to(self.device, dtype) for n, m in zip(grid.shape, self.shape)]
                     if self.fine else None)
        self._norm2 = None
        self._frob2 = None

    @property
    def n(self) -> int:
        return int(np.prod(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def data(self, u) -> torch.Tensor:
        """b = W·[Re u; Im u] for one frame u (M,)."""
        u = np.asarray(u)
        if u.shape != (self.M,):
            raise ProblemMismatch(f"measurement has shape {u.shape}, expected ({self.M},)")
        if not np.all(np.isfinite(u)):
            raise ProblemMismatch("measurement contains NaN or Inf entries")
        uw = u * self.weights
        b = np.concatenate([uw.real, uw.imag]) if self.A.shape[0] == 2 * self.M else np.real(uw)
        return torch.from_numpy(np.asarray(b, np.float64)).to(self.device, self.dtype)

    def to_native(self, c: torch.Tensor) -> torch.Tensor:
        if not self.fine:
            return c.reshape(-1)
        return _apply_axes(c.reshape(1, *self.shape), self.mats, transpose=False).reshape(-1)

    def from_native(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fine:
            return x.reshape(-1)
        return _apply_axes(x.reshape(1, *self.native_grid.shape), self.mats, transpose=True).reshape(-1)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.A @ self.to_native(c)

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        return self.from_native(self.A.T @ r)

    def frobenius2(self) -> float:
        """trace((AD)ᵀAD) = ‖A D‖_F² (row blocks, so a fine grid never holds A·D whole)."""
        if self._frob2 is None:
            if not self.fine:
                self._frob2 = float((self.A.double() ** 2).sum())
            else:
                tot = 0.0
                for i in range(0, self.A.shape[0], 256):
                    blk = self.A[i:i + 256].double().reshape(-1, *self.native_grid.shape)
                    tot += float((_apply_axes(blk, [m.double() for m in self.mats], True) ** 2).sum())
                self._frob2 = tot
        return self._frob2

    def native_frobenius2(self) -> float:
        return float((self.A.double() ** 2).sum())

    def norm2(self, iterations: int = 50) -> float:
        """‖A D‖₂² by power iteration (seeded, 2 % safety margin)."""
        if self._norm2 is None:
            g = torch.Generator(device="cpu").manual_seed(0)
            x = torch.rand(self.n, generator=g, dtype=torch.float64).to(self.device, self.dtype)
            x /= torch.linalg.vector_norm(x)
            val = 0.0
            for _ in range(iterations):
                y = self.adjoint(self.forward(x))
                val = float(torch.linalg.vector_norm(y))
                if val == 0 or not math.isfinite(val):
                    break
                x = y / val
            self._norm2 = 1.02 * val if val > 0 else 1.0
        return self._norm2


# -- isotropic total variation (forward differences, Neumann boundary) -------------------------
def grad(c: torch.Tensor) -> torch.Tensor:
    """(d, *shape) forward differences of an image; the last difference along each axis is 0."""
    out = []
    for a in range(c.ndim):
        d = torch.diff(c, dim=a)
        pad = [0, 0] * c.ndim
        pad[2 * (c.ndim - 1 - a) + 1] = 1  # one zero at the end of axis a
        out.append(F.pad(d, pad))
    return torch.stack(out)


def grad_adjoint(z: torch.Tensor) -> torch.Tensor:
    """∇ᵀ z = −div z for z (d, *shape) (the exact transpose of `grad`)."""
    out = torch.zeros_like(z[0])
    for a in range(z.shape[0]):
        za = z[a].narrow(a, 0, z.shape[1 + a] - 1)  # drop the padded zero row
        pad = [0, 0] * za.ndim
        pad[2 * (za.ndim - 1 - a) + 1] = 1
        pad2 = [0, 0] * za.ndim
        pad2[2 * (za.ndim - 1 - a)] = 1
        out = out + F.pad(za, pad2) - F.pad(za, pad)
    return out


def total_variation(c: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((grad(c) ** 2).sum(0)).sum()
