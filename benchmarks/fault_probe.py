"""Fault probe: malformed variants of a small simulated system matrix and measurement, each run
through `nirmpi info` (mdf.open + summary) and a reconstruction (build_problem + Kaczmarz) in
its own process, with a time limit and its peak memory measured.

    python -m benchmarks.fault_probe            # the whole set, prints the table
    python -m benchmarks.fault_probe --quick    # every 4th variant

Outcomes: refused with one clear line (a NirmpiError subclass, one line, naming the file),
accepted with an identical result (image within 1e-4 of the clean one, relative to its
maximum), accepted with a warning (MDFWarning or MDFFile.warnings), silently different,
crashed (any other exception or a signal), hung (over the time limit), over 2 GB (peak resident
memory), inputs modified (SHA-256 of every input before and after). Variants marked
`must_refuse` count as failures unless refused. tests/test_faults.py runs a fast subset
in-process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from napari_nirmpi.errors import MDFWarning, NirmpiError

TIME_LIMIT_S = 60.0
MEMORY_LIMIT_BYTES = 2 << 30
ITERATIONS = 10


# ----------------------------------------------------------------------------------------------
# the pipeline run on each variant
# ----------------------------------------------------------------------------------------------
def run_pipeline(sm: str, meas: str) -> dict:
    """info on both files, then a reconstruction. -> {"status": "ok"|"refused"|"crash", ...}"""
    from napari_nirmpi import mdf
    from napari_nirmpi.preprocess import build_problem
    from napari_nirmpi.solvers import reconstruct_kaczmarz

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MDFWarning)
        warnings.simplefilter("error", RuntimeWarning)  # a numpy warning is a finding too
        try:
            notes = []
            for p in (sm, meas):
                f = mdf.open(p)
                f.summary()
                notes += f.warnings
            problem = build_problem(sm, meas)
            image = reconstruct_kaczmarz(problem, iterations=ITERATIONS)
        except NirmpiError as e:
            return {"status": "refused", "type": type(e).__name__, "message": str(e)}
        except Exception as e:  # noqa: BLE001 - that is what the probe counts
            return {"status": "crash", "type": type(e).__name__, "message": str(e)[:300]}
    notes += [str(w.message) for w in caught if issubclass(w.category, MDFWarning)]
    return {"status": "ok", "image": np.asarray(image, np.float64).ravel().tolist(), "warnings": notes}


def one_clear_line(message: str, names: list[str]) -> bool:
    return bool(message) and "\n" not in message and any(n in message for n in names)


# ----------------------------------------------------------------------------------------------
# bases and variants
# ----------------------------------------------------------------------------------------------
def make_bases(folder: Path) -> dict[str, Path]:
    from napari_nirmpi.simulate import simulate

    paths = simulate(folder / "base", grid=6, noise="low", seed=3)
    return {"sm": Path(paths["sm"]), "meas": Path(paths["meas"])}


@dataclass
class Variant:
    name: str
    role: str                      # which file is mutated: "sm" or "meas"
    mutate: Callable[[Path], Path]  # gets a copy, returns the path to use (may differ)
    must_refuse: bool = True
    fast: bool = False             # part of the in-process CI subset


def _h5(fn):
    def m(p: Path) -> Path:
        with h5py.File(p, "a") as h:
            fn(h)
        return p
    return m


def _set(name, value, dtype=None):
    def f(h):
        if name in h:
            del h[name]
        if isinstance(value, str):
            h.create_dataset(name, data=value, dtype=h5py.string_dtype())
        else:
            h.create_dataset(name, data=np.asarray(value, dtype=dtype))
    return _h5(f)


def _delete(name):
    return _h5(lambda h: h.__delitem__(name))


def _edit_data(fn):
    def f(h):
        d = h["/measurement/data"]
        a = d[()]
        del h["/measurement/data"]
        h["/measurement/data"] = fn(a)
    return _h5(f)


def _poke(index, value):
    def fn(a):
        a = a.copy()
        a[index] = value
        return a
    return _edit_data(fn)


def _link(target_name, how):
    def f(h):
        if how == "valid":
            h.copy(target_name, "/_moved")
            del h[target_name]
            h[target_name] = h5py.SoftLink("/_moved")
        elif how == "dangling":
            del h[target_name]
            h[target_name] = h5py.SoftLink("/nowhere/at/all")
        elif how == "loop":
            del h[target_name]
            h["/_loop_a"] = h5py.SoftLink("/_loop_b")
            h["/_loop_b"] = h5py.SoftLink("/_loop_a")
            h[target_name] = h5py.SoftLink("/_loop_a")
        elif how == "external":
            del h[target_name]
            h[target_name] = h5py.ExternalLink("/etc/hostname", "/x")
        elif how == "group":
            del h[target_name]
            h.create_group(target_name)
    return _h5(f)


def _bytes(fn):
    def m(p: Path) -> Path:
        b = bytearray(p.read_bytes())
        p.write_bytes(bytes(fn(b)))
        return p
    return m


def _flip(seed):
    def fn(b):
        rng = np.random.default_rng(seed)
        for pos in rng.integers(0, min(len(b), 4096), 4):  # HDF5 superblock and object headers
            b[int(pos)] ^= 1 << int(rng.integers(0, 8))
        return b
    return fn


def _truncate(frac):
    return _bytes(lambda b: b[: int(len(b) * frac)])


def _fifo(p: Path) -> Path:
    q = p.with_name("fifo.mdf")
    os.mkfifo(q)
    return q


def _giant_frames(h):
    """A 1 MB measurement declaring 3e6 frames (unallocated chunks)."""
    d = h["/measurement/data"]
    shape = (3_000_000,) + d.shape[1:]
    dt = d.dtype
    first = d[: d.shape[0]]
    del h["/measurement/data"], h["/measurement/isBackgroundFrame"]
    nd = h.create_dataset("/measurement/data", shape=shape, dtype=dt, chunks=(1,) + shape[1:])
    nd[: first.shape[0]] = first
    h["/measurement/isBackgroundFrame"] = np.zeros(shape[0], np.int8)
    h["/acquisition/numFrames"][()] = shape[0]
    if "/_nirmpi/frameTimes" in h:  # as another writer would: no per-frame times of ours
        del h["/_nirmpi/frameTimes"]


def _gzip_bomb(h):
    """One chunk decompressing to ~2 GB inside a small file (frame axis last in a system matrix)."""
    d = h["/measurement/data"]
    shape, dt = d.shape, d.dtype
    fast = bool(h["/measurement/isFastFrameAxis"][()])
    rest = shape[:-1] if fast else shape[1:]
    n = (2 << 30) // (int(np.prod(rest)) * dt.itemsize) + 1
    full = rest + (n,) if fast else (n,) + rest
    del h["/measurement/data"], h["/measurement/isBackgroundFrame"]
    h.create_dataset("/measurement/data", shape=full, dtype=dt, chunks=full, compression="gzip")
    h["/measurement/isBackgroundFrame"] = np.zeros(n, np.int8)
    h["/acquisition/numFrames"][()] = n


def _big_grid(h):
    """A 29 x 29 x 2000 grid declared in a small system matrix."""
    d = h["/measurement/data"]
    J, C, K, _ = d.shape
    O = 29 * 29 * 2000
    del h["/measurement/data"], h["/measurement/isBackgroundFrame"], h["/calibration/snr"]
    h.create_dataset("/measurement/data", shape=(J, C, K, O + 2), dtype=np.complex64,
                     chunks=(1, 1, 16, 4096), compression="gzip")
    h["/measurement/isBackgroundFrame"] = np.r_[np.zeros(O, np.int8), np.ones(2, np.int8)]
    h["/acquisition/numFrames"][()] = O + 2
    h["/calibration/size"][...] = [29, 29, 2000]
    h["/calibration/snr"] = np.full((J, C, K), 10.0)


def variants() -> list[Variant]:
    V: list[Variant] = []

    def add(name, role, mutate, must_refuse=True, fast=False):
        V.append(Variant(name, role, mutate, must_refuse, fast))

    for role in ("sm", "meas"):
        for n in ("/version", "/acquisition/numFrames", "/acquisition/receiver/numSamplingPoints",
                  "/acquisition/receiver/bandwidth", "/acquisition/receiver/numChannels",
                  "/acquisition/drivefield/baseFrequency", "/acquisition/drivefield/divider",
                  "/measurement/data", "/measurement/isFourierTransformed"):
            add(f"{role}: delete {n}", role, _delete(n), fast=n.endswith("numFrames"))
        for g in ("/acquisition", "/measurement", "/acquisition/receiver"):
            add(f"{role}: delete group {g}", role, _delete(g))
        for n, vals in (("/acquisition/receiver/numSamplingPoints", ["x", [1632, 1632], 0, -5, 1 << 40]),
                        ("/acquisition/numFrames", ["7", 0, 10 ** 12]),
                        ("/acquisition/receiver/bandwidth", [np.nan, np.inf, 0.0, -1.0, 1e300]),
                        ("/measurement/isFourierTransformed", [2, "yes"])):
            for v in vals:
                add(f"{role}: {n} = {v!r}", role, _set(n, v))
        # one sample in a row the reconstruction uses (~150 kHz of the SM; frame 0 of the measurement)
        at = (0, 0, 100, 3) if role == "sm" else (0, 0, 0, 0)
        add(f"{role}: data NaN sample", role, _poke(at, np.nan), fast=True)
        add(f"{role}: data Inf sample", role, _poke(at, np.inf))
        add(f"{role}: data one sample 1e38", role, _poke(at, 1e38), fast=True)
        add(f"{role}: data all zero", role, _edit_data(np.zeros_like), fast=True)
        add(f"{role}: data denormal", role, _edit_data(lambda a: (a != 0) * np.asarray(1e-41, a.dtype)))
        add(f"{role}: data wrong shape", role, _edit_data(lambda a: a[..., :-1]))
        add(f"{role}: data swapped axes", role, _edit_data(lambda a: np.swapaxes(a, 0, -1)))
        add(f"{role}: isBackgroundFrame wrong length", role, _set("/measurement/isBackgroundFrame",
                                                                    np.zeros(3, np.int8)))
        add(f"{role}: isBackgroundFrame = 2", role, _h5(lambda h: h["/measurement/isBackgroundFrame"].__setitem__(0, 2)))
        for how in ("dangling", "loop", "external", "group"):
            add(f"{role}: isBackgroundFrame {how} link", role, _link("/measurement/isBackgroundFrame", how),
                fast=how in ("dangling", "external"))
        add(f"{role}: isBackgroundFrame valid soft link", role, _link("/measurement/isBackgroundFrame", "valid"),
            must_refuse=False, fast=True)
        add(f"{role}: data valid soft link", role, _link("/measurement/data", "valid"), must_refuse=False)
        add(f"{role}: data external link", role, _link("/measurement/data", "external"))
        add(f"{role}: data dangling link", role, _link("/measurement/data", "dangling"))
        for seed in range(6):
            add(f"{role}: bit flips in the first 4 kB (seed {seed})", role, _bytes(_flip(seed)), must_refuse=False)
        for frac in (0.1, 0.5, 0.9):
            add(f"{role}: truncated to {int(frac * 100)} %", role, _truncate(frac))
        add(f"{role}: garbage bytes", role, _bytes(lambda b: b"\x89HDF\r\n\x1a\n" + bytes(200)))
        add(f"{role}: FIFO named .mdf", role, _fifo, fast=True)
        add(f"{role}: gzip bomb chunk", role, _h5(_gzip_bomb))
    # measurement-only
    add("meas: isBackgroundFrame missing", "meas", _delete("/measurement/isBackgroundFrame"), must_refuse=False)
    add("meas: dataConversionFactor scale 0", "meas",
        _set("/acquisition/receiver/dataConversionFactor", [[0.0, 0.0], [1.0, 0.0]]), fast=True)
    add("meas: dataConversionFactor scale -1", "meas",
        _set("/acquisition/receiver/dataConversionFactor", [[-1.0, 0.0], [-1.0, 0.0]]), must_refuse=False)
    add("meas: dataConversionFactor NaN", "meas",
        _set("/acquisition/receiver/dataConversionFactor", [[np.nan, 0.0], [1.0, 0.0]]))
    add("meas: dataConversionFactor scale 1e40", "meas",
        _set("/acquisition/receiver/dataConversionFactor", [[1e40, 0.0], [1.0, 0.0]]))
    add("meas: gradient x10", "meas", _h5(lambda h: h["/acquisition/gradient"].__setitem__(
        Ellipsis, h["/acquisition/gradient"][()] * 10)), fast=True)
    add("meas: gradient sign flipped", "meas", _h5(lambda h: h["/acquisition/gradient"].__setitem__(
        Ellipsis, -h["/acquisition/gradient"][()])))
    add("meas: gradient zero", "meas", _h5(lambda h: h["/acquisition/gradient"].__setitem__(Ellipsis, 0.0)))
    add("meas: drive phase changed", "meas", _h5(lambda h: h["/acquisition/drivefield/phase"].__setitem__(
        Ellipsis, h["/acquisition/drivefield/phase"][()] + 1.0)), fast=True)
    add("meas: declares 3e6 frames (1 MB file)", "meas", _h5(_giant_frames), fast=True)
    add("meas: a calibration given as measurement", "meas", lambda p: p, fast=True)  # see prepare()
    # system-matrix-only
    add("sm: /calibration/size overflow", "sm", _set("/calibration/size", [7, 7905747460161236527, 1], np.int64),
        fast=True)
    add("sm: /calibration/size 0", "sm", _set("/calibration/size", [0, 6, 1], np.int64))
    add("sm: fieldOfView 5e-324", "sm", _set("/calibration/fieldOfView", [5e-324, 0.029, 0.001]), fast=True)
    add("sm: fieldOfView negative", "sm", _set("/calibration/fieldOfView", [-0.029, 0.029, 0.001]))
    add("sm: 29 x 29 x 2000 grid declared", "sm", _h5(_big_grid), fast=True)
    add("sm: snr NaN", "sm", _h5(lambda h: h["/calibration/snr"].__setitem__((0, 0, 0), np.nan)))
    add("sm: delete /calibration", "sm", _delete("/calibration"))
    return V


# ----------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------
def sha(path: Path) -> str | None:
    try:
        if not path.is_file():
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def prepare(v: Variant, bases: dict[str, Path], folder: Path) -> tuple[str, str]:
    folder.mkdir(parents=True)
    paths = {}
    for role, p in bases.items():
        paths[role] = Path(shutil.copyfile(p, folder / p.name))
    target = paths[v.role]
    if v.name.startswith("meas: a calibration given"):
        shutil.copyfile(bases["sm"], target)
    else:
        paths[v.role] = v.mutate(target)
    return str(paths["sm"]), str(paths["meas"])


def classify(v: Variant, result: dict, reference: np.ndarray, names: list[str]) -> str:
    s = result.get("status")
    if s == "refused":
        return "refused" if one_clear_line(result["message"], names) else "refused, unclear message"
    if s == "ok":
        img = np.asarray(result["image"])
        same = img.shape == reference.shape and np.allclose(img, reference, rtol=0,
                                                             atol=1e-4 * np.abs(reference).max())
        if result.get("warnings"):
            return "warning"
        return "identical" if same else "silently different"
    return s  # crash / hung / memory


COLUMNS = ["refused", "identical", "warning", "silently different", "crash", "hung", "over 2 GB",
           "inputs modified"]


def run_child(sm: str, meas: str, timeout: float) -> tuple[dict, int]:
    """One variant in its own process -> (result, peak resident bytes)."""
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
    out.close()
    cmd = [sys.executable, "-m", "benchmarks.fault_probe", "--child", sm, meas, out.name]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1])
    t0 = time.monotonic()
    status, rusage = None, None
    while time.monotonic() - t0 < timeout:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        os.wait4(proc.pid, 0)
        os.unlink(out.name)
        return {"status": "hung"}, 0
    peak = rusage.ru_maxrss * 1024
    try:
        result = json.loads(Path(out.name).read_text() or "{}")
    except ValueError:
        result = {}
    os.unlink(out.name)
    if not result:
        err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
        result = {"status": "crash", "message": f"exit status {status}: {err}"}
    return result, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=3, metavar=("SM", "MEAS", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="every 4th variant")
    ap.add_argument("--verbose", "-v", action="store_true", help="one line per variant")
    a = ap.parse_args(argv)
    if a.child:
        sm, meas, out = a.child
        Path(out).write_text(json.dumps(run_pipeline(sm, meas)))
        return 0
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault-probe-") as tmp:
        tmp = Path(tmp)
        bases = make_bases(tmp)
        ref, _ = run_child(str(bases["sm"]), str(bases["meas"]), TIME_LIMIT_S)
        if ref.get("status") != "ok":
            print(f"the clean pair does not reconstruct: {ref}")
            return 1
        reference = np.asarray(ref["image"])
        vs = variants()[::4] if a.quick else variants()
        counts = {c: 0 for c in COLUMNS + ["refused, unclear message"]}
        failures = []
        for i, v in enumerate(vs):
            sm, meas = prepare(v, bases, tmp / f"v{i:03d}")
            before = {p: sha(Path(p)) for p in (sm, meas)}
            result, peak = run_child(sm, meas, TIME_LIMIT_S)
            outcome = classify(v, result, reference, [Path(sm).name, Path(meas).name])
            counts[outcome] = counts.get(outcome, 0) + 1
            bad = outcome not in ("refused", "identical", "warning")
            if v.must_refuse and outcome != "refused":
                bad = True
            if peak > MEMORY_LIMIT_BYTES:
                counts["over 2 GB"] += 1
                bad = True
            if any(sha(Path(p)) != h for p, h in before.items()):
                counts["inputs modified"] += 1
                bad = True
            if bad:
                failures.append((v.name, outcome, result.get("message", "")[:160]))
            if a.verbose:
                print(f"{v.name:60s} {outcome:20s} {peak / 1e6:7.0f} MB  {result.get('message', '')[:100]}")
            shutil.rmtree(tmp / f"v{i:03d}", ignore_errors=True)
    print(f"fault probe: {len(vs)} variants of a simulated 6 x 6 system matrix and its measurement, "
          f"each in its own process (limit {TIME_LIMIT_S:.0f} s), {time.monotonic() - t_start:.0f} s in all")
    print("| variants tried | refused, one clear line | accepted, identical | accepted with a warning | "
          "silently different | crashed | hung | over 2 GB | inputs modified |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {len(vs)} | {counts['refused']} | {counts['identical']} | {counts['warning']} | "
          f"{counts['silently different']} | {counts['crash']} | {counts['hung']} | {counts['over 2 GB']} | "
          f"{counts['inputs modified']} |")
    if counts["refused, unclear message"]:
        print(f"refused with an unclear message: {counts['refused, unclear message']}")
    if failures:
        print(f"{len(failures)} variant(s) outside the policy:")
        for name, outcome, msg in failures:
            print(f"  {name}: {outcome} {msg}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
