"""The Baseline dock widget with the classic methods, in a real napari viewer."""

import numpy as np
import pytest

pytestmark = pytest.mark.gui

PLUGIN = "napari-nirmpi"


@pytest.fixture(scope="module")
def problem():
    from napari_nirmpi.simulate import simulate_case

    return simulate_case("point", grid=15, noise="medium", seed=4).problem()


def _wait(qtbot, worker, timeout=60_000):
    assert worker is not None, "no worker was started"
    qtbot.waitUntil(worker.done, timeout=timeout)


def test_baseline_classic_methods_fine_grid_and_message(make_napari_viewer, qtbot, problem, monkeypatch):
    import napari.utils.notifications as nt

    seen = []
    monkeypatch.setattr(nt, "show_error", lambda msg, *a, **k: seen.append(str(msg)))
    viewer = make_napari_viewer()
    _, base = viewer.window.add_plugin_dock_widget(PLUGIN, "2 Baseline (Kaczmarz)")
    base.session.set_problem(problem, {})
    # switching the method offers its priors, iterations and default λ
    base.solver_method.value = "pdhg"
    assert set(base.prior.choices) == {"tv", "tv,l1", "l1", "l2", "tv,l2"} and base.prior.value == "tv"
    assert base.iterations.value == 500 and base.lam.value == "auto" and base.method.value == "solve on grid"
    # a λ far below 0.01 is accepted, and the slider follows on its log scale
    base.lam.value = "1e-5"
    assert base.lam_slider.value == pytest.approx(1e-5, rel=0.05)
    base.lam_slider.value = 3e-3
    assert float(base.lam.value) == pytest.approx(3e-3, rel=0.15)  # the slider moves in steps
    base.lam.value = "auto"
    base.iterations.value = 60
    base.grid.value = "30"
    _wait(qtbot, base.run())
    assert not seen, seen
    native, fine = viewer.layers["PDHG-tv 15x15"], viewer.layers["PDHG-tv 30x30"]
    assert native.data.shape == (15, 15) and fine.data.shape == (30, 30) and fine.data.min() >= 0
    params = fine.metadata["nirmpi"]["parameters"]
    assert params["solved_on"] == [30, 30] and params["lam"] > 0 and "discrepancy" in params["lam_rule"]
    # the completion message stays after the worker's `finished` (it used to be replaced at once)
    qtbot.wait(50)
    assert base.info.value.startswith("done: PDHG-tv 15x15 + PDHG-tv 30x30") and "(auto)" in base.info.value
    # bad λ and a TV prior refused with FISTA: notifications, no worker
    base.lam.value = "-2"
    assert base.run() is None and "lambda" in seen[-1]
    base.solver_method.value = "fista"
    base.prior.value = "l1"
    base.lam.value = "1e-3"
    base.method.value = "bicubic"
    _wait(qtbot, base.run())
    assert viewer.layers["FISTA-l1 bicubic 30x30"].data.shape == (30, 30)
    # Kaczmarz keeps its layer names and up-sampling; a typed λ survives the method change,
    # a method's default λ is replaced by the new method's
    base.solver_method.value = "kaczmarz"
    assert base.lam.value == "1e-3" and base.method.value == "bicubic"
    base.solver_method.value = "cgnr"
    base.lam.value = "auto"
    base.solver_method.value = "kaczmarz"
    assert base.lam.value == "0.5" and base.iterations.value == 150
    base.iterations.value = 5
    _wait(qtbot, base.run())
    assert viewer.layers["Kaczmarz bicubic 30x30"].data.shape == (30, 30)
    assert len(seen) == 1
