"""The beyond-the-paper case suite (benchmarks/suite.py) really holds out what its docstring says."""

import sys
from pathlib import Path

import numpy as np

from napari_nirmpi.grid import Grid
from napari_nirmpi.phantoms import make_phantom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import suite  # noqa: E402


def test_suite_has_24_cases_split_in_halves():
    cs = suite.cases()
    assert len(cs) == 24 and len({c.name for c in cs}) == 24
    assert sum(c.split == "tune" for c in cs) == 12


def test_heldout_phantoms_are_moved():
    # the held-out spiral is rotated and the point sits elsewhere: a spec the parser ignored would
    # render the tuning layout again (it once did)
    g = Grid((104, 104), (0.029, 0.029))
    by_name = {c.name: c for c in suite.cases()}
    for ph in ("spiral", "point"):
        a = make_phantom(by_name[f"{ph}-medium-30nm"].phantom).render(g)
        b = make_phantom(by_name[f"{ph}-medium-20nm-relax"].phantom).render(g)
        assert np.abs(a - b).max() > 0.5, ph
        assert abs(a.sum() - b.sum()) < 0.05 * a.sum(), ph   # same object, other placement


def test_unseen_cases_differ_from_every_suite_case():
    # benchmarks/unseen.py checks that the default carries over; a case equal to a suite case
    # (same grid, FOV, particles, noise and object) would check nothing new
    import unseen

    from napari_nirmpi.simulate import Particles

    default = Particles()
    g = Grid((104, 104), (0.029, 0.029))

    def key(grid, fov, core, tau, noise, phantom):
        img = make_phantom(phantom).render(g)
        return (grid, fov, core, tau, str(noise), img.tobytes())

    suite_keys = {key(29, None, c.core_diameter, c.relaxation_time, c.noise, c.phantom) for c in suite.cases()}
    assert len(unseen.CASES) == 8
    for name, kw in unseen.CASES.items():
        p = kw.get("particles", default)
        k = key(kw.get("grid", 29), kw.get("fov"), p.core_diameter, p.relaxation_time, kw["noise"], kw["phantom"])
        assert k not in suite_keys, name
