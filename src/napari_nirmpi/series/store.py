"""The series store: an OME-Zarr image (NGFF 0.5, zarr v3) with resume state and checksums.

Layout of ``OUT.zarr``:

    zarr.json        group attrs: "ome" (NGFF 0.5 multiscales: axes t, [z,] y, x with units
                     second / millimeter, scale and translation transforms) and "nirmpi" (kind,
                     store format). Any NGFF viewer (napari-ome-zarr, ome-zarr-py ≥ 0.12, …)
                     shows the series in mm and s without this plugin.
    reconstruction   float32 (frames, y, x) | (frames, z, y, x), dimension names t/z/y/x; one zarr
                     chunk per task; NaN where not (yet) written or failed; attrs: grid, voxel
                     size / FOV / centre in m and mm, frame indices and times, method, every
                     parameter, sources, runs, failed_frames.
    checksums        uint8 (num_chunks, 32): SHA-256 of each chunk's float32 values as written.
    done             int32 (num_chunks,): 0 = to do, r = written by run r.

A chunk is stored as data, then its checksum, then its done marker (zarr's local store writes
each chunk file atomically), so an interrupted run never marks a half-written chunk done. A
resume re-reads every chunk marked done and recomputes those whose values no longer match their
checksum (flipped bytes, a chunk file replaced by another, a deleted chunk); `verify_series`
runs the same check without computing anything (`nirmpi batch --verify`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from ..errors import NirmpiError, ProblemMismatch
from ..grid import Grid
from .identity import same_source

SERIES_ARRAY = "reconstruction"
DONE_ARRAY = "done"
CHECKSUM_ARRAY = "checksums"
SERIES_KIND = "reconstruction_series"
STORE_FORMAT = 2          # 1: 2026-11 stores without checksums or NGFF metadata
NGFF_VERSION = "0.5"
# parameters that must match an existing store for it to be resumed
FINGERPRINT_KEYS = ("format", "method", "method_kwargs", "preprocess", "frame_blocks", "average", "warm_start",
                    "chunk_frames", "grid", "sources")

log = logging.getLogger("napari_nirmpi.series")


# ---------------------------------------------------------------------------------------------
# attributes
# ---------------------------------------------------------------------------------------------
def jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, Grid)):
        return o.to_dict() if isinstance(o, Grid) else str(o)
    if isinstance(o, (slice, range)):
        return str(o)
    return repr(o)


def grid_attrs(grid: Grid) -> dict:
    ax = ["z", "y", "x"][-grid.ndim:]
    return {
        "grid": grid.to_dict(),
        "axes": ["t", *ax],
        "voxel_size_m": list(grid.voxel_size), "voxel_size_mm": list(grid.scale_mm),
        "fov_m": list(grid.fov), "fov_mm": [f * 1e3 for f in grid.fov],
        "fov_center_m": list(grid.center), "fov_center_mm": [c * 1e3 for c in grid.center],
        "translate_mm": list(grid.translate_mm), "scale_mm": list(grid.scale_mm),
    }


def time_axis(frame_times, n: int) -> tuple[float, float, np.ndarray | None]:
    """(scale, translate, times) of the frame axis: the median frame interval (s) and the first
    frame time when every frame time is known and they increase, else (1, 0, None) (index)."""
    raw = frame_times or []
    times = np.array([np.nan if t is None else float(t) for t in raw], float)
    if times.size != n or n == 0 or not np.isfinite(times).all():
        return 1.0, 0.0, None
    if n == 1:
        return 1.0, float(times[0]), times
    dt = float(np.median(np.diff(times)))
    if not dt > 0:
        return 1.0, 0.0, None
    return dt, float(times[0]), times


def ngff_attrs(grid: Grid, frame_times, n: int, name: str) -> dict:
    """The NGFF 0.5 "ome" group attribute: one single-scale image, axes t, [z,] y, x in s and mm.

    Frame times that are not evenly spaced are given by their median interval here (NGFF has
    one scale per axis); the exact times are in the array's attrs "frame_times"."""
    dt, t0, times = time_axis(frame_times, n)
    t_axis = {"name": "t", "type": "time"}
    if times is not None:
        t_axis["unit"] = "second"
    spatial = ["z", "y", "x"][-grid.ndim:]
    axes = [t_axis, *({"name": a, "type": "space", "unit": "millimeter"} for a in spatial)]
    transforms = [{"type": "scale", "scale": [dt, *map(float, grid.scale_mm)]},
                  {"type": "translation", "translation": [t0, *map(float, grid.translate_mm)]}]
    return {"version": NGFF_VERSION,
            "multiscales": [{"name": name, "axes": axes,
                             "datasets": [{"path": SERIES_ARRAY, "coordinateTransformations": transforms}]}]}


