"""Resampling in physical coordinates and intensity-fitted image metrics."""

import numpy as np
import pytest

from napari_nirmpi import Grid
from napari_nirmpi.errors import NirmpiError
from napari_nirmpi.metrics import fit_intensity, fwhm, line_profile, psnr, ssim
from napari_nirmpi.resample import resample_to_grid, upsample

GRID2 = Grid((29, 29), (29e-3, 29e-3), (1e-3, -2e-3))


def ramp(grid, coeffs, clamp_to=None):
    """a·y + b·x (+ c·z) at the voxel centres of `grid`, optionally clamped to another grid's centres."""
    pts = grid.points()
    if clamp_to is not None:
        lo = np.asarray(clamp_to.origin)
        hi = lo + (np.asarray(clamp_to.shape) - 1) * np.asarray(clamp_to.voxel_size)
        pts = np.clip(pts, lo, hi)
    return (pts * 1e3 * np.asarray(coeffs)).sum(-1) + 3.0


@pytest.mark.parametrize("shape", [(104, 104), (50, 37), (13, 17)])
def test_bilinear_reproduces_ramp_exactly(shape):
    img = ramp(GRID2, (0.7, -1.3))
    out, g = upsample(img, GRID2, shape, method="bilinear")
    assert g.shape == shape and g.fov == GRID2.fov and g.center == GRID2.center
    np.testing.assert_allclose(out, ramp(g, (0.7, -1.3), clamp_to=GRID2), rtol=0, atol=1e-4)


def test_bicubic_reproduces_ramp_inside_and_constant_everywhere():
    img = ramp(GRID2, (0.4, 0.9))
    out, g = upsample(img, GRID2, (104, 104), method="bicubic")
    expected = ramp(g, (0.4, 0.9), clamp_to=GRID2)
    inner = (slice(8, -8), slice(8, -8))  # Keys a=-0.5 is exact for linear data away from borders
    np.testing.assert_allclose(out[inner], expected[inner], rtol=0, atol=1e-4)
    for method in ("bicubic", "bilinear", "nearest"):
        const, _ = upsample(np.full((29, 29), 2.5, np.float32), GRID2, (104, 104), method=method)
        np.testing.assert_allclose(const, 2.5, rtol=0, atol=1e-6)
        assert const.dtype == np.float32


def test_identity_when_shapes_equal():
    img = np.random.default_rng(0).random((29, 29)).astype(np.float32)
    for method in ("bicubic", "bilinear"):
        out, g = upsample(img, GRID2, (29, 29), method=method)
        np.testing.assert_array_equal(out, img)
        # the interpolation itself is also the identity at the source centres
        np.testing.assert_allclose(resample_to_grid(img, GRID2, GRID2.with_shape((29, 29)), method),
                                   img, atol=1e-6)


def centre_of_mass_mm(img, grid):
    w = img / img.sum()
    return (grid.points() * w[..., None]).reshape(-1, grid.ndim).sum(0) * 1e3


def test_blob_centre_preserved_29_104_down():
    pts = GRID2.points() * 1e3
    blob = np.exp(-(((pts - np.array([3.3, -5.1])) ** 2).sum(-1)) / (2 * 2.5 ** 2))
    c0 = centre_of_mass_mm(blob, GRID2)
    for method in ("bicubic", "bilinear"):
        up, g_up = upsample(blob, GRID2, (104, 104), method=method)
        np.testing.assert_allclose(centre_of_mass_mm(up, g_up), c0, atol=0.02)
        down, g_down = upsample(up, g_up, (29, 29), method=method)
        np.testing.assert_allclose(centre_of_mass_mm(down, g_down), c0, atol=0.02)
        assert np.abs(down - blob).max() < 0.02
    # a half-voxel misalignment would move the centre by 0.5 mm: make sure we would notice
    assert abs(c0[0] - 3.3) < 0.05


