"""Old home of the frame-series code, kept so that `napari_nirmpi.batch.X` keeps working.

Everything moved to the package `napari_nirmpi.series` (plan, identity, tasks, cluster, store,
run); new code should import from there.
"""

from .frames import parse_frames as _parse_frames
from .series import *  # noqa: F401,F403
from .series import __all__ as _series_all
from .series.cluster import close_client, gpu_count as _gpu_count, make_client, worker_device as _worker_device  # noqa: F401
from .series.identity import file_identity, same_source as _same_source  # noqa: F401
from .series.run import SeriesResult, output_shape as _output_shape  # noqa: F401
from .series.store import (FINGERPRINT_KEYS as _FINGERPRINT_KEYS, grid_attrs as _grid_attrs,  # noqa: F401
                           jsonable as _jsonable)
from .series.tasks import (STATS, Job as _Job, check_method_kwargs, methods as _methods,  # noqa: F401
                           nir_configs, run_chunk, train_frame, worker_stats)

METHODS = ("kaczmarz", "nir")  # the built-in ones; `series.methods()` lists every one available


def parse_frames(frames, num_frames: int):
    """Foreground frame indices selected by `frames` (the grammar of `napari_nirmpi.frames`)."""
    return _parse_frames(frames, num_frames)


__all__ = [*_series_all, "parse_frames", "METHODS"]
