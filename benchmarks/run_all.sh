#!/usr/bin/env bash
# Run every benchmark in sequence on a quiet machine; the printed figures go to
# benchmarks/results/run_all.txt (JSON files beside it). Usage: bash benchmarks/run_all.sh [--skip-suite]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
out=benchmarks/results/run_all.txt
mkdir -p benchmarks/results
{
  echo "# $(date -u) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  for cmd in "$PY benchmarks/cores.py" \
             "$PY benchmarks/kaczmarz_speed.py" \
             "$PY benchmarks/mdf_read.py" \
             "$PY benchmarks/nir_quality.py" \
             "$PY benchmarks/batch.py" \
             "xvfb-run -a $PY benchmarks/gui_responsiveness.py"; do
    echo; echo "## $cmd"; /usr/bin/time -f "(%e s wall)" $cmd 2>&1
  done
  if [ "${1:-}" != "--skip-suite" ]; then
    echo; echo "## $PY benchmarks/beyond_paper.py"; $PY benchmarks/beyond_paper.py 2>&1
  fi
} | tee "$out"
