"""NIR (default preset, iterate selection on held-out rows) vs Kaczmarz-ℓ2 + bicubic on simulated cases.

For each case (29² native grid): Kaczmarz-ℓ2 (150 sweeps, λ = 0.5, non-negative; the paper's
baseline) on the native grid, bicubic up-sampling to 29², 54², 79², 104²; NIR trained with
`napari_nirmpi.nir.fit(problem, TrainConfig())` (the default trains its 2000-iteration budget and
returns the checkpoint with the lowest misfit on held-out rows; no ground truth involved) and
sampled on the same grids. PSNR / SSIM against the phantom rendered on each grid (least-squares
intensity fit, data range 1, `napari_nirmpi.metrics`). Also: the wall time of training (until its
rule stops it) and until the returned iterate, ms/iteration of the default and of the paper
preset (`TrainConfig.paper()`, timed for a few hundred iterations in the same run).

    python -m benchmarks.nir_quality             # full (run it on a quiet machine)
    python -m benchmarks.nir_quality --quick     # smoke test: short training, spiral only

Writes benchmarks/results/nir_quality.json and docs/images/nir_vs_kaczmarz.png (--quick: *_quick
files under benchmarks/results/, so a smoke test never overwrites the full results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from napari_nirmpi.metrics import psnr, ssim
from napari_nirmpi.nir import TrainConfig, fit
from napari_nirmpi.resample import upsample
from napari_nirmpi.sample import sample
from napari_nirmpi.simulate import simulate_case
from napari_nirmpi.solvers import reconstruct_kaczmarz

ROOT = Path(__file__).resolve().parents[1]
GRIDS = (29, 54, 79, 104)
CASES = {
    "spiral (medium noise)": dict(phantom="spiral", noise="medium"),
    "spiral (high noise)": dict(phantom="spiral", noise="high"),
    "resolution dots": dict(phantom="resolution", noise="medium"),
    "point source": dict(phantom="point", noise="medium"),
}


def time_preset(prob, cfg: TrainConfig, iterations: int) -> float:
    """ms per iteration over `iterations` steps (after 5 warm-up steps)."""
    cfg = TrainConfig(**{**cfg.to_dict(), "stopping": None, "iterations": iterations + 5,
                         "early_stopping": False, "val_fraction": 0.0, "log_every": 5,
                         "preview_every": 10 ** 9})
    t_warm = []

    def warm(st):
        if st.iteration == 5:
            t_warm.append(st.elapsed)

    _, st = fit(prob, cfg, callback=warm)
    return 1000 * (st.elapsed - t_warm[0]) / iterations


def run_case(name, spec, cfg, seed=0):
    case = simulate_case(grid=29, seed=seed, **spec)
    prob = case.problem()
    t0 = time.perf_counter()
    k = reconstruct_kaczmarz(prob, iterations=150, lam=0.5)
    t_k = time.perf_counter() - t0
    states = []
    field, st = fit(prob, cfg, callback=lambda s: states.append((s.iteration, s.elapsed)))
    elapsed_at = dict(states)
    t_best = min((e for i, e in states if i >= st.best_iteration), default=st.elapsed)
    res = {"case": name, "spec": spec, "rows": int(prob.num_rows), "kaczmarz_s": t_k,
           "nir": {"stop_iteration": st.iteration, "best_iteration": st.best_iteration,
                   "stop_reason": st.stop_reason, "train_s": st.elapsed, "time_to_best_s": t_best,
                   "ms_per_iteration": 1000 * st.elapsed / st.iteration},
           "grids": {}, "_field": field}
    images = {}
    for n in GRIDS:
        gt = case.ground_truth((n, n))
        kup, _ = upsample(k, prob.grid, (n, n), method="bicubic")
        nir, _ = sample(field, (n, n))
        res["grids"][n] = {"kaczmarz_psnr": psnr(kup, gt), "kaczmarz_ssim": ssim(kup, gt),
                           "nir_psnr": psnr(nir, gt), "nir_ssim": ssim(nir, gt)}
        images[n] = (gt, kup, nir)
    return res, images


def sampler_timing(field, shape=(1024, 1024), repeats=3) -> float:
    """Best-of-`repeats` seconds to render the trained field on `shape` (whole FOV)."""
    sample(field, (64, 64))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        img, _ = sample(field, shape)
        best = min(best, time.perf_counter() - t0)
    assert img.shape == tuple(shape)
    return best


def run_3d(cfg, n=9, factor=2, seed=0):
    """A small 3D case: train on n³ and sample at factor·n per axis (PSNR vs the 3D phantom)."""
    case = simulate_case("ellipses", grid=n, ndim=3, seed=seed, noise="medium")
    prob = case.problem()
    k = reconstruct_kaczmarz(prob, iterations=150, lam=0.5)
    t0 = time.perf_counter()
    field, st = fit(prob, cfg)
    t_train = time.perf_counter() - t0
    fine = (n * factor,) * 3
    t0 = time.perf_counter()
    nir, g = sample(field, fine)
    t_sample = time.perf_counter() - t0
    gt = case.ground_truth(fine)
    kup, _ = upsample(k, prob.grid, fine, method="bicubic")
    return {"grid": [n] * 3, "sampled": list(fine), "rows": int(prob.num_rows), "train_s": t_train,
            "stop_iteration": st.iteration, "best_iteration": st.best_iteration, "sample_s": t_sample,
            "kaczmarz_psnr": psnr(kup, gt), "kaczmarz_ssim": ssim(kup, gt),
            "nir_psnr": psnr(nir, gt), "nir_ssim": ssim(nir, gt)}


def figure(all_images, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(all_images)
    rows = [(nm, kind) for nm in names for kind in ("ground truth", "Kaczmarz + bicubic", "NIR")]
    fig, axes = plt.subplots(len(rows), len(GRIDS), figsize=(2.2 * len(GRIDS), 2.2 * len(rows)))
    axes = np.atleast_2d(axes)
    for r, (nm, kind) in enumerate(rows):
        for c, n in enumerate(GRIDS):
            gt, kup, nir = all_images[nm][n]
            img = {"ground truth": gt, "Kaczmarz + bicubic": kup, "NIR": nir}[kind]
            ax = axes[r, c]
            ax.imshow(img, cmap="magma", vmin=0, vmax=max(float(np.percentile(img, 99.8)), 1e-12))
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{n}²")
            if c == 0:
                ax.set_ylabel(f"{nm}\n{kind}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short training on the spiral only (smoke test)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu: the 2-core target)")
    ap.add_argument("--paper-iterations", type=int, default=200, help="iterations timed for the paper preset")
    ap.add_argument("--json", default=None, help="default benchmarks/results/nir_quality[_quick].json")
    ap.add_argument("--png", default=None, help="default docs/images/nir_vs_kaczmarz.png "
                    "(--quick: benchmarks/results/nir_vs_kaczmarz_quick.png)")
    a = ap.parse_args(argv)
    if a.json is None:
        a.json = str(ROOT / f"benchmarks/results/nir_quality{'_quick' if a.quick else ''}.json")
    if a.png is None:
        a.png = str(ROOT / ("benchmarks/results/nir_vs_kaczmarz_quick.png" if a.quick
                            else "docs/images/nir_vs_kaczmarz.png"))
    torch.set_num_threads(a.threads)
    cfg = TrainConfig(device=a.device)
    cases = CASES
    if a.quick:
        cfg = TrainConfig(device=a.device, iterations=150, patience=100)
        cases = {k: v for k, v in CASES.items() if k.startswith("spiral (medium")}
        a.paper_iterations = 10
    results, images, fields = [], {}, {}
    for name, spec in cases.items():
        res, imgs = run_case(name, spec, cfg)
        fields[name] = res.pop("_field")
        results.append(res)
        images[name] = imgs
        n = res["nir"]
        print(f"\n{name}: {res['rows']} rows; NIR stopped at {n['stop_iteration']} "
              f"(returned iterate {n['best_iteration']}; {n['stop_reason']}); train {n['train_s']:.1f} s, "
              f"to returned iterate {n['time_to_best_s']:.1f} s, {n['ms_per_iteration']:.1f} ms/it; "
              f"Kaczmarz {res['kaczmarz_s']:.2f} s")
        print(f"  {'grid':>6} {'Kacz PSNR':>10} {'NIR PSNR':>9} {'ΔdB':>6} {'Kacz SSIM':>10} {'NIR SSIM':>9} {'ΔSSIM':>7}")
        for g, m in res["grids"].items():
            print(f"  {g:>4}² {m['kaczmarz_psnr']:10.2f} {m['nir_psnr']:9.2f} {m['nir_psnr'] - m['kaczmarz_psnr']:+6.2f} "
                  f"{m['kaczmarz_ssim']:10.3f} {m['nir_ssim']:9.3f} {m['nir_ssim'] - m['kaczmarz_ssim']:+7.3f}")
    prob = simulate_case(grid=29, seed=0, **CASES["spiral (medium noise)"]).problem()
    ms_default = time_preset(prob, cfg, a.paper_iterations)
    ms_paper = time_preset(prob, TrainConfig.paper(device=a.device), a.paper_iterations)
    print(f"\nms/iteration on {a.device} ({a.threads} threads), spiral 29²: default preset {ms_default:.1f}, "
          f"paper preset {ms_paper:.1f} (paper's 70 000 iterations ≈ {ms_paper * 70:.0f} s)")
    t_1024 = sampler_timing(fields[next(iter(fields))])
    print(f"sampler: 1024² render of the trained field in {t_1024:.2f} s (best of 3)")
    r3 = run_3d(cfg, n=7 if a.quick else 9)
    print(f"3D: {r3['grid']} native ({r3['rows']} rows) -> sampled {r3['sampled']}: NIR {r3['nir_psnr']:.2f} dB / "
          f"SSIM {r3['nir_ssim']:.3f} vs Kaczmarz+bicubic {r3['kaczmarz_psnr']:.2f} dB / {r3['kaczmarz_ssim']:.3f}; "
          f"train {r3['train_s']:.1f} s (stopped {r3['stop_iteration']}), sample {r3['sample_s']:.2f} s")
    out = {"quick": a.quick, "sampler_1024_s": t_1024, "case_3d": r3, "device": a.device, "threads": a.threads, "torch": torch.__version__,
           "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "default_config": cfg.to_dict(), "ms_per_iteration": {"default": ms_default, "paper": ms_paper},
           "cases": results}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1, default=float))
    figure(images, Path(a.png))
    print(f"wrote {a.json} and {a.png}")


if __name__ == "__main__":
    main()
