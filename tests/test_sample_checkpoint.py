"""sample(): grids, regions, batching; nir.checkpoint: round trip, refusal of foreign/unsafe files."""

import os
import pickle

import numpy as np
import pytest
import torch

from napari_nirmpi import CheckpointError, Grid, NirmpiError
from napari_nirmpi.nir import Field, Siren, checkpoint
from napari_nirmpi.sample import sample, sample_grid


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_field(ndim=2, scale=2.5):
    shape = (29, 29) if ndim == 2 else (6, 7, 8)
    grid = Grid(shape, (0.029, 0.031, 0.02)[:ndim], (0.001, -0.002, 0.0)[:ndim])
    net = Siren(ndim, width=24, depth=2, omega0=10, positive="softplus", seed=7)
    return Field(net, grid, config={"width": 24, "lr": 1e-3}, params={"min_freq": 20e3, "channels": [0, 1]},
                 scale=scale)


def _direct(field, grid):
    """Reference: evaluate at the metre voxel centres of `grid` mapped through field.grid."""
    pts = field.grid.to_normalized(grid.points().reshape(-1, grid.ndim))
    return field.evaluate(pts.astype(np.float32)).reshape(grid.shape)


# ------------------------------------------------------------------------------ sample

@pytest.mark.parametrize("n", [29, 54, 79, 104])
def test_sample_full_fov_grids(n):
    f = make_field()
    img, g = sample(f, (n, n))
    assert img.shape == (n, n) and img.dtype == np.float32
    assert g.shape == (n, n) and g.fov == f.grid.fov and g.center == f.grid.center
    np.testing.assert_allclose(img, _direct(f, g), rtol=1e-5, atol=1e-6)
    # overlays exactly: the same normalised voxel centres as the grid's own
    np.testing.assert_allclose(img, f.evaluate(g.normalized_coords().reshape(-1, 2)).reshape(n, n),
                               rtol=1e-5, atol=1e-5)
    assert np.all(img >= 0)


def test_sample_native_equals_preview_convention():
    f = make_field()
    img, g = sample(f, 29)
    assert g == f.grid
    with torch.no_grad():
        ref = f.network(torch.from_numpy(f.grid.normalized_coords().reshape(-1, 2))).numpy() * f.scale
    np.testing.assert_allclose(img.ravel(), ref, rtol=1e-5, atol=1e-6)


def test_region_equals_crop_of_full_sample():
    f = make_field()
    full, g = sample(f, (60, 80))
    vy, vx = g.voxel_size
    lo = (g.lower[0] + 10 * vy, g.lower[1] + 5 * vx)
    hi = (g.lower[0] + 30 * vy, g.lower[1] + 45 * vx)
    reg, rg = sample(f, (20, 40), region=(lo, hi))
    assert rg.shape == (20, 40)
    np.testing.assert_allclose([rg.axis_centers()[0][0], rg.axis_centers()[1][0]],
                               [g.axis_centers()[0][10], g.axis_centers()[1][5]], atol=1e-12)
    np.testing.assert_allclose(reg, full[10:30, 5:45], rtol=1e-5, atol=1e-5)
    # the same region as a Grid
    reg2, rg2 = sample(f, region=rg)
    assert rg2 == rg and np.array_equal(reg2, reg)


def test_batching_does_not_change_values():
    f = make_field()
    a, _ = sample(f, (50, 70), batch_size=1 << 20)
    b, _ = sample(f, (50, 70), batch_size=37)  # less than one row per batch → one row at a time
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # only matmul blocking may differ


def test_sample_3d_and_region():
    f = make_field(3)
    img, g = sample(f, (9, 10, 11), batch_size=100)
    assert img.shape == (9, 10, 11) and g.fov == f.grid.fov
    np.testing.assert_allclose(img, _direct(f, g), rtol=1e-5, atol=1e-6)
    lo, hi = np.array(g.lower), np.array(g.upper)
    sub, sg = sample(f, (4, 5, 6), region=(lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo)))
    np.testing.assert_allclose(sub, _direct(f, sg), rtol=1e-5, atol=1e-6)


def test_sample_bad_arguments():
    f = make_field()
    with pytest.raises(NirmpiError):
        sample(f, (10, 10, 10))
    with pytest.raises(NirmpiError):
        sample(f, None)
    with pytest.raises(NirmpiError):
        sample(f, (10, 10), region=((0.0, 0.0), (-1.0, 1.0)))
    with pytest.raises(NirmpiError):
        sample_grid(f, (10, 10), region="everything")


