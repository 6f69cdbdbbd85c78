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
from napari_nirmpi.classic import reconstruct
from napari_nirmpi.resample import upsample
from napari_nirmpi.sample import sample
from napari_nirmpi.simulate import simulate_case
from napari_nirmpi.solvers import KaczmarzSystem

OUT = os.path.join(os.path.dirname(__file__), "results")
TV_WEIGHT = 0.3   # TrainConfig.fast_tv's weight (chosen of 0.15 / 0.3 / 0.6 on the 37³ cone, docs/research-notes.md)


def _lam(lam) -> str:
    if isinstance(lam, dict):
        return ",".join(f"{v:.2g}" for v in lam.values())
    return f"{float(lam):.2g}"


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
        f"numba kernel (after) {t_new:.2f} s = {t_ref / t_new:.1f}x; max relative difference {err:.1e}")


def nir_2d_before_after(say, quick=False):
    """The 2D default (29² spiral, medium noise, scored at 104²) beside the 3D route's settings in
    2D, in one run: time to result and quality of TrainConfig() and of TrainConfig.fast()."""
    from napari_nirmpi.solvers import reconstruct_kaczmarz

    case = simulate_case("spiral", grid=29, noise="medium", seed=0)
    prob = case.problem()
    gt = case.ground_truth((104, 104))
    k = reconstruct_kaczmarz(prob, iterations=150, lam=0.5)
    kup, _ = upsample(k, prob.grid, (104, 104), method="bicubic")
    say(f"2D spiral 29² -> 104² (medium noise): Kaczmarz λ 0.5 + bicubic {score(kup, gt)}")
    for label, cfg in (("TrainConfig() (the 2D default)", TrainConfig()),
                       ("TrainConfig.fast() (the 3D route)", TrainConfig.fast()),
                       (f"TrainConfig.fast_tv({TV_WEIGHT:g})", TrainConfig.fast_tv(TV_WEIGHT))):
        if quick:
            cfg = TrainConfig(**{**cfg.to_dict(), "iterations": 100, "stopping": None})
        t = time.perf_counter()
        field, st = fit(prob, cfg)
        dt = time.perf_counter() - t
        img, _ = sample(field, (104, 104))
        say(f"2D {label}: {dt:.1f} s ({st.iteration} steps, best {st.best_iteration}) {score(img, gt)} at 104²")


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
    ap.add_argument("--l1-start", action="store_true",
                    help="also TrainConfig.fast(init='fista-l1'): the start for thin structures (--phantom tubes)")
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
    say(f"# machine: {platform.machine()} {os.cpu_count()}-core CPU, load average {os.getloadavg()[0]:.1f} at the "
        f"start (ratios measured in this one run), torch {torch.__version__}, {torch.get_num_threads()} threads")
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

    # the regularised classic methods, λ chosen automatically (no ground truth), native + tricubic
    classic = {}
    for method, reg in (("cgnr", "l2"), ("fista", "l1"), ("pdhg", "tv")):
        t = time.perf_counter()
        res = reconstruct(problem, method, reg, "auto")
        tc = time.perf_counter() - t
        up, _ = upsample(res.image, problem.grid, fine_shape, method="bicubic")
        classic[method] = res
        say(f"| {method.upper()}-{reg.upper()} auto λ={_lam(res.lam)} + tricubic | {tc:.1f} s | "
            f"{score(res.image, gt)} | {score(up, gt2)} |")
    tv_auto = classic["pdhg"]
    volumes[f"PDHG-TV auto λ={_lam(tv_auto.lam)}"] = tv_auto.image
    lam_tv = float(tv_auto.lam["tv"]) if isinstance(tv_auto.lam, dict) else float(tv_auto.lam)
    for f in (0.3, 3.0):    # the oracle's neighbours of the automatic λ
        res = reconstruct(problem, "pdhg", "tv", lam_tv * f)
        up, _ = upsample(res.image, problem.grid, fine_shape, method="bicubic")
        say(f"| PDHG-TV λ={lam_tv * f:.2g} (oracle sweep) + tricubic | {res.info['seconds']:.1f} s | "
            f"{score(res.image, gt)} | {score(up, gt2)} |")
    if not a.quick:
        t = time.perf_counter()
        res = reconstruct(problem, "pdhg", "tv", "auto", grid=fine_shape)
        say(f"| PDHG-TV auto λ={_lam(res.lam)} solved on {fine_shape[0]}³ | {time.perf_counter() - t:.1f} s | - | "
            f"{score(res.image, gt2)} |")
        tv_fine = res.image
        del res

    # projected routes: time per step over a few steps
    steps = 3 if a.quick else a.steps
    default = TrainConfig(log_every=1, preview_every=10 ** 6, val_every=10 ** 6)
    t_default = step_time(problem, lambda cb: fit(problem, default, callback=cb), steps)
    say(f"| NIR default TrainConfig (SIREN 3x128, s ∈ 1..2 + pool, 2000 steps, no early end) | "
        f"{t_default * default.iterations / 60:.0f} min projected ({t_default:.2f} s/step) | not run | not run |")
    siren_j = TrainConfig(sampling="jitter", jitter_points=1, log_every=1, val_every=10 ** 6, preview_every=10 ** 6)
    t_sj = step_time(problem, lambda cb: fit(problem, siren_j, callback=cb), steps)
    fast_iters = TrainConfig.fast().iterations
    say(f"| NIR SIREN 3x128, 1 jittered point per voxel | {t_sj * fast_iters / 60:.0f} min projected for "
        f"{fast_iters} steps ({t_sj:.2f} s/step) | not run | not run |")
    grid_c = TrainConfig.fast(log_every=1, val_every=10 ** 6, preview_every=10 ** 6)
    t_gc = step_time(problem, lambda cb: fit(problem, grid_c, callback=cb), steps)

    # the feature-grid route to its early stop, without and with the TV prior
    nir = {}
    # fast_tv from random weights: the preset as it was before the PDHG-TV start (2026-12-03)
    cold_tv = TrainConfig.fast_tv(TV_WEIGHT, init=None)
    for label, cfg in (("NIR TrainConfig.fast() (feature grid, 1 jittered point per voxel, early stop)",
                        TrainConfig.fast()),
                       (f"NIR TrainConfig.fast_tv({TV_WEIGHT:g}) from random weights (TV prior, unweighted rows, "
                        f"2 jittered points, lr 3e-2, whole 1200-step budget)", cold_tv),
                       (f"NIR TrainConfig.fast_tv({TV_WEIGHT:g}) (the same prior, started from the PDHG-TV image: "
                        f"auto λ + image fit, then lr 1e-3, 600 steps, every row; time includes PDHG-TV)",
                        TrainConfig.fast_tv(TV_WEIGHT))) + ((
                       ("NIR TrainConfig.fast(init='fista-l1') (started from the FISTA-ℓ1 image, no prior; time "
                        "includes FISTA-ℓ1)", TrainConfig.fast(init="fista-l1")),) if a.l1_start else ()):
        if a.quick:
            cfg = TrainConfig(**{**cfg.to_dict(), "iterations": min(cfg.iterations, 300), "stopping": None})
        t = time.perf_counter()
        field, state = fit(problem, cfg)
        t_fit = time.perf_counter() - t
        nat, _ = sample(field, problem.grid.shape)
        t = time.perf_counter()
        fine, _ = sample(field, fine_shape)
        t_s2 = time.perf_counter() - t
        say(f"| {label} | {t_fit:.0f} s ({state.iteration} steps, best {state.best_iteration}; "
            f"{state.stop_reason.split(' [')[0]}) | {score(nat, gt)} | {score(fine, gt2)} |")
        nir[label] = (t_fit, nat, fine)
    labels = list(nir)
    volumes["NIR fast"], volumes[f"NIR fast_tv {TV_WEIGHT:g}"] = nir[labels[0]][1], nir[labels[2]][1]
    t_fit = nir[labels[0]][0]
    say("")
    say(f"speed-up of TrainConfig.fast() over the default's projection: {t_default * default.iterations / t_fit:.0f}x; "
        f"per step: default {t_default:.2f} s, SIREN jitter {t_sj:.2f} s, feature grid {t_gc:.3f} s")
    say(f"sampling the field at {fine_shape}: {t_s2:.1f} s")
    say(f"Kaczmarz λ chosen (best native PSNR against the phantom): {best[1]:g}")
    say(f"peak memory of the whole chain: maxrss {maxrss_gb():.2f} GB, numpy (tracemalloc) "
        f"{tracemalloc.get_traced_memory()[1] / 1e9:.2f} GB")
    mm = tuple(f * 1e3 for f in problem.grid.fov)
    pictures(a.png, volumes, mm)
    fine_vols = {"phantom 2x": gt2, f"Kaczmarz λ={best[1]:g} tricubic 2x": best[3]}
    if not a.quick:
        fine_vols[f"PDHG-TV auto on {fine_shape[0]}³"] = tv_fine
    fine_vols["NIR fast 2x"], fine_vols[f"NIR fast_tv {TV_WEIGHT:g} 2x"] = nir[labels[0]][2], nir[labels[2]][2]
    pictures(a.png.replace(".png", "_2x.png"), fine_vols, mm)
    simulate_2d_before_after(say)
    nir_2d_before_after(say, a.quick)
    say(f"pictures: {a.png}, {a.png.replace('.png', '_2x.png')}")
    say(f"command: python -m benchmarks.scanner3d {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
