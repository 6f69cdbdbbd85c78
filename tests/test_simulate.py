import json
import time

import numpy as np
import pytest
from scipy.special import eval_chebyt, eval_chebyu

from napari_nirmpi import mdf
from napari_nirmpi.errors import NirmpiError
from napari_nirmpi.grid import Grid
from napari_nirmpi.phantoms import Composite, Point, Resolution, phantom_from_dict
from napari_nirmpi.simulate import (
    NOISE_PRESETS, Particles, Scanner, langevin, measure_phantom, simulate, simulate_case, system_matrix,
)

BAND = (20e3, 380e3)


def in_band(f):
    return (f >= BAND[0]) & (f <= BAND[1])


@pytest.fixture(scope="module")
def case():
    return simulate_case("spiral", grid=29, seed=0)


@pytest.fixture(scope="module")
def sm_clean():
    return system_matrix(Particles(), Scanner(), Grid((29, 29), (29e-3, 29e-3)), 4)


# -- particles and scanner ----------------------------------------------------------------------
def test_langevin_limits_and_continuity():
    x = np.array([1e-8, 1e-4, 5e-3])
    assert np.allclose(langevin(x), x / 3, rtol=1e-4)
    big = np.array([50.0, 500.0])
    assert np.allclose(langevin(big), 1 - 1 / big, rtol=1e-12)
    assert np.allclose(langevin(-big), -langevin(big))
    # the series/closed-form switch at |x| = 1e-2 is seamless
    lo, hi = langevin(np.array([1e-2 - 1e-9, 1e-2 + 1e-9]))
    assert abs(lo - hi) < 1e-9
    assert langevin(np.array([0.0]))[0] == 0.0


def test_particle_moment_and_xi():
    p = Particles()
    assert p.xi == pytest.approx(940, rel=0.02)   # 25 nm magnetite at 300 K
    assert Particles(core_diameter=30e-9).xi / p.xi == pytest.approx((30 / 25) ** 3)
    B = np.array([[0.0, 1e-6], [0.3, 0.4]])       # weak and saturating fields (T)
    m = p.mean_moment(B)
    assert np.allclose(m[0], p.moment * p.xi * B[0] / 3, rtol=1e-6)    # linear (Curie) regime
    assert np.linalg.norm(m[1]) == pytest.approx(p.moment * (1 - 1 / (p.xi * 0.5)), rel=1e-9)
    assert np.allclose(np.cross(m[1], B[1]), 0, atol=1e-30)             # parallel to B
    with pytest.raises(NirmpiError):
        Particles(core_diameter=-1)


def test_scanner_defaults():
    s2 = Scanner()
    assert s2.num_sampling_points == 1632 and s2.num_frequencies == 817
    assert s2.bandwidth == 1.25e6 and s2.cycle == pytest.approx(652.8e-6)
    f = s2.frequencies()
    assert f[16] == pytest.approx(2.5e6 / 102) and f[17] == pytest.approx(2.5e6 / 96)
    assert np.allclose(s2.drive_fov(), (24e-3, 24e-3))
    assert np.trace(s2.gradient_matrix()) == 0
    s3 = Scanner(ndim=3)
    assert s3.num_sampling_points == 1716 and s3.gradient == (-1.0, -1.0, 2.0)
    with pytest.raises(NirmpiError):
        Scanner(ndim=2, dividers=(102, 96, 99))


# -- the system matrix's Chebyshev structure ----------------------------------------------------
def _component(S, channel, mx, my, n=29):
    img = S[channel, mx * 16 + my * 17].reshape(n, n)
    phase = np.angle(img.ravel()[np.argmax(np.abs(img))])
    return (img * np.exp(-1j * phase))


def _coords(n=29):
    g = Grid((n, n), (29e-3, 29e-3))
    cy, cx = g.axis_centers()
    return cy / 12e-3, cx / 12e-3    # normalised to the drive FOV (A/G = 12 mm)


def test_third_x_harmonic_is_stripes_with_chebyshev_nodes(sm_clean):
    img = _component(sm_clean, 0, 3, 0)
    assert np.abs(img.imag).max() < 0.01 * np.abs(img.real).max()   # one global phase
    Y, X = _coords()
    inner_y = np.abs(Y) < 0.8
    inner_x = np.abs(X) < 0.9
    r = img.real
    # nearly independent of y inside the drive FOV ...
    rows = r[inner_y][:, inner_x]
    assert np.abs(rows - rows.mean(0)).max() < 0.1 * np.abs(rows).max()
    # ... and along x it has the two sign changes of U_2(x) = 4x² - 1, near x = ±0.5
    prof = r[14, inner_x]
    crossings = np.flatnonzero(np.diff(np.sign(prof)) != 0)
    assert crossings.size == 2
    xs = X[inner_x][crossings]
    assert np.allclose(np.abs(xs), 0.5, atol=0.15)