def _equal_param(key, a, b) -> bool:
    if key == "sources":
        if not isinstance(a, dict) or not isinstance(b, dict) or set(a) != set(b):
            return False
        return all(same_source(a[k], b[k]) for k in a)
    return jsonable(a) == jsonable(b)


# ---------------------------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------------------------
def chunk_digest(images) -> np.ndarray:
    """SHA-256 (32 uint8) of a chunk's values as float32 little endian, C order."""
    a = np.ascontiguousarray(np.asarray(images, dtype="<f4"))
    return np.frombuffer(hashlib.sha256(a.tobytes()).digest(), np.uint8)


def _read_vector(arr, n: int, fill) -> tuple[np.ndarray, set]:
    """arr[:] (first axis n), element by element where a chunk is unreadable; returns (values,
    indices that could not be read, set to `fill`)."""
    try:
        return np.asarray(arr[:]), set()
    except Exception:  # a damaged chunk file: find which
        out = np.empty(arr.shape, arr.dtype)
        bad = set()
        for i in range(n):
            try:
                out[i] = arr[i]
            except Exception:
                out[i] = fill
                bad.add(i)
        return out, bad


class SeriesStore:
    """An open store: the image array, the done markers and the checksums."""

    def __init__(self, path: Path, group, arr, done, sums):
        self.path, self.group, self.array, self.done, self.sums = path, group, arr, done, sums
        self.chunk_frames = int(arr.chunks[0])
        self.num_chunks = int(done.shape[0])

    def chunk_slice(self, c: int) -> slice:
        return slice(c * self.chunk_frames, min((c + 1) * self.chunk_frames, self.array.shape[0]))

    def write_chunk(self, c: int, images, run_no: int) -> None:
        images = np.asarray(images, np.float32)
        self.array[self.chunk_slice(c)] = images          # data first …
        self.sums[c] = chunk_digest(images)                # … then what it must read back as …
        self.done[c] = run_no                              # … then the marker

    def markers(self) -> np.ndarray:
        done, bad = _read_vector(self.done, self.num_chunks, 0)
        done = np.asarray(done, np.int64)
        for c in bad:  # an unreadable marker: the chunk is to do
            done[c] = 0
        return done

    def check(self, chunks=None) -> dict[int, str]:
        """{chunk: reason} for chunks marked done whose values do not match their checksum."""
        done = self.markers()
        want = np.flatnonzero(done > 0) if chunks is None else [c for c in chunks if done[c] > 0]
        sums, bad_sums = _read_vector(self.sums, self.num_chunks, 0)
        damaged = {}
        for c in want:
            c = int(c)
            if c in bad_sums or not np.any(sums[c]):
                damaged[c] = "checksum missing or unreadable"
                continue
            try:
                values = self.array[self.chunk_slice(c)]
            except Exception as e:  # undecodable chunk file
                damaged[c] = f"unreadable ({type(e).__name__})"
                continue
            if not np.array_equal(chunk_digest(values), sums[c]):
                damaged[c] = "values differ from their checksum"
        return damaged

    def frames_of(self, chunks) -> int:
        return sum(self.chunk_slice(int(c)).stop - self.chunk_slice(int(c)).start for c in chunks)


def open_store(path, attrs: dict, num_frames: int, out_shape: tuple, chunk_frames: int, num_chunks: int,
               overwrite: bool) -> SeriesStore:
    """Create the store, or open an existing one written with the same parameters."""
    import zarr

    path = Path(path)
    if overwrite and (path.exists() or path.is_symlink()):
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise NirmpiError(f"{path}: exists and is not a Zarr store (a directory); choose another output "
                          "or overwrite=True (CLI: --force)")
    if path.is_dir() and any(path.iterdir()) and not (path / "zarr.json").is_file():
        # zarr would add its metadata to any folder: never write into one we did not make
        raise NirmpiError(f"{path}: exists and is not a Zarr store; choose another output")
    g = zarr.open_group(str(path), mode="a")
    if SERIES_ARRAY in g:
        arr = g[SERIES_ARRAY]
        old = dict(arr.attrs)
        if old.get("format") != attrs.get("format"):
            raise ProblemMismatch(f"{path}: written in store format {old.get('format')} (this version writes "
                                  f"{attrs.get('format')}, with checksums); use another output or overwrite=True "
                                  "(CLI: --force) to recompute it")
        diff = [k for k in FINGERPRINT_KEYS if not _equal_param(k, old.get(k), attrs.get(k))]
        if arr.shape != (num_frames, *out_shape):
            diff.append(f"shape {arr.shape} != {(num_frames, *out_shape)}")
        if diff:
            raise ProblemMismatch(
                f"{path}: existing store was written with other parameters ({', '.join(diff)}); "
                "use another output or overwrite=True (CLI: --force) to start afresh")
        missing = [a for a in (DONE_ARRAY, CHECKSUM_ARRAY) if a not in g]
        if missing:
            raise NirmpiError(f"{path}: array(s) {missing} missing; not a complete nirmpi series store? "
                              "(overwrite=True / --force starts afresh)")
        return SeriesStore(path, g, arr, g[DONE_ARRAY], g[CHECKSUM_ARRAY])
    if len(list(g.keys())):
        raise NirmpiError(f"{path}: exists and holds {sorted(g.keys())} but no '{SERIES_ARRAY}'; "
                          "choose another output or overwrite=True (CLI: --force)")
    spatial = ("z", "y", "x")[-len(out_shape):]
    arr = g.create_array(SERIES_ARRAY, shape=(num_frames, *out_shape), chunks=(chunk_frames, *out_shape),
                         dtype="float32", fill_value=float("nan"), dimension_names=("t", *spatial))
    arr.attrs.update(attrs)
    sums = g.create_array(CHECKSUM_ARRAY, shape=(num_chunks, 32), chunks=(1, 32), dtype="uint8", fill_value=0)
    done = g.create_array(DONE_ARRAY, shape=(num_chunks,), chunks=(1,), dtype="int32", fill_value=0)
    grid = Grid.from_dict(attrs["grid"])
    # the group attrs last: a store is recognised (reader, resume) only once it is whole
    g.attrs.update({"ome": ngff_attrs(grid, attrs.get("frame_times"), num_frames, path.stem),
                    "nirmpi": {"kind": SERIES_KIND, "format": STORE_FORMAT, "array": SERIES_ARRAY}})
    return SeriesStore(path, g, arr, done, sums)


