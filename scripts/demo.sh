#!/usr/bin/env bash
# One command: set up (if needed) and run the main job on built-in simulated data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/nirmpi demo "${1:-demo-out}"
