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


def _cached(grid: int = 29, seed: int = 0, gt_shape=GT_SHAPE) -> bool:
    folder = cache_dir(f"spiral-{grid}-seed{seed}")
    return all(os.path.isfile(os.path.join(folder, n)) for n in
               ("sm.mdf", "meas.mdf", f"ground_truth_{gt_shape[0]}x{gt_shape[1]}.npy"))


def _spiral_files_with_progress() -> dict:
    """`spiral_files()`; on first use (a simulation of several seconds) it runs in a thread while
    the event loop keeps turning and napari's activity dock shows a progress bar."""
    if _cached():
        return spiral_files()
    try:
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
    except Exception:  # noqa: BLE001 - no Qt: simulate in this thread
        app = None
    if app is None:
        return spiral_files()
    import threading
    import time

    from napari.utils import progress

    out: dict = {}

    def run():
        try:
            out["files"] = spiral_files()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the GUI thread below
            out["error"] = exc

    thread = threading.Thread(target=run, name="nirmpi-sample-data", daemon=True)
    with progress(total=0, desc="Simulating the spiral phantom (first use; cached afterwards)") as pbar:
        thread.start()
        while thread.is_alive():
            app.processEvents()
            time.sleep(0.03)
            pbar.refresh()
    if "error" in out:
        raise out["error"]
    return out["files"]


def spiral_phantom():
    """npe2 sample data: [system matrix, ground truth] LayerData tuples, in mm.

    The measurement is not added as a layer: its spectrum has no axis in mm, and one layer without
    mm units makes napari drop units for all of them. The system-matrix layer names its
    measurement (``metadata["nirmpi"]["measurement"]``), which Preprocess picks up."""
    from .. import mdf
    from .layers import schedule_first_component
    from .reader import layers_from_file

    files = _spiral_files_with_progress()
    sm_data, sm_kw, sm_type = layers_from_file(files["sm"])[0]
    sm_kw = dict(sm_kw)
    sm_kw.setdefault("units", ("pixel", "mm", "mm"))
    sm_kw["metadata"] = {k: (dict(v, measurement=os.path.abspath(files["meas"])) if k == "nirmpi" else v)
                         for k, v in sm_kw["metadata"].items()}
    schedule_first_component(sm_kw["name"])
    gt = np.load(files["gt"])
    native = mdf.open(files["sm"]).grid
    gt_grid = native.with_shape(gt.shape)  # same physical extent as the 29² native grid
    gt_kw = image_layer_kwargs("Ground truth (104x104)", "ground_truth", gt_grid,
                               source=files["gt"],
                               parameters={"phantom": "spiral", "native_grid": list(native.shape),
                                           "seed": 0, "shape": list(gt.shape)})
    gt_kw.update(colormap="inferno", visible=True)
    return [(sm_data, sm_kw, sm_type), (gt, gt_kw, "image")]
