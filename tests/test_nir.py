"""NIR engine: SIREN init, the pooling operator D, training, stopping, determinism, cancellation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_nirmpi import Grid, Problem, TrainingError
from napari_nirmpi.errors import NirmpiError
from napari_nirmpi.nir import ExperimentalConfig, Field, Siren, TrainConfig, ValidationPatience, build_network, train
from napari_nirmpi.nir.train import (cubic_adjoint_matrix, cubic_pool, estimate_scale, fit, pool,
                                     split_rows)


def make_problem(n=10, M=300, noise=0.01, seed=0, ndim=2):
    """A small complex forward model: Gaussian-windowed plane waves (MPI-like smooth rows)."""
    rng = np.random.default_rng(seed)
    grid = Grid((n,) * ndim, (0.02,) * ndim)
    pts = grid.normalized_coords(np.float64).reshape(-1, ndim)
    cen = rng.uniform(-1, 1, (M, ndim))
    k = rng.normal(0, 4, (M, ndim))
    sig = rng.uniform(0.1, 0.4, M)
    d2 = ((pts[None] - cen[:, None]) ** 2).sum(-1)
    S = np.exp(-d2 / (2 * sig[:, None] ** 2)) * np.exp(1j * (pts @ k.T).T)
    r = np.sqrt((pts ** 2).sum(-1))
    truth = (np.abs(r - 0.5) < 0.2).astype(np.float64) * 3.0  # a ring, intensity 3 (units-free check)
    u = S @ truth
    u = u + noise * np.abs(u).mean() * (rng.normal(size=M) + 1j * rng.normal(size=M))
    nrm = np.linalg.norm(S, axis=1)
    S, u = (S / nrm[:, None]).astype(np.complex64), (u / nrm).astype(np.complex64)
    prob = Problem(S, u, grid, np.arange(M, dtype=float), np.zeros(M, int), np.arange(M),
                   params={"source": "synthetic"})
    return prob, truth.reshape(grid.shape).astype(np.float32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = dict(width=32, depth=2, log_every=10, preview_every=50, device="cpu")


# ------------------------------------------------------------------------------ network

@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("ndim", [2, 3])
def test_siren_init_ranges(fold, ndim):
    w, w0, wh = 64, 30.0, 20.0
    net = Siren(ndim, width=w, depth=3, omega0=w0, hidden_omega0=wh, fold=fold, seed=3)
    layers = net.unfolded_layers()
    W1, b1 = layers[0]
    assert W1.abs().max() <= 1.0 / ndim + 1e-6 and W1.abs().max() > 0.8 / ndim
    assert b1.abs().max() <= 1 / math.sqrt(ndim) + 1e-6
    bound = math.sqrt(6.0 / w) / wh
    for W, b in layers[1:]:
        assert W.shape == (w, w)
        assert W.abs().max() <= bound * (1 + 1e-5) and W.abs().max() > 0.9 * bound
        assert abs(W.std().item() - bound / math.sqrt(3)) < 0.1 * bound  # uniform, not normal
        assert b.abs().max() <= 1 / math.sqrt(w) + 1e-6
    assert net.out.weight.abs().max() <= bound * (1 + 1e-5)
    # folded storage is ω0 times the reference parametrisation
    stored = net.layers[1].weight.detach().abs().max()
    assert math.isclose(stored, layers[1][0].abs().max() * (wh if fold else 1.0), rel_tol=1e-5)


def test_fold_is_exact_reparametrisation():
    torch.manual_seed(0)
    x = torch.rand(300, 2) * 2 - 1
    target = torch.sin(3 * x[:, 0]) * x[:, 1]
    nets = [Siren(2, 32, 2, omega0=30, hidden_omega0=30, fold=f, seed=1) for f in (True, False)]
    assert torch.allclose(nets[0](x), nets[1](x), atol=1e-5)
    for net in nets:
        opt = torch.optim.Adam(net.param_groups(1e-3))
        for _ in range(30):
            opt.zero_grad()
            ((net(x) - target) ** 2).mean().backward()
            opt.step()
    a, b = nets[0](x), nets[1](x)
    assert (a - b).abs().max() / b.abs().max() < 1e-3
    # and training did something
    assert ((a - target) ** 2).mean() < ((nets[0](x) * 0 - target) ** 2).mean()


def test_positive_output_and_fourier_network():
    net = build_network({"network": "siren", "in_dim": 2, "width": 16, "depth": 1, "positive": "softplus"})
    x = torch.rand(500, 2) * 2 - 1
    assert (net(x) >= 0).all()
    four = build_network({"network": "fourier", "in_dim": 3, "width": 16, "depth": 1, "num_features": 8})
    assert four(torch.rand(7, 3)).shape == (7,)


def test_field_evaluate_shapes():
    grid = Grid((5, 6), (0.01, 0.012))
    f = Field(Siren(2, 16, 1, seed=0), grid, scale=2.0)
    c = grid.normalized_coords().reshape(-1, 2)
    v = f.evaluate(c, batch_size=7)
    assert v.shape == (30,) and v.dtype == np.float32
    with torch.no_grad():
        ref = f.network(torch.from_numpy(c)).numpy() * 2.0
    np.testing.assert_allclose(v, ref, rtol=1e-6)
    with pytest.raises(Exception):
        f.evaluate(np.zeros((4, 3)))
    # the in-place inference path computes the same function as the autograd path
    x = torch.from_numpy(c)
    np.testing.assert_allclose(f.network(x).detach().numpy() * 2.0, v, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ operator D

@pytest.mark.parametrize("shape", [(4, 6), (3, 4, 5)])
@pytest.mark.parametrize("s", [1, 2, 3, 5])
def test_pooling_is_voxel_mean(shape, s):
    grid = Grid(shape, (0.01,) * len(shape))
    rng = np.random.default_rng(0)
    fine = rng.normal(size=[n * s for n in shape]).astype(np.float32)
    pooled = pool(torch.from_numpy(fine.ravel()), shape, s).numpy()
    # explicit block means
    blocks = fine.reshape(*[v for n in shape for v in (n, s)])
    mean = blocks.mean(axis=tuple(range(1, 2 * len(shape), 2)))
    np.testing.assert_allclose(pooled, mean.ravel(), rtol=1e-5, atol=1e-6)
    # the fine grid tiles each native voxel exactly: pooled fine centres = native centres
    fc = grid.refined(s).normalized_coords().reshape(-1, len(shape))
    for d in range(len(shape)):
        got = pool(torch.from_numpy(np.ascontiguousarray(fc[:, d])), shape, s).numpy()
        np.testing.assert_allclose(got, grid.normalized_coords()[..., d].ravel(), atol=1e-6)


@pytest.mark.parametrize("shape", [(5, 7), (5, 6, 7)])
@pytest.mark.parametrize("s", [1, 2, 3])
def test_cubic_operator_is_the_adjoint_of_cubic_interpolation(shape, s):
    # <D f, c> = <f, U c> / s^ndim with U the cubic interpolation native -> s-fold grid: S·D is the
    # system matrix interpolated to the fine grid
    rng = np.random.default_rng(1)
    mats = [cubic_adjoint_matrix(n, s) for n in shape]
    fine = torch.from_numpy(rng.normal(size=[n * s for n in shape]).astype(np.float64))
    c = torch.from_numpy(rng.normal(size=shape).astype(np.float64))
    up = c
    for axis, n in enumerate(shape):  # U applied axis by axis (separable)
        u1 = F.interpolate(torch.eye(n, dtype=torch.float64).reshape(n, 1, 1, n), size=(1, n * s),
                           mode="bicubic", align_corners=False).reshape(n, n * s)
        up = torch.movedim(torch.tensordot(u1, up, dims=([0], [axis])), 0, axis)
    if len(shape) == 2:  # the same U as torch's 2D bicubic up-sampling
        ref = F.interpolate(c[None, None], size=tuple(n * s for n in shape), mode="bicubic",
                            align_corners=False)[0, 0]
        np.testing.assert_allclose(up.numpy(), ref.numpy(), atol=1e-10)
    lhs = float((cubic_pool(fine.float(), shape, s, mats).double() * c.reshape(-1)).sum())
    rhs = float((fine * up).sum()) / s ** len(shape)
    assert lhs == pytest.approx(rhs, rel=1e-5, abs=1e-5)
    # a constant field stays constant away from the edges (weights sum to one there)
    one = cubic_pool(torch.ones([n * s for n in shape]), shape, s, mats).reshape(shape)
    inner = one[tuple(slice(2, n - 2) for n in shape)]
    assert inner.numel() > 0
    np.testing.assert_allclose(inner.numpy(), 1.0, atol=1e-5)


def test_cubic_operator_models_an_off_centre_point_better_than_pooling():
    # the simulator's measurement of a 1 mm dot off the voxel centres, against S·D of its fine
    # rendering: pooling holds the system matrix constant over a voxel, cubic interpolates it
    from napari_nirmpi.phantoms import Point
    from napari_nirmpi.simulate import Particles, Scanner, measure_phantom, system_matrix

    grid, scanner, particles = Grid((29, 29), (29e-3, 29e-3)), Scanner(), Particles()
    dot = Point(center=(-1.7e-3, 4.3e-3))
    S = system_matrix(particles, scanner, grid, 4).reshape(-1, grid.size).astype(np.complex128)
    m = measure_phantom(dot, particles, scanner, grid).reshape(-1)
    f = scanner.frequencies()
    rows = np.tile((f >= 20e3) & (f <= 380e3), 2)
    s = 6
    fine = torch.from_numpy(dot.render(grid.refined(s), None, 4).astype(np.float32))
    errs = {}
    for name, c in (("pool", pool(fine.reshape(-1), grid.shape, s)),
                    ("cubic", cubic_pool(fine, grid.shape, s, [cubic_adjoint_matrix(29, s)] * 2))):
        u = S @ c.double().numpy()
        errs[name] = np.linalg.norm(u[rows] - m[rows]) / np.linalg.norm(m[rows])
    assert errs["cubic"] < 0.3 * errs["pool"], errs


def test_split_rows_is_seeded_and_disjoint():
    val, tr = split_rows(466, TrainConfig())
    assert len(val) == 47 and len(tr) == 419 and not set(val) & set(tr)
    assert np.array_equal(np.sort(np.concatenate([val, tr])), np.arange(466))
    assert np.array_equal(split_rows(466, TrainConfig())[0], val)
    assert not np.array_equal(split_rows(466, TrainConfig(seed=1))[0], val)
    assert len(split_rows(466, TrainConfig(val_fraction=0.0))[0]) == 0


def test_estimate_scale_is_units_free():
    prob, _ = make_problem()
    Sr = torch.from_numpy(np.concatenate([prob.S.real, prob.S.imag]))
    ur = torch.from_numpy(np.concatenate([prob.u.real, prob.u.imag]))
    a, b = estimate_scale(Sr, ur), estimate_scale(Sr, 1000 * ur)
    assert a > 0 and math.isclose(b, 1000 * a, rel_tol=1e-4)


# ------------------------------------------------------------------------------ training

@pytest.mark.parametrize("operator", ["pool", "cubic"])
def test_training_reduces_misfit_and_recovers_object(operator):
    prob, truth = make_problem()
    cfg = TrainConfig(iterations=300, lr=3e-3, omega0=10, early_stopping=False, val_fraction=0.1,
                      operator=operator, **SMALL)
    states = list(train(prob, cfg))
    first, last = states[0], states[-1]
    assert last.stop_reason.startswith("max iterations") and last.iteration == 300
    assert last.loss < 0.1 * first.loss
    img = last.preview
    assert img.shape == truth.shape and img.dtype == np.float32
    assert np.corrcoef(img.ravel(), truth.ravel())[0, 1] > 0.9
    # units: the image lives in the data's units (truth intensity 3), not the normalised ones
    assert 1.5 < img.max() < 6.0
    # the final state's field renders what the preview shows
    f = last.field
    v = f.evaluate(prob.grid.normalized_coords().reshape(-1, 2)).reshape(truth.shape)
    np.testing.assert_allclose(v, img, rtol=1e-5, atol=1e-5)
    assert f.params == {"source": "synthetic"} and f.config["width"] == 32


def test_previews_every_k_and_state_fields():
    prob, _ = make_problem(n=8, M=80)
    cfg = TrainConfig(iterations=60, **{**SMALL, "preview_every": 20}, val_fraction=0.0, early_stopping=False)
    states = list(train(prob, cfg))
    its = [s.iteration for s in states]
    assert its == [10, 20, 30, 40, 50, 60]
    with_prev = [s.iteration for s in states if s.preview is not None]
    assert with_prev == [20, 40, 60]
    assert all(s.stop_reason is None for s in states[:-1]) and states[-1].stop_reason == "max iterations"
    assert all(s.val_loss is None for s in states)
    assert [s.elapsed for s in states] == sorted(s.elapsed for s in states)
    # without held-out rows the field is the latest iterate
    assert all(s.best_iteration == s.iteration for s in states)


def test_early_stopping_fires_and_reports_iteration():
    prob, _ = make_problem(n=8, M=80)
    # a learning rate too small to improve the held-out misfit by 1 %: stops after the patience
    rule = ValidationPatience(patience=100, min_delta=0.01)
    cfg = TrainConfig(iterations=2000, lr=1e-9, val_every=25, stopping=rule, **SMALL)
    states = list(train(prob, cfg))
    last = states[-1]
    assert last.stop_reason.startswith("early stopping: validation misfit did not improve for 100")
    assert last.best_iteration == 25 and last.iteration == 125
    assert last.val_loss is not None and last.best_val_loss is not None


def test_early_stopping_default_rule_on_noise():
    # pure-noise data: held-out rows cannot be predicted, so the validation misfit stops improving
    prob, _ = make_problem(n=8, M=120, seed=1)
    rng = np.random.default_rng(5)
    noise = (rng.normal(size=120) + 1j * rng.normal(size=120)).astype(np.complex64)
    prob = prob.with_u(noise)
    cfg = TrainConfig(iterations=1000, lr=3e-3, patience=60, val_every=10, val_fraction=0.2, max_scale=2,
                      **SMALL)
    last = list(train(prob, cfg))[-1]
    assert last.stop_reason.startswith("early stopping")
    assert last.iteration < 1000 and last.iteration - last.best_iteration >= 60


def test_custom_stopping_rule_is_pluggable():
    class StopAt:
        def reset(self):
            pass

        def update(self, iteration, val_loss, train_loss):
            return iteration == 20, ("custom stop" if iteration >= 40 else None)

    prob, _ = make_problem(n=8, M=80)
    last = list(train(prob, TrainConfig(iterations=500, val_every=10, stopping=StopAt(), **SMALL)))[-1]
    assert last.stop_reason.startswith("custom stop") and last.iteration == 40 and last.best_iteration == 20


def _weights(field):
    return {k: v.clone() for k, v in field.network.state_dict().items()}


@pytest.mark.parametrize("sampling", ["grid", "jitter"])
def test_determinism_bit_identical(sampling):
    prob, _ = make_problem(n=8, M=80)
    cfg = TrainConfig(iterations=50, preview_every=25, sampling=sampling, experimental=ExperimentalConfig(ema=0.9),
                      **{k: v for k, v in SMALL.items() if k != "preview_every"})
    runs = [list(train(prob, cfg)) for _ in range(2)]
    for a, b in zip(*runs):
        assert a.loss == b.loss and a.val_loss == b.val_loss
        if a.preview is not None:
            assert np.array_equal(a.preview, b.preview)
    wa, wb = _weights(runs[0][-1].field), _weights(runs[1][-1].field)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other = list(train(prob, TrainConfig(iterations=50, seed=1, sampling=sampling, **SMALL)))[-1]
    assert not all(torch.equal(wa[k], v) for k, v in _weights(other.field).items())


def test_cancellation_keeps_best_field():
    prob, _ = make_problem(n=8, M=80)
    kw = dict(lr=3e-3, lr_schedule="constant", val_every=10, val_fraction=0.2, **SMALL)
    gen = train(prob, TrainConfig(iterations=5000, **kw))
    last = None
    for st in gen:
        last = st
        if st.iteration >= 120:
            gen.close()
            break
    assert last.iteration == 120 and last.stop_reason is None
    with pytest.raises(StopIteration):
        next(gen)
    best = last.best_iteration
    assert 0 < best <= 120
    # the field handed out is the iterate at best_iteration: a run of exactly that length agrees
    ref = list(train(prob, TrainConfig(iterations=best, early_stopping=False, **kw)))[-1]
    wa, wb = _weights(last.field), _weights(ref.field)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_non_finite_loss_at_first_iteration_offers_no_field():
    # a NaN in u poisons the very first step: no checkpoint exists, and the initial weights are
    # not a result, so neither the final state nor the error offers a field
    prob, _ = make_problem(n=8, M=80)
    u = prob.u.copy()
    u[3] = np.nan
    gen = train(prob.with_u(u), TrainConfig(iterations=100, **SMALL))
    states = []
    with pytest.raises(TrainingError, match="measurement u contain") as ei:
        for st in gen:
            states.append(st)
    assert states[-1].stop_reason == "non-finite loss" and states[-1].iteration == 1
    assert states[-1].field is None and ei.value.field is None
    assert "no trained field" in str(ei.value)


def test_non_finite_error_after_a_checkpoint_carries_the_selected_field():
    prob, _ = make_problem(n=8, M=80)

    def wreck(state):  # after the first check (25): poison the live weights
        if state.iteration == 30:
            with torch.no_grad():
                for p in state.current_field().network.parameters():
                    p.fill_(float("nan"))

    with pytest.raises(TrainingError, match="kept as .field") as ei:
        fit(prob, TrainConfig(iterations=100, val_every=25, **SMALL), wreck)
    f, st = ei.value.field, ei.value.state
    assert isinstance(f, Field) and st.stop_reason == "non-finite loss" and st.best_iteration == 25
    assert np.all(np.isfinite(f.evaluate(prob.grid.normalized_coords().reshape(-1, 2))))


@pytest.mark.parametrize("operator", ["pool", "cubic"])
def test_train_3d_and_point_cap(operator):
    prob, truth = make_problem(n=5, M=100, ndim=3)
    cfg = TrainConfig(iterations=40, max_scale=5, max_points=5 ** 3 * 8, operator=operator,
                      **SMALL)  # caps s at 2
    last = list(train(prob, cfg))[-1]
    assert last.preview.shape == (5, 5, 5)
    assert np.isfinite(last.loss)
    f = last.field
    assert f.evaluate(np.zeros((3, 3), np.float32)).shape == (3,)


def test_auto_operator_is_cubic_in_2d_and_pool_in_3d():
    # the default chooses D from the grid's dimension (measured: cubic wins in 2D, loses 1 dB in 3D)
    # and the field records the operator it was trained with
    assert TrainConfig().operator == "auto"
    for ndim, want in ((2, "cubic"), (3, "pool")):
        prob, _ = make_problem(n=5, M=100, ndim=ndim)
        last = list(train(prob, TrainConfig(iterations=5, **SMALL)))[-1]
        assert last.field.config["operator"] == want, ndim


def test_frame_series_is_refused():
    prob, _ = make_problem(n=8, M=80)
    series = prob.with_u(np.stack([prob.u, prob.u]))
    with pytest.raises(Exception, match="one measurement frame"):
        next(train(series, TrainConfig(**SMALL)))


def test_config_presets_and_validation():
    p = TrainConfig.paper()
    assert (p.lr, p.iterations, p.omega0, p.width, p.depth, p.max_scale) == (1e-4, 70_000, 30.0, 256, 3, 5)
    assert not p.early_stopping and p.lr_schedule == "constant"
    d = TrainConfig().to_dict()
    assert TrainConfig.from_dict(d) == TrainConfig()
    assert TrainConfig().operator == "auto" and p.operator == "pool"  # the paper average-pools
    for bad in (dict(experimental={"sampling": "random"}), dict(lr=-1.0), dict(val_fraction=1.0), dict(device="tpu"),
                dict(operator="linear")):
        with pytest.raises(Exception):
            TrainConfig(**bad).validate()


def test_l1_weight_empties_the_background_and_is_validated():
    # a sparsity term takes concentration out of voxels the object does not occupy; the fit of the
    # object itself stays (same run without it for comparison)
    prob, truth = make_problem(noise=0.05)
    cfg = dict(iterations=300, lr=3e-3, omega0=10, early_stopping=False, val_fraction=0.0, **SMALL)
    plain = list(train(prob, TrainConfig(**cfg)))[-1].preview
    sparse = list(train(prob, TrainConfig(**cfg, l1_weight=0.3)))[-1].preview
    empty = truth == 0
    assert np.abs(sparse[empty]).sum() < 0.5 * np.abs(plain[empty]).sum()
    assert np.corrcoef(sparse.ravel(), truth.ravel())[0, 1] > 0.9
    assert TrainConfig().l1_weight == 0.0 and TrainConfig.paper().l1_weight == 0.0
    for name in ("l1_weight", "tv_weight"):
        with pytest.raises(NirmpiError, match=name):
            TrainConfig(**{name: -0.1}).validate()


# ------------------------------------------------------------------------------ the default, pinned

def test_default_fit_is_unchanged_on_a_small_spiral(one_torch_thread):
    # reference computed with the code of commit f84afd8 (before train.py was split into config,
    # operators and train): the same seed must give the same field, so every figure measured with
    # the default stays valid. Tolerance 1e-3: the simulator's compiled kernel (2026-12-03) changes
    # the system matrix by at most 1.3e-7 relative, which 300 Adam steps amplify to 4e-4 (with the
    # f84afd8 simulator the figures hold to 1e-4).
    from napari_nirmpi.sample import sample
    from napari_nirmpi.simulate import simulate_case

    prob = simulate_case("spiral", grid=15, noise="medium", seed=0).problem()
    field, st = fit(prob, TrainConfig(iterations=300, device="cpu"))
    img, _ = sample(field, (15, 15))
    assert (st.iteration, st.best_iteration) == (300, 250)
    assert st.loss == pytest.approx(0.012334294617176056, rel=1e-3)
    assert st.best_val_loss == pytest.approx(0.005795053672045469, rel=1e-3)
    assert field.scale == pytest.approx(0.4827626347541809, rel=1e-6)
    assert float(img.astype(np.float64).sum()) == pytest.approx(19.457586967105726, rel=1e-3)
    assert float(np.linalg.norm(img.astype(np.float64))) == pytest.approx(2.4370461993481793, rel=1e-3)
    np.testing.assert_allclose([img[7, 7], img[3, 11], img[12, 2]],
                               [0.00190612708684057, 0.0005839657387696207, 0.03464103862643242],
                               rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------------------ fit: callback, progress

def test_fit_callback_stops_and_names_it():
    prob, _ = make_problem(n=8, M=80)
    seen = []

    def cb(state):
        seen.append(state.current_field().network is not None)  # the live iterate, inside the callback
        return state.iteration >= 30

    field, st = fit(prob, TrainConfig(iterations=500, val_every=10, **SMALL), cb)
    assert st.iteration == 30 and st.stop_reason == "stopped by the callback at iteration 30"
    assert all(seen) and isinstance(field, Field) and 0 < st.best_iteration <= 30
    with pytest.raises(TrainingError, match="no current iterate"):
        st.current_field()  # only valid inside the callback


def test_fit_progress_logs_plain_lines_when_not_a_terminal(capsys):
    prob, _ = make_problem(n=8, M=80)
    fit(prob, TrainConfig(iterations=40, **SMALL), progress="frame 3")
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and "\r" not in err  # a log file gets whole lines, no bar redraws
    assert lines[-1].startswith("frame 3: iteration 40/40 (100 %)") and "max iterations" in lines[-1]


def test_progress_reporter_interval_and_terminal_bar():
    import io

    from napari_nirmpi.nir.progress import Progress
    from napari_nirmpi.nir.train import TrainState

    def st(i, reason=None):
        return TrainState(i, 0.5, 0.25, float(i), None, i, reason)

    log = io.StringIO()
    p = Progress(100, "NIR", stream=log, interval=0.0)
    for i in (10, 20):
        p.update(st(i))
    p.update(st(30, "max iterations [rule X: details]"))
    p.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("NIR: iteration 10/100 (10 %), loss 0.5, held-out 0.25")
    assert lines[-1].endswith("max iterations [rule X: details]")  # the whole reason, warnings included

    class Tty(io.StringIO):
        def isatty(self):
            return True

    term = Tty()
    p = Progress(100, "NIR", stream=term)
    p.update(st(50))
    p.close()
    assert "50/100" in term.getvalue()


# ------------------------------------------------------------------------------ config: JSON, ranges, legacy

def _json_round_trip(cfg):
    import json

    return TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))


def test_config_round_trips_through_json_exactly():
    from napari_nirmpi.nir.stopping import OneStandardError, TrackBest

    configs = [TrainConfig(), TrainConfig.paper(),
               TrainConfig(width=64, lr=1e-3, snr_weight=None, l1_weight=0.3, tv_weight=0.01, selection="1se",
                           device="cpu", network="fourier", sampling="jitter",
                           experimental=ExperimentalConfig(ema=0.5, grad_clip=1.0, val_scale=2)),
               TrainConfig.fast(), TrainConfig.fast(feature_grid={"levels": 4, "hidden": 16}, tv_weight=0.1),
               TrainConfig(stopping=ValidationPatience(patience=100, min_delta=0.01, min_iterations=50)),
               TrainConfig(stopping=OneStandardError(300, k=0.7)), TrainConfig(stopping=TrackBest())]
    for cfg in configs:
        again = _json_round_trip(cfg)
        assert again == cfg, cfg
        assert again.to_dict() == cfg.to_dict()
    assert _json_round_trip(configs[5]).stopping.patience == 100  # a rule, not its repr


def test_config_with_a_custom_rule_is_recorded_but_not_rebuilt():
    class Mine:
        def reset(self):
            pass

        def update(self, iteration, val_loss, train_loss):
            return True, None

    d = TrainConfig(stopping=Mine()).to_dict()
    assert d["stopping"]["rule"] == "custom"
    with pytest.raises(NirmpiError, match="custom rule"):
        TrainConfig.from_dict(d)


def test_config_from_old_flat_dicts():
    # a config dict as written before the experimental group (checkpoints, Zarr attrs, results)
    old = {"network": "siren", "width": 128, "depth": 3, "omega0": 10.0, "hidden_omega0": 30.0,
           "positive": "square", "output_bias": 0.0, "fold": True, "num_features": 128, "sigma": 4.0,
           "lr": 0.0003, "lr_schedule": "cosine", "lr_final": 0.05, "iterations": 2000, "grad_clip": None,
           "spike_guard": 3.0, "ema": 0.0, "tv_weight": 0.0, "l1_weight": 0.0, "max_scale": 3, "operator": "auto",
           "sampling": "grid", "jitter_points": 4, "max_points": 1048576, "val_scale": None, "snr_weight": 30.0,
           "normalize": True, "early_stopping": True, "val_fraction": 0.1, "val_every": 25, "patience": 2000,
           "selection": "min", "selection_k": 0.5, "min_iterations": 0, "stopping": None, "preview_every": 100,
           "log_every": 10, "seed": 0, "device": "auto"}
    assert TrainConfig.from_dict(old) == TrainConfig()
    legacy = TrainConfig.from_dict({**old, "sampling": "jitter", "ema": 0.9,
                                    "stopping": "ValidationPatience(patience=100, min_delta=0.0, min_iterations=0)",
                                    "network_config": {"network": "siren"}, "scale": 2.0})  # a Field's record
    assert legacy.sampling == "jitter" and legacy.experimental.ema == 0.9 and legacy.stopping is None
    with pytest.raises(NirmpiError, match="unknown settings"):
        TrainConfig.from_dict({"widht": 3})


@pytest.mark.parametrize("bad, name", [
    (dict(lr=10.0), "lr"), (dict(lr=0.05), "lr"), (dict(lr=float("nan")), "lr"), (dict(iterations=0), "iterations"),
    (dict(iterations=2.5), "iterations"), (dict(width=36000), "width"), (dict(depth=100), "depth"),
    (dict(omega0=float("inf")), "omega0"), (dict(omega0=0.0), "omega0"), (dict(hidden_omega0=1e9), "hidden_omega0"),
    (dict(max_scale=100), "max_scale"), (dict(seed=-1), "seed"), (dict(lr_final=0.0), "lr_final"),
    (dict(width=4096, depth=32), "parameters"), (dict(experimental={"ema": 1.0}), "ema"),
    (dict(experimental={"num_features": 10**6}), "num_features"), (dict(stopping="patience"), "stopping"),
])
def test_config_validate_refuses_out_of_range(bad, name):
    with pytest.raises(NirmpiError, match=name):
        TrainConfig(**bad).validate()


def test_fit_validates_before_training():
    prob, _ = make_problem(n=8, M=80)
    with pytest.raises(NirmpiError, match=r"TrainConfig.lr=10.0: expected a learning rate in \(0, 0.01\]"):
        fit(prob, TrainConfig(lr=10.0, **SMALL))


# ------------------------------------------------------------------------------ divergence

def test_spike_guard_rolls_back_a_blow_up_before_the_first_check():
    # the first check's reference is the untrained field: a field wrecked before it (here the output
    # weights ×100, what a far too high lr does) is rolled back instead of becoming the reference
    prob, _ = make_problem(n=8, M=80)

    def wreck(state):
        if state.iteration == 10:
            with torch.no_grad():
                state.current_field().network.out.weight.mul_(100.0)

    cfg = TrainConfig(iterations=100, val_every=25, **SMALL)
    _, st = fit(prob, cfg, wreck)
    assert "spike guard: 1 loss spike(s) rolled back" in st.stop_reason
    _, off = fit(prob, TrainConfig(iterations=100, val_every=25, spike_guard=0.0, **SMALL), wreck)
    assert "spike guard" not in off.stop_reason


def test_poor_fit_is_flagged_in_the_stop_reason():
    prob, _ = make_problem(n=8, M=80)
    noisy = list(train(prob, TrainConfig(iterations=100, lr=1e-2, val_every=25, device="cpu")))[-1]
    assert "[warning: poor fit" in noisy.stop_reason and noisy.stop_reason.startswith("max iterations")
    good = list(train(prob, TrainConfig(iterations=100, lr=3e-3, val_every=25, **SMALL)))[-1]
    assert "poor fit" not in good.stop_reason


def test_cli_nir_options_reach_tv_and_l1():
    from argparse import Namespace

    from napari_nirmpi.cli import _nir_options

    kw = _nir_options(Namespace(method="nir", operator=None, l1=0.1, tv=0.01))
    assert kw == {"l1_weight": 0.1, "tv_weight": 0.01}
    TrainConfig(**kw).validate()
    with pytest.raises(NirmpiError, match="--tv applies to --method nir only"):
        _nir_options(Namespace(method="kaczmarz", operator=None, l1=None, tv=0.01))
