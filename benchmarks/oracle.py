"""Ground-truth scoring for the benchmarks: the oracle-tuned Kaczmarz baseline and training scored
against the phantom.

Everything here sees the ground truth, which no user has, so it lives with the benchmarks and not
in the library: `tune_kaczmarz` picks the Kaczmarz setting a user could at best have guessed, and
`train_scored` runs the library's training loop (`napari_nirmpi.nir.fit`) while scoring every
held-out check against the phantom, to find the checkpoint an oracle would have returned.

    python -m benchmarks.oracle --check    # self-check: the oracle returns its best table entry
"""

from __future__ import annotations

import copy
import sys
import time
from typing import Sequence

import numpy as np

from napari_nirmpi.errors import NirmpiError, ProblemMismatch
from napari_nirmpi.metrics import psnr, ssim
from napari_nirmpi.nir import fit
from napari_nirmpi.resample import upsample
from napari_nirmpi.sample import sample
from napari_nirmpi.solvers import KaczmarzSystem

__all__ = ["tune_kaczmarz", "metrics_of", "train_scored", "copy_net", "check"]


def tune_kaczmarz(S, u, reference, grid, target_shape, *, lambdas=None,
                  sweeps: Sequence[int] = (1, 3, 10, 30, 150), method: str = "bicubic",
                  normalize_reg: bool = True, enforce_real: bool = True,
                  enforce_positive: bool = True) -> dict:
    """Oracle-tuned Kaczmarz: the (λ, sweeps) with the best PSNR against a ground truth.

    Each λ costs one run (snapshots at every entry of ``sweeps``); each snapshot is up-sampled
    from ``grid`` to ``target_shape`` (same FOV) with ``method`` and scored by `metrics.psnr`
    (least-squares intensity fit) against ``reference`` (an image of ``target_shape``).
    lambdas default: 15 values log-spaced from 1e-5 to 50 (relative λ).
    Returns {"lam", "sweeps", "psnr", "ssim", "image" (native, best), "upsampled", "table"},
    table = list of {"lam", "sweeps", "psnr"}.  This is an oracle: it sees the ground truth.
    """
    if lambdas is None:
        lambdas = np.logspace(-5, np.log10(50), 15)
    lambdas = [float(v) for v in np.ravel(lambdas)]
    if not lambdas:
        raise NirmpiError("tune_kaczmarz: lambdas is empty")
    target_shape = tuple(int(s) for s in target_shape)
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape != target_shape:
        raise ProblemMismatch(f"tune_kaczmarz: reference has shape {reference.shape}, "
                              f"expected target_shape {target_shape}")
    u = np.asarray(u)
    if u.ndim != 1:
        raise ProblemMismatch(f"tune_kaczmarz: needs one frame u of shape (M,), got {u.shape}")
    system = S if isinstance(S, KaczmarzSystem) else KaczmarzSystem(S)
    if system.num_voxels != grid.size:
        raise ProblemMismatch(f"tune_kaczmarz: system matrix has {system.num_voxels} columns but "
                              f"grid {grid.shape} has {grid.size} voxels")
    table = []
    best = None
    for lam in lambdas:
        snaps = system.solve(u, lam=lam, normalize_reg=normalize_reg, enforce_real=enforce_real,
                             enforce_positive=enforce_positive, snapshots=tuple(sweeps))
        for k, x in snaps.items():
            img = np.real(x).reshape(grid.shape).astype(np.float32)
            up, _ = upsample(img, grid, target_shape, method=method)
            score = psnr(up, reference)
            table.append({"lam": lam, "sweeps": int(k), "psnr": float(score)})
            if best is None or score > best[0]:
                best = (score, lam, int(k), img, up)
    score, lam, k, img, up = best
    return {"lam": lam, "sweeps": k, "psnr": float(score), "ssim": float(ssim(up, reference)),
            "image": img, "upsampled": up, "table": table}