@pytest.mark.parametrize("channel, mx, my", [
    (0, 2, 0), (0, 3, 0), (0, 4, 0), (0, 1, 1), (0, 2, 1), (0, 3, 1), (0, 2, 2), (0, 3, 3),
    (1, 0, 2), (1, 0, 3), (1, 1, 1), (1, 1, 2), (1, 2, 2),
])
def test_mixing_components_are_chebyshev_tensor_products(sm_clean, channel, mx, my):
    """Receive channel c: U_{m_c - 1} along c (second kind) times T_m along the other axis."""
    Y, X = _coords()
    inside = (np.abs(Y)[:, None] < 0.9) & (np.abs(X)[None] < 0.9)
    img = _component(sm_clean, channel, mx, my).real
    if channel == 0:
        model = eval_chebyt(my, Y)[:, None] * eval_chebyu(mx - 1, X)[None]
    else:
        model = eval_chebyu(my - 1, Y)[:, None] * eval_chebyt(mx, X)[None]
    r = abs(np.corrcoef(img[inside], model[inside])[0, 1])
    assert r > 0.85
    # a wrong model (swapped orders) correlates clearly worse
    if mx != my:
        wrong = eval_chebyt(mx, Y)[:, None] * eval_chebyu(my - 1, X)[None] if channel == 0 and my >= 1 else None
        if wrong is not None:
            assert abs(np.corrcoef(img[inside], wrong[inside])[0, 1]) < r - 0.2


def test_mixed_component_is_a_checkerboard(sm_clean):
    r = _component(sm_clean, 0, 2, 1).real       # ~ U_1(x) T_1(y) = 2x·y: opposite signs in quadrants
    q = [r[20, 20], r[8, 8], r[20, 8], r[8, 20]]
    assert np.sign(q[0]) == np.sign(q[1]) and np.sign(q[2]) == np.sign(q[3]) and np.sign(q[0]) != np.sign(q[2])
    assert min(abs(v) for v in q) > 0.3 * np.abs(r).max()


# -- a case -------------------------------------------------------------------------------------
def test_case_shapes_and_acquisition(case):
    C, K, O = case.sm.shape
    assert (C, K, O) == (2, 817, 841)
    assert case.sm.dtype == np.complex64 and case.sm_background.dtype == np.complex64
    assert case.sm_background.shape == (2, 817, 20)
    assert case.meas.shape == (10, 2, 817) and case.meas_background.shape == (10, 2, 817)
    assert case.meas.dtype == np.complex64 and case.snr.shape == (2, 817)
    acq = case.acquisition
    assert isinstance(acq, mdf.Acquisition)
    assert acq.num_sampling_points == 1632 and acq.dividers == (102, 96) and acq.num_rx_channels == 2
    assert np.allclose(acq.frequencies(), case.frequencies)
    assert acq.transfer_function.shape == (2, 817)
    assert case.grid == Grid((29, 29), (29e-3, 29e-3))
    json.dumps(case.params)                          # JSON-serialisable


def test_snr_is_computed_as_mpi_software_does(case):
    bg = case.sm_background.astype(np.complex128)
    sig = np.abs(case.sm - bg.mean(-1, keepdims=True)).mean(-1)
    noise = bg.std(-1, ddof=1)
    k = slice(1, None)
    assert np.allclose(case.snr[:, k], sig[:, k] / noise[:, k], rtol=1e-4)
    # the drive frequencies are swamped by jittering feed-through; the band edges stay usable
    assert np.all(case.snr[0, [16, 17]] < 1.5) and np.all(case.snr[1, [16, 17]] < 1.5)
    assert case.snr[0, 32] > 10


@pytest.mark.parametrize("noise", ["low", "medium", "high", 30.0])
def test_noise_presets_hit_their_median_snr(noise):
    c = simulate_case("point", noise=noise, seed=1)
    med = np.median(c.snr[:, in_band(c.frequencies)])
    target = NOISE_PRESETS.get(noise, noise)
    assert target / 1.5 < med < target * 1.5
    if noise == "low":
        assert med >= 500
    # the measurement frames carry noise of the same per-frame level as the calibration frames
    resid = (c.meas_background - c.meas_background.mean(0)).astype(np.complex128)
    band = in_band(c.frequencies) & (c.frequencies > 60e3)
    ratio = np.sqrt(np.mean(np.abs(resid[:, :, band]) ** 2, 0) * len(resid) / (len(resid) - 1)) / c.noise_std[:, band]
    assert 0.8 < np.median(ratio) < 1.25


