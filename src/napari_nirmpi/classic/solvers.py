"""CGNR, FISTA and an adaptive primal-dual (Chambolle–Pock) solver in torch (CPU and CUDA alike).

All of them minimise, over a real image c (flattened, `op.shape`),

    ½‖A c − b‖² + ½λ₂‖c‖² + λ₁‖c‖₁ + λ_tv TV(c)   [+ c ≥ 0]

with A = `ForwardOperator` (complex rows stacked as real ones), TV the isotropic total variation
(forward differences, Neumann boundary). ½λ₂‖c‖² with λ₂ = λ_eff is Kaczmarz's Tikhonov term
(‖Sc − u‖² + λ_eff‖c‖², halved), so the same λ means the same thing in CGNR and Kaczmarz.

- `cgnr`: conjugate gradients on (AᵀA + λ₂I) c = Aᵀb (CGLS form); the non-negativity projection
  runs once, after the last iteration (as RegularizedLeastSquares.jl's CGNR).
- `fista`: ℓ1 (+ ℓ2 in the smooth part) with the non-negativity projection in every proximal step;
  step 1/L, L = ‖A‖² + λ₂ by power iteration; adaptive restart (O'Donoghue & Candès 2015).
- `pdhg`: Chambolle–Pock on K = [A; μ∇] with μ = ‖A‖/√(4d) (both blocks of equal norm) and the
  step ratio τ/σ balanced on the fly from the primal and dual residuals (Goldstein, Li & Yuan,
  "Adaptive primal-dual splitting", 2015), so no step has to be tuned per problem; TV, ℓ1, ℓ2 and
  non-negativity in any combination. One product with A and one with Aᵀ per iteration.
Each returns (c, info) with info["iterations"], info["converged"].
"""

from __future__ import annotations

import math

import torch

from .operators import grad, grad_adjoint, total_variation

__all__ = ["cgnr", "fista", "pdhg", "objective"]


def objective(op, b, c, lam2=0.0, lam1=0.0, lam_tv=0.0) -> float:
    r = op.forward(c) - b
    val = 0.5 * float(r @ r) + 0.5 * lam2 * float(c @ c) + lam1 * float(c.abs().sum())
    if lam_tv:
        val += lam_tv * float(total_variation(c.reshape(op.shape)))
    return val


def cgnr(op, b, lam2: float = 0.0, iterations: int = 100, nonneg: bool = True, tol: float = 1e-7,
         x0=None, callback=None):
    """CGLS for min ½‖Ac − b‖² + ½λ₂‖c‖²; stops after `iterations` or when the normal-equation
    residual falls below tol·‖Aᵀb‖."""
    c = torch.zeros(op.n, dtype=b.dtype, device=b.device) if x0 is None else x0.clone()
    r = b - op.forward(c)
    s = op.adjoint(r) - lam2 * c
    p = s.clone()
    gamma = float(s @ s)
    stop = tol * tol * float((op.adjoint(b) ** 2).sum())
    it, converged = 0, gamma <= stop
    for it in range(1, int(iterations) + 1):
        if converged:
            it -= 1
            break
        q = op.forward(p)
        den = float(q @ q) + lam2 * float(p @ p)
        if den <= 0 or not math.isfinite(den):
            break
        alpha = gamma / den
        c += alpha * p
        r -= alpha * q
        s = op.adjoint(r) - lam2 * c
        gamma_new = float(s @ s)
        p = s + (gamma_new / gamma) * p
        gamma = gamma_new
        converged = gamma <= stop
        if callback is not None:
            callback(it, c)
    if nonneg:
        c = c.clamp_min(0)
    return c, {"iterations": it, "converged": bool(converged)}


def _prox_g(v, t, lam1, lam2, nonneg):
    """prox of t·(λ₁‖·‖₁ + ½λ₂‖·‖² + ι≥0)."""
    if nonneg:
        v = (v - t * lam1).clamp_min(0)
    elif lam1:
        v = torch.sign(v) * (v.abs() - t * lam1).clamp_min(0)
    return v / (1 + t * lam2) if lam2 else v


