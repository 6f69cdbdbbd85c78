"""Stopping rules measured offline: record every checkpoint of a training once, replay rules.

Choosing a stopping rule (or a setting that changes the trajectory) by full benchmark runs costs
~8 minutes per candidate. Instead `record` trains each case of benchmarks/suite.py for the whole
iteration budget with a rule that never stops, and stores, at every validation check, the per-row
held-out misfits and the PSNR at 104² of the current iterate (against the ground truth, for
scoring only). `rules` then replays stopping rules on the stored traces in a second: what a rule
would have stopped at, what it would have returned, and how far that is from the best checkpoint
up to its stop (the same "gap" as benchmarks/beyond_paper.py). The replay of the default rule
reproduces beyond_paper.py's choices (same seeds; torch CPU is deterministic here).

    python -m benchmarks.stopping_traces record --tag w30 --split tune \
        --config '{"snr_weight": 30, "spike_guard": 3}'
    python -m benchmarks.stopping_traces rules --tag w30 [--cases spiral-high] [--upto 3000]

`--upto T` replays only the checks up to iteration T: with the same seed the first T iterations of
a longer run are those of a run stopped at T under the same learning-rate schedule.

Traces go to $NIRMPI_SUITE_CACHE/traces (default ~/.cache/napari-nirmpi/suite/traces), never into
the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import suite
from napari_nirmpi.metrics import psnr
from napari_nirmpi.nir import TrainConfig, fit
from napari_nirmpi.nir.stopping import OneStandardError, ValidationPatience
from napari_nirmpi.sample import sample


def trace_dir() -> Path:
    d = suite.cache_dir() / "traces"
    d.mkdir(parents=True, exist_ok=True)
    return d


class Recorder:
    """A rule that never stops and keeps every check's per-row held-out misfits."""

    name = "Recorder"
    wants_residuals = True

    def reset(self):
        self.rows, self.its = [], []

    def update(self, iteration, val_loss, train_loss, residuals=None):
        self.rows.append(np.asarray(residuals, np.float64))
        self.its.append(int(iteration))
        return iteration, None


def _cases(split: str, names: str | None):
    """(name, simulate thunk, tuned PSNR thunk) of the suite's cases, or of benchmarks/unseen.py's."""
    if split == "unseen":
        from benchmarks import unseen
        from benchmarks.oracle import tune_kaczmarz
        from napari_nirmpi.simulate import simulate_case

        def tuned(sim, prob):
            return tune_kaczmarz(prob.S, prob.u, sim.ground_truth((104, 104)), prob.grid, (104, 104),
                                 lambdas=suite.LAMBDAS, sweeps=suite.SWEEPS)["psnr"]
        for n, kw in unseen.CASES.items():
            if not names or any(w.strip() in n for w in names.split(",")):
                yield n, (lambda kw=kw: simulate_case(**kw)), tuned
    else:
        for c in suite.select(split, names):
            yield c.name, c.simulate, (lambda sim, prob, c=c: suite.baselines(c, sim, prob)["tuned"]["psnr104"])


def record(tag: str, split: str, names: str | None, overrides: dict) -> None:
    for name, simulate, tuned in _cases(split, names):
        sim = simulate()
        prob = sim.problem()
        gt = sim.ground_truth((104, 104))
        rec = Recorder()
        cfg = TrainConfig(**{**overrides, "stopping": rec})
        scores = {}

        def score(st):
            if st.stop_reason is None and st.val_loss is not None and st.iteration % cfg.val_every == 0:
                img, _ = sample(st.current_field(), (104, 104))
                scores[st.iteration] = float(psnr(img, gt))

        t0 = time.perf_counter()
        fit(prob, cfg, callback=score)
        # checks the spike guard rolled back never reach the rule; the final check has no live state
        keep = [i for i, it in enumerate(rec.its) if it in scores]
        np.savez(trace_dir() / f"{tag}-{name}.npz", its=np.array([rec.its[i] for i in keep]),
                 rows=np.stack([rec.rows[i] for i in keep]),
                 psnr=np.array([scores[rec.its[i]] for i in keep]),
                 tuned=tuned(sim, prob),
                 config=json.dumps(overrides))
        best = max(scores, key=scores.get)
        print(f"{name:28s} {time.perf_counter() - t0:5.1f} s  best {scores[best]:.2f} dB at {best}", flush=True)


