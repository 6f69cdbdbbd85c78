"""Sample data: the simulated 2D spiral phantom (system matrix, measurement, ground truth).

The simulation runs once and is cached as MDF files in ``$NIRMPI_CACHE_DIR`` (default
``~/.cache/napari-nirmpi/spiral-29-seed0``); the layers are then made by the plugin's own MDF
reader, so File > Open Sample exercises the same path as opening real files.
"""

from __future__ import annotations

import os

import numpy as np

from .layers import image_layer_kwargs

GT_SHAPE = (104, 104)


def cache_dir(name: str) -> str:
    root = os.environ.get("NIRMPI_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "napari-nirmpi")
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    return path


def _find(folder: str, *names: str) -> str | None:
    for n in names:
        p = os.path.join(folder, n)
        if os.path.isfile(p):
            return p
    return None


def spiral_files(grid: int = 29, seed: int = 0, gt_shape=GT_SHAPE) -> dict:
    """Paths of the cached spiral case: {"sm", "meas", "gt"} (simulated on first use)."""
    folder = cache_dir(f"spiral-{grid}-seed{seed}")
    gt_path = os.path.join(folder, f"ground_truth_{gt_shape[0]}x{gt_shape[1]}.npy")
    sm = _find(folder, "sm.mdf")
    meas = _find(folder, "meas.mdf")
    if sm is None or meas is None or not os.path.isfile(gt_path):
        from ..simulate import simulate_case

        case = simulate_case("spiral", grid=grid, seed=seed)
        case.write(folder, force=True)
        gt = np.asarray(case.ground_truth(tuple(gt_shape)), np.float32)
        tmp = gt_path + ".tmp.npy"
        np.save(tmp, gt)
        os.replace(tmp, gt_path)  # atomic: a half-written cache is never read
        sm, meas = _find(folder, "sm.mdf"), _find(folder, "meas.mdf")
        if sm is None or meas is None:
            raise FileNotFoundError(f"simulation did not write sm.mdf / meas.mdf into {folder}")
    return {"sm": sm, "meas": meas, "gt": gt_path, "folder": folder}


def spiral_phantom():
    """npe2 sample data: [system matrix, measurement, ground truth] LayerData tuples."""
    from .. import mdf
    from .reader import layers_from_file

    files = spiral_files()
    sm_layer = layers_from_file(files["sm"])[0]
    meas_data, meas_kw, meas_type = layers_from_file(files["meas"])[0]
    meas_kw = dict(meas_kw, visible=False)  # spectrum axes are kHz, not mm: hide by default
    gt = np.load(files["gt"])
    native = mdf.open(files["sm"]).grid
    gt_grid = native.with_shape(gt.shape)  # same physical extent as the 29² native grid
    gt_kw = image_layer_kwargs("Ground truth (104x104)", "ground_truth", gt_grid,
                               source=files["gt"],
                               parameters={"phantom": "spiral", "native_grid": list(native.shape),
                                           "seed": 0, "shape": list(gt.shape)})
    gt_kw.update(colormap="inferno", visible=True)
    return [(meas_data, meas_kw, meas_type), sm_layer, (gt, gt_kw, "image")]
