#!/usr/bin/env bash
# One command: set up (if needed) and run the whole test suite (GUI tests use Xvfb via pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
