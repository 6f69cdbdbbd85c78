"""Frame series (dynamic MPI) at scale: many frames on Dask distributed, streamed into Zarr.

One system matrix, many right-hand sides. The client plans the output frames (foreground frames of
the measurement, optionally block-averaged), splits them into chunks of `chunk_frames` and submits
one task per chunk. Each worker builds the `Problem` (system-matrix rows, background, row scaling)
ONCE per process and keeps it in a cache keyed by file paths + mtimes + parameters; a task
only reads its own frames. Kaczmarz solves a chunk as one multi-right-hand-side call; NIR trains
frame after frame, each frame warm-started from the previous frame's field.

Store layout (`OUT.zarr`, zarr v3):
    reconstruction  float32 (frames, y, x) | (frames, z, y, x); one zarr chunk per frame chunk,
                    NaN where not (yet) written or failed; attrs: grid, voxel size / FOV / centre
                    in m and mm, frame indices and times, method, every parameter, sources, runs,
                    failed_frames.
    done            int32 (num_chunks,), one zarr chunk per element: 0 = to do, r = written by
                    run r. Written only AFTER the chunk's image data (zarr's local store writes
                    atomically), so an interrupted run never marks a half-written chunk done and a
                    re-run recomputes exactly the chunks without a marker.
Only the client writes (in the order tasks finish), so a task that is re-run after a worker died
never writes twice, and workers need no access to the output path.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import NirmpiError, ProblemMismatch
from .grid import Grid

SERIES_ARRAY = "reconstruction"
DONE_ARRAY = "done"
STORE_FORMAT = 1
METHODS = ("kaczmarz", "nir")
# parameters that must match an existing store for it to be resumed
_FINGERPRINT_KEYS = ("format", "method", "method_kwargs", "preprocess", "frame_blocks", "average", "warm_start",
                     "chunk_frames", "grid", "sources")


# ---------------------------------------------------------------------------------------------
# plan: which raw frames make which output frame
# ---------------------------------------------------------------------------------------------
def parse_frames(frames, num_frames: int) -> np.ndarray:
    """Raw frame indices selected by `frames`: None/"all", "A:B" / "A:B:S", "A", a slice, a range
    or a sequence of ints (negative indices count from the end, as in Python)."""
    if frames is None or (isinstance(frames, str) and frames.strip().lower() in ("", "all")):
        return np.arange(num_frames)
    if isinstance(frames, str):
        text = frames.strip()
        try:
            if ":" in text:
                parts = [int(p) if p.strip() else None for p in text.split(":")]
                if len(parts) > 3:
                    raise ValueError
                frames = slice(*parts)
            else:
                frames = [int(text)]
        except ValueError:
            raise NirmpiError(f"frames {text!r}: expected 'all', 'A:B', 'A:B:S' or an integer") from None
    if isinstance(frames, slice):
        return np.arange(num_frames)[frames]
    idx = np.asarray(list(frames) if isinstance(frames, range) else frames, dtype=np.int64).ravel()
    bad = idx[(idx < -num_frames) | (idx >= num_frames)]
    if bad.size:
        raise NirmpiError(f"frames {bad[:5].tolist()} out of range: the measurement has {num_frames} frames")
    return np.where(idx < 0, idx + num_frames, idx)


def plan_frames(is_background: np.ndarray, frame_times: np.ndarray | None, frames=None,
                average: int | None = None) -> dict:
    """Which frames make which output frame.

    `frames` selects among the FOREGROUND frames (the same indexing as preprocess.build_problem);
    background frames are never reconstructed (they still correct the signal in preprocessing).
    `average=K` groups K consecutive selected foreground frames into one output frame; a trailing
    incomplete block is dropped and counted. Returns dict with
    fg_blocks (foreground positions per output frame), raw_blocks (file frame numbers),
    times (mean time per block, s; NaN when unknown), dropped.
    """
    is_background = np.asarray(is_background, dtype=bool)
    fg = np.flatnonzero(~is_background)
    if fg.size == 0:
        raise NirmpiError(f"the measurement has no foreground frames ({is_background.size} background)")
    sel = parse_frames(frames, fg.size)
    if sel.size == 0:
        raise NirmpiError(f"frames {frames!r}: selects none of the {fg.size} foreground frames")
    k = 1 if average in (None, 0) else int(average)
    if k < 1:
        raise NirmpiError(f"average must be a positive number of frames, got {average}")
    nb = sel.size // k
    if nb == 0:
        raise NirmpiError(f"average={k} needs at least {k} foreground frames, {sel.size} selected")
    fg_blocks = sel[: nb * k].reshape(nb, k)
    raw_blocks = fg[fg_blocks]
    if frame_times is None:
        times = np.full(nb, np.nan)
    else:
        times = np.asarray(frame_times, dtype=np.float64)[raw_blocks].mean(axis=1)
    return {"fg_blocks": fg_blocks.tolist(), "raw_blocks": raw_blocks.tolist(), "times": times,
            "dropped": int(sel.size - nb * k)}


# ---------------------------------------------------------------------------------------------
# sources: identity of input files (for the store fingerprint and the worker cache)
# ---------------------------------------------------------------------------------------------
def file_identity(path) -> dict:
    """Path, size, mtime and a quick content hash (sha256 of size + first and last 4 MiB)."""
    p = Path(path).resolve()
    if not p.is_file():
        raise NirmpiError(f"{p}: file not found")
    st = p.stat()
    h = hashlib.sha256(str(st.st_size).encode())
    block = 4 << 20
    with open(p, "rb") as f:
        h.update(f.read(block))
        if st.st_size > 2 * block:
            f.seek(st.st_size - block)
            h.update(f.read(block))
        elif st.st_size > block:
            h.update(f.read())
    return {"path": str(p), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns),
            "sha256_head_tail_4MiB": h.hexdigest()}


def _same_source(a: dict, b: dict) -> bool:
    # mtime is recorded but not compared: copying a file changes it, the content hash does not
    return all(a.get(k) == b.get(k) for k in ("size", "sha256_head_tail_4MiB"))


# ---------------------------------------------------------------------------------------------
# the job and the worker side
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Job:
    """Everything a worker needs, plain and picklable."""

    sm: str
    meas: str
    sm_mtime_ns: int
    meas_mtime_ns: int
    method: str
    preprocess: dict
    method_kwargs: dict
    out_shape: tuple
    average: int
    device: str = "auto"
    threads: int | None = None
    warm_start: bool = True

    def cache_key(self) -> str:
        return json.dumps([self.sm, self.sm_mtime_ns, self.meas, self.meas_mtime_ns, self.preprocess],
                          sort_keys=True, default=str)


# per-process cache: one Problem per (files, mtimes, preprocessing) — built once per worker
_PROBLEMS: dict[str, Any] = {}
_SYSTEMS: dict[str, Any] = {}
_PROBLEM_LOCK = threading.Lock()
STATS = {"problem_builds": 0, "chunks": 0, "frames": 0}
_THREADS_SET = False


def _configure_threads(threads: int | None):
    """Give torch this worker's share of the cores once (so workers do not fight)."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    import torch

    n = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
    _THREADS_SET = True


