"""Stopping rules: which iterate is returned, when training stops, and what the user is told."""

import numpy as np
import pytest
import torch

from napari_nirmpi import Grid, Problem
from napari_nirmpi.errors import NirmpiError
from napari_nirmpi.nir import TrainConfig, train
from napari_nirmpi.nir.stopping import OneStandardError, TrackBest, ValidationPatience


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def feed(rule, curve, every=25):
    """Feed a held-out misfit curve; returns (best iteration, stop iteration or None, reason)."""
    rule.reset()
    best_it = 0
    for k, v in enumerate(curve, start=1):
        it = k * every
        is_best, reason = rule.update(it, float(v), float(v))
        if is_best:
            best_it = it
        if reason is not None:
            return best_it, it, reason
    return best_it, None, None


def test_patience_keeps_minimum_and_stops_after_patience():
    # falls to a minimum at check 8 (iteration 200), then rises: stop exactly 500 iterations later
    curve = np.r_[np.linspace(1.0, 0.2, 8), np.linspace(0.21, 0.5, 40)]
    best, stop, reason = feed(ValidationPatience(patience=500), curve)
    assert best == 200 and stop == 700
    assert reason.startswith("early stopping: validation misfit did not improve for 500")
    assert "ValidationPatience" in reason and "iteration 200" in reason


def test_patience_min_delta_ignores_tiny_improvements():
    # improvements of 0.1 % per check never count with min_delta 1 %
    curve = 0.5 * 0.999 ** np.arange(60)
    best, stop, reason = feed(ValidationPatience(patience=100, min_delta=0.01), curve)
    assert best == 25 and stop == 125 and reason is not None


def test_patience_respects_min_iterations():
    curve = np.r_[0.1, np.full(60, 0.2)]
    best, stop, _ = feed(ValidationPatience(patience=100, min_iterations=1000), curve)
    assert best == 25 and stop == 1000


def test_track_best_never_stops():
    curve = np.r_[np.linspace(1, 0.1, 10), np.linspace(0.1, 1, 50)]
    best, stop, reason = feed(TrackBest(), curve)
    assert best == 250 and stop is None and reason is None


def test_patience_final_reason_names_rule_and_best():
    rule = ValidationPatience(patience=500)
    feed(rule, np.linspace(1, 0.1, 10))
    msg = rule.final_reason(250)
    assert msg.startswith("max iterations") and "ValidationPatience" in msg and "iteration 250" in msg


def feed_rows(rule, rows, every=25):
    """Feed per-row held-out misfits (checks × rows); returns (chosen iteration, stop reason)."""
    rule.reset()
    chosen, reason = None, None
    for k, r in enumerate(rows, start=1):
        chosen, reason = rule.update(k * every, float(np.sum(r)), float(np.sum(r)), residuals=r)
        if reason is not None:
            break
    return chosen, reason


def test_one_se_keeps_late_iterates_when_every_row_improves():
    # clean data: each check lowers every row's misfit by 5 %, far more than the row-to-row spread
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 1.5, 40)
    rows = [base * 0.95 ** k for k in range(30)]
    chosen, _ = feed_rows(OneStandardError(patience=500), rows)
    assert chosen == 30 * 25


def test_one_se_returns_earliest_indistinguishable_iterate_on_a_noisy_plateau():
    # noisy data: after check 4 the rows only wander (zero-mean noise, so the misfit is flat), and
    # the last check is lowest by far less than one standard error; the plain minimum is the last
    rng = np.random.default_rng(1)
    base = rng.uniform(0.5, 1.5, 40)
    rows = [base * (3.0 - 0.5 * k) for k in range(4)]
    for _ in range(39):
        e = rng.normal(0, 0.05, 40)
        rows.append(base + e - e.mean())
    rows[-1] = rows[-1] - 0.002
    chosen, _ = feed_rows(OneStandardError(patience=10_000), rows)
    plain, _, _ = feed(ValidationPatience(patience=10_000), [np.sum(r) for r in rows])
    assert plain == len(rows) * 25
    assert chosen == 5 * 25  # the first plateau check


def test_one_se_with_k_zero_is_the_minimum():
    rng = np.random.default_rng(2)
    rows = [rng.uniform(0.5, 1.5, 30) for _ in range(20)]
    chosen, _ = feed_rows(OneStandardError(k=0.0), rows)
    assert chosen == 25 * (1 + int(np.argmin([r.mean() for r in rows])))


def test_one_se_needs_rows_and_names_itself_when_stopping():
    with pytest.raises(ValueError, match="per-row"):
        OneStandardError().update(25, 1.0, 1.0)
    rows = [np.full(10, 1.0 - 0.1 * k) for k in range(5)] + [np.full(10, 0.9)] * 30
    chosen, reason = feed_rows(OneStandardError(patience=100), rows)
    assert reason.startswith("early stopping") and "OneStandardError" in reason
    assert f"returned iteration {chosen}" in reason


