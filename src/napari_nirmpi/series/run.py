"""`reconstruct_series`: plan, open (or resume) the store, submit one task per chunk, store results.

Only the client writes (in the order tasks finish), so a task that is re-run after a worker died
never writes twice, and workers need no access to the output path. The library never prints:
per-chunk progress goes to `on_chunk` (the CLI draws its bar from it) and to the
"napari_nirmpi.series" logger; failed frames are in the result and the store's attrs.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import NirmpiError
from ..grid import Grid
from .cluster import close_client, make_client, worker_count
from .identity import file_identity
from .plan import plan_frames
from .store import STORE_FORMAT, grid_attrs, jsonable, log, open_store
from .tasks import Job, get_method, run_chunk


@dataclass
class SeriesResult:
    """What a run did; `array` is the zarr array (frames, *grid.shape)."""

    path: str
    array: Any
    grid: Grid
    frames_total: int
    chunks_total: int
    chunks_computed: int
    chunks_skipped: int
    failed_frames: list = field(default_factory=list)
    seconds: float = 0.0
    frames_per_second: float = float("nan")
    workers: int = 0
    chunks_damaged: dict = field(default_factory=dict)   # {chunk: reason} found on resume, recomputed

    def __str__(self) -> str:
        s = (f"{self.path} ({self.frames_total} frames of {self.grid.shape}; {self.chunks_computed} chunk(s) "
             f"computed, {self.chunks_skipped} already done")
        if self.chunks_damaged:
            s += f", {len(self.chunks_damaged)} damaged chunk(s) recomputed"
        s += f"; {self.seconds:.1f} s"
        if self.failed_frames:
            s += f"; {len(self.failed_frames)} frame(s) failed, see attrs 'failed_frames'"
        return s + ")"


def output_shape(method: str, grid: Grid, method_kwargs: dict) -> tuple:
    shape = method_kwargs.get("grid")
    if shape is None:
        return grid.shape
    if not get_method(method).sampling_grid:
        raise NirmpiError(f"method_kwargs 'grid' (output grid) does not apply to method={method!r}")
    if isinstance(shape, str):
        from ..grid import parse_shape

        return parse_shape(shape, grid.ndim)
    shape = tuple(int(s) for s in np.ravel(shape))
    if len(shape) != grid.ndim:
        raise NirmpiError(f"grid {shape} has {len(shape)} axes but the system matrix has {grid.ndim}")
    return shape


def default_chunk_frames(method: str) -> int:
    """Output frames per task when `chunk_frames` is not given (the GUI counts progress with it)."""
    return get_method(method).chunk_frames


def reconstruct_series(sm, meas, method: str = "kaczmarz", *, output, frames=None,
                       average: int | None = None, client=None, scheduler: str | None = None,
                       workers: int | None = None, threads_per_worker: int | None = None,
                       device: str = "auto", preprocess: dict | None = None,
                       method_kwargs: dict | None = None, chunk_frames: int | None = None,
                       warm_start: bool = True, overwrite: bool = False, progress: bool = False,
                       on_chunk: Callable[[dict], None] | None = None) -> SeriesResult:
    """Reconstruct every selected foreground frame of `meas` with the system matrix `sm` into an
    OME-Zarr store (see `napari_nirmpi.series.store` for the layout).

    sm, meas: MDF paths (workers open them by path, so on a cluster they must see the same paths).
    method: "kaczmarz" (method_kwargs → solvers.kaczmarz: iterations, lam, …; a chunk is one
        multi-right-hand-side solve), "nir" (method_kwargs → nir.TrainConfig fields, plus
        "grid" = sampling shape ("AxB" or a tuple; default the SM grid), "warm_iterations" /
        "warm_lr" = budget / learning rate of frames warm-started from the previous frame's field
        (defaults iterations // 8 and lr / 10); `warm_start=False` trains every frame from scratch),
        or a method of `napari_nirmpi.classic` when installed (see `series.methods()`).
    output: the Zarr store (directory) to create or resume; `overwrite=True` deletes it first.
    frames: the frame grammar of `napari_nirmpi.frames` ("all", "A:B", "A:B:S", "0,2,5", mixes, or
        a sequence) over the FOREGROUND frames (as preprocess.build_problem's `frames`);
        background frames are never reconstructed (they still correct the signal).
    average: K → each output frame is the mean of K consecutive selected foreground frames; a
        trailing incomplete block is dropped (attrs "dropped_incomplete_block").
    client / scheduler / workers: an existing Client (left open), a scheduler address, or a
        LocalCluster of `workers` processes made (and closed) here; `threads_per_worker`
        compute threads per worker (default cores // workers).
    device: "auto" (a worker's GPU when CUDA is there), "cpu", "cuda", "cuda:N" (NIR only).
    preprocess: keywords of preprocess.build_problem (min_freq, max_freq, snr_threshold, …).
    chunk_frames: output frames per task (and per zarr chunk); default per method (8 for
        kaczmarz, 4 for nir).
    progress: log a line per finished chunk (logger "napari_nirmpi.series", level INFO).
    on_chunk: called on the client with each finished task's summary (after it is stored).
    Returns a SeriesResult (`.array` is the zarr array, `.failed_frames`, counts, timing).
    Re-running the same call resumes: chunks marked done whose values still match their
    checksum are not recomputed; damaged ones are (`.chunks_damaged`).
    """
    from .. import mdf

    t_start = time.perf_counter()
    method = str(method).lower()
    spec = get_method(method)
    preprocess = jsonable(dict(preprocess or {}))
    method_kwargs = jsonable(dict(method_kwargs or {}))
    for k in ("frames", "average"):
        if k in preprocess:
            raise NirmpiError(f"preprocess {k!r}: pass frames/average to reconstruct_series itself")
    spec.check(method_kwargs)
    sm_id, meas_id = file_identity(sm), file_identity(meas)
    sm_file, meas_file = mdf.open(sm_id["path"]), mdf.open(meas_id["path"])
    if sm_file.grid is None:
        raise NirmpiError(f"{sm_id['path']}: system matrix has no grid (calibration size/FOV)")
    grid = sm_file.grid
    out_shape = output_shape(method, grid, method_kwargs)
    out_grid = grid.with_shape(out_shape)
    is_bg = meas_file.is_background_frame
    if is_bg is None:
        is_bg = np.zeros(meas_file.num_frames, bool)
    plan = plan_frames(is_bg, meas_file.frame_times, frames, average)
    blocks, raw_blocks, times, dropped = plan["fg_blocks"], plan["raw_blocks"], plan["times"], plan["dropped"]
    k = len(blocks[0])
    if dropped:
        log.warning("%s: the last %d selected frame(s) do not fill a block of %d and are left out",
                    meas_id["path"], dropped, k)
    if chunk_frames is None:
        chunk_frames = spec.chunk_frames
    chunk_frames = max(1, min(int(chunk_frames), len(blocks)))
    nchunks = math.ceil(len(blocks) / chunk_frames)
    attrs = {
        "nirmpi": {"kind": "reconstruction_series", "format": STORE_FORMAT},
        "format": STORE_FORMAT,
        **grid_attrs(out_grid),
        "system_matrix_grid": grid.to_dict(),
        "frame_indices": [b[0] for b in raw_blocks],       # file frame number (first of each block)
        "foreground_indices": [b[0] for b in blocks],      # position among foreground frames
        "frame_blocks": raw_blocks,
        "frame_times": [None if not np.isfinite(t) else float(t) for t in times],
        "frame_times_unit": "s",
        "frames_selected": str(frames) if frames is not None else "all",
        "dropped_incomplete_block": dropped,
        "average": k,
        "method": method,
        "method_kwargs": method_kwargs,
        "preprocess": preprocess,
        "warm_start": bool(warm_start) if method == "nir" else None,
        "chunk_frames": chunk_frames,
        "sources": {"sm": sm_id, "meas": meas_id},
        "failed_frames": [],
        "runs": [],
    }
    path = Path(output)
    store = open_store(path, attrs, len(blocks), out_shape, chunk_frames, nchunks, overwrite)
    arr = store.array
    damaged = store.check()
    if damaged:
        log.warning("%s: %d chunk(s) marked done fail their checksum and are recomputed: %s",
                    path, len(damaged), ", ".join(f"{c} ({r})" for c, r in sorted(damaged.items())[:10]))
        for c in damaged:
            store.done[c] = 0
    done_now = store.markers()
    todo = [c for c in range(nchunks) if done_now[c] == 0]
    run_no = len(arr.attrs.get("runs", [])) + 1
    failed = [f for f in arr.attrs.get("failed_frames", []) if done_now[f["chunk"]] != 0]
    job = Job(sm=sm_id["path"], meas=meas_id["path"], sm_mtime_ns=sm_id["mtime_ns"],
              meas_mtime_ns=meas_id["mtime_ns"], method=method, preprocess=preprocess,
              method_kwargs=method_kwargs, out_shape=tuple(out_shape), average=k, device=device,
              threads=threads_per_worker, warm_start=warm_start)
    run = {"run": run_no, "id": uuid.uuid4().hex, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "chunks_todo": len(todo), "chunks_computed": 0, "frames_computed": 0, "device": device,
           "chunks_damaged": {str(c): r for c, r in sorted(damaged.items())}, "finished": False}
    computed = 0
    nworkers = 0
    if todo:
        owns = False
        if client is None:
            client, owns = make_client(scheduler, workers, threads_per_worker=threads_per_worker,
                                       device=device, max_workers=len(todo))
        elif isinstance(client, str):
            client, owns = make_client(client)
        try:
            nworkers = worker_count(client)
            if job.threads is None and getattr(client, "_nirmpi_threads", None):
                job = dataclasses.replace(job, threads=client._nirmpi_threads)
            failed = _run(client, job, todo, blocks, raw_blocks, store, run_no, run, failed, progress, on_chunk)
        finally:
            computed = run["chunks_computed"]
            run["seconds"] = round(time.perf_counter() - t_start, 3)
            arr.attrs.update({"runs": [*arr.attrs.get("runs", []), run],
                              "failed_frames": sorted(failed, key=lambda f: f["frame"])})
            if owns:
                close_client(client)
    else:
        run["finished"] = True
        arr.attrs.update({"runs": [*arr.attrs.get("runs", []), run]})
    seconds = time.perf_counter() - t_start
    nframes = store.frames_of(todo)
    if failed:
        log.warning("%s: %d frame(s) failed (attrs 'failed_frames'); first: frame %d: %s", path, len(failed),
                    failed[0]["frame"], failed[0]["message"])
    return SeriesResult(path=str(path), array=arr, grid=out_grid, frames_total=len(blocks),
                        chunks_total=nchunks, chunks_computed=computed,
                        chunks_skipped=nchunks - len(todo), failed_frames=failed, seconds=seconds,
                        frames_per_second=nframes / seconds if nframes else float("nan"),
                        workers=nworkers, chunks_damaged=damaged)


def _run(client, job, todo, blocks, raw_blocks, store, run_no, run, failed, progress, on_chunk):
    """Submit the chunks, store each as it finishes (data, checksum, then its done marker)."""
    from distributed import as_completed

    arr = store.array
    cf = store.chunk_frames
    futures = {}
    for c in todo:
        sl = slice(c * cf, (c + 1) * cf)
        # a fresh key per run, so a cancelled earlier run's result is never reused
        fut = client.submit(run_chunk, job, c, blocks[sl], raw_blocks[sl], pure=False, retries=1,
                            key=f"nirmpi-chunk-{c}-{uuid.uuid4().hex}")
        futures[fut] = c
    total = store.frames_of(todo)
    frames_done = 0
    task_errors = []
    params_stored = "problem_params" in arr.attrs
    try:
        for fut in as_completed(list(futures)):
            c = futures[fut]
            b = raw_blocks[c * cf:(c + 1) * cf]
            lo = c * cf
            try:
                res = fut.result()
            except Exception as e:  # the whole task failed (bad file, killed too often): retry on re-run
                msg = f"{type(e).__name__}: {e}"
                task_errors.append((c, msg))
                failed.extend({"frame": lo + i, "raw_frames": bb, "chunk": c, "message": msg,
                               "retry": True} for i, bb in enumerate(b))
                continue
            finally:
                fut.release()
            store.write_chunk(c, res["images"], run_no)
            run["chunks_computed"] += 1
            run["frames_computed"] += len(b)
            frames_done += len(b)
            new_failures = [{"frame": lo + i, "raw_frames": b[i], "chunk": c, "message": m}
                            for i, m in sorted(res["failures"].items())]
            if new_failures:
                failed.extend(new_failures)
                arr.attrs.update({"failed_frames": sorted(failed, key=lambda f: f["frame"])})
            if not params_stored:
                arr.attrs.update({"problem_params": res["problem_params"], "problem_rows": res["problem_rows"]})
                params_stored = True
            if "nir_steps" in res:
                steps = dict(arr.attrs.get("nir_steps", {}))
                steps[str(c)] = res["nir_steps"]
                arr.attrs.update({"nir_steps": steps})
            if progress:
                log.info("%s: chunk %d stored (%d/%d frames of this run, %.1f s)", store.path, c, frames_done,
                         total, res["seconds"])
            if on_chunk is not None:
                on_chunk({**{k: v for k, v in res.items() if k != "images"}, "frames": len(b),
                          "frames_done": frames_done, "frames_todo": total})
        run["finished"] = True
    finally:
        for fut in futures:
            if not fut.done():
                fut.cancel()
    if task_errors and len(task_errors) == len(todo):
        raise NirmpiError(f"every chunk failed; first (chunk {task_errors[0][0]}): {task_errors[0][1]}")
    if task_errors:
        warnings.warn(f"{len(task_errors)} chunk(s) failed as a whole and stay to do (re-run to retry); "
                      f"first: {task_errors[0][1]}", RuntimeWarning, stacklevel=3)
    return failed