def _worker_device(device: str) -> str:
    """'auto' → this worker's GPU (worker name modulo GPU count) when CUDA is there, else CPU."""
    import torch

    if device not in ("auto", "cuda"):
        return device
    if not torch.cuda.is_available():
        if device == "cuda":
            raise NirmpiError("device 'cuda' requested but torch.cuda.is_available() is False on this worker")
        return "cpu"
    n = torch.cuda.device_count()
    index = 0
    try:
        from distributed import get_worker

        name = get_worker().name
        index = (int(name) if str(name).isdigit() else int(hashlib.md5(str(name).encode()).hexdigest(), 16)) % n
    except (ImportError, ValueError):
        pass
    return f"cuda:{index}"


def _problem(job: _Job):
    key = job.cache_key()
    with _PROBLEM_LOCK:
        if key not in _PROBLEMS:
            from . import preprocess

            _PROBLEMS.clear()  # one series per worker at a time: do not hold stale matrices
            # frames=[0]: the Problem's own u is not used, so read one frame, not the whole series
            _PROBLEMS[key] = preprocess.build_problem(job.sm, job.meas, **job.preprocess, frames=[0])
            STATS["problem_builds"] += 1
        return _PROBLEMS[key]


def _rhs(job: _Job, problem, blocks: list[list[int]], raw_blocks: list[list[int]]) -> tuple[np.ndarray, dict]:
    """(F, M) right-hand sides of the chunk's output frames in the Problem's row scaling, and
    {output frame in chunk: message} for frames that could not be read (their rows are NaN)."""
    try:
        return _read_blocks(job, problem, blocks, raw_blocks), {}
    except NirmpiError as e:  # MDFError on NaN/Inf or unreadable data
        if len(blocks) == 1:
            return np.full((1, problem.S.shape[0]), np.nan, np.complex64), {0: f"{type(e).__name__}: {e}"}
    # one bad frame must not take its chunk partners down: read them one by one
    rows, failures = [], {}
    for i in range(len(blocks)):
        u, f = _rhs(job, problem, blocks[i:i + 1], raw_blocks[i:i + 1])
        rows.append(u[0])
        if f:
            failures[i] = f[0]
    return np.stack(rows), failures


