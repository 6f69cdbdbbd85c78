"""Kaczmarz with Tikhonov (ℓ2) regularisation, exactly as MPIReco.jl / RegularizedLeastSquares.jl.

Solves min ‖S c − u‖² + λ_eff ‖c‖² on the extended (Dax) system [S, ε·I]·[c; v] = u with
ε = √λ_eff; the auxiliary v (one entry per row) carries the scaled residual so that the sweeps
converge to the Tikhonov solution rather than to a least-squares one.

One iteration = one sweep over every row of non-zero energy, in the stored order (channel
outermost, frequency fastest — as `Problem` delivers it) or in one seeded shuffle reused by every
sweep. For row m:  τ = Σ_n S[m,n]·x[n] (plain product, no conjugation),
α = (u_m − τ − ε·v_m)/(‖s_m‖² + λ_eff),  x += α·conj(s_m),  v_m += α·ε.
After each sweep (not each row) the projections run once: positivity (make real, clip negatives)
or, with enforce_real only, the imaginary part is zeroed.  With ``normalize_reg`` λ is relative:
λ_eff = λ·‖S‖_F²/N (N = voxels; MPIReco's SystemMatrixBasedNormalization).

Implementation: a numba kernel on a planar copy of S (real and imaginary float arrays (M, N)),
compiled with fast-math so the dot-product reduction vectorises; inputs are checked finite first
and the result agrees with a plain row-by-row loop to ~1e-6 (tests/test_solvers.py).
Precision follows S: complex64 → float32 arithmetic (MPIReco's Float32), complex128 → float64.
Several right-hand sides (frames) are solved in one call on one prepared operator (F frames cost
about F single solves, without F set-ups).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from numba import njit

from .errors import NirmpiError, ProblemMismatch


__all__ = ["KaczmarzSystem", "kaczmarz", "reconstruct_kaczmarz"]


# ----------------------------------------------------------------------------------------------
# numba kernel
# ----------------------------------------------------------------------------------------------
# fastmath lets LLVM vectorise the dot-product reductions (reassociation); inputs are checked
# finite first, and results stay within ~1e-6 of the plain row loop (tests/test_solvers.py).
@njit(cache=True, fastmath=True)
def _sweeps(Sr, Si, rows, denom, eps, ur, ui, xr, xi, vr, vi, nsweeps, positive, real):
    """Run `nsweeps` Kaczmarz sweeps in place on (xr, xi, vr, vi) for every frame.

    Sr, Si: (M, N) planar rows; rows: (R,) visiting order; denom: (R,) 1/(‖s‖²+λ);
    ur, ui, vr, vi: (F, M); xr, xi: (F, N).
    The update of row k and the dot product of row k+1 share one pass over x (the dot uses the
    freshly updated x, so the arithmetic is the sequential algorithm's, with half the traffic).
    """
    F = xr.shape[0]
    N = Sr.shape[1]
    R = rows.shape[0]
    zero = Sr.dtype.type(0.0)
    for f in range(F):  # frames are independent solves
        for _ in range(nsweeps):
            if R == 0:
                break
            m = rows[0]
            tr = zero
            ti = zero
            for j in range(N):  # τ = Σ S[m, j] x[j] (no conjugation, BLAS dotu)
                tr += Sr[m, j] * xr[f, j] - Si[m, j] * xi[f, j]
                ti += Sr[m, j] * xi[f, j] + Si[m, j] * xr[f, j]
            for k in range(R):
                m = rows[k]
                d = denom[k]
                ar = d * (ur[f, m] - tr - eps * vr[f, m])
                ai = d * (ui[f, m] - ti - eps * vi[f, m])
                vr[f, m] += ar * eps
                vi[f, m] += ai * eps
                tr = zero
                ti = zero
                if k + 1 < R:
                    q = rows[k + 1]
                    for j in range(N):  # x += α·conj(s_m), then τ of the next row on the new x
                        a = xr[f, j] + ar * Sr[m, j] + ai * Si[m, j]
                        b = xi[f, j] + ai * Sr[m, j] - ar * Si[m, j]
                        xr[f, j] = a
                        xi[f, j] = b
                        tr += Sr[q, j] * a - Si[q, j] * b
                        ti += Sr[q, j] * b + Si[q, j] * a
                else:
                    for j in range(N):
                        xr[f, j] += ar * Sr[m, j] + ai * Si[m, j]
                        xi[f, j] += ai * Sr[m, j] - ar * Si[m, j]
            if positive or real:  # once per sweep, as RLS's proximal terms
                for j in range(N):
                    xi[f, j] = 0
                    if positive and xr[f, j] < 0:
                        xr[f, j] = 0


# ----------------------------------------------------------------------------------------------
# prepared operator
# ----------------------------------------------------------------------------------------------
def _as_system_matrix(S) -> np.ndarray:
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] < 1 or S.shape[1] < 1:
        raise ProblemMismatch(f"kaczmarz: system matrix must be 2-D (rows, voxels), got shape {S.shape}")
    if not (np.issubdtype(S.dtype, np.number) or S.dtype == bool):
        raise ProblemMismatch(f"kaczmarz: system matrix must be numeric, got dtype {S.dtype}")
    if S.dtype in (np.complex128, np.float64, np.clongdouble, np.longdouble):
        S = S.astype(np.complex128, copy=False)
    else:
        S = S.astype(np.complex64, copy=False)
    if not np.all(np.isfinite(S)):
        raise ProblemMismatch("kaczmarz: system matrix contains NaN or Inf entries")
    return np.ascontiguousarray(S)


class KaczmarzSystem:
    """A system matrix prepared once for many Kaczmarz solves (several λ, frames, sweep counts).

    Keeps a planar (real, imaginary), row-contiguous copy of S plus the row energies ‖s_m‖² (float64).
    """

    def __init__(self, S):
        S = _as_system_matrix(S)
        self.shape = S.shape
        self.complex_dtype = S.dtype
        self.real_dtype = np.float32 if S.dtype == np.complex64 else np.float64
        self._Sr = np.ascontiguousarray(S.real, dtype=self.real_dtype)
        self._Si = np.ascontiguousarray(S.imag, dtype=self.real_dtype)
        Sd = S.astype(np.complex128)
        self.row_energy = (Sd.real ** 2 + Sd.imag ** 2).sum(axis=1)  # ‖s_m‖², float64
        self.frobenius2 = float(self.row_energy.sum())                # ‖S‖_F² = trace(SᴴS)
        self.nonzero_rows = np.flatnonzero(self.row_energy > 0).astype(np.int64)

    @property
    def num_rows(self) -> int:
        return self.shape[0]

    @property
    def num_voxels(self) -> int:
        return self.shape[1]

    def lambda_effective(self, lam: float, normalize_reg: bool = True) -> float:
        lam = float(lam)
        if not math.isfinite(lam) or lam < 0:
            raise NirmpiError(f"kaczmarz: lam must be a finite number >= 0, got {lam}")
        return lam * self.frobenius2 / self.num_voxels if normalize_reg else lam

    def row_order(self, shuffle: bool = False, seed: int = 1234) -> np.ndarray:
        rows = self.nonzero_rows
        if shuffle:  # one permutation, reused by every sweep (RLS shuffleRows)
            rows = rows[np.random.default_rng(seed).permutation(rows.size)]
        return np.ascontiguousarray(rows)

    def solve(self, u, *, iterations: int = 150, lam: float = 0.5, normalize_reg: bool = True,
              enforce_real: bool = True, enforce_positive: bool = True, shuffle: bool = False,
              seed: int = 1234, snapshots: Sequence[int] | None = None):
        """Solve for one (M,) or several (F, M) right-hand sides; see `kaczmarz`."""
        M, N = self.shape
        u = np.asarray(u)
        single = u.ndim == 1
        if u.ndim not in (1, 2) or u.shape[-1] != M:
            raise ProblemMismatch(
                f"kaczmarz: measurement u must have shape ({M},) or (frames, {M}) to match the "
                f"system matrix {self.shape}, got {u.shape}")
        if not np.issubdtype(u.dtype, np.number):
            raise ProblemMismatch(f"kaczmarz: measurement u must be numeric, got dtype {u.dtype}")
        if not np.all(np.isfinite(u)):
            raise ProblemMismatch("kaczmarz: measurement u contains NaN or Inf entries")
        u2 = np.atleast_2d(u)
        F = u2.shape[0]
        stops = _check_sweeps(iterations, snapshots)
        lam_eff = self.lambda_effective(lam, normalize_reg)
        rows = self.row_order(shuffle, seed)
        rd = self.real_dtype
        denom = (1.0 / (self.row_energy[rows] + lam_eff)).astype(rd)
        eps = rd(math.sqrt(lam_eff))
        ur = np.ascontiguousarray(u2.real, dtype=rd)
        ui = np.ascontiguousarray(u2.imag, dtype=rd) if np.iscomplexobj(u2) else np.zeros_like(ur)
        xr = np.zeros((F, N), rd)
        xi = np.zeros((F, N), rd)
        vr = np.zeros((F, M), rd)
        vi = np.zeros((F, M), rd)
        positive, real = bool(enforce_positive), bool(enforce_real)
        out_real = positive or real  # PositiveRegularization makes x real first

        def result():
            x = xr.astype(rd, copy=True) if out_real else (xr + 1j * xi).astype(self.complex_dtype)
            return x[0] if single else x

        done = 0
        snaps = {}
        for stop in stops:
            if rows.size:
                _sweeps(self._Sr, self._Si, rows, denom, eps, ur, ui, xr, xi, vr, vi,
                        stop - done, positive, real)
            done = stop
            if snapshots is not None:
                snaps[stop] = result()
        return snaps if snapshots is not None else result()


def _check_sweeps(iterations, snapshots) -> list[int]:
    if snapshots is None:
        if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
            raise NirmpiError(f"kaczmarz: iterations must be an integer >= 0, got {iterations!r}")
        return [int(iterations)]
    stops = sorted({int(s) for s in snapshots})
    if not stops or any(s < 0 for s in stops) or any(int(s) != s for s in snapshots):
        raise NirmpiError(f"kaczmarz: snapshots must be non-negative integers, got {snapshots!r}")
    return stops


# ----------------------------------------------------------------------------------------------
# public functions
# ----------------------------------------------------------------------------------------------
def kaczmarz(S, u, *, iterations: int = 150, lam: float = 0.5, normalize_reg: bool = True,
             enforce_real: bool = True, enforce_positive: bool = True, shuffle: bool = False,
             seed: int = 1234, snapshots: Iterable[int] | None = None):
    """Kaczmarz-ℓ2 as MPIReco (paper defaults: 150 sweeps, λ = 0.5 relative).

    S: (M, N) system matrix (complex64 → float32 arithmetic; complex128 → float64).
    u: (M,) one frame, or (F, M) frames solved together (each from zero, no warm start).
    Returns (N,) or (F, N): real (float32 for complex64 S) when enforce_real or enforce_positive,
    else complex.  With ``snapshots`` (e.g. (1, 3, 10, 30, 150)) a dict {sweeps: solution}
    recorded during one run up to max(snapshots) sweeps (``iterations`` is then ignored).
    """
    system = S if isinstance(S, KaczmarzSystem) else KaczmarzSystem(S)
    return system.solve(u, iterations=iterations, lam=lam, normalize_reg=normalize_reg,
                        enforce_real=enforce_real, enforce_positive=enforce_positive,
                        shuffle=shuffle, seed=seed,
                        snapshots=None if snapshots is None else tuple(snapshots))


def reconstruct_kaczmarz(problem, **kw):
    """Kaczmarz on a `Problem`: image of `problem.grid.shape` (or (F, *shape) for a series)."""
    shape = problem.grid.shape
    if problem.S.shape[1] != problem.grid.size:
        raise ProblemMismatch(f"system matrix has {problem.S.shape[1]} columns but grid {shape} "
                              f"has {problem.grid.size} voxels")
    out = kaczmarz(problem.S, problem.u, **kw)
    if isinstance(out, dict):
        return {k: v.reshape(v.shape[:-1] + shape) for k, v in out.items()}
    return out.reshape(out.shape[:-1] + shape)
