"""The core and the CLI run where napari and Qt are absent (a Dask worker on a cluster node).

The check runs the real `nirmpi` in a subprocess whose import system refuses napari, Qt bindings,
magicgui and npe2, as a machine without them would; scripts/check_install.sh does the same with a
wheel in a clean virtual environment.
"""

import subprocess
import sys
import textwrap

import pytest

BLOCKED = ("napari", "qtpy", "magicgui", "npe2", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt",
           "vispy")

_PRELUDE = textwrap.dedent(f"""
    import sys
    class _Absent:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (absent on purpose)")
            return None
    sys.meta_path.insert(0, _Absent())
    from napari_nirmpi.cli import main
    rc = main(sys.argv[1:])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
    assert not leaked, leaked
    raise SystemExit(rc)
""")


def _nirmpi(*args, timeout=600):
    return subprocess.run([sys.executable, "-c", _PRELUDE, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("headless")
    r = _nirmpi("simulate", d, "--phantom", "bolus", "--grid", "11", "--frames", "3", "--seed", "2")
    assert r.returncode == 0, r.stderr
    return d


def test_the_blocker_blocks():
    r = subprocess.run([sys.executable, "-c", _PRELUDE.replace("from napari_nirmpi.cli import main",
                                                                "import napari")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "absent on purpose" in r.stderr


def test_info_without_napari(data):
    r = _nirmpi("info", data / "sm.mdf")
    assert r.returncode == 0, r.stderr
    assert "calibration" in r.stdout.lower()


def test_batch_without_napari(data, tmp_path):
    out = tmp_path / "series.zarr"
    r = _nirmpi("batch", "--sm", data / "sm.mdf", "--meas", data / "meas.mdf", "--method", "kaczmarz",
                "--workers", "1", "--output", out)
    assert r.returncode == 0, r.stderr
    from napari_nirmpi import open_series

    arr, grid, _ = open_series(out)
    assert arr.shape[0] == 3 and arr.shape[-2:] == (11, 11) and grid.shape == (11, 11)
    assert float(abs(arr[:]).max()) > 0
