"""napari-nirmpi: MPI reconstruction with Kaczmarz and grid-agnostic neural implicit representations.

The public Python API. Heavy modules (torch, dask) load on first use, so importing the package
(as napari does when it discovers the plugin) stays cheap.
"""

__version__ = "0.1.0"

from .errors import CheckpointError, MDFError, MDFWarning, NirmpiError, ProblemMismatch, TrainingError  # noqa: E402
from .grid import Grid  # noqa: E402
from .problem import Problem  # noqa: E402

# (the functions `simulate.simulate` and `sample.sample` share their module's name, so they are
# exported as `simulate_case` and `sample_field`: a submodule import would shadow them)
_LAZY = {
    "open_mdf": ("mdf", "open"),
    "build_problem": ("preprocess", "build_problem"),
    "kaczmarz": ("solvers", "kaczmarz"),
    "reconstruct_kaczmarz": ("solvers", "reconstruct_kaczmarz"),
    "upsample": ("resample", "upsample"),
    "psnr": ("metrics", "psnr"),
    "ssim": ("metrics", "ssim"),
    "line_profile": ("metrics", "line_profile"),
    "simulate_case": ("simulate", "simulate_case"),
    "TrainConfig": ("nir.config", "TrainConfig"),
    "ExperimentalConfig": ("nir.config", "ExperimentalConfig"),
    "train": ("nir.train", "train"),
    "fit": ("nir.train", "fit"),
    "reconstruct": ("classic", "reconstruct"),
    "sample_field": ("sample", "sample"),
    "save_field": ("nir.checkpoint", "save"),
    "load_field": ("nir.checkpoint", "load"),
    "reconstruct_series": ("series", "reconstruct_series"),
    "open_series": ("series", "open_series"),
    "verify_series": ("series", "verify_series"),
    "parse_frames": ("frames", "parse_frames"),
    "parse_channels": ("frames", "parse_channels"),
    "write_image": ("outputs", "write_image"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_nirmpi' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["__version__", "Grid", "Problem", "NirmpiError", "MDFError", "ProblemMismatch",
           "TrainingError", "CheckpointError", "MDFWarning", *_LAZY]
