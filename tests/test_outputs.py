"""Image outputs (napari_nirmpi.outputs): exclusive temporary files, no symlink followed, the
overwrite check before any computation, no temporary file left after an error or interrupt."""

import os

import numpy as np
import pytest

from napari_nirmpi.errors import NirmpiError
from napari_nirmpi.grid import Grid
from napari_nirmpi.outputs import atomic_write, check_writable, save_npy, write_image

GRID = Grid((4, 5), (4e-3, 5e-3))
IMG = np.arange(20, dtype=np.float32).reshape(4, 5)


def _leftovers(d):
    return [n for n in os.listdir(d) if n.endswith(".part")]


@pytest.mark.parametrize("ext", [".npy", ".tif"])
def test_planted_part_symlink_victim_untouched(tmp_path, ext):
    """The old writer opened OUT.part with open(..., "wb"): a symlink planted there overwrote its
    target. Now the temporary name is random and created with O_EXCL."""
    from napari_nirmpi.cli import write_image as cli_write_image  # the old name keeps working

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / f"out{ext}"
    os.symlink(victim, str(out) + ".part")
    cli_write_image(out, IMG, GRID)
    assert victim.read_text() == "precious"
    assert os.path.islink(str(out) + ".part")          # the planted link is not ours to remove
    if ext == ".npy":
        np.testing.assert_array_equal(np.load(out), IMG)
    else:
        import tifffile

        with tifffile.TiffFile(out) as t:
            np.testing.assert_array_equal(t.asarray(), IMG)
            assert t.imagej_metadata["unit"] == "mm"
    assert _leftovers(tmp_path) == [os.path.basename(str(out) + ".part")]


def test_existing_output_needs_force_and_a_symlinked_target_is_replaced_not_followed(tmp_path):
    out = tmp_path / "a.npy"
    out.write_bytes(b"old")
    with pytest.raises(NirmpiError, match="exists; pass --force"):
        write_image(out, IMG, GRID)
    assert out.read_bytes() == b"old"
    write_image(out, IMG, GRID, force=True)
    np.testing.assert_array_equal(np.load(out), IMG)
    # with --force a symlink at the output name is replaced by the file; its target is left alone
    victim = tmp_path / "victim.npy"
    victim.write_bytes(b"keep")
    link = tmp_path / "link.npy"
    os.symlink(victim, link)
    with pytest.raises(NirmpiError, match="exists"):
        write_image(link, IMG, GRID)                     # a dangling or live link counts as existing
    write_image(link, IMG, GRID, force=True)
    assert victim.read_bytes() == b"keep" and not os.path.islink(link)
    np.testing.assert_array_equal(np.load(link), IMG)


def test_new_file_gets_ordinary_permissions(tmp_path):
    out = tmp_path / "p.npy"
    write_image(out, IMG, GRID)
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~mask   # not mkstemp's 0600


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_temporary_file_removed_on_error_or_interrupt(tmp_path, exc):
    out = tmp_path / "x.npy"

    def write(f):
        f.write(b"half")
        raise exc("stopped mid-write")

    with pytest.raises(exc):
        atomic_write(out, write)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_tiny_field_of_view_is_a_clear_error_not_zero_division(tmp_path):
    """A field of view of 5e-324 m gives voxel size 0.0: a TIFF resolution of 1/0 raised
    ZeroDivisionError before."""
    tiny = Grid((29, 29), (5e-324, 5e-324))
    with pytest.raises(NirmpiError, match="voxel size"):
        write_image(tmp_path / "x.tif", np.zeros((29, 29)), tiny)
    assert os.listdir(tmp_path) == []
    write_image(tmp_path / "x.npy", np.zeros((29, 29)), tiny)   # .npy has no resolution to state
    assert np.load(tmp_path / "x.npy").shape == (29, 29)


def test_check_writable_refuses_before_anything_is_computed(tmp_path):
    (tmp_path / "e.tif").write_bytes(b"x")
    for path, msg in ((tmp_path / "e.tif", "exists; pass --force"), (tmp_path / "x.png", "must end in"),
                      (tmp_path / "no" / "x.npy", "does not exist"), (tmp_path, "must end in")):
        with pytest.raises(NirmpiError, match=msg):
            check_writable(path, force=False)
    d = tmp_path / "d.npy"
    d.mkdir()
    with pytest.raises(NirmpiError, match="is a folder"):
        check_writable(d, force=True)
    assert check_writable(tmp_path / "e.tif", force=True) == str(tmp_path / "e.tif")


def test_save_npy_any_array(tmp_path):
    out = tmp_path / "raw.npy"
    data = np.arange(6, dtype=np.complex64)
    save_npy(out, data)
    np.testing.assert_array_equal(np.load(out), data)
    with pytest.raises(NirmpiError, match="exists"):
        save_npy(out, data)


def test_batch_refuses_a_foreign_output_before_computing(tmp_path, monkeypatch):
    """`nirmpi batch` checks its output store before a cluster starts or a frame is read."""
    from napari_nirmpi.cli import main
    from napari_nirmpi.series import run
    from napari_nirmpi.simulate import simulate

    paths = simulate(tmp_path / "d", phantom="bolus", grid=9, frames=2, seed=0)

    def no_cluster(*a, **k):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(run, "make_client", no_cluster)
    plain = tmp_path / "file.zarr"
    plain.write_text("keep me")
    foreign = tmp_path / "dir.zarr"
    foreign.mkdir()
    (foreign / "data.txt").write_text("keep me")
    for out in (plain, foreign):
        assert main(["batch", "--sm", str(paths["sm"]), "--meas", str(paths["meas"]), "--output", str(out)]) == 2
    assert plain.read_text() == "keep me" and (foreign / "data.txt").read_text() == "keep me"
    assert sorted(os.listdir(foreign)) == ["data.txt"]   # zarr would have added its zarr.json


@pytest.mark.parametrize("cmd", ["reconstruct", "sample"])
def test_existing_output_refused_before_computing(tmp_path, monkeypatch, capsys, cmd):
    from napari_nirmpi import preprocess, sample
    from napari_nirmpi.cli import main

    def computed(*a, **k):
        raise AssertionError("computed before the output was checked")

    monkeypatch.setattr(preprocess, "build_problem", computed)
    monkeypatch.setattr(sample, "sample", computed)
    out = tmp_path / "done.npy"
    out.write_bytes(b"old")
    args = (["reconstruct", "--sm", "sm.mdf", "--meas", "meas.mdf"] if cmd == "reconstruct"
            else ["sample", str(tmp_path / "field.pt"), "--grid", "8x8"])
    assert main(args + ["--output", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"old"
