"""The npe2 manifest: valid, importable, and contributing what the plugin promises."""

import pytest

pytestmark = pytest.mark.gui

NAME = "napari-nirmpi"


@pytest.fixture(scope="module")
def manifest():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    return pm.get_manifest(NAME)


def test_manifest_validates_and_imports(manifest):
    assert manifest.name == NAME
    assert manifest.display_name == "MPI NIR reconstruction"
    manifest.validate_imports()  # every python_name resolves to a module-level callable


def test_command_ids_and_contributions(manifest):
    c = manifest.contributions
    ids = [cmd.id for cmd in c.commands]
    assert ids and all(i.startswith(NAME + ".") for i in ids)
    reader = c.readers[0]
    assert {"*.mdf", "*.h5", "*.hdf5", "*.zarr"} <= set(reader.filename_patterns)
    assert reader.accepts_directories  # frame-series Zarr stores are directories
    assert [s.display_name for s in c.sample_data] == ["Spiral phantom (simulated 2D MPI)"]
    widgets = [w.display_name for w in c.widgets]
    assert widgets[0] == "MPI reconstruction (all steps)"  # the main entry, first in the menu
    for step in ("Preprocess", "Baseline", "Train", "Sample", "Compare"):
        assert any(step in w for w in widgets), (step, widgets)
    assert {tuple(w.filename_extensions)[0] for w in c.writers} == {".mdf", ".npy"}


def test_npe2_cli_validate():
    import subprocess
    import sys
    from pathlib import Path

    npe2 = Path(sys.executable).with_name("npe2")
    res = subprocess.run([str(npe2), "validate", NAME], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in (res.stdout + res.stderr).lower()
