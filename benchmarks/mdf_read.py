"""Lazy MDF reading: time and peak memory to read a frequency selection of a large system matrix.

    python -m benchmarks.mdf_read            # 3 channels x 817 frequencies x 38^3 voxels: ~1.1 GB file
    python -m benchmarks.mdf_read --quick    # 12^3 voxels (~35 MB), a smoke run

Writes a simulated-size 3D system matrix (random complex64 data: only I/O is measured) to a
temporary directory, then, in a fresh Python process, opens it and reads `--fraction` of its
rows (random frequencies, all channels) with `MDFFile.read_system_matrix`. Peak memory above
the child's baseline (after imports, `open` and a one-row warm-up read) is measured twice: numpy allocations with
tracemalloc, and resident memory via /proc/self/status (VmHWM after resetting it through
/proc/self/clear_refs). The check: peak <= 1.5 x the selected block (the returned matrix).
The file was just written, so the page cache is warm: times are an upper bound on speed.
Writes benchmarks/results/mdf_read.json (mdf_read_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


class RandomSM:
    """Array-like (J, C, K, N) complex64 filled on demand, so writing never holds the whole matrix."""

    def __init__(self, shape, seed=0):
        self.shape, self.seed, self.dtype = tuple(shape), seed, np.dtype(np.complex64)

    def __getitem__(self, key):
        J, C, K, N = self.shape
        ks = key[2]
        k0, k1, _ = ks.indices(K)
        rng = np.random.default_rng([self.seed, k0, k1])
        n = (J, C, k1 - k0, N)
        return (rng.standard_normal(n, np.float32) + 1j * rng.standard_normal(n, np.float32)).astype(np.complex64)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def child(path: str, fraction: float, seed: int) -> dict:
    import tracemalloc

    from napari_nirmpi import mdf

    f = mdf.open(path)
    K = f.acquisition.num_frequencies
    C = f.acquisition.num_rx_channels
    rng = np.random.default_rng(seed)
    freq = np.sort(rng.choice(K, size=max(1, int(round(K * fraction))), replace=False))
    f.read_system_matrix(channels=[0], freq_index=[int(freq[0])])  # one-time h5py/numpy set-up
    try:  # reset the resident-memory high-water mark to the current value (Linux)
        Path("/proc/self/clear_refs").write_text("5")
        hwm_ok = True
    except OSError:
        hwm_ok = False
    rss0 = _status_kb("VmRSS")
    tracemalloc.start()
    t0 = time.perf_counter()
    S = f.read_system_matrix(freq_index=freq)
    dt = time.perf_counter() - t0
    _, tm_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = _status_kb("VmHWM")
    checksum = float(np.abs(S[:, :10]).sum())
    return {
        "rows": int(S.shape[0]), "columns": int(S.shape[1]), "channels": C, "frequencies_read": len(freq),
        "block_bytes": int(S.nbytes), "read_s": dt,
        "tracemalloc_peak_bytes": int(tm_peak),
        "rss_peak_above_baseline_bytes": int((hwm - rss0) * 1024) if hwm_ok and hwm > 0 else None,
        "checksum": checksum,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12^3 grid: a smoke run")
    ap.add_argument("--grid", type=int, default=None, help="voxels per axis (default 38, quick 12)")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--samples", type=int, default=1632, help="V (K = V/2 + 1 = 817)")
    ap.add_argument("--background", type=int, default=10, help="background frames")
    ap.add_argument("--fraction", type=float, default=0.1, help="fraction of the frequencies to read")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmpdir", default=None, help="where to write the temporary file")
    ap.add_argument("--output", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.fraction, args.seed)))
        return 0

    from napari_nirmpi import mdf
    from napari_nirmpi.grid import Grid

    n = args.grid or (12 if args.quick else 38)
    grid = Grid((n, n, n), (0.02, 0.02, 0.02))
    acq = mdf.Acquisition(2.5e6, (102, 96, 99), (12e-3, 12e-3, 12e-3), args.samples, 1.25e6, args.channels,
                          gradient=np.diag([-1.0, -1.0, 2.0]))
    K = acq.num_frequencies
    N = grid.size + args.background
    bg = np.r_[np.zeros(grid.size, bool), np.ones(args.background, bool)]
    tmp = Path(tempfile.mkdtemp(prefix="nirmpi-mdfbench-", dir=args.tmpdir))
    try:
        path = tmp / "sm.mdf"
        t0 = time.perf_counter()
        mdf.write_calibration(path, RandomSM((1, args.channels, K, N), args.seed), grid=grid,
                              acquisition=acq, is_background_frame=bg,
                              snr=np.full((1, args.channels, K), 10.0))
        write_s = time.perf_counter() - t0
        size = path.stat().st_size
        print(f"wrote {path.name}: {args.channels} ch x {K} freq x {grid.size + args.background} frames "
              f"({n}^3 + {args.background} bg), {size / 1e9:.3f} GB in {write_s:.1f} s")
        out = subprocess.run([sys.executable, __file__, "--child", str(path), "--fraction", str(args.fraction),
                              "--seed", str(args.seed)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    block = r["block_bytes"]
    peaks = [p for p in (r["tracemalloc_peak_bytes"], r["rss_peak_above_baseline_bytes"]) if p is not None]
    peak = max(peaks)
    ok = peak <= 1.5 * block
    mb = 1024 ** 2
    print(f"read {r['rows']} rows ({r['frequencies_read']} of {K} frequencies x {r['channels']} channels) "
          f"x {r['columns']} positions = {block / mb:.1f} MiB in {r['read_s']:.2f} s "
          f"({block / mb / max(r['read_s'], 1e-9):.0f} MiB/s, warm page cache)")
    rss = r["rss_peak_above_baseline_bytes"]
    print(f"peak memory above baseline: tracemalloc {r['tracemalloc_peak_bytes'] / mb:.1f} MiB, "
          f"RSS {'n/a' if rss is None else f'{rss / mb:.1f} MiB'} -> {peak / block:.2f} x block "
          f"({'OK' if ok else 'FAIL'}: limit 1.5 x)")
    result = {
        "benchmark": "mdf_read", "quick": bool(args.quick), "grid": [n, n, n], "channels": args.channels,
        "num_frequencies": K, "background_frames": args.background, "file_bytes": size,
        "write_s": write_s, "fraction": args.fraction, **r, "peak_over_block": peak / block,
        "peak_ok": ok, "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor(),
    }
    outp = Path(args.output) if args.output else HERE / "results" / ("mdf_read_quick.json" if args.quick
                                                                    else "mdf_read.json")
    outp.parent.mkdir(parents=True, exist_ok=True)
    outp.write_text(json.dumps(result, indent=2))
    print(f"wrote {outp}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
