"""3D at scanner geometry, at small sizes: the OpenMPIData preset, volume phantoms, the simulate
CLI with AxBxC grids, the feature-grid field and the lean 3D training loop."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_nirmpi.errors import NirmpiError
from napari_nirmpi.grid import Grid
from napari_nirmpi.nir.encodings import FeatureGrid, level_shapes
from napari_nirmpi.nir import TrainConfig, fit
from napari_nirmpi.phantoms import Cone, Cubes, Tubes, make_phantom
from napari_nirmpi.sample import sample
from napari_nirmpi.simulate import (SCANNERS, Particles, Scanner, _moment_time, _weighted_moments,
                                    scanner_preset, simulate_case, system_matrix)


@pytest.fixture(scope="module")
def case7():
    return simulate_case("cone", grid=(7, 7, 7), scanner="openmpi", seed=1, noise="low")


def test_openmpi_preset_geometry():
    sc = Scanner.openmpi()
    assert sc.ndim == 3
    assert sc.gradient == (-1.0, -1.0, 2.0)
    assert sc.drive_amplitude == (12e-3, 12e-3, 12e-3)
    assert sc.base_frequency == 2.5e6
    assert sc.dividers[:2] == (102, 96)
    assert sc.num_sampling_points == 1632 and sc.num_frequencies == 817
    assert sc.transfer_function().shape == (3, 817)        # three receive channels
    assert np.allclose(sc.drive_fov(), (24e-3, 24e-3, 12e-3))   # published sampled FOV 24 x 24 x 12 mm
    assert abs(sc.cycle - 652.8e-6) < 1e-9
    scanner, shape, fov = scanner_preset("openmpi")
    assert scanner == sc and shape == (37, 37, 37) and fov == (18.5e-3, 37e-3, 37e-3)
    assert set(SCANNERS) >= {"default", "openmpi"}
    with pytest.raises(NirmpiError):
        scanner_preset("bruker9000")
    # the published divider 99 is still accepted (a 53856-sample period)
    assert Scanner.openmpi(dividers=(102, 96, 99)).num_sampling_points == 53856


def test_simulated_case_shapes_axes_and_mm(case7):
    c = case7
    assert c.grid.shape == (7, 7, 7)
    assert c.grid.fov == pytest.approx((18.5e-3, 37e-3, 37e-3))       # (z, y, x): z is the 2 T/m axis
    assert c.sm.shape == (3, 817, 343) and c.meas.shape[1:] == (3, 817)
    assert c.acquisition.num_rx_channels == 3
    gt = c.ground_truth()
    assert gt.shape == (7, 7, 7)
    # the cone lies along x (the last image axis): its extent along x exceeds that along z and y
    extent_mm = [np.count_nonzero(gt.max(axis=tuple(a for a in range(3) if a != ax)) > 0.05) * v * 1e3
                 for ax, v in enumerate(c.grid.voxel_size)]
    assert extent_mm[2] > 1.5 * extent_mm[0] and extent_mm[2] > 1.5 * extent_mm[1]
    p = c.problem()
    assert p.S.shape[1] == 343 and np.all(np.isin(np.unique(p.channels), [0, 1, 2]))
    assert len(np.unique(p.channels)) == 3


def test_numba_kernel_matches_numpy_reference():
    sc = Scanner.openmpi()
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.02, 0.02, (5, 3, 3))                   # (O, S, D) x-first
    w = rng.uniform(0, 1, (5, 3))
    fast = _weighted_moments(pts, w, Particles(), sc)
    ref = np.einsum("os,osdv->odv", w, _moment_time(pts.reshape(-1, 3), Particles(), sc).reshape(5, 3, 3, -1))
    assert np.allclose(fast, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


def test_system_matrix_non_cubic_grid_column_order():
    sc = Scanner.openmpi()
    g = Grid((3, 4, 5), (18.5e-3, 37e-3, 37e-3))
    S = system_matrix(Particles(), sc, g, 2)
    assert S.shape == (3, 817, 60)
    # column order is C order (x fastest): the voxel at (z, y, x) = (1, 2, 3) is column 1*20 + 2*5 + 3;
    # mirroring x flips the sign of the x channel's response at the x drive frequency
    k = int(round(sc.drive_frequencies[0] / sc.frequencies()[1]))
    a, b = S[0, k, 1 * 20 + 2 * 5 + 3], S[0, k, 1 * 20 + 2 * 5 + 1]
    assert abs(a) > 0 and np.isclose(abs(a), abs(b), rtol=1e-3)


def test_volume_phantoms_match_published_figures():
    cone = Cone()
    assert cone.volume() * 1e9 == pytest.approx(683.9, abs=0.5)           # µL, as published
    g = Grid((37, 37, 37), (18.5e-3, 37e-3, 37e-3))
    vox = np.prod(g.voxel_size)
    assert cone.render(g).sum() * vox * 1e9 == pytest.approx(683.9, rel=0.01)
    cubes = Cubes()
    assert cubes.volume() * 1e9 == pytest.approx(8 * sum(c / 100 for c in (100, 66.6, 44.4, 29.6, 19.7, 13.1, 8.77, 5.85)))
    img = cubes.render(g)
    zc, yc, xc = g.axis_centers()
    for (z, y, x), v in zip(cubes.centers(), cubes.values):
        iz, iy, ix = (int(np.argmin(abs(a - b))) for a, b in ((zc, z), (yc, y), (xc, x)))
        assert img[iz, iy, ix] == pytest.approx(v, rel=1e-5)
    assert cubes.centers()[0].tolist() == pytest.approx([3e-3, 6e-3, 6e-3])   # chamber 1: upper, +y, +x
    tubes = Tubes()
    d = tubes.directions()
    assert d.shape == (5, 3) and np.allclose(np.linalg.norm(d, axis=1), 1)
    t = tubes.render(g)
    assert 0.8 < t.sum() * vox / tubes.volume() < 1.05                  # overlap at the origin
    # a 2D grid renders the z = 0 section; spec round trip
    assert cone.render(Grid((9, 9), (37e-3, 37e-3))).max() == 1.0
    assert make_phantom(json.loads(cone.to_json())) == cone


def test_cli_simulate_grid_axbxc(tmp_path):
    out = tmp_path / "c"
    r = subprocess.run([sys.executable, "-m", "napari_nirmpi.cli", "simulate", str(out), "--grid", "5x6x7",
                        "--phantom", "cubes", "--scanner", "openmpi"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    gt = np.load(out / "phantom.npy")
    assert gt.shape == (5, 6, 7)
    spec = json.loads((out / "phantom.json").read_text())
    assert spec["grid"]["shape"] == [5, 6, 7]
    from napari_nirmpi import mdf
    f = mdf.open(str(out / "sm.mdf"))
    assert f.grid.shape == (5, 6, 7) and f.acquisition.num_rx_channels == 3
    assert f.acquisition.num_frequencies == 817
    bad = subprocess.run([sys.executable, "-m", "napari_nirmpi.cli", "simulate", str(tmp_path / "d"),
                          "--grid", "5xq"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--grid" in bad.stderr
    # NIR on the 3D files: --network auto takes the feature grid, and --network siren the paper's
    from napari_nirmpi.cli import main
    from napari_nirmpi.nir import checkpoint
    base = ["reconstruct", "--sm", str(out / "sm.mdf"), "--meas", str(out / "meas.mdf"), "--method", "nir",
            "--iterations", "20", "--device", "cpu", "--force"]
    for net, expected in ((None, "grid"), ("siren", "siren")):
        ck = tmp_path / f"{expected}.nirmpi"
        extra = ["--network", net] if net else []
        assert main(base + extra + ["--checkpoint", str(ck), "--grid", "10x12x14", "--output",
                                    str(tmp_path / f"{expected}.npy")]) == 0
        assert checkpoint.load(ck).network_config()["network"] == expected
        assert np.load(tmp_path / f"{expected}.npy").shape == (10, 12, 14)
    assert main(base + ["--network", "grid", "--operator", "cubic", "--output", str(tmp_path / "x.npy")]) == 2
    assert main(["reconstruct", "--sm", str(out / "sm.mdf"), "--meas", str(out / "meas.mdf"), "--network", "grid",
                 "--output", str(tmp_path / "k.npy")]) == 2      # a classic method with a NIR option



def test_feature_grid_samples_any_grid_and_is_continuous():
    net = FeatureGrid(3, (7, 7, 7), levels=3, features=2, init_std=0.3, seed=0)
    x = torch.rand(100, 3) * 2 - 1
    y = net(x)
    assert y.shape == (100,) and torch.all(y >= 0)
    # continuity: a tiny step moves the value a tiny amount
    assert torch.allclose(net(x + 1e-5), y, atol=1e-3)
    # gradient reaches every level
    y.sum().backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in net.grids)
    assert level_shapes((7, 7, 7), 3, 4, 1.0)[-1] == (7, 7, 7)
    assert level_shapes((10, 20, 40), 2, 4, 2.0) == [(2, 2, 4), (20, 40, 80)]   # per axis, in proportion
    with pytest.raises(NirmpiError):
        FeatureGrid(3, (7, 7))


def test_feature_grid_route_reduces_misfit_and_samples_finer(case7):
    p = case7.problem()
    losses = []
    cfg = TrainConfig.fast(iterations=120, val_every=10, patience=1000, log_every=1, seed=0)
    field, state = fit(p, cfg, callback=lambda s: losses.append(s.loss))
    assert np.mean(losses[-10:]) < 0.5 * losses[0]      # the first step's misfit is that of the flat start
    assert state.stop_reason.startswith("max iterations")
    assert field.network_config()["network"] == "grid"
    img, g = sample(field, (14, 14, 14))
    assert img.shape == (14, 14, 14) and g.fov == pytest.approx(p.grid.fov)
    assert np.isfinite(img).all() and img.max() > 0
    native, _ = sample(field, p.grid.shape)
    gt = case7.ground_truth()
    assert np.corrcoef(native.ravel(), gt.ravel())[0, 1] > 0.5


def test_feature_grid_route_early_stop_ends_the_run(case7):
    p = case7.problem()
    cfg = TrainConfig.fast(iterations=2000, val_every=5, patience=10, min_iterations=10, lr=0.3, seed=0)
    field, state = fit(p, cfg)
    assert state.iteration < 2000 and state.stop_reason.startswith("early stopping"), state.stop_reason
    assert state.best_iteration <= state.iteration - 10


def test_feature_grid_checkpoint_round_trip_and_config(case7, tmp_path):
    from napari_nirmpi.nir import checkpoint
    p = case7.problem()
    field, _ = fit(p, TrainConfig.fast(iterations=20, val_every=10))
    path = checkpoint.save(field, tmp_path / "grid.nirmpi")
    back = checkpoint.load(path)
    assert back.network_config() == field.network_config()
    assert np.allclose(sample(back, (5, 9, 7))[0], sample(field, (5, 9, 7))[0])
    for cfg in (TrainConfig.fast(), TrainConfig.fast_tv(0.2)):
        assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig.fast_tv(0.2).tv_weight == 0.2 and not TrainConfig.fast_tv().early_stopping
    # SIREN with jittered points in the same loop
    field, state = fit(p, TrainConfig(sampling="jitter", jitter_points=1, iterations=20, val_every=10))
    assert state.iteration == 20 and sample(field, (5, 9, 7))[0].shape == (5, 9, 7)
    with pytest.raises(NirmpiError, match="sampling"):
        fit(p, TrainConfig.fast(sampling="random"))
    with pytest.raises(NirmpiError, match="feature grid"):
        TrainConfig.fast(lr=2.0).validate()
    with pytest.raises(NirmpiError, match="levels"):
        TrainConfig.fast(feature_grid={"levels": 0}).validate()
    # a crafted checkpoint config cannot allocate a huge grid
    from napari_nirmpi.nir.field import check_network_config
    bad = dict(field.network_config()) if field.network_config()["network"] == "grid" else dict(
        fit(p, TrainConfig.fast(iterations=1))[0].network_config())
    bad["shape"], bad["max_scale"] = [4096, 4096, 4096], 16.0
    with pytest.raises(NirmpiError, match="feature cells"):
        check_network_config(bad)