# ------------------------------------------------------------------------------ checkpoint

@pytest.mark.parametrize("ndim", [2, 3])
def test_checkpoint_round_trip(tmp_path, ndim):
    f = make_field(ndim)
    p = checkpoint.save(f, tmp_path / "field.pt")
    g = checkpoint.load(p)
    assert g.grid == f.grid and g.scale == f.scale
    assert g.config == f.config and g.params == f.params
    assert g.network_config() == f.network_config()
    for k, v in f.network.state_dict().items():
        assert torch.equal(v, g.network.state_dict()[k])
    shape = (31, 33) if ndim == 2 else (5, 6, 7)
    np.testing.assert_array_equal(sample(f, shape)[0], sample(g, shape)[0])
    assert not [x for x in os.listdir(tmp_path) if x.endswith(".tmp")]  # no temp file left


def test_checkpoint_no_overwrite_unless_force(tmp_path):
    f = make_field()
    p = tmp_path / "f.pt"
    checkpoint.save(f, p)
    with pytest.raises(CheckpointError, match="exists"):
        checkpoint.save(make_field(scale=9.0), p)
    assert checkpoint.load(p).scale == 2.5
    checkpoint.save(make_field(scale=9.0), p, force=True)
    assert checkpoint.load(p).scale == 9.0


def test_checkpoint_foreign_and_corrupt_files(tmp_path):
    bad = tmp_path / "noise.pt"
    bad.write_bytes(os.urandom(2000))
    with pytest.raises(CheckpointError):
        checkpoint.load(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a napari-nirmpi"):
        checkpoint.load(other)
    with pytest.raises(CheckpointError, match="no such"):
        checkpoint.load(tmp_path / "missing.pt")
    # truncated copy of a valid file
    good = checkpoint.save(make_field(), tmp_path / "good.pt")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError):
        checkpoint.load(trunc)
    # right format tag, wrong contents
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": checkpoint.FORMAT, "version": 1, "meta": "{not json", "state_dict": {}}, wrong)
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(wrong)


def test_checkpoint_newer_version_refused(tmp_path):
    p = tmp_path / "new.pt"
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION + 1, "meta": "{}",
                "state_dict": {}}, p)
    with pytest.raises(CheckpointError, match="newer"):
        checkpoint.load(p)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file when unpickled


def test_checkpoint_refuses_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "version": 1, "meta": "{}", "state_dict": {},
                "x": _Evil(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="weights_only"):
        checkpoint.load(evil)
    assert not marker.exists()
    # a plain pickle file too
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(CheckpointError):
        checkpoint.load(plain)
    assert not marker.exists()


# ------------------------------------------------------------------------------ hardening (crafted files)

def _tampered(tmp_path, name="t.pt", meta=None, state=None, scale=None):
    """A valid checkpoint rewritten with changed metadata and/or weights."""
    import json

    good = checkpoint.save(make_field(), tmp_path / f"src-{name}")
    payload = torch.load(good, weights_only=True)
    m = json.loads(payload["meta"])
    for k, v in (meta or {}).items():
        m[k] = {**m[k], **v} if isinstance(v, dict) and isinstance(m.get(k), dict) else v
    if scale is not None:
        m["scale"] = scale
    payload["meta"] = json.dumps(m)
    if state is not None:
        state(payload["state_dict"])
    out = tmp_path / name
    torch.save(payload, out)
    return out


def test_checkpoint_huge_declared_width_is_refused_before_building(tmp_path):
    import time

    p = _tampered(tmp_path, meta={"network": {"width": 36000}})
    assert p.stat().st_size < 100_000
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="width=36000: expected an integer in"):
        checkpoint.load(p)
    assert time.perf_counter() - t0 < 2.0  # nothing of 1.3e9 weights was built
    p = _tampered(tmp_path, "deep.pt", meta={"network": {"depth": 10**6}})
    with pytest.raises(CheckpointError, match="depth"):
        checkpoint.load(p)


def test_checkpoint_weights_must_match_the_declared_network(tmp_path):
    p = _tampered(tmp_path, meta={"network": {"width": 64}})  # plausible, but the weights are 24 wide
    with pytest.raises(CheckpointError, match="do not match the network the metadata declares"):
        checkpoint.load(p)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_checkpoint_non_finite_weights_or_scale_refused(tmp_path, bad):
    def poison(sd):
        sd["layers.1.weight"][0, 0] = bad

    with pytest.raises(CheckpointError, match="not finite"):
        checkpoint.load(_tampered(tmp_path, "w.pt", state=poison))
    with pytest.raises(CheckpointError, match="output scale"):
        checkpoint.load(_tampered(tmp_path, "s.pt", scale=bad))
    with pytest.raises(CheckpointError, match="output scale"):
        checkpoint.load(_tampered(tmp_path, "z.pt", scale=0.0))


