"""The distributions napari's plugin manager installs: wheel (built from the sdist, as pip does)
and sdist carry the manifest, the entry point and the metadata a plugin page shows."""

import email
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("build", reason="needs the `build` package (in the `testing` extra) to build the wheel")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    # default `python -m build`: sdist first, then the wheel from the unpacked sdist (the path
    # that breaks when a file the wheel needs is missing from the sdist)
    r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wheel = next(out.glob("napari_nirmpi-*.whl"))
    sdist = next(out.glob("napari_nirmpi-*.tar.gz"))
    return wheel, sdist


def _metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name))


def test_wheel_carries_the_real_manifest_and_all_modules(dists):
    wheel, _ = dists
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        manifest = z.read("napari_nirmpi/napari.yaml").decode()
    assert manifest == (ROOT / "src/napari_nirmpi/napari.yaml").read_text()
    src = ROOT / "src"
    expected = {p.relative_to(src).as_posix() for p in (src / "napari_nirmpi").rglob("*.py")
                if "__pycache__" not in p.parts}
    assert expected <= names, sorted(expected - names)
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) for n in names)


def test_manifest_is_a_real_file_in_the_package():
    # a symlink inside the package breaks on Windows and in tools that do not follow links
    assert not (ROOT / "src/napari_nirmpi/napari.yaml").is_symlink()


def test_manifest_parses_and_names_this_package(dists, tmp_path):
    npe2 = pytest.importorskip("npe2")
    wheel, _ = dists
    with zipfile.ZipFile(wheel) as z:
        (tmp_path / "napari.yaml").write_bytes(z.read("napari_nirmpi/napari.yaml"))
    mf = npe2.PluginManifest.from_file(tmp_path / "napari.yaml")
    assert mf.name == "napari-nirmpi"
    c = mf.contributions
    assert [s.key for s in c.sample_data] == ["spiral"]
    assert len(c.widgets) >= 5 and len(c.readers) == 1
    assert all(cmd.python_name.startswith("napari_nirmpi.") for cmd in c.commands)


def test_entry_points(dists):
    wheel, _ = dists
    with zipfile.ZipFile(wheel) as z:
        ep = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert re.search(r"\[napari\.manifest\]\s*\nnapari-nirmpi = napari_nirmpi:napari\.yaml", ep), ep
    assert re.search(r"\[console_scripts\]\s*\nnirmpi = napari_nirmpi\.cli:main", ep), ep


def test_metadata_for_the_plugin_page(dists):
    wheel, _ = dists
    md = _metadata(wheel)
    assert md["Name"] == "napari-nirmpi"
    assert "magnetic particle imaging" in md["Summary"].lower()
    assert "Framework :: napari" in md.get_all("Classifier")
    assert md["License-Expression"] == "BSD-3-Clause"
    urls = dict(u.split(", ", 1) for u in md.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Bug Tracker", "Source Code"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())
    assert md["Description-Content-Type"] == "text/markdown"
    body = md.get_payload()
    assert body.strip().startswith("# napari-nirmpi")
    # images on PyPI / the napari hub only render from absolute URLs
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", body)
    assert images and all(i.startswith("https://") for i in images), images
    with zipfile.ZipFile(wheel) as z:
        lic = [n for n in z.namelist() if n.endswith("dist-info/licenses/LICENSE")]
        assert lic and "BSD 3-Clause" in z.read(lic[0]).decode()


def test_sdist_contents(dists):
    _, sdist = dists
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml",
            "src/napari_nirmpi/napari.yaml", "src/napari_nirmpi/__init__.py"} <= names