def test_region_and_3d_and_frames():
    g3 = Grid((6, 8, 10), (6e-3, 8e-3, 10e-3))
    img = ramp(g3, (1.0, 2.0, -0.5))
    up, g = upsample(img, g3, (12, 16, 20), method="bilinear")
    np.testing.assert_allclose(up, ramp(g, (1.0, 2.0, -0.5), clamp_to=g3), atol=1e-4)
    sub = g3.region((-1e-3, -2e-3, 0.0), (1e-3, 2e-3, 3e-3), (5, 9, 7))
    out = resample_to_grid(img, g3, sub, "bicubic")
    np.testing.assert_allclose(out, ramp(sub, (1.0, 2.0, -0.5)), atol=1e-4)  # interior: exact
    series = np.stack([img, 2 * img])
    up2, _ = upsample(series, g3, (12, 16, 20), method="bilinear")
    assert up2.shape == (2, 12, 16, 20)
    np.testing.assert_allclose(up2[1], 2 * up, atol=1e-4)


def test_resample_errors():
    with pytest.raises(NirmpiError, match="does not match grid"):
        upsample(np.zeros((5, 5)), GRID2, (10, 10))
    with pytest.raises(NirmpiError, match="method"):
        upsample(np.zeros((29, 29)), GRID2, (10, 10), method="lanczos")


def test_fit_intensity_and_psnr_scale_invariance():
    rng = np.random.default_rng(1)
    ref = rng.random((20, 20))
    img = 7.0 * ref + 0.01 * rng.standard_normal((20, 20))
    np.testing.assert_allclose(fit_intensity(img, ref), ref, atol=0.01)
    assert psnr(img, ref) > 35
    assert psnr(img, ref, fit=False) < 0  # unfitted: the scale mismatch dominates
    assert psnr(3 * img, ref) == pytest.approx(psnr(img, ref), abs=1e-9)
    assert fit_intensity(np.zeros((4, 4)), np.ones((4, 4))).sum() == 0


def test_psnr_matches_definition():
    ref = np.zeros((10, 10))
    ref[3:6, 3:6] = 2.0
    img = ref + 0.1
    mse = 0.01
    assert psnr(img, ref, fit=False) == pytest.approx(10 * np.log10(2.0 ** 2 / mse))
    assert psnr(img, ref, fit=False, data_range=1.0) == pytest.approx(10 * np.log10(1 / mse))


def test_ssim_2d_3d_small():
    rng = np.random.default_rng(2)
    ref = rng.random((5, 6, 6))
    assert ssim(ref, ref) == pytest.approx(1.0)
    assert ssim(ref + 0.3 * rng.random(ref.shape), ref) < 0.95
    img2 = rng.random((29, 29))
    assert ssim(2 * img2, img2) == pytest.approx(1.0)
    with pytest.raises(NirmpiError):
        ssim(np.zeros((2, 10)), np.zeros((2, 10)))
    with pytest.raises(NirmpiError, match="differs"):
        psnr(np.zeros((3, 3)), np.zeros((4, 4)))


def test_line_profile_physical_coordinates():
    img = ramp(GRID2, (0.0, 1.0))  # value = x_mm + 3
    # along x at y = 1 mm, from x = -10 mm to x = 5 mm (centre of GRID2 is x = -2 mm)
    d, v = line_profile(img, GRID2, (1.0, -10.0), (1.0, 5.0), num=31)
    np.testing.assert_allclose(d, np.linspace(0, 15, 31))
    np.testing.assert_allclose(v, np.linspace(-10, 5, 31) + 3.0, atol=1e-9)
    with pytest.raises(NirmpiError, match="coordinates"):
        line_profile(img, GRID2, (0, 0, 0), (1, 1, 1))


def test_fwhm_gaussian():
    x = np.linspace(-10, 10, 2001)
    sigma = 1.7
    assert fwhm(x, np.exp(-x ** 2 / (2 * sigma ** 2))) == pytest.approx(2.3548 * sigma, rel=1e-3)
    assert np.isnan(fwhm(x, np.ones_like(x)))
