"""Classic solvers against slow reference solvers, the fine-grid operator, automatic λ, the API."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from napari_nirmpi import classic
from napari_nirmpi.classic.operators import (ForwardOperator, fine_system_matrix, grad, grad_adjoint,
                                             interp_adjoint_matrix, total_variation)
from napari_nirmpi.classic.solvers import cgnr, fista, objective, pdhg
from napari_nirmpi.errors import NirmpiError, ProblemMismatch
from napari_nirmpi.grid import Grid
from napari_nirmpi.problem import Problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _toy(shape=(6, 6), M=40, seed=0):
    """A small complex problem whose rows are smooth in space (like MPI's), and a sparse image."""
    rng = np.random.default_rng(seed)
    grid = Grid(shape, (6e-3,) * len(shape))
    pts = grid.normalized_coords(np.float64).reshape(-1, len(shape))
    k = rng.normal(size=(M, len(shape))) * 2.5
    ph = rng.uniform(0, 2 * np.pi, size=M)
    S = np.exp(1j * (pts @ k.T + ph)).T * (1 + 0.3 * rng.normal(size=(M, 1)))
    c = np.zeros(grid.size)
    c[rng.choice(grid.size, 4, replace=False)] = rng.uniform(0.5, 1.5, 4)
    u = S @ c + 0.02 * (rng.normal(size=M) + 1j * rng.normal(size=M))
    return S.astype(np.complex128), u, grid, c


def _op(S, grid, shape=None):
    return ForwardOperator(S, grid, shape, device="cpu", dtype=torch.float64)


def test_cgnr_matches_closed_form_tikhonov():
    S, u, grid, _ = _toy()
    op = _op(S, grid)
    b = op.data(u)
    A = op.A
    lam2 = 0.05 * op.frobenius2() / op.n
    x_cf = torch.linalg.solve(A.T @ A + lam2 * torch.eye(op.n, dtype=A.dtype), A.T @ b)
    x, info = cgnr(op, b, lam2=lam2, iterations=500, nonneg=False, tol=1e-12)
    assert float(torch.linalg.vector_norm(x - x_cf) / torch.linalg.vector_norm(x_cf)) < 1e-6
    # the complex data term is the stacked real one: ‖Sc − u‖² = ‖Ac − b‖² for a real c
    c = x.numpy()
    assert np.sum(np.abs(S @ c - u) ** 2) == pytest.approx(float(((A @ x - b) ** 2).sum()), rel=1e-10)


def _reference(S, u, grid, lam1=0.0, lam_tv=0.0, eps=1e-5):
    """Slow reference: L-BFGS-B with bounds c >= 0 on a smoothed isotropic TV (√(|∇c|² + ε²),
    ε tiny) and the ℓ1 term, which is linear on c >= 0 — a different algorithm from the solvers."""
    A = np.concatenate([S.real, S.imag])
    b = np.concatenate([u.real, u.imag])
    shape = grid.shape

    def f(c):
        r = A @ c - b
        val = 0.5 * r @ r + lam1 * c.sum()
        g = A.T @ r + lam1
        if lam_tv:
            ct = torch.tensor(c.reshape(shape), requires_grad=True)
            tv = torch.sqrt((grad(ct) ** 2).sum(0) + eps ** 2).sum()
            tv.backward()
            val += lam_tv * float(tv.detach())
            g = g + lam_tv * ct.grad.numpy().ravel()
        return val, g

    res = minimize(f, np.zeros(grid.size), jac=True, method="L-BFGS-B", bounds=[(0, None)] * grid.size,
                   options={"maxiter": 50000, "maxfun": 100000, "ftol": 1e-15, "gtol": 1e-12})
    return res.x


@pytest.mark.parametrize("solver", ["fista", "pdhg"])
def test_l1_nonneg_matches_reference(solver):
    S, u, grid, _ = _toy(seed=1)
    op = _op(S, grid)
    b = op.data(u)
    lam1 = 0.05 * float((op.A.T @ b).max())
    ref = _reference(S, u, grid, lam1=lam1)
    if solver == "fista":
        x, _ = fista(op, b, lam1=lam1, iterations=20000, tol=1e-12)
    else:
        x, _ = pdhg(op, b, lam1=lam1, iterations=20000, tol=1e-9)
    x = x.numpy()
    assert x.min() >= 0
    assert np.linalg.norm(x - ref) / np.linalg.norm(ref) < 2e-3
    o_x = objective(op, b, torch.from_numpy(x), lam1=lam1)
    assert o_x <= objective(op, b, torch.from_numpy(ref), lam1=lam1) * (1 + 1e-6)


def test_tv_nonneg_matches_reference():
    S, u, grid, _ = _toy(shape=(5, 5), M=30, seed=2)
    op = _op(S, grid)
    b = op.data(u)
    lam_tv = 0.02 * float((op.A.T @ b).max())
    ref = _reference(S, u, grid, lam_tv=lam_tv)
    x, info = pdhg(op, b, lam_tv=lam_tv, iterations=20000, tol=1e-9)
    x = x.numpy()
    assert x.min() >= 0
    assert np.linalg.norm(x - ref) / np.linalg.norm(ref) < 1e-2
    o_x = objective(op, b, torch.from_numpy(x), lam_tv=lam_tv)
    o_ref = objective(op, b, torch.from_numpy(ref), lam_tv=lam_tv)
    assert o_x <= o_ref * (1 + 1e-4)
    # TV actually acts: the solution's TV is far below the unregularised fit's
    x0, _ = fista(op, b, iterations=3000)
    assert float(total_variation(torch.from_numpy(x).reshape(grid.shape))) < \
        0.8 * float(total_variation(x0.reshape(grid.shape)))


def test_grad_adjoint_is_the_transpose():
    rng = np.random.default_rng(0)
    for shape in ((5, 7), (3, 4, 5)):
        c = torch.from_numpy(rng.normal(size=shape))
        z = torch.from_numpy(rng.normal(size=(len(shape), *shape)))
        assert float((grad(c) * z).sum()) == pytest.approx(float((c * grad_adjoint(z)).sum()), rel=1e-12)


def test_interp_matrix_is_the_nir_cubic_operator():
    try:
        from napari_nirmpi.nir.operators import cubic_adjoint_matrix
    except ImportError:
        from napari_nirmpi.nir.train import cubic_adjoint_matrix
    for n, s in ((7, 2), (29, 3)):
        np.testing.assert_allclose(interp_adjoint_matrix(n, n * s).numpy(),
                                   cubic_adjoint_matrix(n, s).double().numpy(), atol=1e-6)
    W = interp_adjoint_matrix(29, 104)  # non-integer factor: same kernel, rows still sum to ~1
    assert W.shape == (29, 104)
    np.testing.assert_allclose(W.sum(1).numpy()[2:-2], 1.0, atol=0.02)


@pytest.mark.parametrize("fine", [(24, 24), (30, 23)])
def test_fine_grid_forward_model_of_a_smooth_image_matches_native(fine):
    from napari_nirmpi.simulate import simulate_case

    prob = simulate_case("spiral", grid=12, seed=0).problem()
    g = prob.grid
    fg = g.with_shape(fine)

    def smooth(grid_):  # a wide Gaussian blob, off-centre, in metres
        p = grid_.points()
        return np.exp(-((p[..., 0] - 2e-3) ** 2 + (p[..., 1] + 3e-3) ** 2) / (2 * (6e-3) ** 2)).ravel()

    u_native = prob.S @ smooth(g)
    S_fine = fine_system_matrix(prob.S, g, fine)
    assert S_fine.shape == (prob.S.shape[0], fg.size) and S_fine.dtype == prob.S.dtype
    u_fine = S_fine @ smooth(fg)
    assert np.linalg.norm(u_fine - u_native) / np.linalg.norm(u_native) < 0.02
    # the matrix-free operator is the same S·D, and its adjoint is its transpose
    op = ForwardOperator(prob.S, g, fine, device="cpu", dtype=torch.float64)
    x = torch.from_numpy(smooth(fg))
    y = op.forward(x).numpy()
    M = prob.S.shape[0]
    np.testing.assert_allclose(y[:M] + 1j * y[M:], u_fine, rtol=1e-4, atol=1e-6 * np.abs(u_fine).max())
    r = torch.from_numpy(np.random.default_rng(1).normal(size=2 * M))
    assert float(op.forward(x) @ r) == pytest.approx(float(x @ op.adjoint(r)), rel=1e-10)
    A_f = np.concatenate([S_fine.real, S_fine.imag]).astype(np.float64)
    assert op.frobenius2() == pytest.approx(float((A_f ** 2).sum()), rel=1e-3)


@pytest.fixture(scope="module")
def point_case():
    from napari_nirmpi.simulate import simulate_case

    sim = simulate_case("point", grid=15, noise="medium", seed=4)
    return sim, sim.problem()


def test_auto_lambda_within_a_factor_of_the_oracle(point_case):
    """ℓ2: the discrepancy λ lies within a factor 10 of the ground-truth-best λ and loses < 1 dB."""
    from napari_nirmpi.metrics import psnr

    sim, prob = point_case
    gt = sim.ground_truth(prob.grid.shape)
    ladder = classic.lam.LADDER
    scores = [psnr(classic.reconstruct(prob, "cgnr", "l2", lam, iterations=300, device="cpu").image, gt)
              for lam in ladder]
    best = int(np.argmax(scores))
    r = classic.reconstruct(prob, "cgnr", "l2", "auto", iterations=300, device="cpu")
    assert r.info["auto"]["fits_noise"]
    assert 0.1 <= r.lam / ladder[best] <= 10
    assert psnr(r.image, gt) >= scores[best] - 1.0
    # the other terms follow the ℓ2 value by their fixed factors
    assert classic.reconstruct(prob, "pdhg", "tv", "auto", iterations=5, device="cpu").lam == \
        pytest.approx(classic.KAPPA["tv"] * r.lam)


def test_auto_lambda_needs_a_noise_level(point_case):
    _, prob = point_case
    bare = Problem(prob.S, prob.u, prob.grid, prob.frequencies, prob.channels, prob.freq_index)
    with pytest.raises(ProblemMismatch, match="noise level"):
        classic.reconstruct(bare, "cgnr", lam="auto", device="cpu")


def test_kaczmarz_through_classic_is_the_solvers_kaczmarz(point_case):
    from napari_nirmpi.solvers import reconstruct_kaczmarz

    _, prob = point_case
    r = classic.reconstruct(prob, "kaczmarz", lam=0.1, iterations=20)
    np.testing.assert_allclose(r.image, reconstruct_kaczmarz(prob, lam=0.1, iterations=20), rtol=1e-4, atol=1e-6)
    assert r.lam == 0.1 and r.grid == prob.grid
    # Kaczmarz and CGNR solve the same Tikhonov problem: many sweeps reach CGNR's image
    k = classic.reconstruct(prob, "kaczmarz", lam=0.1, iterations=2000, nonneg=False).image
    c = classic.reconstruct(prob, "cgnr", lam=0.1, iterations=1000, nonneg=False, device="cpu").image
    assert np.linalg.norm(k - c) / np.linalg.norm(c) < 0.02


def test_fine_grid_solve_and_result_contract(point_case):
    _, prob = point_case
    r = classic.reconstruct(prob, "fista", "l1", 0.01, grid="x2", device="cpu")
    assert r.image.shape == (30, 30) and r.grid.shape == (30, 30) and r.grid.fov == prob.grid.fov
    assert r.image.dtype == np.float32 and r.image.min() >= 0 and r.image.max() > 0
    assert r.info["method"] == "fista" and r.info["reg"] == ["l1"] and r.lam == 0.01
    both = classic.reconstruct(prob, "pdhg", "tv,l1", {"tv": 1e-3, "l1": 1e-2}, iterations=50, device="cpu")
    assert both.lam == {"tv": 1e-3, "l1": 1e-2} and set(both.info["lam_effective"]) == {"tv", "l1"}
    assert classic.METHODS == ("kaczmarz", "cgnr", "fista", "pdhg") and set(classic.REGS) == {"l2", "l1", "tv"}


def test_frames_and_weighting(point_case):
    _, prob = point_case
    series = prob.with_u(np.stack([prob.u, 2 * prob.u]))
    r = classic.reconstruct(series, "cgnr", lam=0.01, device="cpu")
    assert r.image.shape == (2, 15, 15)
    np.testing.assert_allclose(r.image[1], 2 * r.image[0], rtol=1e-3, atol=1e-5 * r.image.max())
    for w in ("snr", "noise"):
        rw = classic.reconstruct(prob, "cgnr", lam=0.01, weighting=w, device="cpu")
        assert rw.info["weighting"] == w and np.isfinite(rw.image).all()
        assert not np.allclose(rw.image, r.image[0])


@pytest.mark.parametrize("kw, match", [
    (dict(method="magic"), "method"),
    (dict(method="fista", reg="tv"), "TV needs pdhg"),
    (dict(method="cgnr", reg="l3"), "unknown"),
    (dict(method="pdhg", reg="tv,tv"), "twice"),
    (dict(method="cgnr", lam=-1.0), "lambda"),
    (dict(method="cgnr", lam=float("nan")), "lambda"),
    (dict(method="cgnr", lam="often"), "lambda"),
    (dict(method="pdhg", reg="tv,l1", lam=[1, 2, 3]), "3 values"),
    (dict(method="cgnr", grid=(10, 10)), "coarser"),
    (dict(method="cgnr", iterations=0), "iterations"),
    (dict(method="cgnr", weighting="loud"), "weighting"),
])
def test_bad_arguments_are_clear_errors(point_case, kw, match):
    _, prob = point_case
    S0, u0 = prob.S.copy(), prob.u.copy()
    with pytest.raises(NirmpiError, match=match):
        classic.reconstruct(prob, device="cpu", **kw)
    assert np.array_equal(prob.S, S0) and np.array_equal(prob.u, u0)  # inputs untouched


def test_3d_small_case():
    from napari_nirmpi.simulate import simulate_case

    prob = simulate_case("point", grid=(5, 7, 7), noise="medium", seed=2).problem()
    for method, reg in (("pdhg", "tv"), ("fista", "l1"), ("cgnr", "l2")):
        r = classic.reconstruct(prob, method, reg, "auto", iterations=100, device="cpu")
        assert r.image.shape == (5, 7, 7) and r.image.min() >= 0 and r.image.max() > 0
    r = classic.reconstruct(prob, "pdhg", "tv", 1e-3, grid=(10, 14, 14), iterations=100, device="cpu")
    assert r.image.shape == (10, 14, 14) and np.isfinite(r.image).all()
    # the brightest voxel of the fine image sits where the native one's does (same FOV)
    nat = classic.reconstruct(prob, "pdhg", "tv", 1e-3, iterations=100, device="cpu").image
    zi, yi, xi = np.unravel_index(np.argmax(nat), nat.shape)
    zf, yf, xf = np.unravel_index(np.argmax(r.image), r.image.shape)
    assert abs(zf // 2 - zi) <= 1 and abs(yf // 2 - yi) <= 1 and abs(xf // 2 - xi) <= 1