# ---------------------------------------------------------------------------------------------
# integration with train(): the preview stream names the rule

def _problem(n=8, M=120, seed=0, noise=0.02):
    rng = np.random.default_rng(seed)
    grid = Grid((n, n), (0.02, 0.02))
    pts = grid.normalized_coords(np.float64).reshape(-1, 2)
    cen = rng.uniform(-1, 1, (M, 2))
    k = rng.normal(0, 4, (M, 2))
    sig = rng.uniform(0.1, 0.4, M)
    S = np.exp(-((pts[None] - cen[:, None]) ** 2).sum(-1) / (2 * sig[:, None] ** 2)) * np.exp(1j * (pts @ k.T).T)
    truth = (np.abs(np.sqrt((pts ** 2).sum(-1)) - 0.5) < 0.2).astype(np.float64)
    u = S @ truth
    u = u + noise * np.abs(u).mean() * (rng.normal(size=M) + 1j * rng.normal(size=M))
    nrm = np.linalg.norm(S, axis=1)
    return Problem((S / nrm[:, None]).astype(np.complex64), (u / nrm).astype(np.complex64), grid,
                   np.arange(M, dtype=float), np.zeros(M, int), np.arange(M), params={"source": "synthetic"})


SMALL = dict(width=32, depth=2, device="cpu", log_every=10, preview_every=50)


def test_train_reports_rule_in_stop_reason_on_pure_noise():
    prob = _problem()
    rng = np.random.default_rng(5)
    prob = prob.with_u((rng.normal(size=120) + 1j * rng.normal(size=120)).astype(np.complex64))
    for selection, rule in (("min", "ValidationPatience"), ("1se", "OneStandardError")):
        cfg = TrainConfig(iterations=800, lr=3e-3, patience=60, val_every=10, val_fraction=0.2, max_scale=2,
                          selection=selection, **SMALL)
        states = list(train(prob, cfg))
        last = states[-1]
        assert last.iteration < 800 and last.stop_reason.startswith("early stopping")
        assert rule in last.stop_reason
        assert f"iteration {last.best_iteration}" in last.stop_reason
        assert all(s.stop_reason is None for s in states[:-1])


def test_default_returns_the_lowest_misfit_of_the_whole_budget():
    # the default trains its whole budget (patience = iterations) and returns the lowest held-out misfit
    d = TrainConfig()
    assert d.selection == "min" and d.patience >= d.iterations and TrainConfig.paper().early_stopping is False


def test_train_budget_exhausted_names_rule_and_returned_iterate():
    prob = _problem(seed=2, noise=0.0)
    cfg = TrainConfig(iterations=60, lr=1e-3, val_every=10, val_fraction=0.2, selection="min", **SMALL)
    last = list(train(prob, cfg))[-1]
    assert last.iteration == 60 and last.stop_reason.startswith("max iterations")
    assert "ValidationPatience" in last.stop_reason
    assert f"at iteration {last.best_iteration}" in last.stop_reason
    last = list(train(prob, TrainConfig(iterations=60, lr=1e-3, val_every=10, val_fraction=0.2, selection="1se",
                                        **SMALL)))[-1]
    assert last.stop_reason.startswith("max iterations") and "OneStandardError" in last.stop_reason
    assert f"returned iteration {last.best_iteration}" in last.stop_reason


def test_train_without_early_stopping_keeps_plain_reason():
    prob = _problem(seed=2)
    cfg = TrainConfig(iterations=30, lr=3e-3, early_stopping=False, val_every=10, val_fraction=0.2, **SMALL)
    assert list(train(prob, cfg))[-1].stop_reason == "max iterations"


def test_train_one_se_returns_that_checkpoint():
    prob = _problem(seed=3, noise=0.1)
    kw = dict(lr=3e-3, lr_schedule="constant", val_every=10, val_fraction=0.2, max_scale=2, **SMALL)
    last = list(train(prob, TrainConfig(iterations=300, selection="1se", patience=10_000, **kw)))[-1]
    assert "OneStandardError" in last.stop_reason
    assert f"returned iteration {last.best_iteration}" in last.stop_reason
    plain = list(train(prob, TrainConfig(iterations=300, patience=10_000, **kw)))[-1]
    assert 0 < last.best_iteration <= plain.best_iteration
    # the field handed out is the checkpoint at best_iteration: a run of exactly that length agrees
    ref = list(train(prob, TrainConfig(iterations=last.best_iteration, early_stopping=False, **kw)))[-1]
    a, b = last.field.network.state_dict(), ref.field.network.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_config_rejects_unknown_selection():
    with pytest.raises(NirmpiError, match="selection"):
        train(_problem(), TrainConfig(selection="median")).__next__()


