"""`reconstruct(problem, method, reg, lam, grid)`: every classic method behind one call.

λ is relative, as MPIReco normalises it (SystemMatrixBasedNormalization): for ℓ2,
λ_eff = λ·trace(SᴴS)/N on the native grid, exactly the Kaczmarz path's λ, so CGNR at λ converges
to the image Kaczmarz converges to. ℓ1 and TV terms also need an intensity scale (their penalty
is linear in c, the data term quadratic): λ_eff = λ·max(Sᴴu)_native for ℓ1 (λ = 1 gives the zero
image with non-negativity: the lasso's λ_max) and the same level for TV. On a finer grid of the
same field of view the effective weights are divided by the number of fine voxels per native one
(ℓ1, ℓ2) or its (d−1)/d power (TV, which counts edges), so one λ means one prior strength in
physical units on every grid.

λ = "auto" chooses it without ground truth (`napari_nirmpi.classic.lam`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import NirmpiError, ProblemMismatch
from ..grid import Grid
from .operators import ForwardOperator, fine_system_matrix, row_weights
from .solvers import cgnr, fista, pdhg

__all__ = ["METHODS", "REGS", "RECOMMENDED", "ClassicResult", "reconstruct", "parse_reg", "parse_lam", "allowed_regs",
           "default_reg", "DEFAULT_ITERATIONS", "Solver"]

METHODS = ("kaczmarz", "cgnr", "fista", "pdhg")
REGS = ("l2", "l1", "tv")
_ALLOWED = {"kaczmarz": ("l2",), "cgnr": ("l2",), "fista": ("l1", "l2"), "pdhg": ("tv", "l1", "l2")}
_DEFAULT_REG = {"kaczmarz": ("l2",), "cgnr": ("l2",), "fista": ("l1",), "pdhg": ("tv",)}
DEFAULT_ITERATIONS = {"kaczmarz": 150, "cgnr": 100, "fista": 300, "pdhg": 500}
# the classic choice a user gets without ground truth: of CGNR-ℓ2, FISTA-ℓ1 and PDHG-TV with the
# automatic λ, natively or on the finer grid, the best mean PSNR at 104² on the tune half of the
# benchmark suite (2026-12-03, docs/classic.md) — ℓ1 solved on the finer grid
RECOMMENDED = ("fista", "l1")


@dataclass
class ClassicResult:
    """image: `grid.shape` (or (F, *grid.shape) for a frame series), float32; lam: the relative λ
    used (a float, or {reg: λ} for several terms; a list per frame for a series); info: method,
    reg, effective weights, iterations, timing, and how an automatic λ was chosen."""

    image: np.ndarray
    grid: Grid
    lam: Any
    info: dict = field(default_factory=dict)


def allowed_regs(method: str) -> tuple:
    _check_method(method)
    return _ALLOWED[method]


def default_reg(method: str) -> tuple:
    _check_method(method)
    return _DEFAULT_REG[method]


def _check_method(method):
    if method not in METHODS:
        raise NirmpiError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def parse_reg(reg, method: str | None = None) -> tuple:
    """'tv,l1' / ('tv', 'l1') / 'l2' -> ordered tuple of distinct names; checked against `method`."""
    if reg is None:
        if method is None:
            raise NirmpiError("reg: give a regulariser (l2, l1, tv) or a method")
        return default_reg(method)
    items = reg.split(",") if isinstance(reg, str) else list(reg)
    names = tuple(str(r).strip().lower() for r in items if str(r).strip())
    if not names:
        raise NirmpiError(f"reg {reg!r}: expected one or more of {', '.join(REGS)} (comma-separated)")
    bad = [r for r in names if r not in REGS]
    if bad:
        raise NirmpiError(f"reg {', '.join(bad)!s} unknown: expected {', '.join(REGS)} (comma-separated)")
    if len(set(names)) != len(names):
        raise NirmpiError(f"reg {reg!r} names a term twice")
    if method is not None:
        _check_method(method)
        extra = [r for r in names if r not in _ALLOWED[method]]
        if extra:
            hint = " (TV needs pdhg)" if "tv" in extra else ""
            raise NirmpiError(f"method {method} offers reg {', '.join(_ALLOWED[method])}, not "
                              f"{', '.join(extra)}{hint}")
    return names


def parse_lam(lam, regs: tuple):
    """float / 'auto' / one value per term (sequence, dict or 'a,b' text) -> 'auto' or {reg: λ}."""
    if isinstance(lam, str):
        text = lam.strip().lower()
        if text == "auto":
            return "auto"
        parts = [p for p in text.split(",") if p.strip()]
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise NirmpiError(f"lambda {lam!r}: expected a number >= 0, 'auto', or one number per "
                              f"term of {','.join(regs)}") from None
        lam = vals[0] if len(vals) == 1 else vals
    if isinstance(lam, dict):
        if set(lam) != set(regs):
            raise NirmpiError(f"lambda {lam}: expected one value for each of {', '.join(regs)}")
        out = {r: lam[r] for r in regs}
    elif isinstance(lam, (list, tuple, np.ndarray)):
        vals = list(np.ravel(lam))
        if len(vals) == 1:
            out = {r: vals[0] for r in regs}
        elif len(vals) == len(regs):
            out = dict(zip(regs, vals))
        else:
            raise NirmpiError(f"lambda {lam}: {len(vals)} values for {len(regs)} terms ({', '.join(regs)})")
    else:
        out = {r: lam for r in regs}
    for r, v in out.items():
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise NirmpiError(f"lambda {v!r} for {r}: expected a number >= 0 or 'auto'") from None
        if isinstance(v, bool) or not math.isfinite(fv) or fv < 0:
            raise NirmpiError(f"lambda {v!r} for {r}: expected a finite number >= 0 or 'auto'")
        out[r] = fv
    return out


def _target_shape(problem, grid) -> tuple:
    native = tuple(problem.grid.shape)
    if grid is None:
        return native
    if isinstance(grid, Grid):
        if not (np.allclose(grid.fov, problem.grid.fov) and np.allclose(grid.center, problem.grid.center)):
            raise ProblemMismatch(f"grid: solving on another field of view ({grid.fov}) than the system "
                                  f"matrix's ({problem.grid.fov}) is not supported; sample a region afterwards")
        shape = grid.shape
    elif isinstance(grid, str):
        from ..grid import parse_shape

        shape = parse_shape(grid, native=native)
    else:
        shape = (int(grid),) * len(native) if np.isscalar(grid) else tuple(int(s) for s in grid)
    if len(shape) != len(native):
        raise ProblemMismatch(f"grid {shape} has {len(shape)} axes, the system matrix {len(native)}")
    if any(s < n for s, n in zip(shape, native)):
        raise ProblemMismatch(f"grid {shape} is coarser than the native grid {native} on some axis; "
                              "the classic methods solve on the native grid or a finer one")
    return tuple(shape)


class Solver:
    """One prepared forward model (operator, scales, noise model) for many solves of one problem."""

    def __init__(self, problem, method="pdhg", shape=None, weighting=None, device="auto", nonneg=True):
        _check_method(method)
        self.problem = problem
        self.method = method
        self.nonneg = bool(nonneg)
        self.weights = row_weights(problem, weighting)
        self.weighting = weighting
        shape = tuple(problem.grid.shape) if shape is None else tuple(shape)
        self.shape = shape
        self.grid = problem.grid.with_shape(shape)
        self.op = ForwardOperator(problem.S, problem.grid, shape, self.weights,
                                  device="cpu" if method == "kaczmarz" else device)
        native_n = problem.grid.size
        fro_native = self.op.native_frobenius2()
        ratio = native_n / self.op.n
        self.l2_scale = fro_native / native_n * ratio
        self._ratio = ratio
        self._kaczmarz = None

    def scales(self, b) -> dict:
        """λ → λ_eff factors for this right-hand side (ℓ1 and TV follow the data's level)."""
        level = float((self.op.A.T @ b).abs().max())
        if not level > 0:
            level = self.l2_scale  # an all-zero measurement: any weight gives the zero image
        d = len(self.shape)
        return {"l2": self.l2_scale, "l1": level * self._ratio, "tv": level * self._ratio ** ((d - 1) / d)}

    def noise_terms(self) -> tuple[float, np.ndarray | None]:
        """(Σ w²σ_u², per-row w²σ_S² or None): measurement noise from background frames, and the
        calibration noise of each system-matrix row from its SNR (σ_S,m = mean|s_m|/snr_m),
        whose contribution to the residual grows with the image: Σ_m σ_S,m²·‖c‖²."""
        p = self.problem
        w2 = 1.0 if self.weights is None else self.weights ** 2
        su = 0.0
        if p.noise_std is not None:
            su = float(np.nansum(np.asarray(p.noise_std, np.float64) ** 2 * w2))
        ss = None
        if p.snr is not None:
            snr = np.asarray(p.snr, np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(np.isfinite(snr) & (snr > 0), np.abs(p.S).mean(axis=1) / snr, 0.0)
            ss = s ** 2 * w2
        return su, ss

    def solve(self, b, u, lam_rel: dict, regs, iterations, x0=None, scales=None):
        """Solve for relative λ's; returns (image tensor (n,), info)."""
        scales = self.scales(b) if scales is None else scales
        eff = {r: lam_rel[r] * scales[r] for r in regs}
        if self.method == "kaczmarz":
            return self._solve_kaczmarz(u, eff["l2"], iterations)
        if self.method == "cgnr":
            return cgnr(self.op, b, lam2=eff["l2"], iterations=iterations, nonneg=self.nonneg, x0=x0)
        if self.method == "fista":
            return fista(self.op, b, lam1=eff.get("l1", 0.0), lam2=eff.get("l2", 0.0),
                         iterations=iterations, nonneg=self.nonneg, x0=x0)
        return pdhg(self.op, b, lam_tv=eff.get("tv", 0.0), lam1=eff.get("l1", 0.0), lam2=eff.get("l2", 0.0),
                    iterations=iterations, nonneg=self.nonneg, x0=x0)

    def _solve_kaczmarz(self, u, lam_eff, iterations):
        from ..solvers import KaczmarzSystem

        if self._kaczmarz is None:
            S = self.problem.S if self.weights is None else self.problem.S * self.weights[:, None]
            if self.op.fine:
                S = fine_system_matrix(S, self.problem.grid, self.shape)
            self._kaczmarz = KaczmarzSystem(np.asarray(S, np.complex64))
        uw = u if self.weights is None else u * self.weights
        x = self._kaczmarz.solve(uw, iterations=iterations, lam=lam_eff, normalize_reg=False,
                                 enforce_real=True, enforce_positive=self.nonneg)
        return torch.from_numpy(np.real(x).astype(np.float32)), {"iterations": int(iterations), "converged": None}


def reconstruct(problem, method: str = "kaczmarz", reg=None, lam=None, grid=None, iterations=None,
                device="auto", *, nonneg: bool = True, weighting=None, progress=None) -> ClassicResult:
    """Classic reconstruction of `problem` (one frame, or each frame of a series).

    method: kaczmarz | cgnr | fista | pdhg. reg: 'l2' (kaczmarz, cgnr), 'l1' and/or 'l2' (fista),
    any of 'tv', 'l1', 'l2' (pdhg), comma-separated or a sequence; default per method
    (l2, l2, l1, tv). lam: relative λ (one number, one per term, or 'auto'); default 0.5 for
    Kaczmarz (the paper's), 'auto' otherwise. grid: a finer shape/Grid (or 'x4', '104') over the
    same FOV: the system matrix is interpolated to it and the image solved there (Kaczmarz
    included). iterations: default kaczmarz 150 sweeps, cgnr 100, fista 300, pdhg 500.
    nonneg: non-negative concentration (MPIReco's enforcePositive; Kaczmarz projects after each
    sweep, CGNR once at the end). weighting: None, 'snr' or 'noise' (`operators.row_weights`).
    progress: optional callable(message) for long automatic-λ searches.
    """
    from . import lam as lam_mod

    _check_method(method)
    regs = parse_reg(reg, method)
    if lam is None:
        lam = 0.5 if method == "kaczmarz" else "auto"
    lam_spec = parse_lam(lam, regs)
    if iterations is None:
        iterations = DEFAULT_ITERATIONS[method]
    if isinstance(iterations, bool) or int(iterations) != iterations or int(iterations) < 1:
        raise NirmpiError(f"iterations must be an integer >= 1, got {iterations!r}")
    iterations = int(iterations)
    if problem.S.shape[1] != problem.grid.size:
        raise ProblemMismatch(f"system matrix has {problem.S.shape[1]} columns but grid "
                              f"{problem.grid.shape} has {problem.grid.size} voxels")
    shape = _target_shape(problem, grid)
    t0 = time.perf_counter()
    solver = Solver(problem, method, shape, weighting, device, nonneg)
    with _cpu_threads(solver):
        images, lams, infos = _solve_frames(solver, problem, method, regs, lam_spec, iterations, shape,
                                            progress)
    u_all = np.asarray(problem.u)
    image = images[0] if u_all.ndim == 1 else np.stack(images)
    info = dict(method=method, reg=list(regs), iterations_max=iterations, nonneg=bool(nonneg),
                weighting=weighting, device=str(solver.op.device) if method != "kaczmarz" else "cpu",
                grid=list(shape), native_grid=list(problem.grid.shape),
                seconds=time.perf_counter() - t0, lam_rule=lam_mod.RULE if lam_spec == "auto" else "given")
    if u_all.ndim == 1:
        info.update(infos[0])
        out_lam = lams[0]
    else:
        info["frames"] = infos
        out_lam = lams
    return ClassicResult(image.astype(np.float32), solver.grid, out_lam, info)


class _cpu_threads:
    """One torch thread for a small operator on a busy CPU. Quiet, 2 threads run an iteration
    1.2–2.7× faster than one (benchmarks/results/classic_speed.txt); but when other jobs already
    load every core, OpenMP threads that wait spin against them: PDHG on a 15² problem took 35 s
    with 2 threads and 1.1 s with one on the 2-core CPU at load 13."""

    def __init__(self, solver):
        small = solver.op.device.type == "cpu" and solver.op.A.numel() < 8_000_000
        try:
            busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
        except (AttributeError, OSError):  # no load average on this platform
            busy = False
        self.small = small and busy
        self.prev = None

    def __enter__(self):
        if self.small:
            self.prev = torch.get_num_threads()
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.prev is not None:
            torch.set_num_threads(self.prev)


def _solve_frames(solver, problem, method, regs, lam_spec, iterations, shape, progress):
    from . import lam as lam_mod

    u_all = np.asarray(problem.u)
    frames = u_all[None] if u_all.ndim == 1 else u_all
    images, lams, infos = [], [], []
    for u in frames:
        b = solver.op.data(u)
        scales = solver.scales(b)
        if lam_spec == "auto":
            lam_rel, auto_info = lam_mod.auto_lambda(solver, b, u, regs, iterations, scales=scales,
                                                     progress=progress)
        else:
            lam_rel, auto_info = lam_spec, None
        x, sinfo = solver.solve(b, u, lam_rel, regs, iterations, scales=scales)
        img = x.detach().float().cpu().numpy().reshape(shape)
        if not np.all(np.isfinite(img)):
            raise NirmpiError(f"{method}: the solution contains NaN or Inf (check the input)")
        images.append(img)
        lams.append(lam_rel[regs[0]] if len(regs) == 1 else dict(lam_rel))
        info = dict(sinfo, lam_effective={r: lam_rel[r] * scales[r] for r in regs})
        if auto_info is not None:
            info["auto"] = auto_info
        infos.append(info)
    return images, lams, infos
