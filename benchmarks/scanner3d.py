"""3D at scanner size: a 37³ volume with three receive channels (OpenMPIData's Bruker geometry).

    python -m benchmarks.scanner3d                  # cone, 37³, writes benchmarks/results/scanner3d.txt
    python -m benchmarks.scanner3d --grid 15 --quick

Prints, for one simulated case: simulation time and peak memory; Kaczmarz (150 sweeps) + tricubic
for several λ (tuned against the phantom: an oracle choice that favours the baseline); the NIR
routes side by side in one run: the default TrainConfig (SIREN, s ∈ 1..2 grid + pool) and
SIREN with one jittered point per voxel, both timed per step over a few steps and projected to
their budgets, and the feature-grid field run to its early stop; PSNR/SSIM at the native grid
and at 2x finer against the phantom rendered on each grid. Peak memory: resource maxrss (the
process) and tracemalloc (numpy). Pictures: max projections and central slices as PNG.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
import tracemalloc

import numpy as np
import torch

from napari_nirmpi.metrics import psnr, ssim
from napari_nirmpi.nir import TrainConfig, fit
from napari_nirmpi.nir.fast import FastConfig, fit_fast
from napari_nirmpi.resample import upsample
from napari_nirmpi.sample import sample
from napari_nirmpi.simulate import simulate_case
from napari_nirmpi.solvers import KaczmarzSystem

OUT = os.path.join(os.path.dirname(__file__), "results")


def maxrss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6   # kB on Linux


def score(img, ref) -> str:
    return f"{psnr(img, ref):6.2f} dB / {ssim(img, ref):.3f}"


def step_time(problem, make_run, steps: int) -> float:
    """Seconds per step of a run stopped by its callback after `steps` steps (warm-up excluded)."""
    marks = []

    def cb(state):
        marks.append((state.iteration, time.perf_counter()))
        return state.iteration >= steps

    make_run(cb)
    (i0, t0), (i1, t1) = marks[0], marks[-1]
    return (t1 - t0) / max(1, i1 - i0)


def simulate_2d_before_after(say):
    """The 2D default simulation (29² spiral system matrix): the numpy point loop the simulator
    used before 2026-12-03 against the numba kernel, side by side; the numbers must agree."""
    from napari_nirmpi.grid import Grid
    from napari_nirmpi.simulate import (Particles, Scanner, _chain, _moment_time, _voxel_volume, _weighted_moments,
                                        _xyz, system_matrix)

    sc, pa, g = Scanner(ndim=2), Particles(), Grid((29, 29), (29e-3, 29e-3))
    _weighted_moments(np.zeros((1, 1, 2)), np.ones((1, 1)), pa, sc)   # compiled before timing
    t = time.perf_counter()
    u = (np.arange(4) + 0.5) / 4 - 0.5
    offs = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2) * np.asarray(g.voxel_size)
    centres = g.points().reshape(-1, 2)
    V = sc.num_sampling_points
    mt = np.empty((g.size, 2, V))
    for o0 in range(0, g.size, 16):
        pts = centres[o0:o0 + 16, None, :] + offs[None]
        mt[o0:o0 + 16] = _moment_time(_xyz(pts), pa, sc).reshape(len(pts), 16, 2, V).mean(axis=1)
    ref = (np.fft.rfft(mt, axis=-1) / V).transpose(1, 2, 0) * (_chain(pa, sc) * pa.number_density * _voxel_volume(g, sc))[..., None]
    t_ref = time.perf_counter() - t
    system_matrix.cache_clear()
    t = time.perf_counter()
    new = system_matrix(pa, sc, g, 4)
    t_new = time.perf_counter() - t
    err = float(np.abs(new - ref).max() / np.abs(ref).max())
    say(f"2D default simulation (29² spiral system matrix, 2 channels x 817): numpy loop (before) {t_ref:.2f} s, "
        f"numba kernel (after) {t_new:.2f} s = {t_ref / t_new:.1f}x; max relative difference {err:.1e}. "
        f"The 2D NIR path (nir.train) is unchanged: its time and quality are those of docs/benchmarks.md.")


def pictures(path, volumes: dict, grid_mm):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(volumes)
    fig, axes = plt.subplots(len(names), 4, figsize=(12, 2.7 * len(names)))
    for r, name in enumerate(names):
        v = volumes[name]
        views = [("MIP along z (x-y)", v.max(0)), ("MIP along y (x-z)", v.max(1)),
                 ("central z slice", v[v.shape[0] // 2]), ("central y slice", v[:, v.shape[1] // 2])]
        for c, (title, im) in enumerate(views):
            ax = axes[r, c]
            fov = grid_mm[1:] if c in (0, 2) else (grid_mm[0], grid_mm[2])
            ax.imshow(im, origin="lower", cmap="magma", extent=(-fov[1] / 2, fov[1] / 2, -fov[0] / 2, fov[0] / 2))
            ax.set_title(f"{name}: {title}", fontsize=8)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", default="cone")
    ap.add_argument("--grid", type=int, default=37)
    ap.add_argument("--noise", default="medium")
    ap.add_argument("--lambdas", default="0.01,0.1,1")
    ap.add_argument("--steps", type=int, default=6, help="steps timed for the projected routes")
    ap.add_argument("--quick", action="store_true", help="fewer NIR steps (tests, smoke runs)")
    ap.add_argument("--out", default=os.path.join(OUT, "scanner3d.txt"))
    ap.add_argument("--png", default=os.path.join(OUT, "scanner3d.png"))
    a = ap.parse_args(argv)
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    tracemalloc.start()
    torch.manual_seed(0)
    say(f"# scanner3d: {a.phantom} {a.grid}³, OpenMPIData geometry, noise {a.noise}")
    say(f"# machine: {platform.machine()} {os.cpu_count()}-core CPU (shared with other jobs: timings noisy; "
        f"ratios measured in this one run), torch {torch.__version__}, {torch.get_num_threads()} threads")
    t = time.perf_counter()
    case = simulate_case(a.phantom, grid=(a.grid,) * 3, scanner="openmpi", noise=a.noise, seed=0)
    t_sim = time.perf_counter() - t
    problem = case.problem()
    sm_bytes = case.sm.nbytes
    gt = case.ground_truth()
    fine_shape = tuple(2 * n for n in case.grid.shape)
    gt2 = case.ground_truth(fine_shape)
    del case   # only the problem's rows stay (S: M x N complex64)
    say(f"simulation: {t_sim:.1f} s; calibration {sm_bytes / 1e9:.2f} GB complex64 (3 x 817 x {a.grid ** 3}); "
        f"problem S {problem.S.shape} ({problem.S.nbytes / 1e9:.2f} GB) after the 20-380 kHz band and SNR > 1.5")
    say(f"peak after simulation: maxrss {maxrss_gb():.2f} GB, numpy (tracemalloc) {tracemalloc.get_traced_memory()[1] / 1e9:.2f} GB")
    say("")
    say("| method | time to result | native PSNR / SSIM | 2x finer PSNR / SSIM |")
    say("|---|---|---|---|")
    volumes = {"phantom": gt}

    # Kaczmarz + tricubic, λ swept (oracle against the phantom)
    t = time.perf_counter()
    ks = KaczmarzSystem(problem.S)
    t_prep = time.perf_counter() - t
    best = None
    for lam in [float(x) for x in a.lambdas.split(",")]:
        t = time.perf_counter()
        img = ks.solve(problem.u, iterations=150, lam=lam).reshape(problem.grid.shape)
        tk = time.perf_counter() - t + t_prep
        up, _ = upsample(img, problem.grid, fine_shape, method="bicubic")
        say(f"| Kaczmarz 150 sweeps λ={lam:g} + tricubic | {tk:.1f} s | {score(img, gt)} | {score(up, gt2)} |")
        p = psnr(img, gt)
        if best is None or p > best[0]:
            best = (p, lam, img, up)
    volumes[f"Kaczmarz λ={best[1]:g}"] = best[2]
    del ks

    # projected routes: time per step over a few steps
    steps = 3 if a.quick else a.steps
    default = TrainConfig(log_every=1, preview_every=10 ** 6, val_every=10 ** 6)
    t_default = step_time(problem, lambda cb: fit(problem, default, callback=cb), steps)
    say(f"| NIR default TrainConfig (SIREN 3x128, s ∈ 1..2 + pool, 2000 steps, no early end) | "
        f"{t_default * default.iterations / 60:.0f} min projected ({t_default:.2f} s/step) | not run | not run |")
    siren_j = FastConfig(network="siren", lr=3e-4, log_every=1, val_every=10 ** 6)
    t_sj = step_time(problem, lambda cb: fit_fast(problem, siren_j, callback=cb), steps)
    say(f"| NIR SIREN 3x128, 1 jittered point per voxel (fit_fast) | {t_sj * FastConfig().iterations / 60:.0f} min projected for "
        f"{FastConfig().iterations} steps ({t_sj:.2f} s/step) | not run | not run |")
    grid_rb = FastConfig(row_batch=0.25, log_every=1, val_every=10 ** 6)
    t_rb = step_time(problem, lambda cb: fit_fast(problem, grid_rb, callback=cb), steps)
    grid_c = FastConfig(log_every=1, val_every=10 ** 6)
    t_gc = step_time(problem, lambda cb: fit_fast(problem, grid_c, callback=cb), steps)
    say(f"| per-step ratio: feature grid all rows / a quarter of the rows per step | {t_gc:.3f} s / {t_rb:.3f} s "
        f"= {t_gc / t_rb:.2f}x | | |")

    # the winner, run to its early stop
    cfg = FastConfig(iterations=300) if a.quick else FastConfig()
    t = time.perf_counter()
    field, state = fit_fast(problem, cfg)
    t_fit = time.perf_counter() - t
    nat, _ = sample(field, problem.grid.shape)
    t = time.perf_counter()
    fine, _ = sample(field, fine_shape)
    t_s2 = time.perf_counter() - t
    say(f"| NIR feature grid (6 levels x 4, MLP 32), 1 jittered point per voxel, early stop | {t_fit:.0f} s "
        f"({state.iteration} steps, best {state.best_iteration}; {state.stop_reason}) | {score(nat, gt)} | {score(fine, gt2)} |")
    volumes["NIR feature grid"] = nat
    say("")
    say(f"speed-up of the feature-grid run over the default's projection: {t_default * default.iterations / t_fit:.0f}x; "
        f"per step: default {t_default:.2f} s, SIREN jitter {t_sj:.2f} s, feature grid {t_gc:.3f} s")
    say(f"sampling the field at {fine_shape}: {t_s2:.1f} s")
    say(f"Kaczmarz λ chosen (best native PSNR against the phantom): {best[1]:g}")
    say(f"peak memory of the whole chain: maxrss {maxrss_gb():.2f} GB, numpy (tracemalloc) "
        f"{tracemalloc.get_traced_memory()[1] / 1e9:.2f} GB")
    mm = tuple(f * 1e3 for f in problem.grid.fov)
    pictures(a.png, volumes, mm)
    fine_vols = {"phantom 2x": gt2, f"Kaczmarz λ={best[1]:g} tricubic 2x": best[3], "NIR feature grid 2x": fine}
    pictures(a.png.replace(".png", "_2x.png"), fine_vols, mm)
    simulate_2d_before_after(say)
    say(f"pictures: {a.png}, {a.png.replace('.png', '_2x.png')}")
    say(f"command: python -m benchmarks.scanner3d {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
