"""Automatic λ without ground truth: the discrepancy principle on the Tikhonov path, transferred.

1. ℓ2 (Kaczmarz, CGNR; and the anchor of every other term): the largest relative λ on a ladder
   of 4 values per decade (1e-6 … 10) whose Tikhonov solution fits the data to the noise level,
   ‖A c_λ − b‖² ≤ Σ_m w_m²σ_u,m² + ‖c_λ‖²·Σ_m w_m²σ_S,m² — the measurement's noise from its
   background frames (`Problem.noise_std`) plus the calibration noise of each system-matrix row,
   σ_S,m = mean|s_m|/snr_m, which enters the residual in proportion to the image. Without the
   calibration term the residual never reaches the background noise on most cases (model error)
   and the principle picks the smallest λ. The Tikhonov path is computed exactly from one SVD of
   the native matrix (a warm-started CGNR ladder when the matrix is too large to decompose).
   The part of the data outside the range of A beyond what the noise explains (model error, e.g.
   a coarse calibration grid) is added to the budget: no image can fit it, and without it a 15²
   spiral never reaches the noise level and gets the smallest λ (−0.6 dB; with it −0.01 dB).
2. ℓ1 and TV: λ = κ·λ₂ with κ_ℓ1 = 1 and κ_TV = 0.1, the factors that lost least against the
   ground-truth-tuned λ on the tune half of the benchmark suite (2026-12-03; the held-out half and
   the unseen cases measure them: docs/classic.md). A residual-matching rule (the ℓ1/TV image as
   far from the data as the clipped Tikhonov one) and the L-curve corner lost 1.3–2 dB on TV.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ProblemMismatch
from .solvers import cgnr

__all__ = ["RULE", "KAPPA", "LADDER", "auto_lambda", "discrepancy_l2"]

RULE = "discrepancy (measurement + calibration noise) on the Tikhonov path; l1 = 1 x, tv = 0.1 x the l2 value"
KAPPA = {"l2": 1.0, "l1": 1.0, "tv": 0.1}
LADDER = tuple(float(v) for v in np.logspace(-6, 1, 29))
_SVD_MAX = 6000


def discrepancy_l2(solver, b) -> tuple[float, dict]:
    """(relative λ₂, details) by the discrepancy principle on the native grid."""
    su, ss = solver.noise_terms()
    ss_sum = 0.0 if ss is None else float(np.sum(ss))
    if su <= 0 and ss_sum <= 0:
        raise ProblemMismatch("automatic λ needs a noise level: background frames in the measurement "
                              "or the system matrix's SNR; give a λ instead")
    op = solver.op
    A = op.A.double()
    bn = b.double()
    l2_native = solver.l2_scale / solver._ratio  # trace/N of the native operator
    res_list, tgt_list = [], []
    if min(A.shape) <= _SVD_MAX:
        U, sv, Vt = torch.linalg.svd(A, full_matrices=False)
        beta = U.T @ bn
        perp = max(float(bn @ bn - beta @ beta), 0.0)
        M2, N = A.shape
        # data outside the range of A that the measurement noise cannot explain is model error
        # (e.g. a coarse calibration grid): no image removes it, so it joins the budget
        excess = max(0.0, perp - su * (M2 - N) / M2) if M2 > N else 0.0
        for lam in LADDER:
            f = sv ** 2 / (sv ** 2 + lam * l2_native)
            res_list.append(float((((1 - f) * beta) ** 2).sum()) + perp)
            coef = f * beta / sv
            tgt_list.append(su + excess + ss_sum * float((coef ** 2).sum()))  # ‖V coef‖ = ‖coef‖
    else:
        from .operators import ForwardOperator

        nat = ForwardOperator.__new__(ForwardOperator)
        nat.__dict__.update(op.__dict__)
        nat.fine, nat.mats, nat.shape, nat._norm2 = False, None, tuple(solver.problem.grid.shape), None
        x = None
        for lam in LADDER[::-1]:
            x, _ = cgnr(nat, b, lam2=lam * l2_native, iterations=50, nonneg=False, x0=x)
            r = nat.forward(x) - b
            res_list.insert(0, float(r @ r))
            tgt_list.insert(0, su + ss_sum * float(x @ x))
        excess = None
    res, tgt = np.array(res_list), np.array(tgt_list)
    if excess is None:  # the smallest λ's residual stands in for the part outside the range
        excess = max(0.0, float(res[0]) - su)
        tgt = tgt + excess
    ok = np.flatnonzero(res <= tgt)
    i = int(ok[-1]) if ok.size else 0
    return LADDER[i], {"lam_l2": LADDER[i], "fits_noise": bool(ok.size), "residual": float(res[i]),
                       "target": float(tgt[i]), "measurement_noise": su, "model_error": float(excess),
                       "calibration_noise_per_c2": ss_sum}


def auto_lambda(solver, b, u, regs, iterations, scales=None, progress=None) -> tuple[dict, dict]:
    """{reg: relative λ} for `regs` without ground truth, and how it was found."""
    if progress is not None:
        progress("choosing λ (discrepancy principle)")
    lam2, info = discrepancy_l2(solver, b)
    lam = {r: KAPPA[r] * lam2 for r in regs}
    info["rule"] = RULE
    return lam, info
