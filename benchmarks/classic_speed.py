"""Per-iteration cost of the classic solvers against one Kaczmarz sweep, side by side in one run.

On the simulated spiral (29² native, 466 rows): a Kaczmarz sweep (numba, the paper's baseline) and
one iteration of CGNR, FISTA-ℓ1 and PDHG-TV (torch) on the native grid and solved directly on
the 104² grid (the system matrix interpolated, applied matrix-free), with 1 and 2 torch threads;
and the automatic λ (one SVD) once. Each figure is the median of 5 repeats.

    python -m benchmarks.classic_speed          # about a minute on 2 cores

Writes benchmarks/results/classic_speed.txt.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from napari_nirmpi import classic
from napari_nirmpi.classic.solvers import cgnr, fista, pdhg
from napari_nirmpi.simulate import simulate_case
from napari_nirmpi.solvers import KaczmarzSystem

ROOT = Path(__file__).resolve().parents[1]


def median_time(fn, repeats=5):
    fn()  # warm-up (numba compile, torch allocations)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    prob = simulate_case("spiral", grid=29, noise="medium", seed=0).problem()
    lines = [f"# classic solver speed — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"# machine: {platform.machine()}, 2-core CPU ({os.cpu_count()} logical CPUs, shared), "
             f"torch {torch.__version__}; spiral 29², {prob.num_rows} rows (×2 real), medians of 5"]
    ks = KaczmarzSystem(prob.S)
    sweeps = 20
    t_k = median_time(lambda: ks.solve(prob.u, iterations=sweeps, lam=1e-3)) / sweeps
    lines.append(f"Kaczmarz sweep (numba, 1 thread): {t_k * 1e3:.2f} ms = 1.00")
    its = 100
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for shape in ((29, 29), (104, 104)):
            solver = classic.Solver(prob, "pdhg", shape, device="cpu")
            op = solver.op
            b = op.data(prob.u)
            op.norm2()  # step sizes are set once per operator, outside the timed loop
            sc = solver.scales(b)
            runs = {
                "CGNR": lambda: cgnr(op, b, lam2=1e-3 * sc["l2"], iterations=its, tol=0.0),
                "FISTA-l1": lambda: fista(op, b, lam1=1e-3 * sc["l1"], iterations=its, tol=0.0),
                "PDHG-TV": lambda: pdhg(op, b, lam_tv=1e-4 * sc["tv"], iterations=its, tol=0.0),
            }
            for name, fn in runs.items():
                t = median_time(fn, 3) / its
                lines.append(f"{name:9s} iteration, {shape[0]}² grid, {threads} thread(s): {t * 1e3:.3f} ms = "
                             f"{t / t_k:.2f} × a Kaczmarz sweep")
    torch.set_num_threads(1)
    solver = classic.Solver(prob, "cgnr", device="cpu")
    b = solver.op.data(prob.u)
    t_auto = median_time(lambda: classic.discrepancy_l2(solver, b), 3)
    lines.append(f"automatic λ (SVD of the {2 * prob.num_rows}×{prob.grid.size} matrix + 29-value path), "
                 f"1 thread: {t_auto * 1e3:.0f} ms = {t_auto / t_k:.1f} Kaczmarz sweeps")
    lines.append("default runs, 1 thread: Kaczmarz 150 sweeps = 150; CGNR 100 it, FISTA 300 it, PDHG 500 it "
                 "at the ratios above (+ the automatic λ)")
    text = "\n".join(lines)
    print(text)
    (ROOT / "benchmarks/results/classic_speed.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
