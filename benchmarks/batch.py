"""Frame-series throughput: frames per second on 1 and 2 local Dask workers (Kaczmarz and NIR),
NIR warm-start savings on the bolus phantom, per-frame time on a GPU when there is one.

    python -m benchmarks.batch            # full (run it on a quiet machine)
    python -m benchmarks.batch --quick    # small, to check it works

Prints the figures and writes benchmarks/results/batch.json.
Throughput is steady state: each cluster first reconstructs a couple of frames into a scratch
store (workers import torch, compile numba, build and cache the Problem), then the timed run
reconstructs the series; `startup_s` is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _simulate(outdir, grid, frames, seed=0):
    from napari_nirmpi.simulate import simulate

    return simulate(outdir, phantom="bolus", grid=grid, frames=frames, seed=seed)


def _ground_truth(paths, grid_shape):
    """Per-foreground-frame ground truth at the native grid (F, *shape) or None."""
    p = paths.get("phantom") if isinstance(paths, dict) else None
    if p is None or not Path(p).exists():
        return None
    gt = np.load(p)
    if gt.ndim == len(grid_shape) + 1 and tuple(gt.shape[1:]) == tuple(grid_shape):
        return gt
    return None


def throughput(sm, meas, method, method_kwargs, workers, frames, chunk_frames, device, tmp,
               threads_per_worker=None):
    """(frames/s steady state, startup seconds, seconds) on a fresh LocalCluster of `workers`."""
    from napari_nirmpi import series as batch

    t0 = time.perf_counter()
    client, _ = batch.make_client(workers=workers, device=device, threads_per_worker=threads_per_worker)
    try:
        client.wait_for_workers(workers, timeout=120)
        # warm-up: every worker gets one chunk (imports, numba compile, Problem build + cache)
        batch.reconstruct_series(sm, meas, method, output=Path(tmp) / f"warm-{method}-{workers}.zarr",
                                 client=client, method_kwargs=method_kwargs, frames=f"0:{workers}",
                                 chunk_frames=1, device=device, progress=False, overwrite=True)
        startup = time.perf_counter() - t0
        res = batch.reconstruct_series(sm, meas, method, output=Path(tmp) / f"run-{method}-{workers}.zarr",
                                       client=client, method_kwargs=method_kwargs, frames=f"0:{frames}",
                                       chunk_frames=chunk_frames, device=device, progress=False,
                                       overwrite=True)
        threads = getattr(client, "_nirmpi_threads", None)
    finally:
        batch.close_client(client)
    # what a resume or `nirmpi batch --verify` adds: re-reading every chunk against its checksum
    t1 = time.perf_counter()
    ok = batch.verify_series(res.path)["ok"]
    verify_s = time.perf_counter() - t1
    return {"workers": workers, "threads_per_worker": threads, "frames": res.frames_total,
            "seconds": round(res.seconds, 3), "frames_per_second": round(res.frames_total / res.seconds, 3),
            "startup_s": round(startup, 2), "failed": len(res.failed_frames),
            "verify_s": round(verify_s, 4), "verify_ok": ok, "verify_vs_compute": round(verify_s / res.seconds, 4)}


def warm_start_savings(sm, meas, gt, cold_iterations, budgets, nframes, nir_kwargs, device, warm_lrs=(None,)):
    """Mean PSNR of frames 1..n-1 (vs ground truth): cold (each from scratch, cold_iterations)
    against warm (from the previous frame's field, each budget); smallest budget that reaches the
    cold quality and the share of steps it saves."""
    from napari_nirmpi import series as batch
    from napari_nirmpi.metrics import psnr
    from napari_nirmpi.preprocess import build_problem, measurement_frames
    from napari_nirmpi.sample import sample

    p = build_problem(sm, meas, frames=[0])
    u, _, _ = measurement_frames(meas, p, frames=list(range(nframes)), average=1)
    shape = p.grid.shape

    def score(img, i):
        return float(psnr(img, gt[i])) if gt is not None else float("nan")

    cold_cfg, _ = batch.nir_configs({**nir_kwargs, "iterations": cold_iterations}, device)
    t = time.perf_counter()
    cold_states = [batch.train_frame(p.with_u(u[i]), cold_cfg) for i in range(nframes)]
    cold_time = (time.perf_counter() - t) / nframes
    cold_imgs = [sample(s.field, shape)[0] for s in cold_states]
    cold_psnr = [score(cold_imgs[i], i) for i in range(nframes)]
    out = {"cold_iterations": cold_iterations, "frames": nframes,
           "cold_psnr_db": float(np.mean(cold_psnr[1:])), "cold_seconds_per_frame": round(cold_time, 3),
           "warm": []}
    for b, lr in [(b, lr) for lr in warm_lrs for b in budgets]:
        extra = {} if lr is None else {"warm_lr": lr}
        _, warm_cfg = batch.nir_configs({**nir_kwargs, "iterations": cold_iterations, "warm_iterations": b,
                                         **extra}, device)
        prev = cold_states[0].field
        ps = []
        t = time.perf_counter()
        for i in range(1, nframes):
            s = batch.train_frame(p.with_u(u[i]), warm_cfg, init_field=prev)
            prev = s.field
            ps.append(score(sample(s.field, shape)[0], i))
        out["warm"].append({"iterations": b, "lr": warm_cfg.lr, "psnr_db": float(np.mean(ps)),
                            "seconds_per_frame": round((time.perf_counter() - t) / (nframes - 1), 3)})
    ok = [w for w in out["warm"] if w["psnr_db"] >= out["cold_psnr_db"] - 0.1]
    if ok:
        best = min(ok, key=lambda w: (w["iterations"], -w["psnr_db"]))
        out["equal_quality_warm_iterations"] = best["iterations"]
        out["equal_quality_warm_lr"] = best["lr"]
        out["steps_saved_fraction"] = round(1 - best["iterations"] / cold_iterations, 3)
    else:
        out["equal_quality_warm_iterations"] = None
        out["steps_saved_fraction"] = None
    return out


def gpu_per_frame(sm, meas, nir_kwargs, iterations, warm_iterations, nframes, warm_lr=None):
    import torch

    from napari_nirmpi import series as batch, solvers
    from napari_nirmpi.preprocess import build_problem, measurement_frames

    if not torch.cuda.is_available():
        return None
    p = build_problem(sm, meas, frames=[0])
    u, _, _ = measurement_frames(meas, p, frames=list(range(nframes)), average=1)
    cold, warm = batch.nir_configs({**nir_kwargs, "iterations": iterations, "warm_iterations": warm_iterations,
                                    **({} if warm_lr is None else {"warm_lr": warm_lr})}, "cuda")
    batch.train_frame(p.with_u(u[0]), _replace_iters(cold, 20))  # CUDA context, kernels
    torch.cuda.synchronize()
    t = time.perf_counter()
    s = batch.train_frame(p.with_u(u[0]), cold)
    torch.cuda.synchronize()
    t_cold = time.perf_counter() - t
    prev = s.field
    t = time.perf_counter()
    for i in range(1, nframes):
        prev = batch.train_frame(p.with_u(u[i]), warm, init_field=prev).field
    torch.cuda.synchronize()
    t_warm = (time.perf_counter() - t) / max(1, nframes - 1)
    system = solvers.KaczmarzSystem(p.S)
    t = time.perf_counter()
    solvers.kaczmarz(system, u)
    t_kz = (time.perf_counter() - t) / nframes
    return {"device": torch.cuda.get_device_name(0), "nir_cold_s_per_frame": round(t_cold, 3),
            "nir_warm_s_per_frame": round(t_warm, 3), "nir_iterations": iterations,
            "nir_warm_iterations": warm_iterations, "nir_warm_lr": warm.lr,
            "kaczmarz_cpu_s_per_frame_batched": round(t_kz, 4)}


def _replace_iters(cfg, n):
    import dataclasses

    return dataclasses.replace(cfg, iterations=n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script works")
    ap.add_argument("--output", default=str(HERE / "results" / "batch.json"))
    ap.add_argument("--workers", default="1,2", help="worker counts to time, e.g. 1,2")
    ap.add_argument("--device", default="auto", help="device of the warm-start study (auto: CUDA if present)")
    ap.add_argument("--threads-per-worker", type=int, default=1,
                    help="compute threads per worker (default 1: scaling at equal per-worker resources; "
                         "0 = cores // workers)")
    ap.add_argument("--skip-throughput", action="store_true", help="skip the 1/2-worker throughput runs")
    ap.add_argument("--skip-warm", action="store_true", help="skip the warm-start quality study")
    ap.add_argument("--warm-lrs", default="1e-3,3e-4,1e-4",
                    help="learning rates of warm-started frames to try (cold: 1e-3, cosine to 5e-5)")
    ap.add_argument("--nir-config", default="{}",
                    help='JSON overrides of the throughput runs\' NIR kwargs, e.g. \'{"operator": "pool"}\'')
    a = ap.parse_args(argv)
    q = a.quick
    grid = 13 if q else 29
    frames = 8 if q else 48
    kz_kwargs = {"iterations": 20 if q else 150, "lam": 0.5}
    # NIR throughput on CPU workers: fixed budgets (no early stopping) so every frame costs the same
    nir_kwargs = {"width": 32 if q else 64, "depth": 1 if q else 2, "iterations": 60 if q else 500,
                  "warm_iterations": 20 if q else 100, "early_stopping": False, "val_fraction": 0.0,
                  "max_scale": 2 if q else 3, "operator": "auto", "seed": 0}
    nir_kwargs.update(json.loads(a.nir_config))
    nir_frames, nir_chunk = (4, 2) if q else (16, 4)
    # warm-start study and GPU timing: the default network, a fixed cold budget
    study = {"width": 32 if q else 128, "depth": 1 if q else 3, "early_stopping": False,
             "val_fraction": 0.0, "max_scale": 2 if q else 5, "seed": 0}
    cold_iterations = 60 if q else 1500
    workers = [int(w) for w in a.workers.split(",")]
    cores = os.cpu_count()
    result = {"machine": {"cpu_count": cores, "platform": platform.platform(), "python": sys.version.split()[0]},
              "quick": q, "grid": grid, "frames": frames,
              "kaczmarz": {"method_kwargs": kz_kwargs, "chunk_frames": 8, "runs": []},
              "nir": {"method_kwargs": nir_kwargs, "frames": nir_frames, "chunk_frames": nir_chunk, "runs": []}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = _simulate(Path(tmp) / "data", grid, max(frames, nir_frames, 8))
        sm, meas = str(paths["sm"]), str(paths["meas"])
        if not a.skip_throughput:
            for w in workers:
                r = throughput(sm, meas, "kaczmarz", kz_kwargs, w, frames, 8, "cpu", tmp, a.threads_per_worker or None)
                result["kaczmarz"]["runs"].append(r)
                print(f"kaczmarz  {w} worker(s) x {r['threads_per_worker']} threads: "
                      f"{r['frames_per_second']:8.2f} frames/s  ({r['frames']} frames in {r['seconds']} s; "
                      f"startup {r['startup_s']} s); checksum check of the store {r['verify_s']} s "
                      f"= {r['verify_vs_compute']:.4f} x the compute time", flush=True)
            for w in workers:
                r = throughput(sm, meas, "nir", nir_kwargs, w, nir_frames, nir_chunk, "cpu", tmp,
                               a.threads_per_worker or None)
                result["nir"]["runs"].append(r)
                print(f"nir       {w} worker(s) x {r['threads_per_worker']} threads: "
                      f"{r['frames_per_second']:8.3f} frames/s  ({r['frames']} frames in {r['seconds']} s; "
                      f"startup {r['startup_s']} s)", flush=True)
            for m in ("kaczmarz", "nir"):
                runs = {r["workers"]: r["frames_per_second"] for r in result[m]["runs"]}
                if 1 in runs and 2 in runs:
                    result[m]["speedup_2_vs_1"] = round(runs[2] / runs[1], 3)
                    print(f"{m}: 2 workers / 1 worker = {result[m]['speedup_2_vs_1']:.2f}x"
                          + ("  (goal >= 1.7x)" if m == "nir" else ""), flush=True)
        if not a.skip_warm:
            import torch

            dev = a.device
            if dev == "auto":
                dev = "cuda" if torch.cuda.is_available() else "cpu"
            gt = _ground_truth(paths, (grid, grid))
            budgets = [cold_iterations // k for k in ((8, 4, 2) if q else (16, 8, 4, 2))]
            lrs = [float(x) for x in a.warm_lrs.split(",")]
            ws = warm_start_savings(sm, meas, gt, cold_iterations, budgets, 4 if q else 8, study, dev, lrs)
            ws["device"] = dev
            ws["network"] = study
            result["nir_warm_start"] = ws
            print(f"warm start (bolus, {ws['frames']} frames, {dev}): cold {cold_iterations} it -> "
                  f"{ws['cold_psnr_db']:.2f} dB, {ws['cold_seconds_per_frame']} s/frame")
            for w in ws["warm"]:
                print(f"   warm {w['iterations']:5d} it, lr {w['lr']:.0e} -> {w['psnr_db']:.2f} dB, "
                      f"{w['seconds_per_frame']} s/frame")
            if ws["steps_saved_fraction"] is not None:
                print(f"   equal quality (within 0.1 dB) at {ws['equal_quality_warm_iterations']} it "
                      f"(lr {ws['equal_quality_warm_lr']:.0e}): "
                      f"{100 * ws['steps_saved_fraction']:.0f}% of the steps saved")
            else:
                print("   no warm budget tried reached the cold quality")
        ws = result.get("nir_warm_start") or {}
        g = gpu_per_frame(sm, meas, study, cold_iterations,
                          ws.get("equal_quality_warm_iterations") or cold_iterations // 8, 4 if q else 8,
                          ws.get("equal_quality_warm_lr"))
        result["gpu"] = g
        if g:
            print(f"GPU {g['device']}: NIR cold {g['nir_cold_s_per_frame']} s/frame ({cold_iterations} it), "
                  f"warm {g['nir_warm_s_per_frame']} s/frame ({g['nir_warm_iterations']} it); "
                  f"Kaczmarz (CPU, batched) {g['kaczmarz_cpu_s_per_frame_batched']} s/frame")
            # the same through reconstruct_series: one Dask worker per GPU, chunks of 8 frames
            import torch

            ngpu = torch.cuda.device_count()
            kw = {**study, "iterations": cold_iterations, "warm_iterations": g["nir_warm_iterations"]}
            if g.get("nir_warm_lr") is not None:
                kw["warm_lr"] = g["nir_warm_lr"]
            r = throughput(sm, meas, "nir", kw, ngpu, 8 * ngpu, 8, "auto", tmp)
            g["batch"] = {**r, "method_kwargs": kw, "chunk_frames": 8}
            print(f"GPU batch (reconstruct_series, {ngpu} GPU worker(s), chunks of 8): "
                  f"{r['frames_per_second']:.3f} frames/s ({r['frames']} frames in {r['seconds']} s)")
        else:
            print("GPU: none (torch.cuda.is_available() is False)")
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