def test_bad_noise_and_grid_raise():
    with pytest.raises(NirmpiError, match="noise"):
        simulate_case("point", noise="loud")
    with pytest.raises(NirmpiError):
        simulate_case("point", noise=-3)
    with pytest.raises(NirmpiError):
        simulate_case("point", grid=(9, 9, 9), scanner=Scanner(ndim=2))
    with pytest.raises(NirmpiError):
        simulate_case("point", frames=0)


def test_seeds_reproduce_exactly_and_differ_between_seeds(case):
    again = simulate_case("spiral", grid=29, seed=0)
    for name in ("sm", "sm_background", "meas", "meas_background", "snr"):
        assert np.array_equal(getattr(case, name), getattr(again, name)), name
    other = simulate_case("spiral", grid=29, seed=1)
    assert not np.array_equal(case.meas, other.meas)
    assert np.array_equal(case.sm_clean, other.sm_clean)


def test_measurement_is_linear_in_the_phantom():
    p, r = Point(), Resolution()
    args = (Particles(), Scanner(), Grid((29, 29), (29e-3, 29e-3)))
    mp, mr = measure_phantom(p, *args), measure_phantom(r, *args)
    ms = measure_phantom(Composite.of(p, r), *args)
    assert np.allclose(ms, mp + mr, rtol=1e-5, atol=1e-6 * np.abs(ms).max())
    m2 = measure_phantom(Composite.of(p, p), *args)
    assert np.allclose(m2, 2 * mp, rtol=1e-5, atol=1e-6 * np.abs(m2).max())


def test_measurement_matches_the_forward_model_without_inverse_crime(case):
    S = case.sm_clean.reshape(-1, case.sm.shape[-1]).astype(np.complex128)
    u = S @ case.ground_truth().ravel().astype(np.float64)
    m = case.meas_clean[0].ravel()
    rows = np.tile(in_band(case.frequencies), 2)
    rel = np.linalg.norm(u[rows] - m[rows]) / np.linalg.norm(m[rows])
    assert 1e-4 < rel < 0.03          # consistent physics, but not the reconstruction SM itself


def test_background_frames_hold_background_only():
    a = simulate_case("point", seed=5)
    b = simulate_case("resolution", seed=5)
    # same scanner, same seed: background frames identical whatever the phantom (no tracer in them)
    assert np.array_equal(a.sm_background, b.sm_background)
    assert np.array_equal(a.meas_background, b.meas_background)
    assert not np.allclose(a.meas, b.meas)
    # foreground minus mean background = tracer signal + noise (+ feed-through jitter at the drive bins)
    band = in_band(a.frequencies)
    band[[16, 17, 32, 33, 34, 48, 49, 51, 64, 66, 68, 80, 85]] = False
    u = a.meas.mean(0) - a.meas_background.mean(0)
    err = np.abs(u - a.meas_clean[0])[:, band]
    sd = a.noise_std[:, band] * np.sqrt(1 / 10 + 1 / 10)
    assert np.median(err / sd) < 1.5
    # without subtraction the background dominates many in-band bins
    assert np.median(np.abs(a.meas.mean(0) - a.meas_clean[0])[:, band] / sd) > 3
    nobg = simulate_case("point", seed=5, background=False)
    assert np.abs(nobg.sm_background.mean(-1)).max() < 5 * nobg.noise_std.max()


def test_problem_from_case(case):
    p = case.problem()
    assert p.S.shape[1] == 841 and p.u.shape == (p.S.shape[0],)
    assert 300 < p.S.shape[0] <= 470
    assert np.all((p.frequencies >= 20e3) & (p.frequencies <= 380e3))
    assert p.params["simulation"]["phantom"]["name"] == "spiral"
    q = case.problem(snr_threshold=100.0)
    assert q.S.shape[0] < p.S.shape[0]


@pytest.mark.parametrize("d", [20e-9, 30e-9])
def test_other_core_diameters_and_relaxation(d):
    c = simulate_case("spiral", particles=Particles(core_diameter=d), seed=2)
    f = c.frequencies
    assert np.median(c.snr[:, in_band(f)]) == pytest.approx(80, rel=0.2)
    base = system_matrix(Particles(), Scanner(), c.grid, 4)
    # bigger cores are sharper: relatively more signal at high harmonics
    hi, lo = (f > 250e3) & (f < 380e3), (f > 40e3) & (f < 100e3)
    ratio = lambda S: np.abs(S[:, hi]).mean() / np.abs(S[:, lo]).mean()
    if d > 25e-9:
        assert ratio(c.sm_clean) > 1.3 * ratio(base)
    else:
        assert ratio(c.sm_clean) < ratio(base) / 1.3


