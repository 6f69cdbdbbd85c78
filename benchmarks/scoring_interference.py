"""Does scoring a training from the benchmarks slow the training down?

The suite benchmarks score the live field by PSNR every 25 iterations and subtract the scoring time
from the training time. Until 2026-11-27 `metrics.fit_intensity` used `np.vdot`: one BLAS call,
after which OpenBLAS's worker threads spin and take the cores from torch's own threads, so the
*training* ran 30–40 % slower and the suite benchmarks' "time to the stop" was inflated. This
script measures, side by side in one process, ms per training iteration (scoring time excluded) for:

- plain: no scoring;
- scored: `benchmarks.oracle.train_scored`, PSNR at 104² at every check (what the suite benchmarks do);
- scored + BLAS: the same plus one `np.vdot` per check (what `fit_intensity` used to do).

    python -m benchmarks.scoring_interference [--iterations 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks import suite
from benchmarks.oracle import train_scored
from napari_nirmpi.nir import TrainConfig, fit


def ms_per_iteration(prob, gt, iterations: int, mode: str) -> float:
    cfg = TrainConfig(iterations=iterations)
    if mode == "plain":
        _, st = fit(prob, cfg)
        return st.elapsed / st.iteration * 1e3
    blas = None
    if mode == "scored + BLAS":
        g = gt.ravel().astype(np.float64)

        def blas(state, field, p):  # runs inside train_scored's timed scoring
            np.vdot(g, g)
    st, _, _, seconds = train_scored(prob, cfg, gt, on_check=blas)
    return seconds / st.iteration * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="point-low-30nm")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    case = next(c for c in suite.cases() if c.name == a.case)
    sim = case.simulate()
    prob, gt = sim.problem(), sim.ground_truth((104, 104))
    modes = ("plain", "scored", "scored + BLAS")
    res = {m: [] for m in modes}
    for _ in range(a.repeats):  # interleaved, so drift in machine speed hits every mode alike
        for m in modes:
            res[m].append(ms_per_iteration(prob, gt, a.iterations, m))
    print(f"# {a.case}, TrainConfig(iterations={a.iterations}), {a.threads} threads, "
          f"{a.repeats} interleaved repeats; ms per training iteration, scoring excluded")
    base = np.median(res["plain"])
    for m in modes:
        med = np.median(res[m])
        print(f"{m:14s} {med:6.2f} ms  ({', '.join(f'{v:.2f}' for v in res[m])})  ×{med / base:.2f} of plain")


if __name__ == "__main__":
    main()