def _run_with_blowup(cfg, at=50, wreck=True, snap=()):
    """Train, wrecking the live weights once right after iteration `at` (a stand-in for an Adam
    overshoot); returns the states and copies of the live weights at the iterations in `snap`."""
    out, snaps = [], {}
    for st in train(_problem(seed=2, noise=0.0), cfg):
        out.append(st)
        if st.stop_reason is None and st.iteration in snap:
            snaps[st.iteration] = {k: v.clone() for k, v in st.current_field().network.state_dict().items()}
        if wreck and st.iteration == at and st.stop_reason is None:
            with torch.no_grad():
                for p in st.current_field().network.parameters():
                    p.mul_(-7.0)
    return out, snaps


def test_spike_guard_rolls_back_a_spike_and_says_so():
    # the paper's pooling: the scenario (one wrecked step at iteration 55) was set up with it
    kw = dict(iterations=120, lr=1e-3, lr_schedule="constant", val_every=10, val_fraction=0.2,
              early_stopping=False, operator="pool", **SMALL)
    free, _ = _run_with_blowup(TrainConfig(spike_guard=0.0, **kw))
    v = {s.iteration: s.val_loss for s in free}
    assert v[60] > 3 * v[50]  # without the guard the wrecked weights show in the held-out misfit
    guarded, after = _run_with_blowup(TrainConfig(spike_guard=3.0, **kw), snap=(60,))
    g = {s.iteration: s for s in guarded}
    assert g[60].val_loss == g[50].val_loss  # the spiked check is discarded, not reported
    assert g[70].lr == pytest.approx(5e-4) and g[50].lr == pytest.approx(1e-3)  # and the lr halved
    assert g[120].val_loss < 3 * g[50].val_loss
    assert "spike guard: 1 loss spike(s) rolled back" in guarded[-1].stop_reason
    # the rollback restored exactly the weights of the check before the spike
    _, before = _run_with_blowup(TrainConfig(spike_guard=3.0, **kw), wreck=False, snap=(50,))
    assert all(torch.equal(after[60][k], before[50][k]) for k in before[50])


def test_spike_guard_is_silent_on_a_smooth_run():
    prob = _problem(seed=2, noise=0.0)
    cfg = TrainConfig(iterations=60, lr=1e-3, val_every=10, val_fraction=0.2, early_stopping=False,
                      spike_guard=3.0, **SMALL)
    last = list(train(prob, cfg))[-1]
    assert last.stop_reason == "max iterations"


# rows weighted by the system matrix's SNR

def _with_snr(prob, snr, u=None):
    import dataclasses
    return dataclasses.replace(prob, snr=np.asarray(snr, dtype=np.float64), u=prob.u if u is None else u)


def _weights_of(state):
    return state.field.network.state_dict()


def test_snr_weight_ignores_rows_without_signal():
    # rows with SNR 0 get weight 0: whatever they hold cannot change the fit
    prob = _problem(seed=5, noise=0.01)
    snr = np.full(prob.num_rows, 1e6)
    snr[::7] = 0.0
    junk = prob.u.copy()
    junk[::7] = 1e3 * (1 + 1j)
    cfg = TrainConfig(iterations=40, val_every=10, val_fraction=0.2, early_stopping=False, **SMALL)
    a = list(train(_with_snr(prob, snr), cfg))[-1]
    b = list(train(_with_snr(prob, snr, junk), cfg))[-1]
    wa, wb = _weights_of(a), _weights_of(b)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    # unweighted, the junk rows do change it
    c = list(train(_with_snr(prob, snr, junk), TrainConfig(**{**cfg.to_dict(), "snr_weight": None})))[-1]
    wc = _weights_of(c)
    assert not all(torch.allclose(wa[k], wc[k], atol=1e-3) for k in wa)


def test_snr_weight_with_equal_snr_changes_nothing():
    # a common factor on S and u leaves the relative misfit, and so the training, unchanged
    prob = _problem(seed=6, noise=0.01)
    cfg = TrainConfig(iterations=40, val_every=10, val_fraction=0.2, early_stopping=False, **SMALL)
    a = list(train(_with_snr(prob, np.full(prob.num_rows, 7.0)), cfg))[-1]
    b = list(train(prob, TrainConfig(**{**cfg.to_dict(), "snr_weight": None})))[-1]
    wa, wb = _weights_of(a), _weights_of(b)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
    assert a.val_loss == pytest.approx(b.val_loss, rel=1e-3)


def test_defaults_weight_rows_and_guard_spikes_but_paper_does_not():
    d, p = TrainConfig(), TrainConfig.paper()
    assert d.snr_weight is not None and d.spike_guard > 1
    assert p.snr_weight is None and p.spike_guard == 0
    with pytest.raises(NirmpiError, match="snr_weight"):
        train(_problem(), TrainConfig(snr_weight=-1.0)).__next__()
    with pytest.raises(NirmpiError, match="spike_guard"):
        train(_problem(), TrainConfig(spike_guard=0.5)).__next__()