def test_debye_relaxation_multiplies_each_frequency():
    g = Grid((9, 9), (29e-3, 29e-3))
    tau = 2e-6
    S0 = system_matrix(Particles(), Scanner(), g, 2)
    S1 = system_matrix(Particles(relaxation_time=tau), Scanner(), g, 2)
    f = Scanner().frequencies()
    expect = S0 / (1 + 2j * np.pi * f * tau)[None, :, None]
    assert np.allclose(S1, expect, rtol=1e-4, atol=1e-6 * np.abs(S0).max())


def test_dynamic_bolus_case():
    c = simulate_case("bolus", frames=6, seed=0)
    assert c.meas.shape == (6, 2, 817)
    assert np.allclose(c.times, np.linspace(0, 1, 6))
    gt = c.ground_truth()
    assert gt.shape == (6, 29, 29)
    assert c.ground_truth(58, t=0.5).shape == (58, 58)
    # each frame's noiseless measurement differs (the bolus moves) but has similar energy
    e = np.linalg.norm(c.meas_clean.reshape(6, -1), axis=1)
    assert np.linalg.norm(c.meas_clean[0] - c.meas_clean[-1]) > 0.5 * e[0]
    p = c.problem()
    assert p.u.ndim in (1, 2)


def test_3d_small_case_runs_fast(tmp_path):
    t0 = time.perf_counter()
    c = simulate_case("spiral", grid=9, ndim=3, seed=0)
    assert time.perf_counter() - t0 < 30
    assert c.grid.shape == (9, 9, 9) and c.sm.shape == (3, 859, 729)
    assert c.acquisition.num_rx_channels == 3 and c.acquisition.dividers == (143, 132, 156)
    assert np.median(c.snr[:, in_band(c.frequencies)]) == pytest.approx(80, rel=0.2)
    gt = c.ground_truth()
    assert gt.shape == (9, 9, 9) and gt.max() > 0
    p = c.problem()
    assert p.S.shape[1] == 729 and set(np.unique(p.channels)) == {0, 1, 2}
    paths = c.write(tmp_path)
    f = mdf.open(paths["sm"])
    assert f.grid == c.grid and f.acquisition.num_rx_channels == 3
    assert f.read_system_matrix(channels=[2], freq_index=[40]).shape == (1, 729)
    assert np.load(paths["phantom"]).shape == (9, 9, 9)


# -- files ----------------------------------------------------------------------------------------
def test_write_and_read_back(tmp_path):
    c = simulate_case("bolus", frames=4, seed=3)
    paths = simulate(tmp_path, phantom="bolus", frames=4, seed=3)
    assert set(paths) == {"sm", "meas", "phantom", "phantom_json"}
    sm = mdf.open(paths["sm"])
    assert sm.kind == "calibration" and sm.grid == c.grid
    assert sm.is_background_frame.sum() == 20 and not sm.is_background_frame[:841].any()
    S = sm.read_system_matrix()
    ref = (c.sm - c.sm_background.mean(-1, keepdims=True)).reshape(-1, 841)
    assert np.allclose(S, ref, atol=1e-5 * np.abs(ref).max())
    assert np.allclose(sm.snr[0], c.snr)
    meas = mdf.open(paths["meas"])
    assert meas.kind == "measurement"
    assert list(meas.is_background_frame) == [False] * 4 + [True] * 10
    spectra = meas.read_spectra()
    full = np.concatenate([c.meas, c.meas_background])
    assert np.allclose(spectra, full, atol=1e-5 * np.abs(full).max())
    gt = np.load(paths["phantom"])
    assert gt.shape == (4, 29, 29) and np.array_equal(gt, c.ground_truth())
    spec = json.load(open(paths["phantom_json"]))
    ph = phantom_from_dict(spec["phantom"])
    g = Grid.from_dict(spec["grid"])
    assert np.array_equal(ph.render_frames(g, spec["times"]), gt)
    with pytest.raises(NirmpiError):
        simulate(tmp_path, phantom="bolus", frames=4, seed=3)     # no overwrite without force
    simulate(tmp_path, phantom="point", force=True)
    assert np.load(paths["phantom"]).shape == (29, 29)
