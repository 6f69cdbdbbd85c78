"""Classic reconstruction as MPI groups run it against NIR, on the suite and the unseen cases.

For every case (the 24 suite cases, tune and held-out halves, and the 8 unseen cases), scored by
PSNR/SSIM (least-squares intensity fit) against the ground truth at 29², 54², 79², 104²:

- paper:        Kaczmarz 150 sweeps, λ 0.5, bicubic up-sampling (suite cache);
- kacz_oracle:  Kaczmarz with (λ, sweeps) tuned on the ground truth at 104² (suite cache);
- auto_*:       CGNR-ℓ2, FISTA-ℓ1, PDHG-TV with the automatic λ (no ground truth): on the native
                grid + bicubic ("nat"), and solved directly on each finer grid ("fine");
- tv_oracle_*, l1_oracle_*: TV (PDHG) and ℓ1 (FISTA) with λ tuned on the ground truth at 104²
                (8 values, 3.2e-5 … 0.1), native + bicubic and on the fine grid;
- nir:          the NIR default, not retrained: the figures of benchmarks/results/beyond_paper.json
                (suite, all grids; TrainConfig() of commit ea05b2f, still the default) and
                benchmarks/results/unseen.txt (unseen cases, 104² only).

    python -m benchmarks.classic_compare --cases point-medium,spiral-medium   # a subset, minutes
    python -m benchmarks.classic_compare                                      # all 32, ~25 min on 2 cores
    python -m benchmarks.classic_compare --figure point-medium-20nm-relax     # docs/images/classic_<case>.png
    (add --with-nir to train and show NIR too)

Writes benchmarks/results/classic_compare.txt and .json (the whole set only; a subset prints).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import suite
from napari_nirmpi import classic
from napari_nirmpi.metrics import psnr, ssim
from napari_nirmpi.resample import upsample
from napari_nirmpi.simulate import simulate_case

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GRIDS = (29, 54, 79, 104)
ORACLE_LAMS = tuple(float(v) for v in np.logspace(-4.5, -1, 8))
AUTO = (("cgnr", "l2"), ("fista", "l1"), ("pdhg", "tv"))


def unseen_cases() -> dict:
    from benchmarks import unseen

    return unseen.CASES


def all_cases():
    out = [(c.name, c.split, c) for c in suite.cases()]
    out += [(name, "unseen", kw) for name, kw in unseen_cases().items()]
    return out


def nir_figures() -> dict:
    """{case: {grid: (psnr, ssim)}} of the NIR default from the stored results (not retrained)."""
    out = {}
    bp = json.loads((RESULTS / "beyond_paper.json").read_text())
    for c in bp["cases"]:
        out[c["case"]] = {int(g): tuple(v["nir"]) for g, v in c["grids"].items()}
    for line in (RESULTS / "unseen.txt").read_text().splitlines():
        m = re.match(r"(\S+)\s+\d+x\d+.*?NIR\s+([\d.]+)/([\d.]+)", line)
        if m:
            out[m.group(1)] = {104: (float(m.group(2)), float(m.group(3)))}
    return out


def score(img, grid, gt_of, n):
    if img.shape != (n, n):
        img, _ = upsample(img, grid, (n, n), method="bicubic")
    gt = gt_of(n)
    return float(psnr(img, gt)), float(ssim(img, gt))


def oracle(prob, method, reg, shape, gt104, grid104):
    """λ by PSNR at 104² (ground truth); every λ solved from zero with the default iterations, as a
    user's run at that λ (a warm-started ladder reaches other images where FISTA has not converged)."""
    solver = classic.Solver(prob, method, shape, device="cpu")
    b = solver.op.data(prob.u)
    sc = solver.scales(b)
    best = None
    for lam in ORACLE_LAMS[::-1]:
        x, _ = solver.solve(b, prob.u, {reg: lam}, (reg,), classic.DEFAULT_ITERATIONS[method], scales=sc)
        img = x.float().numpy().reshape(shape)
        p = score(img, solver.grid, lambda n: gt104, 104)[0]
        if best is None or p > best[0]:
            best = (p, lam, img)
    return best[1], best[2], solver.grid