# ---------------------------------------------------------------------------------------------
# reading a store (for the napari reader, the CLI and other tools)
# ---------------------------------------------------------------------------------------------
def _open_group(path, mode="r"):
    import zarr

    try:
        g = zarr.open_group(str(path), mode=mode)
        arr = g[SERIES_ARRAY]
    except (FileNotFoundError, KeyError) as e:
        raise NirmpiError(f"{path}: not a nirmpi series store (no '{SERIES_ARRAY}' array): {e}") from None
    return g, arr


def open_series(path):
    """(zarr array (frames, *shape) float32, Grid, attrs dict) of a series store, read-only."""
    _g, arr = _open_group(path)
    attrs = dict(arr.attrs)
    if "grid" not in attrs:
        raise NirmpiError(f"{path}/{SERIES_ARRAY}: attrs lack 'grid'")
    return arr, Grid.from_dict(attrs["grid"]), attrs


def _existing_store(path, mode="r") -> SeriesStore:
    g, arr = _open_group(path, mode)
    missing = [a for a in (DONE_ARRAY, CHECKSUM_ARRAY) if a not in g]
    if missing:
        raise NirmpiError(f"{path}: array(s) {missing} missing (a store from before checksums, or not a "
                          "nirmpi series store)")
    return SeriesStore(Path(path), g, arr, g[DONE_ARRAY], g[CHECKSUM_ARRAY])


def series_status(path, verify: bool = False) -> dict:
    """How far a store is: chunks done / total, frames done, failed frames. `verify=True` also
    re-reads every chunk marked done and counts those that fail their checksum as not done
    ("damaged": {chunk: reason})."""
    import zarr

    arr, _grid, attrs = open_series(path)
    g = zarr.open_group(str(path), mode="r")
    if CHECKSUM_ARRAY in g:
        st = SeriesStore(Path(path), g, arr, g[DONE_ARRAY], g[CHECKSUM_ARRAY])
        done = st.markers()
    else:
        st = None
        done = np.asarray(g[DONE_ARRAY][:])
    damaged = st.check() if (verify and st is not None) else {}
    good = (done > 0)
    for c in damaged:
        good[c] = False
    cf = attrs["chunk_frames"]
    frames_done = sum(min(cf, arr.shape[0] - c * cf) for c in np.flatnonzero(good))
    out = {"chunks_done": int(good.sum()), "chunks_total": int(done.size),
           "frames_done": int(frames_done), "frames_total": int(arr.shape[0]),
           "failed_frames": attrs.get("failed_frames", []), "complete": bool(good.all())}
    if verify:
        out["damaged"] = damaged
    return out


def verify_series(path) -> dict:
    """Check a store without computing: every chunk marked done is re-read and compared with its
    checksum. Returns {"ok": no damaged chunk and every chunk done, "damaged": {chunk: reason},
    "damaged_frames": [frames], "todo": [chunks not done], "chunks_total", "frames_total"}."""
    st = _existing_store(path)
    damaged = st.check()
    done = st.markers()
    todo = [int(c) for c in np.flatnonzero(done == 0)]
    frames = [f for c in sorted(damaged) for f in range(st.chunk_slice(c).start, st.chunk_slice(c).stop)]
    return {"ok": not damaged and not todo, "damaged": damaged, "damaged_frames": frames, "todo": todo,
            "chunks_total": st.num_chunks, "frames_total": int(st.array.shape[0])}
