"""torch.compile for the feature-grid step on a CPU: seconds per training step, eager against
compiled, side by side in one run on the 37³ OpenMPIData-geometry cone.

    python -m benchmarks.compile_cpu                 # 37³; --grid 15 for a quick look

Each variant takes `--warmup` steps (compilation included) and then times `--steps` steps of
the same `TrainConfig.fast_tv(0.3)` run (two jittered points per voxel, the TV prior) on the
same data. Prints the compile time, ms per step and the ratio, and writes them to
benchmarks/results/compile_cpu.txt.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import time

import torch

from napari_nirmpi.nir import TrainConfig
from napari_nirmpi.simulate import simulate_case

_train = importlib.import_module("napari_nirmpi.nir.train")
OUT = os.path.join(os.path.dirname(__file__), "results")


def per_step(problem, compiled: bool, warmup: int, steps: int) -> tuple[float, float]:
    """(seconds of the warm-up steps, seconds per timed step)."""
    run = _train._Run(problem, TrainConfig.fast_tv(0.3, init=None, device="cpu"), None)
    if compiled:
        run.net = torch.compile(run.net)
    t = time.perf_counter()
    for it in range(1, warmup + 1):
        float(run.step(it).detach())
    t_warm = time.perf_counter() - t
    t = time.perf_counter()
    for it in range(warmup + 1, warmup + steps + 1):
        float(run.step(it).detach())
    return t_warm, (time.perf_counter() - t) / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=37)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args(argv)
    lines = []

    def say(text):
        print(text, flush=True)
        lines.append(text)

    say(f"# compile_cpu: cone {a.grid}³, {platform.machine()} {os.cpu_count()}-core CPU, load average "
        f"{os.getloadavg()[0]:.1f}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    problem = simulate_case("cone", grid=(a.grid,) * 3, scanner="openmpi", noise="medium", seed=0).problem()
    eager_w, eager = per_step(problem, False, a.warmup, a.steps)
    comp_w, comp = per_step(problem, True, a.warmup, a.steps)
    say(f"eager:    {eager * 1e3:.1f} ms/step ({a.warmup} warm-up steps {eager_w:.1f} s)")
    say(f"compiled: {comp * 1e3:.1f} ms/step ({a.warmup} warm-up steps incl. compilation {comp_w:.1f} s)")
    say(f"compiled / eager per step: {comp / eager:.2f}")
    say(f"command: python -m benchmarks.compile_cpu --grid {a.grid} --warmup {a.warmup} --steps {a.steps}")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "compile_cpu.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
