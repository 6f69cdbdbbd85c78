"""Writing reconstructed images: .npy, .tif (mm resolution) or .mdf, never over a file by accident.

* `check_writable(path, force)` runs every check that does not need the image (extension,
  folder, "exists, pass --force") and is called BEFORE a reconstruction is computed, so a
  refused output costs nothing.
* `write_image` writes to a fresh temporary file in the target folder (`tempfile.mkstemp`:
  O_CREAT | O_EXCL, a random name, mode 0600 — a symlink planted at a predictable name such as
  ``OUT.npy.part`` is never followed) and renames it over the target only when it is complete;
  on any error or interrupt the temporary file is removed. Only a `kill -9` can leave one
  behind: it is named ``.OUT.npy.XXXXXXXX.part`` next to the target.
* With `force`, an existing target is replaced by the rename: if the target is a symlink, the
  link is replaced, the file it points to is left alone.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np

from .errors import NirmpiError

IMAGE_EXTENSIONS = (".npy", ".tif", ".tiff", ".mdf", ".h5", ".hdf5")


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def check_writable(path, force: bool = False) -> str:
    """Raise NirmpiError unless `path` can be written (call before computing anything).
    Returns the path as a string."""
    path = os.fspath(path)
    if _ext(path) not in IMAGE_EXTENSIONS:
        raise NirmpiError(f"{path}: output must end in .npy, .tif or .mdf")
    if os.path.isdir(path):
        raise NirmpiError(f"{path} is a folder; give a file name ending in .npy, .tif or .mdf")
    if os.path.lexists(path) and not force:
        raise NirmpiError(f"{path} exists; pass --force to overwrite")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise NirmpiError(f"{path}: folder {d} does not exist")
    if not os.access(d, os.W_OK | os.X_OK):
        raise NirmpiError(f"{path}: folder {d} is not writable")
    return path


def _tiff_resolution(grid) -> tuple[float, float]:
    """Pixels per mm (x, y) for the TIFF header; refuses voxel sizes that have none."""
    vy, vx = (float(v) for v in grid.voxel_size[-2:])
    res = []
    for v in (vx, vy):
        mm = v * 1e3
        r = 1.0 / mm if (math.isfinite(mm) and mm > 0) else math.inf
        if not (math.isfinite(r) and r > 0):
            raise NirmpiError(f"voxel size {v!r} m (field of view {tuple(grid.fov)} m over {tuple(grid.shape)} "
                              "voxels) is not a positive size a TIFF resolution can state; write .npy or .mdf")
        res.append(r)
    return res[0], res[1]


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path, write, force: bool = False) -> str:
    """Call `write(binary file)` on a fresh temporary file next to `path`, then rename it over
    `path`. The temporary file is created with O_EXCL under a random name (never a planted
    symlink), removed again on any error or interrupt, and given the permissions a plain
    `open(path, "w")` would have given (0666 minus the umask)."""
    path = os.fspath(path)
    d, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if not force and os.path.lexists(path):  # appeared while we computed: still never overwrite
            raise NirmpiError(f"{path} exists; pass --force to overwrite")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def save_npy(path, data, force: bool = False) -> str:
    """np.save through `atomic_write` (any dtype; for arrays that are not images on a grid)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise NirmpiError(f"{path} is a folder")
    if os.path.lexists(path) and not force:
        raise NirmpiError(f"{path} exists; pass --force to overwrite")
    return atomic_write(path, lambda f: np.save(f, np.asarray(data)), force=force)


def write_image(path, image, grid, params=None, force: bool = False) -> str:
    """Write an image as .npy (float32), .tif (ImageJ, mm resolution) or .mdf (reconstruction)."""
    path = check_writable(path, force)
    ext = _ext(path)
    image = np.asarray(image, dtype=np.float32)
    if ext in (".mdf", ".h5", ".hdf5"):
        from . import mdf

        mdf.write_reconstruction(path, image, grid, params=params or {}, force=force)
        return path
    if ext in (".tif", ".tiff"):
        resolution = _tiff_resolution(grid)
        spacing = float(grid.voxel_size[0]) * 1e3 if image.ndim == 3 else None
        if spacing is not None and not (math.isfinite(spacing) and spacing > 0):
            raise NirmpiError(f"voxel size {grid.voxel_size[0]!r} m along z cannot be written as a TIFF spacing")

    def write(f):
        if ext == ".npy":
            np.save(f, image)
        else:
            import io

            import tifffile

            # tifffile reopens a file object by its name, which an fd opened by mkstemp lacks;
            # an image fits in memory anyway (it was computed there)
            buf = io.BytesIO()
            tifffile.imwrite(buf, image, imagej=True, resolution=resolution,
                             metadata={"unit": "mm", "axes": "ZYX" if image.ndim == 3 else "YX",
                                       **({"spacing": spacing} if spacing is not None else {})})
            f.write(buf.getbuffer())

    atomic_write(path, write, force=force)
    return path
