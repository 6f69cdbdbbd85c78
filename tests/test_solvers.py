"""Kaczmarz-ℓ2 against a plain row-by-row reference (MPIReco / RegularizedLeastSquares semantics)."""

import time

import numpy as np
import pytest

from napari_nirmpi import Grid, Problem
from napari_nirmpi.errors import NirmpiError, ProblemMismatch
from napari_nirmpi.solvers import KaczmarzSystem, kaczmarz, reconstruct_kaczmarz


def reference_kaczmarz(S, u, iterations, lam, normalize_reg=True, enforce_real=True,
                       enforce_positive=True, order=None):
    """Straightforward transcription of RLS Kaczmarz (complex128, one row at a time)."""
    S = np.asarray(S, dtype=np.complex128)
    u = np.asarray(u, dtype=np.complex128)
    M, N = S.shape
    energy = np.array([np.vdot(S[m], S[m]).real for m in range(M)])
    lam_eff = lam * energy.sum() / N if normalize_reg else lam
    eps = np.sqrt(lam_eff)
    rows = [m for m in (range(M) if order is None else order) if energy[m] > 0]
    x = np.zeros(N, complex)
    v = np.zeros(M, complex)
    for _ in range(iterations):
        for m in rows:
            tau = np.sum(S[m] * x)                       # no conjugation (BLAS dotu)
            alpha = (u[m] - tau - eps * v[m]) / (energy[m] + lam_eff)
            x = x + alpha * np.conj(S[m])
            v[m] = v[m] + alpha * eps
        if enforce_positive:                             # PositiveRegularization: real, then clip
            x = np.maximum(x.real, 0).astype(complex)
        elif enforce_real:
            x = x.real.astype(complex)
    return x.real if (enforce_real or enforce_positive) else x


def make_problem(M=300, N=100, seed=0, dtype=np.complex64):
    rng = np.random.default_rng(seed)
    S = (rng.standard_normal((M, N)) + 1j * rng.standard_normal((M, N))).astype(dtype)
    c = np.clip(rng.standard_normal(N), 0, None)
    u = S @ c + 0.05 * (rng.standard_normal(M) + 1j * rng.standard_normal(M))
    return S, u.astype(dtype), c


def rel(a, b):
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b))


@pytest.mark.parametrize("lam", [0.5, 1e-3])
def test_matches_reference_29x29(lam):
    S, u, _ = make_problem(M=400, N=29 * 29)
    x = kaczmarz(S, u, iterations=12, lam=lam)
    assert x.dtype == np.float32 and x.shape == (841,)
    assert rel(x, reference_kaczmarz(S, u, 12, lam)) < 1e-4
    assert (x >= 0).all() and x.max() > 0


def test_matches_reference_150_sweeps_paper_defaults():
    S, u, _ = make_problem(M=120, N=64, seed=3)
    assert rel(kaczmarz(S, u), reference_kaczmarz(S, u, 150, 0.5)) < 1e-4


@pytest.mark.parametrize("real,positive", [(False, False), (True, False), (False, True)])
def test_projection_variants(real, positive):
    S, u, _ = make_problem(M=200, N=81, seed=1)
    x = kaczmarz(S, u, iterations=8, lam=0.1, enforce_real=real, enforce_positive=positive)
    ref = reference_kaczmarz(S, u, 8, 0.1, enforce_real=real, enforce_positive=positive)
    assert rel(x, ref) < 1e-4
    if not (real or positive):
        assert x.dtype == np.complex64 and np.abs(x.imag).max() > 0
    else:
        assert x.dtype == np.float32
    if positive:
        assert x.min() >= 0
    elif real:
        assert x.min() < 0  # real projection alone keeps negatives


def test_projection_is_per_sweep_not_per_row():
    # a per-row projection gives a visibly different answer after one sweep
    S, u, _ = make_problem(M=200, N=81, seed=2)
    x = kaczmarz(S, u, iterations=1, lam=0.01)
    Sd, ud = S.astype(complex), u.astype(complex)
    energy = (np.abs(Sd) ** 2).sum(1)
    lam_eff = 0.01 * energy.sum() / 81
    eps = np.sqrt(lam_eff)
    xr, v = np.zeros(81, complex), np.zeros(200, complex)
    for m in range(200):
        a = (ud[m] - Sd[m] @ xr - eps * v[m]) / (energy[m] + lam_eff)
        xr = np.maximum((xr + a * np.conj(Sd[m])).real, 0).astype(complex)
        v[m] += a * eps
    assert rel(x, xr.real) > 1e-2
    assert rel(x, reference_kaczmarz(S, u, 1, 0.01)) < 1e-4


def test_complex128_is_float64_and_tight():
    S, u, _ = make_problem(M=150, N=49, seed=4, dtype=np.complex128)
    x = kaczmarz(S, u, iterations=20, lam=0.2)
    assert x.dtype == np.float64
    assert rel(x, reference_kaczmarz(S, u, 20, 0.2)) < 1e-10


def test_converges_to_tikhonov_solution_without_constraints():
    S, u, _ = make_problem(M=60, N=30, seed=5, dtype=np.complex128)
    lam = 2.0
    x = kaczmarz(S, u, iterations=3000, lam=lam, normalize_reg=False, enforce_real=False,
                 enforce_positive=False)
    tik = np.linalg.solve(S.conj().T @ S + lam * np.eye(30), S.conj().T @ u)
    assert rel(x, tik) < 1e-6


