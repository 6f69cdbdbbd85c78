import json

import numpy as np
import pytest

from napari_nirmpi.errors import NirmpiError
from napari_nirmpi.grid import Grid
from napari_nirmpi.phantoms import PHANTOMS, Bolus, Composite, Point, Resolution, Spiral, make_phantom, phantom_from_dict

FOV = 29e-3
STATIC = ["spiral", "resolution", "point", "ellipses"]
ALL = STATIC + ["bolus"]


def grid(n):
    return Grid((n, n), (FOV, FOV))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n, rtol", [(29, 0.05), (104, 0.015)])
def test_fractions_in_unit_interval_and_mass_matches_analytic_area(name, n, rtol):
    p = PHANTOMS[name]()
    g = grid(n)
    img = p.render(g, t=0.4)
    assert img.dtype == np.float32 and img.shape == (n, n)
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert img.max() > 0
    mass = img.sum() * np.prod(g.voxel_size)
    assert mass == pytest.approx(p.area(0.4), rel=rtol)


@pytest.mark.parametrize("name", ALL)
def test_native_and_fine_renders_agree_in_total_mass(name):
    p = PHANTOMS[name]()
    m29 = p.render(grid(29)).sum() * (FOV / 29) ** 2
    m104 = p.render(grid(104)).sum() * (FOV / 104) ** 2
    assert m29 == pytest.approx(m104, rel=0.04)


def test_spiral_is_thinner_than_the_native_voxel():
    s = Spiral()
    assert 0.6e-3 <= s.width <= 0.8e-3 and 2 <= s.turns <= 3
    img = s.render(grid(29))
    # a 0.7 mm line never fills a 1 mm voxel, but at 104² (0.28 mm voxels) its core does
    assert img.max() < 0.95
    assert s.render(grid(104)).max() == 1.0
    # it stays inside the 24 mm drive FOV
    assert s.r0 + s.pitch * s.turns + s.width / 2 < 12e-3


def test_point_is_off_centre_and_its_centroid_is_right():
    p = Point()
    g = grid(104)
    img = p.render(g)
    pts = g.points()
    c = (img[..., None] * pts).sum((0, 1)) / img.sum()
    assert np.allclose(c, p.center, atol=0.05e-3)
    assert np.hypot(*p.center) > 2e-3


def test_resolution_pairs_are_resolved_at_fine_grid():
    r = Resolution()
    assert list(r.spacings) == sorted(r.spacings, reverse=True)
    g = grid(116)
    img = r.render(g)
    # along the row of the widest pair, the middle between the two dots is empty
    iy = int(np.argmin(np.abs(g.axis_centers()[0] - r.rows[0])))
    ix = int(np.argmin(np.abs(g.axis_centers()[1])))
    assert img[iy, ix] == 0 and img[iy].max() == 1.0
    with pytest.raises(NirmpiError):
        Resolution(spacings=(0.5e-3,), rows=(0.0,))
    with pytest.raises(NirmpiError):
        Resolution(spacings=(3e-3, 2e-3), rows=(0.0,))


def test_ellipses_are_smooth_multilevel():
    img = PHANTOMS["ellipses"]().render(grid(104))
    levels = np.unique(np.round(img[img > 0], 3))
    assert levels.size > 5                      # several concentration levels, not a binary mask
    assert np.isclose(img, 0.2, atol=1e-6).sum() > 1000   # the large 0.2 "brain" region


@pytest.mark.parametrize("name", ALL + ["sum"])
def test_json_round_trip(name):
    p = PHANTOMS[name]() if name != "sum" else Composite.of(Point(), Resolution())
    d = json.loads(json.dumps(p.to_dict()))
    q = phantom_from_dict(d)
    assert q == p
    assert np.array_equal(q.render(grid(29), t=0.5), p.render(grid(29), t=0.5))
    assert make_phantom(d) == p and Spiral.from_dict(d) == p


def test_bad_specs_raise():
    with pytest.raises(NirmpiError, match="unknown phantom"):
        make_phantom("banana")
    with pytest.raises(NirmpiError, match="unknown parameter"):
        phantom_from_dict({"name": "spiral", "params": {"colour": 1}})
    with pytest.raises(NirmpiError, match="go under 'params'"):   # not silently the default spiral
        phantom_from_dict({"name": "spiral", "rotation": 1.0})
    with pytest.raises(NirmpiError):
        phantom_from_dict({"params": {}})
    with pytest.raises(NirmpiError):
        Spiral().render(np.zeros((3, 3)))


def test_3d_render_extrudes_over_the_slab():
    p = Spiral()
    g3 = Grid((13, 29, 29), (13e-3, FOV, FOV))
    img = p.render(g3)
    assert img.shape == (13, 29, 29) and img.min() >= 0 and img.max() <= 1
    assert img.sum() * np.prod(g3.voxel_size) == pytest.approx(p.volume(), rel=0.03)
    # the slab is 4 mm thick, centred: the outer slices are empty, the central ones equal the 2D render
    assert img[0].sum() == 0 and img[-1].sum() == 0
    assert np.allclose(img[6], p.render(grid(29)))


def test_bolus_moves_along_the_vessel_with_constant_mass():
    b = Bolus()
    g = grid(58)
    times = np.linspace(0, 1, 6)
    frames = b.render_frames(g, times)
    assert frames.shape == (6, 58, 58) and frames.dtype == np.float32
    va = np.prod(g.voxel_size)
    masses = frames.sum((1, 2)) * va
    assert np.allclose(masses, b.area(), rtol=0.03)
    pts = g.points()
    angles = []
    for f in frames:
        c = (f[..., None] * pts).sum((0, 1)) / f.sum() - np.asarray(b.arc_center)
        angles.append(np.arctan2(c[0], c[1]))
    assert np.all(np.diff(angles) > 0.2)        # centre of mass advances along the arc every frame
    assert b.dynamic and not Spiral().dynamic
    assert Composite.of(Point(), Bolus()).dynamic