def test_checkpoint_huge_grid_refused_in_one_line(tmp_path):
    p = _tampered(tmp_path, meta={"grid": {"shape": [200000, 200000]}})
    with pytest.raises(CheckpointError) as ei:
        checkpoint.load(p)
    msg = str(ei.value)
    assert "200000×200000 has 40,000,000,000 voxels" in msg and "\n" not in msg


def test_checkpoint_foreign_files_get_one_clear_line(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"format": checkpoint.FORMAT}))
    evil = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "x": _Evil(str(tmp_path / "m"))}, evil)
    for p in (text, plain, evil):
        with pytest.raises(CheckpointError) as ei:
            checkpoint.load(p)
        msg = str(ei.value)
        assert msg.startswith(f"{p}: not a") and "\n" not in msg
        assert "Re-running" not in msg and "Unpickl" not in msg, msg


def test_checkpoint_special_file_refused(tmp_path):
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        checkpoint.load(fifo)  # would block forever if opened


# ------------------------------------------------------------------------------ sample: memory cap, region

def test_sample_memory_cap_names_the_numbers():
    f = make_field()
    with pytest.raises(NirmpiError, match=r"200000×200000 has 40,000,000,000 voxels: 149.0 GiB .* cap of 2.0 GiB"):
        sample(f, (200000, 200000))
    with pytest.raises(NirmpiError, match="cap of 0.0 GiB"):
        sample(f, (100, 100), max_bytes=1000)
    img, _ = sample(f, (100, 100), max_bytes=None)
    assert img.shape == (100, 100)


def test_sample_long_trailing_axis_is_batched():
    # one leading slice with more points than a batch: values equal the direct evaluation
    f = make_field()
    img, g = sample(f, (2, 5000), batch_size=1000)
    np.testing.assert_allclose(img, _direct(f, g), rtol=1e-5, atol=1e-6)


def test_sample_region_convention_is_stated_in_errors():
    f = make_field()
    with pytest.raises(NirmpiError, match="parse_region"):
        sample(f, (10, 10), region="-5,5,-5,5")
    # millimetres passed to the metre API: outside the FOV, and said so
    with pytest.raises(NirmpiError, match="look like millimetres"):
        sample(f, (10, 10), region=((-5, -5), (5, 5)))
    with pytest.raises(NirmpiError, match="does not overlap the field's FOV"):
        sample(f, (10, 10), region=((0.5, 0.5), (0.6, 0.6)))
    from napari_nirmpi.grid import parse_region

    lo, hi = parse_region("-5,5,-2,2", 2)  # x0,x1,y0,y1 mm → ((y0, x0), (y1, x1)) m
    img, g = sample(f, (8, 20), region=(lo, hi))
    assert g.fov == pytest.approx((4e-3, 10e-3)) and img.shape == (8, 20)


# ------------------------------------------------------------------------------ nirmpi sample

def test_cli_sample_on_a_non_checkpoint_prints_one_line(tmp_path, capsys):
    from napari_nirmpi.cli import main

    bad = tmp_path / "x.pt"
    bad.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    assert main(["sample", str(bad), "--grid", "10", "--output", str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nirmpi sample: error:")
    assert "Re-running" not in err and "Unpickl" not in err and "weights_only" not in err, err
    assert not (tmp_path / "o.npy").exists()


def test_cli_sample_cap_region_and_existing_output(tmp_path, capsys):
    from napari_nirmpi.cli import main

    p = checkpoint.save(make_field(), tmp_path / "f.pt")
    out = tmp_path / "o.npy"
    assert main(["sample", str(p), "--grid", "100000x100000", "--output", str(out)]) == 2
    assert "cap of 2.0 GiB" in capsys.readouterr().err and not out.exists()
    assert main(["sample", str(p), "--grid", "x2", "--region=-5,5,-2,2", "--output", str(out)]) == 0
    img = np.load(out)
    assert img.shape == (58, 58)
    assert main(["sample", str(p), "--grid", "10", "--output", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err


def test_cli_sample_help_shows_defaults_and_an_example(capsys):
    from napari_nirmpi.cli import main

    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    out = capsys.readouterr().out
    assert "(default: 2.0)" in out and "nirmpi sample field.pt --grid" in out
    assert "METRES in image" in out and "millimetres, x first" in out