def test_normalisation_matches_absolute_lambda():
    S, u, _ = make_problem(M=100, N=49, seed=6)
    lam_abs = 0.3 * float((np.abs(S.astype(complex)) ** 2).sum()) / 49
    a = kaczmarz(S, u, iterations=10, lam=0.3)
    b = kaczmarz(S, u, iterations=10, lam=lam_abs, normalize_reg=False)
    assert rel(a, b) < 1e-5
    assert rel(kaczmarz(S, u, iterations=10, lam=0.3, normalize_reg=False), a) > 1e-3


def test_zero_rows_are_dropped():
    S, u, _ = make_problem(M=100, N=49, seed=7)
    S0 = np.insert(S, [0, 50, 100], 0, axis=0)
    u0 = np.insert(u, [0, 50, 100], 5.0 + 1j, axis=0)  # measurements on dead rows are ignored
    assert KaczmarzSystem(S0).nonzero_rows.size == 100
    np.testing.assert_allclose(kaczmarz(S0, u0, iterations=10), kaczmarz(S, u, iterations=10),
                               rtol=0, atol=1e-6)


def test_shuffle_seeded_and_matches_reference_order():
    S, u, _ = make_problem(M=120, N=49, seed=8)
    a = kaczmarz(S, u, iterations=5, lam=0.05, shuffle=True, seed=11)
    b = kaczmarz(S, u, iterations=5, lam=0.05, shuffle=True, seed=11)
    np.testing.assert_array_equal(a, b)
    order = np.random.default_rng(11).permutation(120)
    assert rel(a, reference_kaczmarz(S, u, 5, 0.05, order=order)) < 1e-4
    assert rel(a, kaczmarz(S, u, iterations=5, lam=0.05)) > 1e-4


def test_many_frames_equal_single_solves():
    S, u, _ = make_problem(M=150, N=64, seed=9)
    rng = np.random.default_rng(0)
    U = np.stack([u, 0.5 * u, u + 0.2 * rng.standard_normal(150)]).astype(np.complex64)
    X = kaczmarz(S, U, iterations=7)
    assert X.shape == (3, 64) and X.dtype == np.float32
    for f in range(3):
        np.testing.assert_array_equal(X[f], kaczmarz(S, U[f], iterations=7))


def test_snapshots_equal_separate_runs():
    S, u, _ = make_problem(M=100, N=49, seed=10)
    snaps = kaczmarz(S, u, lam=0.1, snapshots=(3, 1, 10))
    assert sorted(snaps) == [1, 3, 10]
    for k, x in snaps.items():
        np.testing.assert_array_equal(x, kaczmarz(S, u, iterations=k, lam=0.1))


def test_reconstruct_problem_shapes():
    grid = Grid((7, 9), (7e-3, 9e-3))
    S, u, _ = make_problem(M=80, N=63, seed=11)
    meta = dict(frequencies=np.arange(80.0), channels=np.zeros(80, int), freq_index=np.arange(80))
    img = reconstruct_kaczmarz(Problem(S, u, grid, **meta), iterations=3)
    assert img.shape == (7, 9) and img.dtype == np.float32
    np.testing.assert_array_equal(img.ravel(), kaczmarz(S, u, iterations=3))
    series = reconstruct_kaczmarz(Problem(S, np.stack([u, 2 * u]), grid, **meta), iterations=3)
    assert series.shape == (2, 7, 9)
    np.testing.assert_allclose(series[1], 2 * series[0], rtol=1e-4, atol=1e-6)


def test_validation_errors():
    S, u, _ = make_problem(M=20, N=9)
    with pytest.raises(ProblemMismatch, match="u must have shape"):
        kaczmarz(S, u[:-1])
    with pytest.raises(ProblemMismatch, match="2-D"):
        kaczmarz(S[0], u)
    bad = S.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ProblemMismatch, match="NaN"):
        kaczmarz(bad, u)
    badu = u.copy()
    badu[0] = np.inf
    with pytest.raises(ProblemMismatch, match="NaN or Inf"):
        kaczmarz(S, badu)
    with pytest.raises(NirmpiError, match="lam"):
        kaczmarz(S, u, lam=-1)
    with pytest.raises(NirmpiError, match="iterations"):
        kaczmarz(S, u, iterations=2.5)


def test_all_zero_matrix_gives_zero_image():
    x = kaczmarz(np.zeros((5, 4), np.complex64), np.ones(5, np.complex64), iterations=3)
    np.testing.assert_array_equal(x, np.zeros(4, np.float32))


def test_faster_than_python_row_loop():
    # side by side on the same (shared) machine; the full >= 50x figure is in benchmarks/
    S, u, _ = make_problem(M=400, N=29 * 29, seed=12)
    kaczmarz(S, u, iterations=1)  # JIT warm-up (cached on disk after the first run)
    t0 = time.perf_counter()
    reference_kaczmarz(S, u, 2, 0.5)
    t_ref = (time.perf_counter() - t0) / 2
    t0 = time.perf_counter()
    kaczmarz(S, u, iterations=20)
    t_fast = (time.perf_counter() - t0) / 20
    assert t_ref / t_fast > 5