def run_case(name, split, spec, nir):
    t0 = time.perf_counter()
    if split == "unseen":
        sim = simulate_case(**spec)
        prob = sim.problem()
        from napari_nirmpi.solvers import reconstruct_kaczmarz, tune_kaczmarz

        gt104 = sim.ground_truth((104, 104))
        t = tune_kaczmarz(prob.S, prob.u, gt104, prob.grid, (104, 104), lambdas=suite.LAMBDAS, sweeps=suite.SWEEPS)
        base = {"paper": {"image": reconstruct_kaczmarz(prob, iterations=150, lam=0.5)},
                "tuned": {"image": t["image"], "lam": t["lam"], "sweeps": t["sweeps"]}}
    else:
        sim = spec.simulate()
        prob = sim.problem()
        base = suite.baselines(spec, sim, prob)
    gts = {}

    def gt_of(n):
        if n not in gts:
            gts[n] = sim.ground_truth((n, n))
        return gts[n]

    native = prob.grid
    gn = native.shape[0]
    grids = tuple(sorted({gn, *[g for g in GRIDS if g >= gn]}))
    rows = {}
    rows["paper"] = {n: score(np.asarray(base["paper"]["image"], np.float32), native, gt_of, n) for n in grids}
    rows["kacz_oracle"] = {n: score(np.asarray(base["tuned"]["image"], np.float32), native, gt_of, n) for n in grids}
    lams = {"kacz_oracle": base["tuned"]["lam"]}
    for method, reg in AUTO:
        r = classic.reconstruct(prob, method, reg, "auto", device="cpu")
        rows[f"auto_{reg}_nat"] = {n: score(r.image, r.grid, gt_of, n) for n in grids}
        lams[f"auto_{reg}"] = r.lam
        fine = {}
        for n in grids:
            rf = r if n == gn else classic.reconstruct(prob, method, reg, r.lam, grid=(n, n), device="cpu")
            fine[n] = score(rf.image, rf.grid, gt_of, n)
        rows[f"auto_{reg}_fine"] = fine
    for method, reg in (("pdhg", "tv"), ("fista", "l1")):
        lam, img, g = oracle(prob, method, reg, native.shape, gt_of(104), None)
        rows[f"{reg}_oracle_nat"] = {n: score(img, g, gt_of, n) for n in grids}
        lams[f"{reg}_oracle_nat"] = lam
        lamf, imgf, gf = oracle(prob, method, reg, (104, 104), gt_of(104), None)
        fine = {104: score(imgf, gf, gt_of, 104)}
        for n in grids:
            if n != 104:
                rf = classic.reconstruct(prob, method, reg, lamf, grid=(n, n), device="cpu")
                fine[n] = score(rf.image, rf.grid, gt_of, n)
        rows[f"{reg}_oracle_fine"] = fine
        lams[f"{reg}_oracle_fine"] = lamf
    if name in nir:
        rows["nir"] = {n: v for n, v in nir[name].items()}
    return {"case": name, "split": split, "native": gn, "rows": rows, "lams": lams,
            "seconds": time.perf_counter() - t0}


COLS = ("paper", "kacz_oracle", "auto_l2_nat", "auto_l1_fine", "auto_tv_fine", "tv_oracle_nat",
        "tv_oracle_fine", "l1_oracle_nat", "l1_oracle_fine", "nir")


def table(results, n=104) -> list[str]:
    head = "| case | split | " + " | ".join(COLS) + " |"
    out = [f"PSNR dB / SSIM at {n}²", head, "|" + "---|" * (len(COLS) + 2)]
    for r in results:
        cells = []
        for c in COLS:
            v = r["rows"].get(c, {}).get(n)
            cells.append("–" if v is None else f"{v[0]:.2f}/{v[1]:.3f}")
        out.append(f"| {r['case']} | {r['split']} | " + " | ".join(cells) + " |")
    return out


def summary(results) -> list[str]:
    out = []
    keys = sorted({k for r in results for k in r["rows"]})
    for split in ("tune", "heldout", "unseen"):
        rs = [r for r in results if r["split"] == split]
        if not rs:
            continue
        for n in GRIDS:
            line = []
            for k in keys:
                v = [r["rows"][k][n][0] for r in rs if n in r["rows"].get(k, {})]
                if v and len(v) == len(rs):
                    line.append(f"{k} {np.mean(v):.2f}")
            out.append(f"mean PSNR {split:7s} {n:3d}²: " + ", ".join(line))
        for k in keys:
            if k == "nir":
                continue
            w = [r for r in rs if 104 in r["rows"].get("nir", {}) and 104 in r["rows"].get(k, {})]
            if not w:
                continue
            wins = sum(all(r["rows"]["nir"][104][i] > r["rows"][k][104][i] for i in (0, 1)) for r in w)
            d = np.mean([r["rows"]["nir"][104][0] - r["rows"][k][104][0] for r in w])
            out.append(f"NIR vs {k:16s} [{split}] 104²: NIR better in PSNR and SSIM on {wins}/{len(w)}, "
                       f"mean ΔPSNR (NIR − it) {d:+.2f} dB")
    return out


