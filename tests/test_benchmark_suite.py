"""The benchmarks' own self-checks pass (the suite holds out what its docstring says, the unseen
cases differ from every suite case, the ground-truth oracle returns its best table entry).

The checks live in the benchmarks package (`python -m benchmarks.suite --check`,
`python -m benchmarks.oracle --check`); the tests run them as a user would, from the repository
root, and do not import benchmark code."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["benchmarks.suite", "benchmarks.oracle"])
def test_benchmark_self_check(module):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", module, "--check"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, f"{module} --check:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    assert "self-check: passed" in r.stdout