def fista(op, b, lam1: float = 0.0, lam2: float = 0.0, iterations: int = 300, nonneg: bool = True,
          tol: float = 1e-6, restart: bool = True, x0=None, callback=None):
    """FISTA for ½‖Ac − b‖² + ½λ₂‖c‖² + λ₁‖c‖₁ (+ c ≥ 0); stops when the relative change of c
    falls below tol."""
    L = op.norm2()
    t_step = 1.0 / L  # λ₂ goes into the prox (exact), so the step needs only ‖A‖²
    x = torch.zeros(op.n, dtype=b.dtype, device=b.device) if x0 is None else x0.clone()
    y = x.clone()
    tk = 1.0
    it, converged = 0, False
    for it in range(1, int(iterations) + 1):
        g = op.adjoint(op.forward(y) - b)
        x_new = _prox_g(y - t_step * g, t_step, lam1, lam2, nonneg)
        dx = x_new - x
        if restart and float((y - x_new) @ dx) > 0:  # momentum points uphill: restart it
            tk = 1.0
        t_new = 0.5 * (1 + math.sqrt(1 + 4 * tk * tk))
        y = x_new + ((tk - 1) / t_new) * dx
        nx = float(torch.linalg.vector_norm(x_new))
        change = float(torch.linalg.vector_norm(dx))
        x, tk = x_new, t_new
        if callback is not None:
            callback(it, x)
        if it > 10 and change <= tol * max(nx, 1e-30):
            converged = True
            break
    return x, {"iterations": it, "converged": converged}


def pdhg(op, b, lam_tv: float = 0.0, lam1: float = 0.0, lam2: float = 0.0, iterations: int = 500,
         nonneg: bool = True, tol: float = 1e-4, x0=None, callback=None):
    """Adaptive Chambolle–Pock for ½‖Ac − b‖² + λ_tv TV(c) + λ₁‖c‖₁ + ½λ₂‖c‖² (+ c ≥ 0).

    Stops after `iterations` or when the primal and dual residuals both fall below tol times
    the size of the gradient terms they balance."""
    shape = op.shape
    d = len(shape)
    nA2 = op.norm2()
    use_tv = lam_tv > 0
    mu = math.sqrt(nA2 / (4 * d)) if use_tv else 0.0
    L2 = nA2 + mu * mu * 4 * d  # ≥ ‖K‖²
    tau = sigma = 0.99 / math.sqrt(L2)
    alpha, eta, delta = 0.5, 0.95, 1.5
    x = torch.zeros(op.n, dtype=b.dtype, device=b.device) if x0 is None else x0.clone()
    ya = torch.zeros_like(b)
    z = torch.zeros((d, *shape), dtype=b.dtype, device=b.device) if use_tv else None

    def K(v):
        return op.forward(v), (mu * grad(v.reshape(shape)) if use_tv else None)

    def KT(ya_, z_):
        out = op.adjoint(ya_)
        if use_tv:
            out = out + mu * grad_adjoint(z_).reshape(-1)
        return out

    Kx_a, Kx_z = K(x)
    KTy = KT(ya, z)
    bound = lam_tv / mu if use_tv else 0.0
    it, converged = 0, False
    for it in range(1, int(iterations) + 1):
        x_new = _prox_g(x - tau * KTy, tau, lam1, lam2, nonneg)
        Kxn_a, Kxn_z = K(x_new)
        # dual step at the extrapolated point 2x_new − x (K is linear: no extra product)
        va = ya + sigma * (2 * Kxn_a - Kx_a)
        ya_new = (va - sigma * b) / (1 + sigma)
        if use_tv:
            vz = z + sigma * (2 * Kxn_z - Kx_z)
            nrm = torch.sqrt((vz ** 2).sum(0, keepdim=True))
            z_new = vz / torch.clamp(nrm / bound, min=1.0)
        else:
            z_new = None
        KTy_new = KT(ya_new, z_new)
        # residuals (Goldstein et al.): p from the primal step, d from the dual step
        p = (x - x_new) / tau - (KTy - KTy_new)
        dres_a = (ya - ya_new) / sigma - (Kx_a - Kxn_a)
        pn = float(p.abs().sum())
        dn = float(dres_a.abs().sum())
        if use_tv:
            dn += float(((z - z_new) / sigma - (Kx_z - Kxn_z)).abs().sum())
        x, ya, z, KTy, Kx_a, Kx_z = x_new, ya_new, z_new, KTy_new, Kxn_a, Kxn_z
        if callback is not None:
            callback(it, x)
        scale_p = float(KTy.abs().sum()) + 1e-30
        scale_d = float(Kx_a.abs().sum()) + float(b.abs().sum()) + 1e-30
        if it > 20 and pn <= tol * scale_p and dn <= tol * scale_d:
            converged = True
            break
        if pn > delta * dn:      # primal lags: longer primal steps
            tau, sigma, alpha = tau / (1 - alpha), sigma * (1 - alpha), alpha * eta
        elif pn < dn / delta:    # dual lags
            tau, sigma, alpha = tau * (1 - alpha), sigma / (1 - alpha), alpha * eta
    return x, {"iterations": it, "converged": converged}
