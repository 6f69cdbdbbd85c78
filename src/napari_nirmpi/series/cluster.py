"""Dask clients for frame series: a LocalCluster sized to the machine (one worker per GPU, or
cores split between workers), an existing scheduler, or a one-worker in-process cluster for the
napari GUI; and which device a worker uses."""

from __future__ import annotations

import hashlib
import os

from ..errors import NirmpiError

_THREADS_SET = False


def configure_threads(threads: int | None):
    """Give torch this worker's share of the cores once (so workers do not fight)."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    import torch

    n = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
    _THREADS_SET = True


def worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return ""


def worker_device(device: str) -> str:
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


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def make_client(scheduler=None, workers: int | None = None, *, threads_per_worker: int | None = None,
                device: str = "auto", max_workers: int | None = None, in_process: bool = False):
    """A Dask client and whether the caller owns (must close it with `close_client`).

    `scheduler`: an existing `distributed.Client` (used as is), a scheduler address
    ("tcp://HOST:PORT"; workers there should be started with `--nthreads 1`), or None for a
    LocalCluster on this machine: loopback only, no dashboard, one task at a time per worker,
    `workers` workers (default: one per GPU when CUDA is there and `device` allows it, else
    min(cores, max_workers)), each with cores // workers compute threads (OMP/MKL/torch) so that
    workers do not fight over cores. `in_process=True`: one worker thread in this process (starts
    in well under a second and needs no `__main__` guard: what the napari GUI uses).
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
    if in_process:
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                               silence_logs=50)
        threads = threads_per_worker
    else:
        ngpu = gpu_count() if device in ("auto", "cuda") or str(device).startswith("cuda") else 0
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


def worker_count(client) -> int:
    import inspect

    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        return len(client.scheduler_info(n_workers=-1)["workers"])
    return len(client.scheduler_info()["workers"])
