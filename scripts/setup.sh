#!/usr/bin/env bash
# Set up everything napari-nirmpi needs on a fresh Debian/Ubuntu machine (idempotent):
# system libraries for a real napari viewer under Xvfb, a venv in .venv, CPU torch, the package.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SYS_PKGS="xvfb xauth libgl1 libglx-mesa0 libgl1-mesa-dri libegl1 libopengl0 libxkbcommon-x11-0
libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libdbus-1-3 libfontconfig1 x11-utils"
if command -v apt-get >/dev/null 2>&1; then
  missing=$(for p in $SYS_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "[setup] installing system packages: $(echo $missing)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# CPU torch first: a bare `torch` requirement would pull a multi-GB CUDA build. PyTorch's CPU
# index when it answers; otherwise the pin from the default index (a CPU wheel where a local
# wheel house serves it).
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}
CPU_INDEX=https://download.pytorch.org/whl/cpu
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if .venv/bin/python -c "import urllib.request as u; u.urlopen('$CPU_INDEX/torch/', timeout=5)" 2>/dev/null \
     && .venv/bin/python -m pip install -q --timeout 30 --index-url "$CPU_INDEX" "$TORCH_PIN"; then
    echo "[setup] torch from the PyTorch CPU index"
  else
    .venv/bin/python -m pip install -q "$TORCH_PIN"
  fi
fi
.venv/bin/python -m pip install -q -e ".[testing]"
echo "[setup] ready: $(.venv/bin/python -c 'import napari_nirmpi, torch; print("napari-nirmpi", napari_nirmpi.__version__, "torch", torch.__version__)')"