def metrics_of(img, gt) -> tuple[float, float]:
    """(PSNR dB, SSIM) of `img` against `gt` (least-squares intensity fit)."""
    return float(psnr(img, gt)), float(ssim(img, gt))


def copy_net(net, state):
    """A copy of `net` carrying the weights `state`."""
    m = copy.deepcopy(net)
    m.load_state_dict(state)
    return m


def train_scored(prob, cfg, gt, on_check=None):
    """Train to the rule's own stop while scoring every validation check by PSNR against `gt` (at
    gt's shape): the benchmark's oracle, never seen by training. on_check(state, field, psnr) may
    record more per check. Returns (final state, oracle checkpoint's field, its iteration, training
    seconds without the scoring).

    The training is `napari_nirmpi.nir.fit` itself; the scoring runs in its callback on the live
    iterate (`state.current_field()`), and its time is subtracted from the training time."""
    oracle = {"psnr": -np.inf, "iteration": None, "weights": None}
    eval_time = [0.0]

    def score(st):
        if st.stop_reason is None and st.val_loss is not None and st.iteration % cfg.val_every == 0:
            t0 = time.perf_counter()
            fld = st.current_field()
            p = float(psnr(sample(fld, gt.shape)[0], gt))
            if on_check is not None:
                on_check(st, fld, p)
            if p > oracle["psnr"]:
                oracle.update(psnr=p, iteration=st.iteration,
                              weights={k: v.detach().clone() for k, v in fld.network.state_dict().items()})
            eval_time[0] += time.perf_counter() - t0
        return False

    field, st = fit(prob, cfg, callback=score)
    # the oracle checkpoint's field: same network, its weights
    ofield = field.__class__(copy_net(field.network, oracle["weights"]), field.grid, field.config,
                             field.params, scale=field.scale)
    return st, ofield, oracle["iteration"], st.elapsed - eval_time[0]


def check() -> list[str]:
    """Self-check of the oracle on a small random system; returns the failures (empty: passed)."""
    from napari_nirmpi.grid import Grid

    fails = []
    grid = Grid((8, 8), (8e-3, 8e-3))
    rng = np.random.default_rng(13)
    S = (rng.standard_normal((120, 64)) + 1j * rng.standard_normal((120, 64))).astype(np.complex64)
    truth = np.zeros((8, 8))
    truth[2:6, 3:5] = 1.0
    u = (S @ truth.ravel() + 2.0 * rng.standard_normal(120)).astype(np.complex64)
    out = tune_kaczmarz(S, u, truth, grid, (8, 8), lambdas=[1e-4, 1e-1, 10.0], sweeps=(1, 5))
    if len(out["table"]) != 6:
        fails.append(f"tune_kaczmarz: table has {len(out['table'])} entries, expected 3 λ × 2 sweeps = 6")
    if out["psnr"] != max(r["psnr"] for r in out["table"]):
        fails.append("tune_kaczmarz: returned PSNR is not the best of its table")
    if out["lam"] not in (1e-4, 1e-1, 10.0) or out["sweeps"] not in (1, 5):
        fails.append(f"tune_kaczmarz: returned a setting outside the grid ({out['lam']}, {out['sweeps']})")
    if out["image"].shape != (8, 8) or out["upsampled"].shape != (8, 8):
        fails.append("tune_kaczmarz: image shapes differ from the grid")
    if not 0 < out["ssim"] <= 1:
        fails.append(f"tune_kaczmarz: SSIM {out['ssim']} outside (0, 1]")
    try:
        tune_kaczmarz(S, u, truth, grid, (16, 16))
        fails.append("tune_kaczmarz: a reference of the wrong shape was accepted")
    except ProblemMismatch:
        pass
    return fails


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="run the self-check and exit (status 1 on a failure)")
    a = ap.parse_args(argv)
    if not a.check:
        ap.print_help()
        return 0
    fails = check()
    for f in fails:
        print(f"FAIL {f}", file=sys.stderr)
    print(f"oracle self-check: {'passed' if not fails else f'{len(fails)} failure(s)'}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