def _read_blocks(job: _Job, problem, blocks, raw_blocks) -> np.ndarray:
    from . import preprocess

    flat = [i for b in blocks for i in b]
    u, idx, _ = preprocess.measurement_frames(job.meas, problem, frames=flat, average=1)
    u = np.asarray(u)
    got = [int(i) for b in idx for i in np.ravel(b)]
    want = [i for b in raw_blocks for i in b]
    if u.shape[0] != len(flat) or got != want:
        raise RuntimeError(f"{job.meas}: asked for file frames {want[:5]}…, got {u.shape[0]} frames {got[:5]}…")
    k = job.average
    # averaging is linear, so the mean of corrected, scaled frames is the corrected, scaled mean
    return u.reshape(len(blocks), k, u.shape[-1]).mean(axis=1)


def _solve_kaczmarz(job: _Job, problem, u: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, dict]:
    from . import solvers

    images = np.full((u.shape[0], *job.out_shape), np.nan, np.float32)
    if good.any():
        key = job.cache_key()
        with _PROBLEM_LOCK:  # the prepared (planar, padded) matrix is cached with the Problem
            system = _SYSTEMS.get(key)
            if system is None:
                _SYSTEMS.clear()
                system = _SYSTEMS[key] = solvers.KaczmarzSystem(problem.S)
        c = solvers.kaczmarz(system, u[good], **job.method_kwargs)
        images[good] = np.asarray(c, np.float32).reshape(-1, *problem.grid.shape)
    return images, {}


