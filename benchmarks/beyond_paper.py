"""NIR beyond the paper: the default preset vs the BEST Kaczmarz, on held-out physics, unattended.

For every case of benchmarks/suite.py (29² native grid):
- paper baseline: Kaczmarz-ℓ2, 150 sweeps, λ = 0.5 (non-negative), bicubic up-sampling;
- tuned baseline: the best Kaczmarz + bicubic over λ (1e-5 … 50, 15 log-spaced) × sweeps
  (1, 3, 10, 30, 150), chosen by PSNR at 104² AGAINST THE GROUND TRUTH — an oracle no user has;
- NIR default: `TrainConfig()` (no arguments), trained by `napari_nirmpi.nir.fit` until its rule
  stops it (the default trains its whole 2000-iteration budget and returns the checkpoint with the
  lowest held-out misfit); the returned field is sampled at 29², 54², 79², 104² (no ground truth
  involved);
- NIR oracle: the checkpoint (every val_every iterations) with the best PSNR at 104² against the
  ground truth, found by sampling the live field at every checkpoint (not used by training).
PSNR / SSIM: napari_nirmpi.metrics (least-squares intensity fit, data range of the reference).
Time: training wall time until the rule stopped it, minus the benchmark's own oracle scoring
(`benchmarks.oracle.train_scored`).

    python -m benchmarks.beyond_paper                    # full suite (24 cases)
    python -m benchmarks.beyond_paper --split heldout    # one half
    python -m benchmarks.beyond_paper --quick            # smoke test (2 cases, 200 iterations)
    python -m benchmarks.beyond_paper --cases spiral-high,point
    python -m benchmarks.beyond_paper --tables benchmarks/results/beyond_paper.json  # docs tables

Writes benchmarks/results/beyond_paper.{txt,json} (--quick: beyond_paper_quick.*) and
docs/images/beyond_*.png (not with --quick). An exploration run, --config '{"operator": "pool"}'
(JSON overrides of TrainConfig()), writes beyond_paper_config.* and its pictures beside them
instead, so the docs keep showing the default; --out STEM names the files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import suite
from benchmarks.oracle import copy_net, metrics_of, train_scored  # noqa: F401  (re-exported)
from napari_nirmpi.nir import TrainConfig
from napari_nirmpi.resample import upsample
from napari_nirmpi.sample import sample

ROOT = Path(__file__).resolve().parents[1]
GRIDS = (29, 54, 79, 104)


class Tee:
    def __init__(self):
        self.buf = io.StringIO()

    def __call__(self, *a):
        s = " ".join(str(x) for x in a)
        print(s, flush=True)
        self.buf.write(s + "\n")


def run_case(case, cfg, log):
    sim = case.simulate()
    prob = sim.problem()
    base = suite.baselines(case, sim, prob)
    gts = {n: sim.ground_truth((n, n)) for n in GRIDS}
    trace = []

    def record(st, fld, p):
        nat, _ = sample(fld, (29, 29))
        trace.append({"it": st.iteration, "val": st.val_loss, "train": st.loss, "psnr104": p,
                      "native": nat.ravel().tolist()})

    st, ofield, oracle_it, train_s = train_scored(prob, cfg, gts[104], record)
    field = st.field
    res = {"case": case.name, "split": case.split, "rows": int(prob.num_rows),
           "tuned": {"lam": base["tuned"]["lam"], "sweeps": base["tuned"]["sweeps"]},
           "nir": {"stop_iteration": st.iteration, "chosen_iteration": st.best_iteration,
                   "oracle_iteration": oracle_it, "stop_reason": st.stop_reason, "train_s": train_s},
           "grids": {}, "trace": trace}
    images = {}
    for n in GRIDS:
        gt = gts[n]
        row = {}
        for name, native in (("paper", base["paper"]["image"]), ("tuned", base["tuned"]["image"])):
            up, _ = upsample(native, prob.grid, (n, n), method="bicubic")
            row[name] = metrics_of(up, gt)
            images[(name, n)] = up
        for name, f in (("nir", field), ("nir_oracle", ofield)):
            img, _ = sample(f, (n, n))
            row[name] = metrics_of(img, gt)
            images[(name, n)] = img
        images[("gt", n)] = gt
        res["grids"][n] = row
    return res, images


def figure(all_images, names, path, n=104):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [("gt", "ground truth"), ("paper", "Kaczmarz paper\n(150 sw, λ 0.5)"),
            ("tuned", "Kaczmarz TUNED\n(oracle λ, sweeps)"), ("nir", "NIR default\n(auto stop)")]
    fig, axes = plt.subplots(len(names), len(cols), figsize=(2.3 * len(cols), 2.3 * len(names)))
    axes = np.atleast_2d(axes)
    for r, (nm, res) in enumerate(names):
        ims = all_images[nm]
        for c, (k, title) in enumerate(cols):
            img = ims[(k, n)]
            ax = axes[r, c]
            ax.imshow(img, cmap="magma", vmin=0, vmax=max(float(np.percentile(img, 99.8)), 1e-12))
            ax.set_xticks([]), ax.set_yticks([])
            if k != "gt":
                p, s = res["grids"][n][k]
                ax.set_xlabel(f"{p:.1f} dB / {s:.2f}", fontsize=7)
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(nm, fontsize=7)
    fig.suptitle(f"{n}² (PSNR / SSIM vs ground truth)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def trace_figure(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in results:
        its = [t["it"] for t in r["trace"]]
        p = np.array([t["psnr104"] for t in r["trace"]])
        axes[0].plot(its, p - p.max(), lw=0.8)
        v = np.array([t["val"] for t in r["trace"]])
        axes[1].semilogy(its, v / v.min(), lw=0.8)
        ci = r["nir"]["chosen_iteration"]
        if ci in its:
            axes[0].plot(ci, p[its.index(ci)] - p.max(), "k.", ms=4)
    axes[0].set_ylim(-4, 0.3)
    axes[0].set_xlabel("iteration"), axes[0].set_ylabel("PSNR104 − oracle best (dB)")
    axes[0].set_title("every case; dot = iterate chosen without ground truth", fontsize=8)
    axes[1].set_xlabel("iteration"), axes[1].set_ylabel("held-out misfit / its minimum")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown_tables(results) -> str:
    """The per-grid and per-case tables of docs/benchmarks.md, from a results JSON's cases."""
    def f(v):
        return f"{v[0]:.2f} / {v[1]:.3f}"

    out = []
    for split, title in (("tune", "tune half"), ("heldout", "held-out half")):
        rs = [r for r in results if r["split"] == split]
        if not rs:
            continue
        out += [f"**{title}, per grid (mean PSNR dB / mean SSIM over {len(rs)} cases)**", "",
                "| grid | paper K | tuned K (oracle) | NIR default | NIR oracle iterate | NIR beats tuned in PSNR and SSIM |",
                "|---|---|---|---|---|---|"]
        for n in GRIDS:
            m = {k: np.mean([r["grids"][str(n)][k] for r in rs], axis=0) for k in ("paper", "tuned", "nir", "nir_oracle")}
            wins = sum(r["grids"][str(n)]["nir"][0] > r["grids"][str(n)]["tuned"][0] and
                       r["grids"][str(n)]["nir"][1] > r["grids"][str(n)]["tuned"][1] for r in rs)
            out.append(f"| {n}² | {f(m['paper'])} | {f(m['tuned'])} | {f(m['nir'])} | {f(m['nir_oracle'])} | {wins}/{len(rs)} |")
        out += ["", f"**{title}, per case at 104² (PSNR dB / SSIM); bold: NIR default beats the tuned baseline in both**", "",
                "| case | paper K | tuned K (oracle; λ, sweeps) | NIR default | NIR oracle iterate | chosen / oracle iteration (gap dB) | stop iteration | train s |",
                "|---|---|---|---|---|---|---|---|"]
        for r in rs:
            g, n, t = r["grids"]["104"], r["nir"], r["tuned"]
            win = g["nir"][0] > g["tuned"][0] and g["nir"][1] > g["tuned"][1]
            nir = f"**{f(g['nir'])}**" if win else f(g["nir"])
            out.append(f"| {r['case']} | {f(g['paper'])} | {f(g['tuned'])} ({t['lam']:.2g}, {t['sweeps']}) | {nir} | "
                       f"{f(g['nir_oracle'])} | {n['chosen_iteration']} / {n['oracle_iteration']} "
                       f"({g['nir_oracle'][0] - g['nir'][0]:+.2f}) | {n['stop_iteration']} | {n['train_s']:.1f} |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 cases, 200 iterations (smoke test)")
    ap.add_argument("--split", default="all", choices=("tune", "heldout", "all"))
    ap.add_argument("--cases", default=None, help="comma-separated substrings of case names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", default=None, help="JSON overrides of TrainConfig() (exploration only)")
    ap.add_argument("--out", default=None, help="results stem (default benchmarks/results/beyond_paper[_quick])")
    ap.add_argument("--tables", default=None, metavar="JSON", help="print the docs' markdown tables from a results "
                    "JSON and exit (no training)")
    a = ap.parse_args(argv)
    if a.tables:
        print(markdown_tables(json.loads(Path(a.tables).read_text())["cases"]))
        return
    torch.set_num_threads(a.threads)
    cfg = TrainConfig(device="cpu")
    if a.config:
        cfg = TrainConfig(**{**cfg.to_dict(), **json.loads(a.config)})
    cs = suite.select(a.split, a.cases)
    if a.quick:
        cs = cs[:2] if not a.cases else cs
        cfg = TrainConfig(**{**cfg.to_dict(), "iterations": 200})
    default_stem = "beyond_paper" + ("_quick" if a.quick else "") + ("_config" if a.config else "")
    stem = Path(a.out) if a.out else ROOT / f"benchmarks/results/{default_stem}"
    log = Tee()
    log(f"# NIR beyond the paper — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    log(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    log(f"# config: TrainConfig() {'with ' + a.config if a.config else '(no arguments)'}"
        f"{' [quick: 200 iterations]' if a.quick else ''}")
    log("# tuned baseline = ORACLE: λ × sweeps chosen by PSNR at 104² against the ground truth")
    results, images = [], {}
    stem.parent.mkdir(parents=True, exist_ok=True)
    for case in cs:
        res, ims = run_case(case, cfg, log)
        results.append(res)
        images[case.name] = ims
        Path(str(stem) + ".partial.json").write_text(json.dumps({"cases": results}, default=float))
        n, g = res["nir"], res["grids"][104]
        log(f"{case.split:7s} {case.name:28s} 104²: paper {g['paper'][0]:6.2f}/{g['paper'][1]:.3f} "
            f"tuned {g['tuned'][0]:6.2f}/{g['tuned'][1]:.3f} (λ {res['tuned']['lam']:.2g}, {res['tuned']['sweeps']} sw) "
            f"NIR {g['nir'][0]:6.2f}/{g['nir'][1]:.3f} oracle {g['nir_oracle'][0]:6.2f}/{g['nir_oracle'][1]:.3f} | "
            f"chosen it {n['chosen_iteration']} vs oracle it {n['oracle_iteration']} "
            f"(gap {g['nir_oracle'][0] - g['nir'][0]:+.2f} dB) stop {n['stop_iteration']} "
            f"{n['train_s']:.1f} s | {n['stop_reason']}")
    summarize(results, log)
    out = {"quick": a.quick, "config": cfg.to_dict(), "threads": a.threads, "torch": torch.__version__,
           "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
           "cases": [{**r, "trace": [{k: v for k, v in t.items() if k != "native"} for t in r["trace"]]}
                     for r in results]}  # native images only for in-process analysis: keep the JSON small
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(str(stem) + ".json").write_text(json.dumps(out, default=float))
    Path(str(stem) + ".txt").write_text(log.buf.getvalue())
    if not a.quick and len(results) >= 4:
        # the docs' pictures show the default; an exploration run (--config/--out) draws
        # beside its results
        explore = bool(a.config or a.out)

        def pics(name):
            return Path(f"{stem}_{name}.png") if explore else ROOT / f"docs/images/beyond_{name}.png"

        pick = {}
        for r in results:
            pick.setdefault(r["split"], []).append(r)
        for split, rs in pick.items():
            sel = [r for r in rs if "-high" in r["case"]] + [r for r in rs if "-low" in r["case"]]
            figure(images, [(r["case"], r) for r in sel], pics(split))
        trace_figure(results, pics("traces"))
    Path(str(stem) + ".partial.json").unlink(missing_ok=True)
    print(f"wrote {stem}.txt/.json")


