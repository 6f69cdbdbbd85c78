"""NIR with the classic prior: the ℓ1 weight taken from the classic automatic λ (no ground truth).

The classic objective ½‖Ac − b‖² + λ_eff‖c‖₁, divided by ½‖b‖², is the NIR loss's relative misfit
plus 2λ_eff‖c‖₁/‖b‖²; NIR's ℓ1 term is l1_weight·mean|φ| with φ = c/scale on the native voxels,
so l1_weight = 2·λ_eff·N·scale/‖b‖² (λ_eff of the native grid, scale = the NIR intensity scale).
Scored at 104² against the ground truth beside the NIR default (stored figures) and classic ℓ1
solved on the 104² grid.

    python -m benchmarks.classic_nir_prior --cases point-medium-20nm,spiral-medium-30nm

Writes benchmarks/results/classic_nir_prior.txt (appends one line per case).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import suite
from benchmarks.classic_compare import all_cases_map, nir_figures
from napari_nirmpi import classic
from napari_nirmpi.metrics import psnr, ssim
from napari_nirmpi.nir import TrainConfig, fit
from napari_nirmpi.nir.train import _real_rows, estimate_scale, split_rows
from napari_nirmpi.sample import sample
from napari_nirmpi.simulate import simulate_case

ROOT = Path(__file__).resolve().parents[1]


def l1_weight_from_classic(prob) -> tuple[float, float]:
    solver = classic.Solver(prob, "fista", device="cpu")
    b = solver.op.data(prob.u)
    lam, _ = classic.auto_lambda(solver, b, prob.u, ("l1",), 300)
    lam_eff = lam["l1"] * solver.scales(b)["l1"]
    cfg = TrainConfig(device="cpu")
    _, rows = split_rows(prob.S.shape[0], cfg)
    St, ut = _real_rows(np.asarray(prob.S), np.asarray(prob.u), rows, torch.device("cpu"))
    scale = estimate_scale(St, ut)
    return 2 * lam_eff * prob.grid.size * scale / float(b @ b), lam["l1"]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    nir = nir_figures()
    cmap = all_cases_map()
    out = ROOT / "benchmarks/results/classic_nir_prior.txt"
    for name in [n for n in cmap if any(w in n for w in a.cases.split(","))]:
        spec = cmap[name]
        sim = spec["case"].simulate() if "case" in spec else simulate_case(**spec["kw"])
        prob = sim.problem()
        gt = sim.ground_truth((104, 104))
        w, lam = l1_weight_from_classic(prob)
        t0 = time.perf_counter()
        field, st = fit(prob, TrainConfig(device="cpu", l1_weight=w))
        img = sample(field, (104, 104))[0]
        cl = classic.reconstruct(prob, "fista", "l1", lam, grid=(104, 104), device="cpu").image
        line = (f"{time.strftime('%Y-%m-%d')} {name:28s} l1_weight {w:.3g} (classic λ {lam:.2g}): NIR+l1 "
                f"{psnr(img, gt):.2f}/{ssim(img, gt):.3f} (it {st.best_iteration}, {time.perf_counter() - t0:.0f} s) | "
                f"NIR default {nir[name][104][0]:.2f}/{nir[name][104][1]:.3f} | classic l1 104² "
                f"{psnr(cl, gt):.2f}/{ssim(cl, gt):.3f}")
        print(line, flush=True)
        with open(out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