# ---------------------------------------------------------------------------------------------
# replay

def replay(rule, its, rows):
    """Feed the recorded checks to a real rule as train() does: (returned index, stop index)."""
    rule.reset()
    chosen = 0
    for j, (it, r) in enumerate(zip(its, rows)):
        val = float(r.sum())
        if getattr(rule, "wants_residuals", False):
            ret, stop = rule.update(int(it), val, val, residuals=r)
            chosen = int(np.flatnonzero(its == ret)[0])
        else:
            is_best, stop = rule.update(int(it), val, val)
            chosen = j if is_best else chosen
        if stop is not None:
            return chosen, j
    return chosen, len(its) - 1


def rules(tag: str, names: str | None, per_case: bool, upto: int | None = None) -> None:
    files = sorted(trace_dir().glob(f"{tag}-*.npz"))
    if names:
        files = [f for f in files if any(n in f.name for n in names.split(","))]
    if not files:
        sys.exit(f"no traces for tag {tag!r} in {trace_dir()}: run `record --tag {tag}` first")
    traces = {f.name[len(tag) + 1:-4]: dict(np.load(f)) for f in files}
    if upto is not None:
        for d in traces.values():
            keep = d["its"] <= upto
            d["its"], d["rows"], d["psnr"] = d["its"][keep], d["rows"][keep], d["psnr"][keep]
    print(f"{len(traces)} cases, tag {tag} (config {traces[next(iter(traces))]['config']})"
          + (f", checks up to iteration {upto}" if upto is not None else ""))
    print("rule                       cases>0.5dB  mean gap  worst gap   NIR-tuned mean (worst)  cases over 0.5 dB")
    candidates = ([("min", None, p) for p in (500, 1000, None)] + [("1se", k, p) for k in (0.5, 1.0) for p in (500, 1000)]
                  + [("1se", k, 500) for k in (0.75, 1.5, 2.0)])
    for kind, k, patience in candidates:
        gaps, diffs, bad, lines = [], [], [], []
        for name, d in traces.items():
            its, rows, p = d["its"], d["rows"], d["psnr"]
            never = int(its[-1]) + 1  # patience None: the lowest misfit of the whole trace
            rule = (ValidationPatience(patience or never) if kind == "min"
                    else OneStandardError(patience or never, k))
            j, J = replay(rule, its, rows)
            gap = float(p[:J + 1].max() - p[j])
            gaps.append(gap)
            diffs.append(float(p[j] - d["tuned"]))
            if gap > 0.5:
                bad.append(f"{name} {gap:.2f}")
            lines.append(f"    {name:28s} returned {its[j]:5d} ({p[j]:.2f} dB)  best {p[:J + 1].max():.2f} dB at "
                         f"{its[int(np.argmax(p[:J + 1]))]:5d}  stop {its[J]:5d}  tuned {float(d['tuned']):.2f}  "
                         f"NIR-tuned {p[j] - d['tuned']:+.2f}")
        label = f"{kind}{'' if k is None else f' k={k:g}'} patience {patience or 'whole run'}"
        print(f"{label:26s} {sum(g > 0.5 for g in gaps):6d}      {np.mean(gaps):6.2f}    {max(gaps):6.2f}      "
              f"{np.mean(diffs):+6.2f} ({min(diffs):+.2f})        {', '.join(bad)}")
        if per_case:
            print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--tag", required=True)
    r.add_argument("--split", default="all", choices=("tune", "heldout", "all", "unseen"),
                   help="a half of benchmarks/suite.py, or the cases of benchmarks/unseen.py")
    r.add_argument("--cases", default=None)
    r.add_argument("--config", default="{}", help="JSON overrides of TrainConfig()")
    r.add_argument("--threads", type=int, default=2)
    q = sub.add_parser("rules")
    q.add_argument("--tag", required=True)
    q.add_argument("--cases", default=None)
    q.add_argument("--per-case", action="store_true")
    q.add_argument("--upto", type=int, default=None, help="replay only the checks up to this iteration")
    a = ap.parse_args(argv)
    if a.cmd == "record":
        torch.set_num_threads(a.threads)
        record(a.tag, a.split, a.cases, json.loads(a.config))
    else:
        rules(a.tag, a.cases, a.per_case, a.upto)


if __name__ == "__main__":
    main()
