import numpy as np
import pytest

from napari_nirmpi.errors import NirmpiError
from napari_nirmpi.grid import Grid, parse_shape


def test_voxel_centres_and_napari_transform():
    g = Grid((29, 29), (29e-3, 29e-3))
    assert g.voxel_size == pytest.approx((1e-3, 1e-3))
    assert g.origin == pytest.approx((-14e-3, -14e-3))
    assert g.scale_mm == pytest.approx((1.0, 1.0))
    assert g.translate_mm == pytest.approx((-14.0, -14.0))


def test_grids_of_one_fov_share_the_box():
    g = Grid((29, 29), (29e-3, 29e-3), (1e-3, -2e-3))
    f = g.with_shape((104, 104))
    assert f.lower == pytest.approx(g.lower) and f.upper == pytest.approx(g.upper)
    # normalised coordinates of any grid map the FOV edges to ±1 and are voxel centres
    c = f.normalized_coords()
    assert c.shape == (104, 104, 2)
    assert c[0, 0, 0] == pytest.approx(-1 + 1 / 104) and c[-1, -1, 1] == pytest.approx(1 - 1 / 104)
    np.testing.assert_allclose(g.to_normalized(f.points()), c, atol=1e-6)


def test_refined_grid_tiles_each_voxel():
    g = Grid((3, 4), (3e-3, 4e-3))
    fine = g.refined(5).normalized_coords().reshape(3, 5, 4, 5, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(fine, g.normalized_coords(), atol=1e-6)


def test_mdf_round_trip_2d_and_3d():
    g2 = Grid((29, 31), (29e-3, 31e-3), (1e-3, 2e-3))
    size, fov, center = g2.to_mdf()
    assert size.tolist() == [31, 29, 1]
    assert Grid.from_mdf(size, fov, center) == g2
    g3 = Grid((5, 6, 7), (5e-3, 6e-3, 7e-3), (0.0, 1e-3, 2e-3))
    assert Grid.from_mdf(*g3.to_mdf()) == g3


def test_region():
    g = Grid((29, 29), (29e-3, 29e-3))
    r = g.region((-5e-3, 0.0), (5e-3, 10e-3), (20, 20))
    assert r.center == pytest.approx((0.0, 5e-3)) and r.fov == pytest.approx((10e-3, 10e-3))
    with pytest.raises(NirmpiError):
        g.region((0, 0), (0, 1e-3), (4, 4))


@pytest.mark.parametrize("bad", [((0, 3), (1, 1)), ((3,), (1,)), ((3, 3), (1, -1)), ((3, 3), (1, np.nan))])
def test_bad_grids_are_clear_errors(bad):
    with pytest.raises(NirmpiError):
        Grid(*bad)


def test_parse_shape():
    assert parse_shape("104") == (104, 104)
    assert parse_shape("54x79") == (54, 79)
    assert parse_shape("13x13x13", 3) == (13, 13, 13)
    for bad in ("0x4", "a", "4x4x4x4"):
        with pytest.raises(NirmpiError):
            parse_shape(bad)
    with pytest.raises(NirmpiError, match="axes"):
        parse_shape("4x4", 3)


def test_parse_shape_factor_of_native():
    assert parse_shape("x4", native=(29, 29)) == (116, 116)
    assert parse_shape("x1.5", native=(10, 20)) == (15, 30)
    assert parse_shape("54", native=(29, 29)) == (54, 54)
    with pytest.raises(NirmpiError):
        parse_shape("xq", native=(29, 29))
