"""The worker side of a frame series: per-process caches, reading a chunk's frames, solving.

Every reconstruction method a series can use is ONE entry of the `METHODS` table (a `Method`:
how to check its keywords on the client, how to solve a chunk on a worker, its default chunk
size). Kaczmarz solves a chunk as one multi-right-hand-side call; NIR trains frame after frame,
each warm-started from the previous frame's field (`nir_configs`); the methods of
`napari_nirmpi.classic` (when that module is installed) solve frame by frame through
`classic.reconstruct`. A task reads only its own frames: the Problem (system-matrix rows,
background, row scaling) is built ONCE per worker process and cached.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import NirmpiError
from .cluster import configure_threads, worker_address, worker_device


@dataclass(frozen=True)
class Job:
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


def worker_stats() -> dict:
    """This process's counters (call with `client.run(worker_stats)`)."""
    return dict(STATS, cached_problems=len(_PROBLEMS), pid=os.getpid())


def _problem(job: Job):
    key = job.cache_key()
    with _PROBLEM_LOCK:
        if key not in _PROBLEMS:
            from .. import preprocess

            _PROBLEMS.clear()  # one series per worker at a time: do not hold stale matrices
            # frames=[0]: the Problem's own u is not used, so read one frame, not the whole series
            _PROBLEMS[key] = preprocess.build_problem(job.sm, job.meas, **job.preprocess, frames=[0])
            STATS["problem_builds"] += 1
        return _PROBLEMS[key]


def _rhs(job: Job, problem, blocks: list[list[int]], raw_blocks: list[list[int]]) -> tuple[np.ndarray, dict]:
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


def _read_blocks(job: Job, problem, blocks, raw_blocks) -> np.ndarray:
    from .. import preprocess

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


# ---------------------------------------------------------------------------------------------
# methods: one entry each
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """How a series runs one reconstruction method.

    check(method_kwargs): on the client, before any task runs; raise NirmpiError on bad keywords.
    solve(job, problem, u (F, M), good (F,) bool, failures dict) -> (images (F, *out_shape)
        float32 with NaN where not solved, extra dict stored per chunk); runs on a worker and may
        add {frame in chunk: message} to `failures`.
    chunk_frames: default output frames per task (and per zarr chunk).
    sampling_grid: whether method_kwargs["grid"] chooses the output grid (else: the SM grid).
    """

    name: str
    check: Callable[[dict], None]
    solve: Callable[..., tuple]
    chunk_frames: int = 8
    sampling_grid: bool = False


def _check_kaczmarz(method_kwargs: dict) -> None:
    from .. import solvers

    names = set(inspect.signature(solvers.kaczmarz).parameters) - {"S", "u", "snapshots"}
    unknown = sorted(set(method_kwargs) - names)
    if unknown:
        raise NirmpiError(f"method_kwargs {unknown}: not kaczmarz settings (expected some of {sorted(names)})")


def _solve_kaczmarz(job: Job, problem, u: np.ndarray, good: np.ndarray, failures: dict) -> tuple[np.ndarray, dict]:
    from .. import solvers

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
    start from the previous frame's field; 'grid' (the sampling shape) is ignored here; 'preset':
    "fast" / "fast_tv" start from TrainConfig.fast() / fast_tv(tv_weight) (the feature grid) instead
    of TrainConfig()."""
    from ..nir.train import TrainConfig

    kw = dict(method_kwargs)
    kw.pop("grid", None)
    preset = kw.pop("preset", None)
    if preset not in (None, "default", "fast", "fast_tv"):
        raise NirmpiError(f"method_kwargs preset={preset!r}: expected 'default', 'fast' or 'fast_tv'")
    warm_iterations = kw.pop("warm_iterations", None)
    warm_lr = kw.pop("warm_lr", None)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(kw) - names)
    if unknown:
        raise NirmpiError(f"method_kwargs {unknown}: not TrainConfig settings (expected some of {sorted(names)}, "
                          "'grid', 'preset', 'warm_iterations', 'warm_lr')")
    if "preview_every" in names:
        kw.setdefault("preview_every", 10**9)  # no previews in batch: they cost a forward pass each
    if "device" in names:
        kw["device"] = device
    if preset == "fast_tv":
        cold = TrainConfig.fast_tv(kw.pop("tv_weight", 0.3), **kw)
    else:
        cold = (TrainConfig.fast if preset == "fast" else TrainConfig)(**kw)
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
    """Final TrainState of NIR training on one frame; with `init_field`, training starts from that
    field's weights and keeps its output scale (so its first iterate IS the previous frame's image)."""
    from ..nir.train import fit, train

    # the one training loop, `nir.fit`, once it takes a starting field; the bare generator before
    if "init_field" in inspect.signature(fit).parameters:
        _, state = fit(problem, config, init_field=init_field)
        return state
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


def _solve_nir(job: Job, problem, u: np.ndarray, good: np.ndarray, failures: dict) -> tuple[np.ndarray, dict]:
    """Train one field per frame; each frame starts from the previous good frame's field."""
    from ..sample import sample

    cold, warm = nir_configs(job.method_kwargs, worker_device(job.device))
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


