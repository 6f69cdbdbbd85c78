import numpy as np
import pytest

from napari_nirmpi.errors import ProblemMismatch
from napari_nirmpi.grid import Grid
from napari_nirmpi.preprocess import build_problem_from_arrays, select_rows, snr_from_frames


def _arrays(seed=0, C=2, K=40, shape=(4, 5), F=6, B=8, Fb=5):
    rng = np.random.default_rng(seed)
    O = int(np.prod(shape))
    bg_sig = (rng.normal(size=(C, K, 1)) + 1j * rng.normal(size=(C, K, 1)))
    sm_clean = rng.normal(size=(C, K, O)) + 1j * rng.normal(size=(C, K, O))
    sm = sm_clean + bg_sig
    sm_bg = np.repeat(bg_sig, B, axis=-1) + 0.01 * rng.normal(size=(C, K, B))
    c = rng.random(O)
    meas_clean = np.einsum("ckn,n->ck", sm_clean, c)
    meas = meas_clean[None] + bg_sig[None, :, :, 0] + 0.01 * rng.normal(size=(F, C, K))
    meas_bg = np.repeat(bg_sig[None, :, :, 0], Fb, axis=0) + 0.01 * rng.normal(size=(Fb, C, K))
    freqs = np.arange(K) * 10e3
    snr = snr_from_frames(sm, sm_bg)
    return dict(sm=sm, sm_background=sm_bg, meas=meas, meas_background=meas_bg, snr=snr,
                frequencies=freqs, grid=Grid(shape, (4e-3, 5e-3))), c, sm_clean, meas_clean


def test_rows_channel_outer_frequency_fastest():
    freqs = np.arange(10) * 50e3
    snr = np.full((2, 10), 10.0)
    snr[1, 3] = 1.0
    ch, fi = select_rows(freqs, snr, min_freq=100e3, max_freq=300e3, snr_threshold=1.5)
    assert ch.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert fi.tolist() == [2, 3, 4, 5, 6, 2, 4, 5, 6]


def test_background_removed_and_rows_normalised():
    kw, c, sm_clean, meas_clean = _arrays()
    p = build_problem_from_arrays(**kw, min_freq=0, max_freq=1e9, snr_threshold=0)
    assert p.S.shape == (80, 20) and p.u.shape == (80,)
    np.testing.assert_allclose(np.linalg.norm(p.S, axis=1), 1.0, rtol=1e-5)
    # after undoing the row weights, S and u are the background-free signals
    S = p.S / p.row_weights[:, None]
    u = p.u / p.row_weights
    np.testing.assert_allclose(S, sm_clean.reshape(80, 20), atol=0.05)
    np.testing.assert_allclose(u, meas_clean.reshape(80), atol=0.05)
    assert p.noise_std is not None and np.all(p.noise_std > 0)


def test_block_average_gives_series():
    kw, *_ = _arrays()
    p = build_problem_from_arrays(**kw, min_freq=0, max_freq=1e9, snr_threshold=0, average=2)
    assert p.u.shape == (3, 80)


def test_no_rows_left_is_clear_error():
    kw, *_ = _arrays()
    with pytest.raises(ProblemMismatch, match="no frequency rows"):
        build_problem_from_arrays(**kw, snr_threshold=1e12)


def test_bad_channel_is_clear_error():
    kw, *_ = _arrays()
    with pytest.raises(ProblemMismatch, match="channels"):
        build_problem_from_arrays(**kw, min_freq=0, max_freq=1e9, snr_threshold=0, channels=[0, 5])