def summarize(results, log):
    log("\n## per case and grid (PSNR dB / SSIM): paper | tuned (oracle) | NIR default (auto stop) | NIR oracle iterate")
    for r in results:
        for n in GRIDS:
            g = r["grids"][n]
            log(f"{r['case']:28s} {n:3d}²  " + "  ".join(f"{k} {g[k][0]:6.2f}/{g[k][1]:.3f}"
                                                       for k in ("paper", "tuned", "nir", "nir_oracle")))
    log("\n## per split and grid: means, and NIR-default wins over the tuned baseline")
    for split in ("tune", "heldout"):
        rs = [r for r in results if r["split"] == split]
        if not rs:
            continue
        for n in GRIDS:
            m = {k: np.mean([r["grids"][n][k] for r in rs], axis=0) for k in ("paper", "tuned", "nir", "nir_oracle")}
            wins = sum(r["grids"][n]["nir"][0] > r["grids"][n]["tuned"][0] and
                       r["grids"][n]["nir"][1] > r["grids"][n]["tuned"][1] for r in rs)
            log(f"{split:7s} {n:3d}² mean  " + "  ".join(f"{k} {m[k][0]:6.2f}/{m[k][1]:.3f}" for k in m)
                + f"  | NIR beats tuned in PSNR and SSIM on {wins}/{len(rs)}")
    log("\n## goals")
    for split in ("tune", "heldout"):
        rs = [r for r in results if r["split"] == split]
        if not rs:
            continue
        fails = []
        for r in rs:
            g = r["grids"][104]
            if g["tuned"][1] >= 0.5:
                if not (g["nir"][0] > g["tuned"][0] and g["nir"][1] > g["tuned"][1]):
                    fails.append(f"{r['case']} (ΔPSNR {g['nir'][0] - g['tuned'][0]:+.2f}, ΔSSIM {g['nir'][1] - g['tuned'][1]:+.3f})")
            elif g["nir"][1] < g["tuned"][1]:
                fails.append(f"{r['case']} (tuned SSIM < 0.5; ΔSSIM {g['nir'][1] - g['tuned'][1]:+.3f})")
        log(f"goal 3 [{split}]: NIR default beats tuned baseline (PSNR & SSIM where tuned SSIM >= 0.5, "
            f"SSIM elsewhere) on {len(rs) - len(fails)}/{len(rs)}" + (f"; fails: {'; '.join(fails)}" if fails else ""))
    gaps = [(r["case"], r["grids"][104]["nir_oracle"][0] - r["grids"][104]["nir"][0]) for r in results]
    bad = [f"{c} ({g:.2f} dB)" for c, g in gaps if g > 0.5]
    log(f"goal 4: chosen iterate within 0.5 dB (PSNR 104²) of the oracle iterate on {len(gaps) - len(bad)}/{len(gaps)}; "
        f"max gap {max(g for _, g in gaps):.2f} dB" + (f"; fails: {', '.join(bad)}" if bad else ""))
    ts = [r["nir"]["train_s"] for r in results]
    log(f"goal 5: training time to the stop, median {np.median(ts):.1f} s (min {min(ts):.1f}, max {max(ts):.1f}) "
        f"over {len(ts)} cases")


if __name__ == "__main__":
    main()