def nir_configs(method_kwargs: dict, device: str = "auto"):
    """(cold TrainConfig, warm TrainConfig) from method_kwargs: TrainConfig fields plus
    'warm_iterations' (default iterations // 8) and 'warm_lr' (default lr / 10) for frames that
    start from the previous frame's field; 'grid' (the sampling shape) is ignored here."""
    import dataclasses

    from .nir.train import TrainConfig

    kw = dict(method_kwargs)
    kw.pop("grid", None)
    warm_iterations = kw.pop("warm_iterations", None)
    warm_lr = kw.pop("warm_lr", None)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(kw) - names)
    if unknown:
        raise NirmpiError(f"method_kwargs {unknown}: not TrainConfig settings (expected some of {sorted(names)}, "
                          "'grid', 'warm_iterations', 'warm_lr')")
    kw.setdefault("preview_every", 10**9)  # no previews in batch: they cost a forward pass each
    if "device" in names:
        kw["device"] = device
    cold = TrainConfig(**kw)
    cold.validate()  # on the client, before any task runs
    # Defaults measured on the bolus phantom (benchmarks/batch.py, docs/scaling.md): from the
    # previous frame's field, 1/16 of the cold budget at lr/10 matched the cold PSNR; the cold lr
    # (1e-3) throws the converged field away again (worse PSNR the longer it runs).
    warm_iterations = max(1, cold.iterations // 8) if warm_iterations is None else int(warm_iterations)
    warm_lr = cold.lr / 10 if warm_lr is None else float(warm_lr)
    if warm_iterations < 1 or not (warm_lr > 0):
        raise NirmpiError(f"warm_iterations={warm_iterations} / warm_lr={warm_lr}: expected positive values")
    return cold, dataclasses.replace(cold, iterations=warm_iterations, lr=warm_lr)




def train_frame(problem, config, init_field=None):
    """Final TrainState of nir.train on one frame; with `init_field`, training starts from that
    field's weights and keeps its output scale (so its first iterate IS the previous frame's image)."""
    from .nir.train import train

    state = None
    gen = train(problem, config, init_field=init_field)
    try:
        for state in gen:
            pass
    finally:
        gen.close()
    if state is None:
        raise NirmpiError("training yielded no state")
    return state


def _solve_nir(job: _Job, problem, u: np.ndarray, good: np.ndarray,
               failures: dict) -> tuple[np.ndarray, dict]:
    """Train one field per frame; each frame starts from the previous good frame's field."""
    from .sample import sample

    cold, warm = nir_configs(job.method_kwargs, _worker_device(job.device))
    images = np.full((u.shape[0], *job.out_shape), np.nan, np.float32)
    steps, best = [], []
    prev = None
    for i in range(u.shape[0]):
        if not good[i]:
            steps.append(0)
            best.append(0)
            continue
        use_warm = prev is not None and job.warm_start
        try:
            state = train_frame(problem.with_u(u[i]), warm if use_warm else cold, prev if use_warm else None)
            image, _ = sample(state.field, job.out_shape)
            image = np.asarray(image, np.float32)
            if not np.isfinite(image).all():
                raise NirmpiError("reconstruction contains NaN/Inf")
        except NirmpiError as e:  # TrainingError included: this frame fails, the others go on
            failures[i] = f"{type(e).__name__}: {e}"
            steps.append(0)
            best.append(0)
            continue
        images[i] = image
        steps.append(int(state.iteration))
        best.append(int(state.best_iteration))
        prev = state.field
    return images, {"nir_steps": steps, "nir_best_iterations": best}


def run_chunk(job: _Job, chunk: int, blocks: list[list[int]], raw_blocks: list[list[int]]) -> dict:
    """One task (runs on a worker): reconstruct the output frames of chunk `chunk`; `blocks` are
    foreground positions per output frame, `raw_blocks` the same as file frame numbers."""
    t0 = time.perf_counter()
    _configure_threads(job.threads)
    problem = _problem(job)
    u, failures = _rhs(job, problem, blocks, raw_blocks)
    finite = np.isfinite(u.real).all(axis=1) & np.isfinite(u.imag).all(axis=1)
    for i in np.flatnonzero(~finite):
        if i in failures:
            continue
        bad = int((~(np.isfinite(u[i].real) & np.isfinite(u[i].imag))).sum())
        failures[int(i)] = f"measurement frame(s) {raw_blocks[i]} contain NaN/Inf ({bad} of {u.shape[1]} rows)"
    if job.method == "kaczmarz":
        images, extra = _solve_kaczmarz(job, problem, u, finite)
    else:
        images, extra = _solve_nir(job, problem, u, finite, failures)
    bad_out = ~np.isfinite(images.reshape(len(blocks), -1)).all(axis=1)
    for i in np.flatnonzero(bad_out):
        failures.setdefault(int(i), "reconstruction contains NaN/Inf")
        images[i] = np.nan
    STATS["chunks"] += 1
    STATS["frames"] += len(blocks)
    worker = ""
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        pass
    return {"chunk": chunk, "images": images, "failures": failures, "seconds": time.perf_counter() - t0,
            "worker": worker, "pid": os.getpid(),
            "problem_params": _jsonable({k: v for k, v in problem.params.items() if k not in ("frames", "average")}),
            "problem_rows": int(problem.S.shape[0]), **extra}


def worker_stats() -> dict:
    """This process's counters (call with `client.run(worker_stats)`)."""
    return dict(STATS, cached_problems=len(_PROBLEMS), pid=os.getpid())


# ---------------------------------------------------------------------------------------------
# the client side
# ---------------------------------------------------------------------------------------------
def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def make_client(scheduler=None, workers: int | None = None, *, threads_per_worker: int | None = None,
                device: str = "auto", max_workers: int | None = None):
    """A Dask client and whether the caller owns (must close) it.

    `scheduler`: an existing `distributed.Client` (used as is), a scheduler address
    ("tcp://HOST:PORT"; workers there should be started with `--nthreads 1`), or None for a
    LocalCluster on this machine: processes, loopback only, no dashboard, one task at a time per
    worker, `workers` workers (default: one per GPU when CUDA is there and `device` allows it, else
    min(cores, max_workers)), each with cores // workers compute threads (OMP/MKL/torch) so that
    workers do not fight over cores.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None and not isinstance(scheduler, str):
        return scheduler, False
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="30s"), True
        except (OSError, TimeoutError) as e:
            raise NirmpiError(f"cannot reach Dask scheduler {scheduler!r}: {e}") from None
    cores = os.cpu_count() or 1
    ngpu = _gpu_count() if device in ("auto", "cuda") or str(device).startswith("cuda") else 0
    if workers is None:
        workers = ngpu or cores
        if max_workers:
            workers = min(workers, max_workers)
    workers = max(1, int(workers))
    threads = threads_per_worker or max(1, cores // workers)
    env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "NUMBA_NUM_THREADS")}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, env=env, silence_logs=40)
    client = Client(cluster)
    client._nirmpi_cluster = cluster  # closed together in close_client
    client._nirmpi_threads = threads
    return client, True


def close_client(client):
    cluster = getattr(client, "_nirmpi_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def _jsonable(obj):
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


def _grid_attrs(grid: Grid) -> dict:
    ax = ["z", "y", "x"][-grid.ndim:]
    return {
        "grid": grid.to_dict(),
        "axes": ["t", *ax],
        "voxel_size_m": list(grid.voxel_size), "voxel_size_mm": list(grid.scale_mm),
        "fov_m": list(grid.fov), "fov_mm": [f * 1e3 for f in grid.fov],
        "fov_center_m": list(grid.center), "fov_center_mm": [c * 1e3 for c in grid.center],
        "translate_mm": list(grid.translate_mm), "scale_mm": list(grid.scale_mm),
    }


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

    def __str__(self) -> str:
        s = (f"{self.path} ({self.frames_total} frames of {self.grid.shape}; {self.chunks_computed} chunk(s) "
             f"computed, {self.chunks_skipped} already done; {self.seconds:.1f} s")
        if self.failed_frames:
            s += f"; {len(self.failed_frames)} frame(s) failed, see attrs 'failed_frames'"
        return s + ")"


def _open_store(path: Path, attrs: dict, num_frames: int, out_shape: tuple, chunk_frames: int,
                num_chunks: int, overwrite: bool):
    import zarr

    if overwrite and path.exists():
        import shutil

        shutil.rmtree(path) if path.is_dir() else path.unlink()
    g = zarr.open_group(str(path), mode="a")
    if SERIES_ARRAY in g:
        arr = g[SERIES_ARRAY]
        old = dict(arr.attrs)
        diff = [k for k in _FINGERPRINT_KEYS if not _equal_param(k, old.get(k), attrs.get(k))]
        if arr.shape != (num_frames, *out_shape):
            diff.append(f"shape {arr.shape} != {(num_frames, *out_shape)}")
        if diff:
            raise ProblemMismatch(
                f"{path}: existing store was written with other parameters ({', '.join(diff)}); "
                "use another output or overwrite=True (CLI: --force) to start afresh")
        if DONE_ARRAY not in g:
            raise NirmpiError(f"{path}: array '{DONE_ARRAY}' missing; not a nirmpi series store?")
        return g, arr, g[DONE_ARRAY]
    if len(list(g.keys())):
        raise NirmpiError(f"{path}: exists and holds {sorted(g.keys())} but no '{SERIES_ARRAY}'; "
                          "choose another output or overwrite=True (CLI: --force)")
    arr = g.create_array(SERIES_ARRAY, shape=(num_frames, *out_shape), chunks=(chunk_frames, *out_shape),
                         dtype="float32", fill_value=float("nan"))
    arr.attrs.update(attrs)
    done = g.create_array(DONE_ARRAY, shape=(num_chunks,), chunks=(1,), dtype="int32", fill_value=0)
    return g, arr, done


def _equal_param(key, a, b) -> bool:
    if key == "sources":
        if not isinstance(a, dict) or not isinstance(b, dict) or set(a) != set(b):
            return False
        return all(_same_source(a[k], b[k]) for k in a)
    return _jsonable(a) == _jsonable(b)


def _output_shape(method: str, grid: Grid, method_kwargs: dict) -> tuple:
    shape = method_kwargs.get("grid")
    if shape is None:
        return grid.shape
    if method != "nir":
        raise NirmpiError("method_kwargs 'grid' (sampling grid) applies to method='nir' only")
    if isinstance(shape, str):
        from .grid import parse_shape

        return parse_shape(shape, grid.ndim)
    shape = tuple(int(s) for s in np.ravel(shape))
    if len(shape) != grid.ndim:
        raise NirmpiError(f"grid {shape} has {len(shape)} axes but the system matrix has {grid.ndim}")
    return shape


def check_method_kwargs(method: str, method_kwargs: dict) -> None:
    """Fail on the client, before any task runs, on keywords the method does not take."""
    import inspect

    if method == "kaczmarz":
        from . import solvers

        names = set(inspect.signature(solvers.kaczmarz).parameters) - {"S", "u", "snapshots"}
        unknown = sorted(set(method_kwargs) - names)
        if unknown:
            raise NirmpiError(f"method_kwargs {unknown}: not kaczmarz settings (expected some of {sorted(names)})")
    else:
        nir_configs(method_kwargs)


def reconstruct_series(sm, meas, method: str = "kaczmarz", *, output, frames=None,
                       average: int | None = None, client=None, scheduler: str | None = None,
                       workers: int | None = None, threads_per_worker: int | None = None,
                       device: str = "auto", preprocess: dict | None = None,
                       method_kwargs: dict | None = None, chunk_frames: int | None = None,
                       warm_start: bool = True, overwrite: bool = False, progress: bool = True,
                       on_chunk: Callable[[dict], None] | None = None) -> SeriesResult:
    """Reconstruct every selected foreground frame of `meas` with the system matrix `sm` into Zarr.

    sm, meas: MDF paths (workers open them by path, so on a cluster they must see the same paths).
    method: "kaczmarz" (method_kwargs → solvers.kaczmarz: iterations, lam, …; a chunk is one
        multi-right-hand-side solve) or "nir" (method_kwargs → nir.TrainConfig fields, plus
        "grid" = sampling shape ("AxB" or a tuple; default the SM grid), "warm_iterations" /
        "warm_lr" = budget / learning rate of frames warm-started from the previous frame's field
        (defaults iterations // 8 and lr / 10); `warm_start=False` trains every frame from scratch).
    output: the Zarr store (directory) to create or resume; `overwrite=True` deletes it first.
    frames: None/"all", "A:B", "A:B:S", a slice/range or indices into the FOREGROUND frames (as
        preprocess.build_problem's `frames`); background frames are never reconstructed (they
        still correct the signal in preprocessing).
    average: K → each output frame is the mean of K consecutive selected foreground frames.
    client / scheduler / workers: an existing Client (left open), a scheduler address, or a
        LocalCluster of `workers` processes made (and closed) here; `threads_per_worker`
        compute threads per worker (default cores // workers).
    device: "auto" (a worker's GPU when CUDA is there), "cpu", "cuda", "cuda:N" (NIR only).
    preprocess: keywords of preprocess.build_problem (min_freq, max_freq, snr_threshold, …).
    chunk_frames: output frames per task (and per zarr chunk); default 8 for kaczmarz, 4 for nir.
    progress: tqdm bar on stderr and a list of failed frames at the end.
    on_chunk: called on the client with each finished task's summary (after it is stored).
    Returns a SeriesResult (`.array` is the zarr array, `.failed_frames`, counts, timing).
    Re-running the same call resumes: chunks whose `done` marker is set are not recomputed.
    """
    from . import mdf

    t_start = time.perf_counter()
    method = str(method).lower()
    if method not in METHODS:
        raise NirmpiError(f"method {method!r}: expected one of {METHODS}")
    preprocess = _jsonable(dict(preprocess or {}))
    method_kwargs = _jsonable(dict(method_kwargs or {}))
    for k in ("frames", "average"):
        if k in preprocess:
            raise NirmpiError(f"preprocess {k!r}: pass frames/average to reconstruct_series itself")
    check_method_kwargs(method, method_kwargs)
    sm_id, meas_id = file_identity(sm), file_identity(meas)
    sm_file, meas_file = mdf.open(sm_id["path"]), mdf.open(meas_id["path"])
    if sm_file.grid is None:
        raise NirmpiError(f"{sm_id['path']}: system matrix has no grid (calibration size/FOV)")
    grid = sm_file.grid
    out_shape = _output_shape(method, grid, method_kwargs)
    out_grid = grid.with_shape(out_shape)
    is_bg = meas_file.is_background_frame
    if is_bg is None:
        is_bg = np.zeros(meas_file.num_frames, bool)
    plan = plan_frames(is_bg, meas_file.frame_times, frames, average)
    blocks, raw_blocks, times, dropped = plan["fg_blocks"], plan["raw_blocks"], plan["times"], plan["dropped"]
    k = len(blocks[0])
    if chunk_frames is None:
        chunk_frames = 8 if method == "kaczmarz" else 4
    chunk_frames = max(1, min(int(chunk_frames), len(blocks)))
    nchunks = math.ceil(len(blocks) / chunk_frames)
    attrs = {
        "nirmpi": {"kind": "reconstruction_series", "format": STORE_FORMAT},
        "format": STORE_FORMAT,
        **_grid_attrs(out_grid),
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
    _g, arr, done = _open_store(path, attrs, len(blocks), out_shape, chunk_frames, nchunks, overwrite)
    done_now = np.asarray(done[:])
    todo = [c for c in range(nchunks) if done_now[c] == 0]
    run_no = len(arr.attrs.get("runs", [])) + 1
    failed = [f for f in arr.attrs.get("failed_frames", []) if done_now[f["chunk"]] != 0]
    job = _Job(sm=sm_id["path"], meas=meas_id["path"], sm_mtime_ns=sm_id["mtime_ns"],
               meas_mtime_ns=meas_id["mtime_ns"], method=method, preprocess=preprocess,
               method_kwargs=method_kwargs, out_shape=tuple(out_shape), average=k, device=device,
               threads=threads_per_worker, warm_start=warm_start)
    run = {"run": run_no, "id": uuid.uuid4().hex, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "chunks_todo": len(todo), "chunks_computed": 0, "frames_computed": 0, "device": device,
           "finished": False}
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
            nworkers = len(client.scheduler_info(n_workers=-1)["workers"]) if _has_n_workers_kw(client) \
                else len(client.scheduler_info()["workers"])
            if job.threads is None and getattr(client, "_nirmpi_threads", None):
                job = _with(job, threads=client._nirmpi_threads)
            computed, failed = _run(client, job, todo, blocks, raw_blocks, chunk_frames, arr, done, run_no, run,
                                    failed, progress, on_chunk)
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
    nframes = sum(min(chunk_frames, len(blocks) - c * chunk_frames) for c in todo)
    result = SeriesResult(path=str(path), array=arr, grid=out_grid, frames_total=len(blocks),
                          chunks_total=nchunks, chunks_computed=computed,
                          chunks_skipped=nchunks - len(todo), failed_frames=failed, seconds=seconds,
                          frames_per_second=nframes / seconds if nframes else float("nan"),
                          workers=nworkers)
    if failed and progress:
        print(f"nirmpi batch: {len(failed)} frame(s) failed:", file=sys.stderr)
        for f in failed[:20]:
            print(f"  frame {f['frame']} (raw {f['raw_frames']}): {f['message']}", file=sys.stderr)
        if len(failed) > 20:
            print(f"  … and {len(failed) - 20} more (attrs 'failed_frames')", file=sys.stderr)
    return result


def _has_n_workers_kw(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _with(job: _Job, **changes) -> _Job:
    import dataclasses

    return dataclasses.replace(job, **changes)


def _run(client, job, todo, blocks, raw_blocks, chunk_frames, arr, done, run_no, run, failed, progress, on_chunk):
    """Submit the chunks, store each as it finishes (data first, then its done marker)."""
    from distributed import as_completed

    futures = {}
    for c in todo:
        sl = slice(c * chunk_frames, (c + 1) * chunk_frames)
        # a fresh key per run, so a cancelled earlier run's result is never reused
        fut = client.submit(run_chunk, job, c, blocks[sl], raw_blocks[sl], pure=False, retries=1,
                            key=f"nirmpi-chunk-{c}-{uuid.uuid4().hex}")
        futures[fut] = c
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(len(blocks[c * chunk_frames:(c + 1) * chunk_frames]) for c in todo)
        bar = tqdm(total=total, unit="frame", desc=f"nirmpi batch ({job.method})", file=sys.stderr)
    computed = 0
    task_errors = []
    params_stored = "problem_params" in arr.attrs
    try:
        for fut in as_completed(list(futures)):
            c = futures[fut]
            b = raw_blocks[c * chunk_frames:(c + 1) * chunk_frames]
            lo = c * chunk_frames
            try:
                res = fut.result()
            except Exception as e:  # the whole task failed (bad file, killed too often): retry on re-run
                msg = f"{type(e).__name__}: {e}"
                task_errors.append((c, msg))
                failed.extend({"frame": lo + i, "raw_frames": bb, "chunk": c, "message": msg,
                               "retry": True} for i, bb in enumerate(b))
                if bar is not None:
                    bar.update(len(b))
                continue
            finally:
                fut.release()
            arr[lo:lo + len(b)] = res["images"]          # data first …
            done[c] = run_no                              # … then the marker
            computed += 1
            run["chunks_computed"] = computed
            run["frames_computed"] += len(b)
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
            if bar is not None:
                bar.update(len(b))
            if on_chunk is not None:
                on_chunk({k: v for k, v in res.items() if k != "images"})
        run["finished"] = True
    finally:
        if bar is not None:
            bar.close()
        for fut in futures:
            if not fut.done():
                fut.cancel()
    if task_errors and len(task_errors) == len(todo):
        raise NirmpiError(f"every chunk failed; first (chunk {task_errors[0][0]}): {task_errors[0][1]}")
    if task_errors:
        warnings.warn(f"{len(task_errors)} chunk(s) failed as a whole and stay to do (re-run to retry); "
                      f"first: {task_errors[0][1]}", RuntimeWarning, stacklevel=3)
    return computed, failed


# ---------------------------------------------------------------------------------------------
# reading a store (for the napari reader and the CLI)
# ---------------------------------------------------------------------------------------------
def open_series(path):
    """(zarr array (frames, *shape) float32, Grid, attrs dict) of a series store, read-only."""
    import zarr

    try:
        g = zarr.open_group(str(path), mode="r")
        arr = g[SERIES_ARRAY]
    except (FileNotFoundError, KeyError) as e:
        raise NirmpiError(f"{path}: not a nirmpi series store (no '{SERIES_ARRAY}' array): {e}") from None
    attrs = dict(arr.attrs)
    if "grid" not in attrs:
        raise NirmpiError(f"{path}/{SERIES_ARRAY}: attrs lack 'grid'")
    return arr, Grid.from_dict(attrs["grid"]), attrs


def series_status(path) -> dict:
    """How far a store is: chunks done / total, frames done, failed frames."""
    import zarr

    arr, grid, attrs = open_series(path)
    done = np.asarray(zarr.open_group(str(path), mode="r")[DONE_ARRAY][:])
    cf = attrs["chunk_frames"]
    frames_done = sum(min(cf, arr.shape[0] - c * cf) for c in np.flatnonzero(done))
    return {"chunks_done": int((done > 0).sum()), "chunks_total": int(done.size),
            "frames_done": int(frames_done), "frames_total": int(arr.shape[0]),
            "failed_frames": attrs.get("failed_frames", []), "complete": bool((done > 0).all())}
