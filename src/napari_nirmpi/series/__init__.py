"""Frame series (dynamic MPI) at scale: many frames on Dask distributed, streamed into OME-Zarr.

One system matrix, many right-hand sides. The client plans the output frames (`plan`: foreground
frames of the measurement, optionally block-averaged), splits them into chunks and submits one
task per chunk (`run`); each worker builds the Problem once and solves its chunks (`tasks`: one
table entry per method); clients and devices come from `cluster`; the store (`store`) is an
NGFF 0.5 OME-Zarr image with per-chunk checksums, so a re-run resumes and recomputes damaged
chunks. `napari_nirmpi.batch` re-exports all of this under its old names.
"""

from .cluster import close_client, gpu_count, make_client, worker_device
from .identity import file_identity, same_source
from .plan import count_output_frames, plan_frames
from .run import SeriesResult, default_chunk_frames, output_shape, reconstruct_series
from .store import (CHECKSUM_ARRAY, DONE_ARRAY, NGFF_VERSION, SERIES_ARRAY, SERIES_KIND, STORE_FORMAT,
                    chunk_digest, ngff_attrs, open_series, series_status, time_axis, verify_series)
from .tasks import (STATS, Job, Method, check_method_kwargs, get_method, methods, nir_configs, run_chunk,
                    train_frame, worker_stats)

__all__ = ["reconstruct_series", "open_series", "series_status", "verify_series", "plan_frames",
           "count_output_frames", "default_chunk_frames", "file_identity", "make_client", "close_client",
           "nir_configs", "train_frame", "run_chunk", "worker_stats", "methods", "get_method", "Method",
           "SeriesResult", "SERIES_ARRAY", "DONE_ARRAY", "CHECKSUM_ARRAY", "STORE_FORMAT", "NGFF_VERSION"]
