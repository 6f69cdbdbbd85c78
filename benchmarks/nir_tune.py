"""Sweep NIR training settings on simulated cases (used to choose the default preset).

For each case × config it trains once with the validation check every `--every` iterations,
treats every check as a candidate (a stopping rule that never stops and marks every check as
"best"), and records PSNR/SSIM at 104² against the ground truth for each candidate. From one run
it reports: the oracle best iterate, the validation argmin, and what ValidationPatience(P) would
have returned and when. Quality per iteration transfers between devices; wall time does not.

    python -m benchmarks.nir_tune --quick
    python -m benchmarks.nir_tune --configs '[{"lr": 3e-4}, {"omega0": 30}]' --iterations 3000
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np

from napari_nirmpi.metrics import psnr, ssim
from napari_nirmpi.nir import TrainConfig, fit
from napari_nirmpi.resample import upsample
from napari_nirmpi.sample import sample
from napari_nirmpi.simulate import simulate_case
from napari_nirmpi.solvers import reconstruct_kaczmarz

CASES = {
    "spiral-medium": dict(phantom="spiral", noise="medium"),
    "spiral-low": dict(phantom="spiral", noise="low"),
    "spiral-high": dict(phantom="spiral", noise="high"),
    "resolution": dict(phantom="resolution", noise="medium"),
    "point": dict(phantom="point", noise="medium"),
}


class _Every:
    """Marks every validation check as the best so the yielded field is the current iterate."""

    def reset(self):
        pass

    def update(self, iteration, val_loss, train_loss):
        return True, None


def patience_pick(its, vals, patience):
    best, best_i = np.inf, 0
    for i, (it, v) in enumerate(zip(its, vals)):
        if v < best:
            best, best_i = v, i
        if it - its[best_i] >= patience:
            return best_i, it
    return best_i, its[-1]


@functools.lru_cache(maxsize=None)
def load_case(case_name, shape=104, seed=0):
    case = simulate_case(grid=29, seed=seed, **CASES[case_name])
    prob = case.problem()
    gt = case.ground_truth((shape, shape))
    k = reconstruct_kaczmarz(prob)
    kup, _ = upsample(k, prob.grid, (shape, shape))
    return prob, gt, psnr(kup, gt), ssim(kup, gt)


def run(case_name, cfg_over, iterations, every, shape=104, seed=0):
    prob, gt, kp, ks = load_case(case_name, shape, seed)
    cfg = TrainConfig(**{**cfg_over, "iterations": iterations, "val_every": every, "log_every": every,
                         "preview_every": 10 ** 9, "stopping": _Every()})
    its, vals, ps, ss, times = [], [], [], [], []

    def score(st):
        if st.val_loss is None or st.best_iteration != st.iteration:
            return
        img, _ = sample(st.field, (shape, shape))
        its.append(st.iteration), vals.append(st.val_loss), times.append(st.elapsed)
        ps.append(psnr(img, gt)), ss.append(ssim(img, gt))

    t0 = time.perf_counter()
    fit(prob, cfg, callback=score)
    wall = time.perf_counter() - t0
    res = {"case": case_name, "config": cfg_over, "iterations": iterations,
           "kaczmarz_psnr": kp, "kaczmarz_ssim": ks,
           "ms_per_it": 1000 * times[-1] / its[-1], "wall": wall}
    o = int(np.argmax(ps))
    res["oracle"] = (its[o], ps[o], ss[o])
    v = int(np.argmin(vals))
    res["val_argmin"] = (its[v], ps[v], ss[v])
    for P in (250, 500, 1000):
        b, stop = patience_pick(its, vals, P)
        res[f"patience{P}"] = (its[b], ps[b], ss[b], stop)
    res["traj"] = [(i, round(p, 2)) for i, p in zip(its, ps)][:: max(1, len(its) // 20)]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="spiral-medium")
    ap.add_argument("--configs", default='[{}]')
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.iterations, a.every = 100, 25
    results = []
    for case in a.cases.split(","):
        for over in json.loads(a.configs):
            r = run(case, over, a.iterations, a.every)
            results.append(r)
            f = lambda t: f"{t[1]:.2f}dB/{t[2]:.3f}@{t[0]}"
            print(f"{case:14s} {json.dumps(over):60s} K {r['kaczmarz_psnr']:.2f}/{r['kaczmarz_ssim']:.3f} "
                  f"oracle {f(r['oracle'])} val {f(r['val_argmin'])} P500 {f(r['patience500'])} stop "
                  f"{r['patience500'][3]} P1000 {f(r['patience1000'])} {r['ms_per_it']:.1f}ms/it", flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