def figure(name, path, with_nir=False):
    """Ground truth and each method at 104² for one case (NIR, trained here with the default
    config, only with_nir: it takes minutes on a shared 2-core CPU)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_nirmpi.nir import TrainConfig, fit
    from napari_nirmpi.sample import sample

    spec = dict(all_cases_map()[name])
    sim = spec["case"].simulate() if "case" in spec else simulate_case(**spec["kw"])
    prob = sim.problem()
    gt = sim.ground_truth((104, 104))
    from napari_nirmpi.solvers import reconstruct_kaczmarz

    panels = [("ground truth", gt)]
    k = reconstruct_kaczmarz(prob, iterations=150, lam=0.5)
    panels.append(("Kaczmarz λ 0.5 + bicubic", upsample(k, prob.grid, (104, 104))[0]))
    nir_stored = nir_figures().get(name, {}).get(104)
    for method, reg, label in (("cgnr", "l2", "CGNR-ℓ2 auto + bicubic"), ("pdhg", "tv", "TV auto, 104² grid"),
                               ("fista", "l1", "ℓ1 auto, 104² grid")):
        r = classic.reconstruct(prob, method, reg, "auto", grid=None if reg == "l2" else (104, 104), device="cpu")
        img = r.image if r.image.shape == (104, 104) else upsample(r.image, r.grid, (104, 104))[0]
        panels.append((f"{label}\nλ {r.lam:.2g}", img))
    if with_nir:
        field, st = fit(prob, TrainConfig(device="cpu"))
        panels.append(("NIR default", sample(field, (104, 104))[0]))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.9))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img, cmap="magma", vmin=0, vmax=max(float(np.max(img)), 1e-12))
        if title != "ground truth":
            title += f"\n{psnr(img, gt):.2f} dB / {ssim(img, gt):.3f}"
        ax.set_title(title, fontsize=7.5)
        ax.set_xticks([]), ax.set_yticks([])
    stored = "" if nir_stored is None else f"; NIR default (stored): {nir_stored[0]:.2f} dB / {nir_stored[1]:.3f}"
    fig.suptitle(f"{name}: 104² (PSNR / SSIM against the ground truth){stored}", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.74, bottom=0.02, wspace=0.06)
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def all_cases_map():
    m = {c.name: {"case": c} for c in suite.cases()}
    m.update({k: {"kw": v} for k, v in unseen_cases().items()})
    return m


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=None, help="comma-separated substrings of case names")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figure", default=None, metavar="CASE")
    ap.add_argument("--with-nir", action="store_true", help="--figure: train NIR too (minutes)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.figure:
        figure(a.figure, ROOT / f"docs/images/classic_{a.figure.replace('-', '_')}.png", a.with_nir)
        return
    nir = nir_figures()
    cases = [c for c in all_cases() if not a.cases or any(w.strip() in c[0] for w in a.cases.split(","))]
    results = []
    head = [f"# classic vs NIR — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"# machine: {platform.machine()}, {os.cpu_count()} logical CPUs (2-core CPU), torch "
            f"{torch.__version__}, {torch.get_num_threads()} thread(s)",
            f"# auto λ rule: {classic.RULE}",
            "# NIR: stored figures (beyond_paper.json for the suite, unseen.txt at 104² for unseen), not retrained"]
    print("\n".join(head), flush=True)
    for name, split, spec in cases:
        r = run_case(name, split, spec, nir)
        results.append(r)
        row = r["rows"]
        print(f"{split:7s} {name:28s} 104²: " + " ".join(
            f"{k} {row[k][104][0]:.2f}" for k in COLS if 104 in row.get(k, {})) +
            f" | λ {json.dumps({k: float(f'{v:.3g}') for k, v in r['lams'].items()})} ({r['seconds']:.0f} s)",
            flush=True)
    lines = head + [""] + table(results) + [""] + table(results, 54) + [""] + summary(results)
    print("\n".join(lines[len(head):]))
    if not a.cases:
        (RESULTS / "classic_compare.txt").write_text("\n".join(lines) + "\n")
        ser = [{**r, "rows": {k: {str(n): v for n, v in d.items()} for k, d in r["rows"].items()}} for r in results]
        (RESULTS / "classic_compare.json").write_text(json.dumps(ser, indent=1))


if __name__ == "__main__":
    main()
