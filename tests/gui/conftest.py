"""GUI test fixtures: a shared simulated spiral case and helpers to wait on thread workers.

The spiral simulation is cached once per session in a temporary NIRMPI_CACHE_DIR (or the one
set in the environment), so every test opens the same small MDF files.
"""

from __future__ import annotations

import os

import pytest

@pytest.fixture(scope="session")
def nirmpi_cache(tmp_path_factory):
    old = os.environ.get("NIRMPI_CACHE_DIR")
    path = old or str(tmp_path_factory.mktemp("nirmpi-cache"))
    os.environ["NIRMPI_CACHE_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("NIRMPI_CACHE_DIR", None)


@pytest.fixture(scope="session")
def spiral_files(nirmpi_cache):
    from napari_nirmpi._napari.sample_data import spiral_files as make

    return make()


@pytest.fixture
def notifications(monkeypatch):
    """Messages passed to napari's show_error (our code imports it at call time)."""
    import napari.utils.notifications as nt

    seen: list[str] = []
    monkeypatch.setattr(nt, "show_error", lambda msg, *a, **k: seen.append(str(msg)))
    return seen


@pytest.fixture
def wait_worker(qtbot):
    """wait_worker(worker, timeout=ms): process Qt events until the worker's `finished` has been
    handled in the GUI thread (`worker.done()`, set by `_napari.workers.start_worker`)."""

    def wait(worker, timeout=60_000):
        if worker is None:
            raise AssertionError("no worker was started")
        qtbot.waitUntil(worker.done, timeout=timeout)

    return wait
