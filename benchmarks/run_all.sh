#!/usr/bin/env bash
# Run every benchmark in sequence on a quiet machine; the printed figures go to
# benchmarks/results/run_all.txt (JSON files beside it). Usage: bash benchmarks/run_all.sh [--skip-suite]
# (the package must be importable: installed into .venv, or PYTHONPATH=src; PYTHON= picks the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=benchmarks/results/run_all.txt
mkdir -p benchmarks/results
{
  echo "# $(date -u) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  for cmd in "$PY -m benchmarks.cores" \
             "$PY -m benchmarks.kaczmarz_speed" \
             "$PY -m benchmarks.mdf_read" \
             "$PY -m benchmarks.nir_quality" \
             "$PY -m benchmarks.batch" \
             "xvfb-run -a $PY -m benchmarks.gui_responsiveness"; do
    echo; echo "## $cmd"; /usr/bin/time -f "(%e s wall)" $cmd 2>&1
  done
  if [ "${1:-}" != "--skip-suite" ]; then
    echo; echo "## $PY -m benchmarks.beyond_paper"; $PY -m benchmarks.beyond_paper 2>&1
  fi
} | tee "$out"
