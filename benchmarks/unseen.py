"""The default preset on cases the suite never varies: other native grids, FOV, particles, noise levels
and object sizes. Nothing here was used to choose a setting: this checks that the default and its
stopping rule carry over, it does not tune them.

For each case (2D, scored at 104² over the same FOV):
- tuned baseline: the ORACLE best Kaczmarz + bicubic over the suite's λ × sweeps grid (PSNR at 104²
  against the ground truth);
- NIR default: `TrainConfig()`, stopped by its own rule; NIR oracle: its best checkpoint at 104²;
- gap: oracle − returned PSNR (the stopping target is ≤ 0.5 dB); win: NIR beats the tuned baseline
  in PSNR and SSIM (the target where the tuned SSIM ≥ 0.5).

    python -m benchmarks.unseen              # 8 cases, about 5 min on 2 cores
    python -m benchmarks.unseen --cases grid21,dot2mm
    python -m benchmarks.unseen --config '{"operator": "pool"}'    # another setting (writes unseen_config.txt)
    python -m benchmarks.unseen --figure spiral-wide-snr20          # docs/images/unseen_spiral_wide_snr20.png

Writes benchmarks/results/unseen.txt.
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

from benchmarks import suite
from benchmarks.beyond_paper import Tee
from benchmarks.oracle import metrics_of, train_scored, tune_kaczmarz
from napari_nirmpi.nir import TrainConfig, fit
from napari_nirmpi.sample import sample
from napari_nirmpi.simulate import Particles, simulate_case

ROOT = Path(__file__).resolve().parents[1]
_MM = 1e-3
EVAL = (104, 104)

# name -> simulate_case keywords; each differs from every suite case in at least one property the
# suite holds fixed (native grid, FOV, core size, relaxation time, noise level, object size, seed)
CASES = {
    "spiral-grid21": dict(phantom="spiral", grid=21, noise="medium", seed=3),
    "spiral-grid37": dict(phantom="spiral", grid=37, noise="medium", seed=4),
    "ellipses-25nm-snr200": dict(phantom="ellipses", noise=200.0, seed=5,
                                 particles=Particles(core_diameter=25e-9, relaxation_time=1e-6)),
    "dot2mm-medium": dict(phantom={"name": "point", "params": {"diameter": 2 * _MM, "center": (5.2 * _MM, 1.3 * _MM)}},
                          noise="medium", seed=6),
    "spiral-wide-snr20": dict(phantom={"name": "spiral", "params": {"width": 1.4 * _MM, "pitch": 5 * _MM,
                                                                    "turns": 1.75}},
                              noise=20.0, seed=7, particles=Particles(core_diameter=25e-9)),
    "resolution-big-25nm": dict(phantom={"name": "resolution", "params": {
        "diameter": 1.5 * _MM, "spacings": (9 * _MM, 7 * _MM, 5.5 * _MM, 4.5 * _MM, 3.5 * _MM)}},
        noise="low", seed=8, particles=Particles(core_diameter=25e-9)),
    "ellipses-fov34": dict(phantom="ellipses", fov=34 * _MM, noise="medium", seed=9),
    "dot-snr10": dict(phantom={"name": "point", "params": {"center": (0.4 * _MM, -6.1 * _MM)}},
                      noise=10.0, seed=10, particles=Particles(core_diameter=25e-9, relaxation_time=3e-6)),
}


def run(name, kw, cfg, log):
    t0 = time.perf_counter()
    sim = simulate_case(**kw)
    prob = sim.problem()
    gt = sim.ground_truth(EVAL)
    tuned = tune_kaczmarz(prob.S, prob.u, gt, prob.grid, EVAL, lambdas=suite.LAMBDAS, sweeps=suite.SWEEPS)
    t_setup = time.perf_counter() - t0
    st, ofield, oracle_it, train_s = train_scored(prob, cfg, gt)
    nir = metrics_of(sample(st.field, EVAL)[0], gt)
    orc = metrics_of(sample(ofield, EVAL)[0], gt)
    tp, ts = tuned["psnr"], tuned["ssim"]
    rows = prob.num_rows
    recog = ts >= 0.5
    win = nir[0] > tp and nir[1] > ts
    log(f"{name:22s} {'x'.join(map(str, prob.grid.shape)):>5s} {rows:4d} rows | tuned {tp:6.2f}/{ts:.3f} "
        f"(λ {tuned['lam']:.2g}, {tuned['sweeps']} sw) NIR {nir[0]:6.2f}/{nir[1]:.3f} oracle {orc[0]:6.2f}/{orc[1]:.3f} "
        f"| it {st.best_iteration} vs {oracle_it} gap {orc[0] - nir[0]:+.2f} dB | "
        f"{'WIN ' if win else ('loss' if recog else 'n/a (tuned SSIM < 0.5): SSIM ' + ('ok' if nir[1] >= ts else 'worse'))} "
        f"ΔPSNR {nir[0] - tp:+.2f} ΔSSIM {nir[1] - ts:+.3f} | train {train_s:.1f} s (setup {t_setup:.0f} s)")
    return {"gap": orc[0] - nir[0], "win": win, "recognised": recog, "dpsnr": nir[0] - tp, "dssim": nir[1] - ts,
            "ssim_ok": nir[1] >= ts, "train_s": train_s}


PREVIOUS = {"operator": "pool", "selection": "1se", "patience": 500}   # the default until 2026-11-27 (ea05b2f)


def figure(name, path, its=(250, 500, 1000, 1500)):
    """The case's 104² image at a few iterations and at the returned one: default vs PREVIOUS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = simulate_case(**CASES[name])
    prob = sim.problem()
    gt = sim.ground_truth(EVAL)
    fig, axes = plt.subplots(2, len(its) + 2, figsize=(2.2 * (len(its) + 2), 5.6))
    for row, (label, over) in enumerate((("default", {}), ("previous default\n(pool, 1 SE)", PREVIOUS))):
        cfg = TrainConfig(device="cpu", **over)
        snaps = {}

        def snap(st):
            if st.stop_reason is None and st.iteration in its:
                snaps[st.iteration] = sample(st.current_field(), EVAL)[0]

        field, st = fit(prob, cfg, callback=snap)
        snaps[f"returned (it {st.best_iteration})"] = sample(field, EVAL)[0]
        panels = [("ground truth", gt)] + [(f"it {k}" if isinstance(k, int) else k, v) for k, v in snaps.items()]
        for ax, (title, img) in zip(axes[row], panels):
            ax.imshow(img, cmap="magma", vmin=0, vmax=max(1.0, float(img.max())))
            p, q = metrics_of(img, gt) if title != "ground truth" else (None, None)
            ax.set_title(title if p is None else f"{title}\n{p:.2f} dB / {q:.3f}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
        axes[row, 0].set_ylabel(label, fontsize=9)
    fig.suptitle(f"{name}: NIR at 104² along training (PSNR / SSIM)", fontsize=10)
    fig.subplots_adjust(left=0.04, right=0.99, top=0.86, bottom=0.01, wspace=0.08, hspace=0.3)
    fig.savefig(path, dpi=90)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=None, help="comma-separated substrings of case names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", default=None, help="JSON overrides of TrainConfig() (exploration only)")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/unseen[_config].txt)")
    ap.add_argument("--figure", default=None, metavar="CASE", help="only draw CASE along training, default "
                    "vs the previous default, to docs/images/unseen_<case with _>.png")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.figure:
        figure(a.figure, ROOT / f"docs/images/unseen_{a.figure.replace('-', '_')}.png")
        return
    cfg = TrainConfig(device="cpu")
    if a.config:
        cfg = TrainConfig(**{**cfg.to_dict(), **json.loads(a.config)})
    out = Path(a.out) if a.out else ROOT / f"benchmarks/results/unseen{'_config' if a.config else ''}.txt"
    names = [n for n in CASES if not a.cases or any(w.strip() in n for w in a.cases.split(","))]
    log = Tee()
    log(f"# NIR on cases the suite never saw — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    log(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"TrainConfig() {'with ' + a.config if a.config else '(no arguments)'}")
    log("# tuned baseline = ORACLE (λ × sweeps by PSNR at 104² against the ground truth)")
    res = [run(n, CASES[n], cfg, log) for n in names]
    rec = [r for r in res if r["recognised"]]
    log(f"stopping: returned iterate within 0.5 dB of the oracle iterate on "
        f"{sum(r['gap'] <= 0.5 for r in res)}/{len(res)} (worst gap {max(r['gap'] for r in res):.2f} dB)")
    log(f"quality: beats the tuned baseline in PSNR and SSIM on {sum(r['win'] for r in rec)}/{len(rec)} cases "
        f"with tuned SSIM ≥ 0.5; SSIM not worse on {sum(r['ssim_ok'] for r in res if not r['recognised'])}/"
        f"{len(res) - len(rec)} others; mean ΔPSNR {np.mean([r['dpsnr'] for r in res]):+.2f} dB, "
        f"ΔSSIM {np.mean([r['dssim'] for r in res]):+.3f}; median train {np.median([r['train_s'] for r in res]):.1f} s")
    out.write_text(log.buf.getvalue())


if __name__ == "__main__":
    main()
