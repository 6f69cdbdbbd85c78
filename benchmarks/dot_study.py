"""Why NIR loses the small dot to the tuned Kaczmarz: the measurements behind docs/research-notes.md
("2026-11-26: The forward operator D", "What the dot needs").

    python -m benchmarks.dot_study clean    # a clean dot and one with the scanner background:
                                            # operator pool/cubic × 10 % held out/all rows
    python -m benchmarks.dot_study seeds    # the pooled default of 2026-11-26 on the 6 dot cases, seeds 0-3
    python -m benchmarks.dot_study rows90   # tuned Kaczmarz on exactly the NIR's 90 % training rows
    python -m benchmarks.dot_study all      # the three (about 12 minutes on 2 cores)
    python -m benchmarks.dot_study clean --quick   # smoke test: 200 iterations, no background

PSNR at 104² against the phantom (napari_nirmpi.metrics). "best" is the best of the checkpoints
every 250 iterations of a 2000-iteration run without stopping (the ground truth is used for
scoring only). Output also goes to benchmarks/results/dot_study.txt.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks import suite
from benchmarks.oracle import tune_kaczmarz
from napari_nirmpi.metrics import psnr, ssim
from napari_nirmpi.nir import TrainConfig, fit
from napari_nirmpi.nir.train import split_rows
from napari_nirmpi.resample import upsample
from napari_nirmpi.sample import sample
from napari_nirmpi.simulate import Particles, simulate_case

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (104, 104)
LINES: list[str] = []
QUICK = {"on": False}  # --quick: 200 iterations, the clean dot only


def log(msg: str = "") -> None:
    print(msg, flush=True)
    LINES.append(msg)


def best_checkpoint(prob, gt, cfg: TrainConfig, every: int = 250) -> float:
    if QUICK["on"]:
        cfg.iterations, every = 200, 50
    scores = []

    def score(st):
        if st.iteration % every == 0 and st.stop_reason is None:
            img, _ = sample(st.current_field(), SHAPE)
            scores.append(psnr(img, gt))

    fit(prob, cfg, callback=score)
    return max(scores)


def clean() -> None:
    log("## a dot without and with the scanner background (30 nm, calibration SNR 1e5)")
    settings = [("pool (2026-11-26 default), 10 % rows held out", {"operator": "pool"}, (0,)),
                ("pool, all rows", {"operator": "pool", "val_fraction": 0.0}, (0,)),
                ("cubic, 10 % rows held out", {"operator": "cubic"}, (0, 1, 2)),
                ("cubic, all rows", {"operator": "cubic", "val_fraction": 0.0}, (0, 1, 2))]
    for background in (False,) if QUICK["on"] else (False, True):
        sim = simulate_case("point", grid=suite.GRID, noise=1e5, seed=0,
                            particles=Particles(core_diameter=30e-9), background=background)
        prob, gt = sim.problem(), sim.ground_truth(SHAPE)
        t = tune_kaczmarz(prob.S, prob.u, gt, prob.grid, SHAPE, lambdas=suite.LAMBDAS, sweeps=suite.SWEEPS)
        log(f"background={background}: tuned Kaczmarz {t['psnr']:.2f} dB (λ {t['lam']:.2g}, {t['sweeps']} sweeps)")
        if not background:
            up, _ = upsample(sim.ground_truth((suite.GRID, suite.GRID)), sim.grid, SHAPE, method="bicubic")
            log(f"    exact voxel means up-sampled bicubic: {psnr(up, gt):.2f} dB")
        for label, over, seeds in settings:
            if background and over == {"operator": "pool", "val_fraction": 0.0}:
                continue
            if not background:
                seeds = (0,)
            got = [best_checkpoint(prob, gt, TrainConfig(early_stopping=False, seed=k, **over)) for k in seeds]
            log(f"    NIR {label:36s} best {' / '.join(f'{v:.2f}' for v in got)} dB (seeds {seeds})")


POOLED = {"operator": "pool", "selection": "1se", "patience": 500}  # the default of 2026-11-26 (commit 2876919)


def seeds() -> None:
    log("## the pooled default of 2026-11-26 on the suite's dots, seeds 0-3, returned field (its own stop)")
    for case in suite.select("all", "point"):
        sim = case.simulate()
        prob, gt = sim.problem(), sim.ground_truth(SHAPE)
        t = suite.baselines(case, sim, prob)["tuned"]
        out = []
        for k in range(4):
            fld, st = fit(prob, TrainConfig(seed=k, **POOLED))
            img, _ = sample(fld, SHAPE)
            out.append(f"{psnr(img, gt):.2f}/{ssim(img, gt):.3f}@{st.best_iteration}")
        log(f"{case.name:28s} tuned {t['psnr104']:.2f}/{t['ssim104']:.3f}  NIR " + "  ".join(out))


def rows90() -> None:
    log("## tuned Kaczmarz on all rows vs on the NIR's 90 % training rows (TrainConfig(seed=0) split)")
    for case in suite.select("all", "point,resolution"):
        sim = case.simulate()
        prob, gt = sim.problem(), sim.ground_truth(SHAPE)
        b = suite.baselines(case, sim, prob)["tuned"]
        _, tr = split_rows(prob.S.shape[0], TrainConfig())  # the rows train() fits
        t = tune_kaczmarz(prob.S[tr], prob.u[tr], gt, prob.grid, SHAPE, lambdas=suite.LAMBDAS,
                          sweeps=suite.SWEEPS)
        log(f"{case.name:28s} all rows {b['psnr104']:.2f}/{b['ssim104']:.3f}  90 % rows "
            f"{t['psnr']:.2f}/{t['ssim']:.3f} (λ {t['lam']:.2g}, {t['sweeps']})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("clean", "seeds", "rows90", "all"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="200 iterations, the clean dot only (smoke test)")
    a = ap.parse_args(argv)
    QUICK["on"] = a.quick
    if a.quick and a.what != "clean":
        ap.error("--quick goes with 'clean'")
    torch.set_num_threads(a.threads)
    log(f"# dot study — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads")
    for name, fn in (("clean", clean), ("rows90", rows90), ("seeds", seeds)):
        if a.what in (name, "all"):
            fn()
    out = ROOT / f"benchmarks/results/dot_study{'_quick' if a.quick else ''}.txt"
    out.write_text("\n".join(LINES) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
