#!/usr/bin/env bash
# Install napari-nirmpi from its wheel into a clean environment, twice as users do:
#  1. the core alone (`pip install napari-nirmpi`): no napari, no Qt; `nirmpi simulate`, `info` and
#     `batch` must work (a headless Dask worker);
#  2. with napari (what the napari plugin manager's environment has): napari/npe2 discover the plugin.
#
#   bash scripts/check_install.sh            # build the wheel, clean venv in a temp dir, checks
#   KEEP=1 bash scripts/check_install.sh     # keep the temp dir (prints its path)
#   EXTRA=all bash scripts/check_install.sh  # step 2 with napari-nirmpi[all] (napari with Qt)
#
# Needs: python3 (3.11+) with venv, network or a local package index for the dependencies.
# CPU torch is installed first (pinned) so pip does not pull the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUILD_PY=${BUILD_PYTHON:-.venv/bin/python}   # any python with `build` installed
[ -x "$BUILD_PY" ] || BUILD_PY=$PY
TORCH=${TORCH_SPEC:-torch==2.13.0}
WORK=$(mktemp -d -t nirmpi-install-XXXXXX)
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "[check] kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
step() { echo; echo "[check] $*"; }

step "build the wheel"
"$BUILD_PY" -m build --wheel --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
WHEEL=$(ls "$WORK"/dist/napari_nirmpi-*.whl)
echo "$(basename "$WHEEL")"
"$PY" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
manifest = "napari_nirmpi/napari.yaml"
assert manifest in names, f"{manifest} missing from the wheel"
text = zipfile.ZipFile(sys.argv[1]).read(manifest).decode()
assert text.startswith("name: napari-nirmpi"), f"{manifest} is not the manifest (a dangling symlink?): {text[:60]!r}"
print(f"{len(names)} files; {manifest} present ({len(text)} bytes)")
EOF

step "clean venv (no system site-packages)"
"$PY" -m venv --clear "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --upgrade pip
"$VPY" -m pip install -q "$TORCH"
"$VPY" -m pip install -q "$WHEEL"

step "core only: napari absent, the CLI works (simulate, info, batch)"
"$VPY" -c "import importlib.util as u; absent=[m for m in ('napari','qtpy','magicgui','npe2','PyQt6','PyQt5','PySide6') if u.find_spec(m)]; assert not absent, absent; print('napari, Qt, magicgui, npe2: not installed')"
"$WORK/venv/bin/nirmpi" simulate "$WORK/data" --phantom bolus --grid 11 --frames 3 --seed 2 >/dev/null
"$WORK/venv/bin/nirmpi" info "$WORK/data/sm.mdf" >"$WORK/info.txt"; sed -n 1,3p "$WORK/info.txt"
"$WORK/venv/bin/nirmpi" batch --sm "$WORK/data/sm.mdf" --meas "$WORK/data/meas.mdf" --method kaczmarz --workers 1 --output "$WORK/series.zarr" 2>&1 | tail -1

step "with napari: install the ${EXTRA:-napari} extra"
# EXTRA=all brings napari[all] (a Qt binding), as in `pip install "napari-nirmpi[all]"`
"$VPY" -m pip install -q "$WHEEL[${EXTRA:-napari}]"
"$VPY" -c "import sys, torch, napari, napari_nirmpi; print('python', sys.version.split()[0], '| torch', torch.__version__, '| napari', napari.__version__, '| napari-nirmpi', napari_nirmpi.__version__, 'from', napari_nirmpi.__file__)"

step "npe2 validate napari-nirmpi"
"$WORK/venv/bin/npe2" validate napari-nirmpi

step "npe2 list"
COLUMNS=200 "$WORK/venv/bin/npe2" list --fields name,version,npe2,contributions | grep -E "name|napari-nirmpi" || { "$WORK/venv/bin/npe2" list; echo "napari-nirmpi not listed"; exit 1; }

step "PluginManager discovery (what napari does at start-up)"
"$VPY" - <<'EOF'
from npe2 import PluginManager
pm = PluginManager.instance()
pm.discover()
names = sorted(m.name for m in pm.iter_manifests())
assert "napari-nirmpi" in names, names
mf = pm.get_manifest("napari-nirmpi")
c = mf.contributions
readers = [r.command for r in c.readers or []]
widgets = [w.display_name for w in c.widgets or []]
samples = [s.key for s in c.sample_data or []]
writers = [w.display_name for w in c.writers or []]
print("readers:", readers)
print("writers:", writers)
print("widgets:", widgets)
print("sample data:", samples)
assert readers == ["napari-nirmpi.get_reader"], readers
assert len(widgets) >= 5 and samples == ["spiral"], (widgets, samples)
# the reader claims MDF files and the commands import from the installed package
assert pm.iter_compatible_readers(["scan.mdf"]), "no reader offered for *.mdf"
try:
    import qtpy  # noqa: F401  (widgets need a Qt binding: the plugin manager runs inside napari)
    ids = [cmd.id for cmd in c.commands]
except Exception:
    ids = [cmd.id for cmd in c.commands if not cmd.id.endswith("_widget")]
    print("no Qt binding: widget commands not imported")
for i in ids:
    assert callable(pm.commands.get(i)), i  # imports python_name from the installed package
print(f"{len(ids)} of {len(c.commands)} commands resolve (import from the installed wheel)")
EOF

step "nirmpi entry point"
"$WORK/venv/bin/nirmpi" --help | head -3
echo; echo "[check] OK: the wheel installs into a clean environment and napari discovers the plugin"
