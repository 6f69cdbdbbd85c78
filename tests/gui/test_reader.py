"""The MDF reader (and writer) on good, foreign and broken files."""

import os

import h5py
import numpy as np
import pytest

from napari_nirmpi._napari.reader import get_reader, read_mdf

pytestmark = pytest.mark.gui


def test_get_reader_declines_foreign_files(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["images/raw"] = np.zeros((4, 4))
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5 at all")
    assert get_reader(str(other)) is None
    assert get_reader(str(text)) is None
    assert get_reader(str(tmp_path / "missing.h5")) is None
    assert get_reader(str(tmp_path / "image.tif")) is None
    assert get_reader(str(tmp_path)) is None
    assert get_reader([]) is None


def test_system_matrix_is_lazy_sorted_and_in_mm(spiral_files):
    from napari_nirmpi import mdf

    reader = get_reader(spiral_files["sm"])
    assert reader is not None
    [(data, kw, kind)] = reader(spiral_files["sm"])
    f = mdf.open(spiral_files["sm"])
    assert kind == "image"
    assert type(data).__module__.startswith("dask")  # nothing read yet
    assert data.shape[1:] == f.grid.shape and data.ndim == 3
    meta = kw["metadata"]["nirmpi"]
    assert meta["kind"] == "system_matrix" and meta["source"] == os.path.abspath(spiral_files["sm"])
    assert meta["header"]["grid"]["shape"] == list(f.grid.shape)
    snr = np.array([s if s is not None else -np.inf for s in meta["rows"]["snr"]])
    assert np.all(np.diff(snr) <= 0), "components must be sorted by SNR, highest first"
    assert kw["scale"] == (1.0, *f.grid.scale_mm)
    assert np.allclose(kw["translate"][1:], f.grid.translate_mm)
    # plane 0 = the best row, as |s|/max|s|
    ch, k = meta["rows"]["channel"][0], meta["rows"]["freq_index"][0]
    row = np.abs(f.read_system_matrix(channels=[ch], freq_index=[k])[0])
    np.testing.assert_allclose(np.asarray(data[0]).ravel(), row / row.max(), rtol=1e-5)


def test_measurement_and_reconstruction_layers(spiral_files, tmp_path):
    from napari_nirmpi import Grid, mdf

    [(spec, kw, _)] = read_mdf(spiral_files["meas"])
    f = mdf.open(spiral_files["meas"])
    assert spec.shape == (f.acquisition.num_rx_channels, len(f.frequencies))
    assert kw["metadata"]["nirmpi"]["kind"] == "measurement"
    assert np.isfinite(spec).all()

    g = Grid((6, 8), (0.012, 0.016), (0.001, 0.0))
    img = np.arange(48, dtype=np.float32).reshape(6, 8)
    path = tmp_path / "recon.mdf"
    mdf.write_reconstruction(str(path), img, g)
    assert get_reader(str(path)) is not None
    [(data, kw, _)] = read_mdf(str(path))
    np.testing.assert_allclose(data, img)
    assert np.allclose(kw["scale"], g.scale_mm) and np.allclose(kw["translate"], g.translate_mm)
    assert kw["metadata"]["nirmpi"]["kind"] == "reconstruction"


def test_broken_file_gives_notification_not_exception(tmp_path, notifications):
    bad = tmp_path / "broken.mdf"
    bad.write_bytes(b"\x89HDF\r\n garbage")
    reader = get_reader(str(bad))
    assert reader is not None  # *.mdf is claimed, so the user learns why it failed
    assert reader(str(bad)) == [(None,)]
    assert len(notifications) == 1 and "broken.mdf" in notifications[0]
    # an HDF5 file with MDF groups but broken content
    half = tmp_path / "half.h5"
    with h5py.File(half, "w") as f:
        f["version"] = "2.1.0"
        f.create_group("measurement")
        f.create_group("acquisition")
    reader = get_reader(str(half))
    assert reader is not None
    assert reader(str(half)) == [(None,)]
    assert len(notifications) == 2 and "half.h5" in notifications[1]


def test_writer_roundtrip(tmp_path):
    from napari_nirmpi import Grid
    from napari_nirmpi._napari.layers import image_layer_kwargs
    from napari_nirmpi._napari.writer import write_mdf, write_npy

    g = Grid((10, 12), (0.02, 0.024))
    img = np.random.default_rng(0).random((10, 12)).astype(np.float32)
    meta = image_layer_kwargs("NIR sample", "reconstruction", g, parameters={"width": 32})
    [out] = write_mdf(str(tmp_path / "x.mdf"), img, meta)
    [(data, kw, _)] = read_mdf(out)
    np.testing.assert_allclose(data, img, rtol=1e-6)
    assert np.allclose(kw["scale"], g.scale_mm)
    [npy] = write_npy(str(tmp_path / "x"), img, meta)
    np.testing.assert_array_equal(np.load(npy), img)


def test_open_through_napari(make_napari_viewer, spiral_files):
    viewer = make_napari_viewer()
    layers = viewer.open(spiral_files["sm"], plugin="napari-nirmpi")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.metadata["nirmpi"]["kind"] == "system_matrix"
    assert type(layer.data).__module__.startswith("dask")
    assert tuple(layer.contrast_limits) == (0.0, 1.0)


@pytest.fixture
def napari_warnings(monkeypatch):
    """Messages passed to napari's show_warning (the reader imports it at call time)."""
    import napari.utils.notifications as nt

    seen: list[str] = []
    monkeypatch.setattr(nt, "show_warning", lambda msg, *a, **k: seen.append(str(msg)))
    return seen


def test_foreign_h5_refusal_says_why(tmp_path, napari_warnings):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["images/raw"] = np.zeros((4, 4))
    assert get_reader(str(other)) is None
    assert len(napari_warnings) == 1 and "other.h5" in napari_warnings[0]
    assert "without MDF content" in napari_warnings[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_named_mdf_is_refused_without_blocking(tmp_path, notifications):
    fifo = tmp_path / "pipe.mdf"
    os.mkfifo(fifo)
    reader = get_reader(str(fifo))
    assert reader is not None and reader(str(fifo)) == [(None,)]
    assert "is a FIFO (named pipe)" in notifications[0]
    fifo_h5 = tmp_path / "pipe.h5"
    os.mkfifo(fifo_h5)
    assert get_reader(str(fifo_h5)) is None  # checked with os.stat, never opened


def _copy(src, dst):
    import shutil

    shutil.copyfile(src, dst)
    return dst


def test_overflowed_size_is_refused(spiral_files, tmp_path, notifications):
    p = _copy(spiral_files["sm"], tmp_path / "sm.mdf")
    with h5py.File(p, "a") as h:
        h["/calibration/size"][...] = [7, 7905747460161236527, 1]
    assert read_mdf(str(p)) == [(None,)]
    assert "/calibration/size" in notifications[0] and "sm.mdf" in notifications[0]


def test_corrupt_system_matrix_chunks_notify_at_open(spiral_files, tmp_path, notifications):
    p = _copy(spiral_files["sm"], tmp_path / "sm.mdf")
    with h5py.File(p, "a") as h:  # store the data gzip-chunked, then zero two chunks' bytes
        data = h["/measurement/data"][()]
        del h["/measurement/data"]
        d = h.create_dataset("/measurement/data", data=data, chunks=(1, 1, 64, data.shape[3]),
                             compression="gzip")
        spans = [(d.id.get_chunk_info(i).byte_offset, d.id.get_chunk_info(i).size) for i in (3, 17)]
    b = bytearray(p.read_bytes())
    for off, size in spans:
        b[off:off + size] = bytes(size)
    p.write_bytes(bytes(b))
    assert read_mdf(str(p)) == [(None,)]  # no layer that fails later
    assert len(notifications) == 1 and "sm.mdf" in notifications[0]


def test_file_warnings_reach_layer_metadata(spiral_files, tmp_path, napari_warnings):
    p = _copy(spiral_files["meas"], tmp_path / "meas.mdf")
    with h5py.File(p, "a") as h:
        del h["/measurement/isBackgroundFrame"]
    [(data, kw, kind)] = read_mdf(str(p))
    w = kw["metadata"]["nirmpi"]["header"]["warnings"]
    assert len(w) == 1 and "isBackgroundFrame is missing" in w[0]
    assert any("isBackgroundFrame is missing" in m for m in napari_warnings)