def _classic_method(name: str) -> Method:
    """A method of `napari_nirmpi.classic`, solved frame by frame through `classic.reconstruct`
    (method_kwargs: its reg, lam, iterations, …; "grid" solves on that finer grid)."""

    def check(method_kwargs: dict) -> None:
        from .. import classic

        bad = sorted({"method", "device", "problem"} & set(method_kwargs))
        if bad:
            raise NirmpiError(f"method_kwargs {bad}: set by the series itself, not for {name}")
        validate = getattr(classic, "validate", None)
        if validate is not None:
            validate(method=name, **method_kwargs)

    def solve(job: Job, problem, u, good, failures):
        from .. import classic

        images = np.full((u.shape[0], *job.out_shape), np.nan, np.float32)
        kw = dict(job.method_kwargs)
        if "grid" in kw:
            kw["grid"] = tuple(job.out_shape)
        lams = []
        for i in np.flatnonzero(good):
            try:
                res = classic.reconstruct(problem.with_u(u[i]), method=name, device=worker_device(job.device), **kw)
                images[i] = np.asarray(res.image, np.float32).reshape(job.out_shape)
                lams.append(res.lam)
            except NirmpiError as e:
                failures[int(i)] = f"{type(e).__name__}: {e}"
        return images, {"lam": lams}

    return Method(name, check, solve, chunk_frames=8, sampling_grid=True)


_BUILTIN = {
    "kaczmarz": Method("kaczmarz", _check_kaczmarz, _solve_kaczmarz, chunk_frames=8),
    "nir": Method("nir", lambda kw: nir_configs(kw), _solve_nir, chunk_frames=4, sampling_grid=True),
}


def methods() -> dict[str, Method]:
    """Every method a series can use: the built-in ones plus `classic.METHODS` when present."""
    table = dict(_BUILTIN)
    try:
        from .. import classic
    except ImportError:
        return table
    for name in getattr(classic, "METHODS", ()):
        table.setdefault(str(name), _classic_method(str(name)))
    return table


def get_method(name: str) -> Method:
    table = methods()
    key = str(name).lower()
    if key not in table:
        raise NirmpiError(f"method {name!r}: expected one of {tuple(table)}")
    return table[key]


def check_method_kwargs(method: str, method_kwargs: dict) -> None:
    """Fail on the client, before any task runs, on keywords the method does not take."""
    get_method(method).check(method_kwargs)


def run_chunk(job: Job, chunk: int, blocks: list[list[int]], raw_blocks: list[list[int]]) -> dict:
    """One task (runs on a worker): reconstruct the output frames of chunk `chunk`; `blocks` are
    foreground positions per output frame, `raw_blocks` the same as file frame numbers."""
    from .store import jsonable

    t0 = time.perf_counter()
    configure_threads(job.threads)
    problem = _problem(job)
    u, failures = _rhs(job, problem, blocks, raw_blocks)
    finite = np.isfinite(u.real).all(axis=1) & np.isfinite(u.imag).all(axis=1)
    for i in np.flatnonzero(~finite):
        if i in failures:
            continue
        bad = int((~(np.isfinite(u[i].real) & np.isfinite(u[i].imag))).sum())
        failures[int(i)] = f"measurement frame(s) {raw_blocks[i]} contain NaN/Inf ({bad} of {u.shape[1]} rows)"
    images, extra = get_method(job.method).solve(job, problem, u, finite, failures)
    bad_out = ~np.isfinite(images.reshape(len(blocks), -1)).all(axis=1)
    for i in np.flatnonzero(bad_out):
        failures.setdefault(int(i), "reconstruction contains NaN/Inf")
        images[i] = np.nan
    STATS["chunks"] += 1
    STATS["frames"] += len(blocks)
    return {"chunk": chunk, "images": images, "failures": failures, "seconds": time.perf_counter() - t0,
            "worker": worker_address(), "pid": os.getpid(),
            "problem_params": jsonable({k: v for k, v in problem.params.items() if k not in ("frames", "average")}),
            "problem_rows": int(problem.S.shape[0]), **extra}
