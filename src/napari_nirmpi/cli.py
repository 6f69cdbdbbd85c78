"""`nirmpi` command line: simulate, reconstruct, sample, batch, demo, info.

Bad input ends with one line on stderr and exit status 2; heavy modules load lazily.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

from .errors import NirmpiError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage too)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


# -- helpers --------------------------------------------------------------------------------
def _channels(text):
    """--channels in the one selection grammar (napari_nirmpi.frames); the range is checked
    once the file is read."""
    from .frames import parse_channels

    return parse_channels(text, None)


def _region(text, ndim):
    """'x0,x1,y0,y1[,z0,z1]' in mm -> (lower, upper) in metres, image axis order."""
    from .grid import parse_region

    return parse_region(text, ndim, what="--region")


def write_image(path, image, grid, params=None, force=False):
    """Write an image as .npy, .tif or .mdf (moved to `napari_nirmpi.outputs.write_image`)."""
    from .outputs import write_image as _write

    return _write(path, image, grid, params, force=force)


def run_nir(problem, config, *, desc="NIR"):
    """Train with a progress display on stderr (nir.fit); returns the final TrainState."""
    from .nir.train import fit

    _, state = fit(problem, config, progress=desc)
    return state


# -- commands -------------------------------------------------------------------------------
def cmd_info(a):
    from . import mdf

    print(mdf.open(a.file).summary())  # the summary lists the file's warnings itself


def cmd_validate(a):
    """Exit 0 when FILE conforms to MDF v2.1.0, 1 with one line per deviation, 2 unreadable."""
    from . import mdf

    deviations = mdf.validate(a.file)
    name = _one_line(a.file)
    if not deviations:
        print(f"{name}: conforms to MDF {mdf.MDF_VERSION}")
        return 0
    for d in deviations:
        print(f"{name}: {_one_line(str(d))}")
    print(f"{name}: {len(deviations)} deviation(s) from MDF {mdf.MDF_VERSION}")
    return 1


def _sim_grid(text):
    """--grid of simulate: N (N x N, or N³ with a 3D scanner), AxB or AxBxC (image order)."""
    if text is None:
        return None
    parts = str(text).lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise NirmpiError(f"--grid {text!r}: expected N, AxB or AxBxC (positive integers)") from None
    if len(shape) not in (1, 2, 3) or any(n < 2 for n in shape):
        raise NirmpiError(f"--grid {text!r}: expected N, AxB or AxBxC with sizes >= 2")
    return shape[0] if len(shape) == 1 else shape


def cmd_simulate(a):
    from .simulate import simulate

    grid = _sim_grid(a.grid)
    kw = dict(phantom=a.phantom, grid=grid, seed=a.seed, force=a.force, scanner=a.scanner)
    if grid is None and a.scanner == "default":
        kw["grid"] = 29
    elif isinstance(grid, int) and a.scanner == "openmpi":
        kw["grid"] = (grid,) * 3
    if a.noise is not None:
        kw["noise"] = a.noise
    if a.frames is not None:
        kw["frames"] = a.frames
    paths = simulate(a.outdir, **kw)
    for k, v in paths.items():
        print(f"{k}: {v}")


def _preprocess_kw(a):
    return dict(min_freq=a.min_freq, max_freq=a.max_freq, snr_threshold=a.snr, channels=_channels(a.channels))


def _nir_options(a) -> dict:
    """--network / --operator / --l1 / --tv: TrainConfig settings that are NIR-only (refused with
    the classic methods). --network comes back as 'network' (auto, siren or grid) for _nir_preset."""
    opts = {"network": "network", "operator": "operator", "l1_weight": "l1", "tv_weight": "tv", "init": "init"}
    kw = {k: getattr(a, o) for k, o in opts.items() if getattr(a, o, None) is not None}
    if kw and a.method != "nir":
        raise NirmpiError(f"{', '.join('--' + opts[k] for k in kw)} applies to --method nir only")
    if kw.get("init") == "none":
        kw["init"] = None
    return kw


def _nir_preset(kw: dict, ndim: int) -> tuple[dict, bool]:
    """(TrainConfig settings, whether the feature-grid preset TrainConfig.fast() applies): --network
    auto (the default) takes the feature grid for 3D problems and SIREN in 2D."""
    kw = dict(kw)
    net = kw.pop("network", "auto")
    fast = net == "grid" or (net == "auto" and ndim == 3)
    if fast and "operator" in kw:
        raise NirmpiError("--operator applies to --network siren (the feature grid samples jittered points)")
    return kw, fast


CLASSIC_METHODS = ("kaczmarz", "cgnr", "fista", "pdhg")


def _classic_options(a):
    """(regs, λ spec) of a classic run, checked before anything is read; None for NIR."""
    if a.method == "nir":
        given = [f for f, v in (("--reg", a.reg), ("--lambda", a.lam), ("--weighting", a.weighting)) if v is not None]
        if given:
            raise NirmpiError(f"{', '.join(given)} applies to the classic methods (kaczmarz, cgnr, fista, pdhg), "
                              "not to nir")
        return None
    from .classic import parse_lam, parse_reg

    regs = parse_reg(a.reg, a.method)
    lam = a.lam if a.lam is not None else ("0.5" if a.method == "kaczmarz" else "auto")
    return regs, parse_lam(lam, regs)


def cmd_reconstruct(a):
    from .grid import parse_shape
    from .outputs import check_writable
    from .preprocess import build_problem

    check_writable(a.output, a.force)  # before any work: an existing output is refused at once

    nir_kw = _nir_options(a)  # refuse a classic run with NIR options before the slow part
    classic_opts = _classic_options(a)
    if a.iterations is not None and a.iterations < 1:
        raise NirmpiError(f"--iterations must be >= 1, got {a.iterations}")
    if a.upsample is not None and a.method == "nir":
        raise NirmpiError("--upsample applies to the classic methods; NIR samples its field on --grid")
    problem = build_problem(a.sm, a.meas, **_preprocess_kw(a))
    grid = problem.grid
    shape = parse_shape(a.grid, native=grid.shape) if a.grid else grid.shape
    params = dict(problem.params, method=a.method)
    if a.method in CLASSIC_METHODS:
        from .classic import reconstruct

        regs, lam = classic_opts
        # Kaczmarz keeps its behaviour of before 2026-12-03: --grid up-samples (bicubic by default);
        # the other methods solve on the finer grid unless --upsample asks for interpolation
        upsample_method = a.upsample or ("bicubic" if a.method == "kaczmarz" else None)
        solve_grid = None if (shape == grid.shape or upsample_method) else shape
        res = reconstruct(problem, a.method, regs, lam, grid=solve_grid, iterations=a.iterations,
                          device=a.device, weighting=a.weighting)
        image, grid = res.image, res.grid
        lam_txt = (f"{res.lam:.3g}" if isinstance(res.lam, float) else
                   ", ".join(f"{k} {v:.3g}" for k, v in res.lam.items()) if isinstance(res.lam, dict) else str(res.lam))
        print(f"{a.method} ({','.join(regs)}): λ {lam_txt}{' (automatic)' if lam == 'auto' else ''}, "
              f"{res.info.get('iterations', '?')} iterations, grid {'x'.join(map(str, grid.shape))}, "
              f"{res.info['seconds']:.1f} s", file=sys.stderr)
        params.update(reg=list(regs), lam=res.lam, lam_rule=res.info["lam_rule"],
                      iterations=res.info.get("iterations"), solved_on=list(grid.shape),
                      weighting=a.weighting)
        if shape != grid.shape:
            from .resample import upsample

            image, grid = upsample(image, grid, shape, method=upsample_method)
            params["upsample"] = upsample_method
    else:
        from .nir.train import TrainConfig
        from .sample import sample

        kw, fast = _nir_preset(nir_kw, grid.ndim)
        if fast and kw.get("tv_weight"):
            cfg = TrainConfig.fast_tv(kw.pop("tv_weight"), seed=a.seed, device=a.device, **kw)
        else:
            cfg = (TrainConfig.fast if fast else TrainConfig)(seed=a.seed, device=a.device, **kw)
        if a.iterations:
            cfg = dataclasses.replace(cfg, iterations=a.iterations)
        cfg.validate()
        t0 = time.perf_counter()
        state = run_nir(problem, cfg)
        field = state.field
        print(f"NIR: stopped at iteration {state.iteration} ({state.stop_reason}); best iteration "
              f"{state.best_iteration}; {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if a.checkpoint:
            from .nir.checkpoint import save

            save(field, a.checkpoint, force=a.force)
        image, grid = sample(field, shape)
        params.update(nir=dict(getattr(field, "config", {}) or {}), best_iteration=state.best_iteration,
                      stop_reason=state.stop_reason)
    write_image(a.output, image, grid, params, force=a.force)
    print(f"wrote {a.output}: {image.shape} on a {grid.fov[-1] * 1e3:.1f} mm FOV")


def cmd_sample(a):
    from .grid import parse_shape
    from .nir.checkpoint import load
    from .outputs import check_writable
    from .sample import sample

    check_writable(a.output, a.force)

    if not (a.max_memory > 0 and np.isfinite(a.max_memory)):
        raise NirmpiError(f"--max-memory {a.max_memory}: expected a positive number of GiB")
    if os.path.exists(a.output) and not a.force:  # before loading and sampling, not after
        raise NirmpiError(f"{a.output} exists; pass --force to overwrite")
    field = load(a.field)
    shape = parse_shape(a.grid, native=field.grid.shape)
    region = _region(a.region, field.grid.ndim) if a.region else None
    image, grid = sample(field, shape, region=region, max_bytes=int(a.max_memory * 2**30))
    write_image(a.output, image, grid, {"method": "nir", "checkpoint": os.path.abspath(a.field)}, force=a.force)
    print(f"wrote {a.output}: {image.shape}")


def _progress(total, desc):
    from tqdm import tqdm

    tty = sys.stderr.isatty()  # in a log file, a line every 15 s instead of a live bar
    return tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True, leave=True,
                mininterval=0.5 if tty else 15.0)


def cmd_batch(a):
    from .series import reconstruct_series, verify_series

    if a.verify:
        if _verify_store(a.output, verify_series):
            raise SystemExit(1)  # damaged or incomplete: a result for scripts, not bad input (2)
        return
    missing = [f"--{k}" for k in ("sm", "meas") if getattr(a, k) is None]
    if missing:
        raise NirmpiError(f"{' and '.join(missing)} required (only --verify works on the store alone)")
    method_kwargs = {}
    if a.iterations is not None:
        method_kwargs["iterations"] = a.iterations
    if a.lam is not None:
        if a.method == "nir":
            raise NirmpiError("--lambda does not apply to --method nir")
        if a.method == "kaczmarz":
            try:
                method_kwargs["lam"] = float(a.lam)
            except ValueError:
                raise NirmpiError(f"--lambda {a.lam!r}: Kaczmarz in a series takes a number") from None
        else:
            method_kwargs["lam"] = a.lam  # VALUE, one per --reg term, or auto: classic.parse_lam
    if a.reg is not None:
        if a.method in ("nir", "kaczmarz"):
            raise NirmpiError(f"--reg does not apply to --method {a.method} (cgnr, fista, pdhg take it)")
        method_kwargs["reg"] = a.reg
    if a.grid is not None:
        if a.method == "kaczmarz":
            raise NirmpiError("--grid does not apply to --method kaczmarz (it reconstructs on the native grid)")
        method_kwargs["grid"] = a.grid
    if a.seed is not None and a.method == "nir":
        method_kwargs["seed"] = a.seed
    nir_kw = _nir_options(a)
    if a.method == "nir":
        from . import mdf

        nir_kw, fast = _nir_preset(nir_kw, mdf.open(a.sm).grid.ndim)
        if fast:
            nir_kw["preset"] = "fast_tv" if nir_kw.get("tv_weight") else "fast"
    method_kwargs.update(nir_kw)
    bar = None

    def on_chunk(info):
        nonlocal bar
        if bar is None:
            bar = _progress(info["frames_todo"], f"nirmpi batch ({a.method})")
            bar.unit = "frame"
        bar.update(info["frames"])

    try:
        out = reconstruct_series(a.sm, a.meas, method=a.method, frames=a.frames, average=a.average,
                                 output=a.output, scheduler=a.scheduler, workers=a.workers,
                                 threads_per_worker=a.threads_per_worker, device=a.device,
                                 preprocess=_preprocess_kw(a), method_kwargs=method_kwargs,
                                 chunk_frames=a.chunk_frames, overwrite=a.force, on_chunk=on_chunk)
    finally:
        if bar is not None:
            bar.close()
    failed = out.failed_frames
    if out.chunks_damaged:
        print(f"nirmpi batch: {len(out.chunks_damaged)} damaged chunk(s) found and recomputed: "
              f"{sorted(out.chunks_damaged)}", file=sys.stderr)
    if failed:
        print(f"nirmpi batch: {len(failed)} frame(s) failed:", file=sys.stderr)
        for f in failed[:20]:
            print(f"  frame {f['frame']} (raw {f['raw_frames']}): {f['message']}", file=sys.stderr)
        if len(failed) > 20:
            print(f"  … and {len(failed) - 20} more (attrs 'failed_frames')", file=sys.stderr)
    print(out)


def _verify_store(path, verify_series) -> int:
    """`nirmpi batch --verify --output STORE`: exit 0 when every chunk is done and matches its
    checksum, 1 when a chunk is damaged or still to do (a re-run of the batch command fixes both)."""
    r = verify_series(path)
    for c, why in sorted(r["damaged"].items()):
        print(f"damaged chunk {c}: {why}")
    if r["damaged"]:
        print(f"{path}: {len(r['damaged'])} of {r['chunks_total']} chunk(s) damaged (frames "
              f"{_ranges(r['damaged_frames'])}); re-run the same nirmpi batch command to recompute them")
    if r["todo"]:
        print(f"{path}: {len(r['todo'])} of {r['chunks_total']} chunk(s) not computed yet")
    if r["ok"]:
        print(f"{path}: all {r['chunks_total']} chunk(s) ({r['frames_total']} frames) intact")
    return 0 if r["ok"] else 1


def _ranges(idx) -> str:
    out, idx = [], sorted(idx)
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        out.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ",".join(out)


def cmd_demo(a):
    from .demo import run_demo

    run_demo(a.outdir, quick=a.quick, device=a.device)


# -- parser ---------------------------------------------------------------------------------
class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (when it has one worth showing); the epilog's examples
    keep their lines."""

    def _get_help_string(self, action):
        h = action.help or ""
        d = action.default
        if d in (None, False, argparse.SUPPRESS) or "%(default)" in h or not action.option_strings:
            return h
        return h + " (default: %(default)s)"


def _add_nir_options(s) -> None:
    s.add_argument("--network", choices=["auto", "siren", "grid"], default=None,
                   help="NIR network: siren (the paper's, TrainConfig()), grid (multi-resolution feature grid, "
                        "TrainConfig.fast(): about 60x faster on a 37³ volume; with --tv W, TrainConfig.fast_tv(W)) or "
                        "auto (default: grid for 3D, siren for 2D)")
    s.add_argument("--operator", choices=["auto", "pool", "cubic"], default=None,
                   help="NIR forward operator D: pool (the paper's block mean), cubic (the system matrix "
                        "interpolated inside each voxel) or auto (default: cubic in 2D, pool in 3D)")
    s.add_argument("--l1", type=float, default=None, metavar="W",
                   help="NIR sparsity weight (TrainConfig.l1_weight; default 0 = off)")
    s.add_argument("--tv", type=float, default=None, metavar="W",
                   help="NIR total-variation weight (TrainConfig.tv_weight; default 0 = off; 0.3 with the "
                        "feature grid on extended objects, docs/3d.md)")
    s.add_argument("--init", choices=["none", "pdhg-tv", "fista-l1", "cgnr-l2"], default=None,
                   help="NIR starting point: the network first fitted to this classic reconstruction (automatic "
                        "λ) or none (random weights); default: pdhg-tv for the feature grid with --tv "
                        "(TrainConfig.fast_tv), else none")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nirmpi", description="MPI reconstruction: Kaczmarz-ℓ2 baseline and grid-agnostic "
                                          "neural implicit representations (NIR).")
    from . import __version__

    p.add_argument("--version", action="version", version=f"napari-nirmpi {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("info", help="print what an MDF file holds")
    s.add_argument("file")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("validate", help="check an MDF file against the MDF v2.1.0 specification "
                                        "(exit 0 conforms, 1 deviations listed, 2 unreadable)")
    s.add_argument("file")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("simulate", help="simulate a system matrix and a phantom measurement (MDF v2)")
    s.add_argument("outdir", help="folder for sm.mdf, meas.mdf and phantom.npy")
    s.add_argument("--phantom", default="spiral",
                   help="spiral, resolution, point, ellipses, bolus; 3D: cone, cubes, tubes (a sum of "
                        "phantoms is built in Python: phantoms.Composite.of(...))")
    s.add_argument("--grid", default=None,
                   help="native grid: N (NxN; N³ with --scanner openmpi), AxB or AxBxC in (z, y, x) order "
                        "(default 29, or the scanner preset's 37x37x37)")
    s.add_argument("--scanner", default="default", choices=("default", "openmpi"),
                   help="scanner preset: default (2D 29 mm / 3D 13x26x26 mm) or openmpi (OpenMPIData's "
                        "Bruker scanner, 3D, 37x37x18.5 mm FOV, 3 channels, 817 frequencies)")
    s.add_argument("--seed", type=int, default=0, help="random seed (noise, network initialisation)")
    s.add_argument("--noise", default=None, help="low, medium (default), high, or a number")
    s.add_argument("--frames", type=int, default=None, help="foreground frames (dynamic phantoms)")
    s.add_argument("--force", action="store_true", help="overwrite existing files")
    s.set_defaults(func=cmd_simulate)

    def add_pre(s):
        s.add_argument("--sm", required=True, help="system matrix (MDF)")
        s.add_argument("--meas", required=True, help="measurement (MDF)")
        s.add_argument("--min-freq", type=float, default=20e3, metavar="HZ")
        s.add_argument("--max-freq", type=float, default=380e3, metavar="HZ")
        s.add_argument("--snr", type=float, default=1.5, metavar="T", help="keep rows with SNR > T")
        s.add_argument("--channels", default=None, help="receive channels, e.g. 0,1 (default all)")
        s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
        s.add_argument("--force", action="store_true", help="overwrite the output")

    s = sub.add_parser("reconstruct", help="reconstruct a measurement (classic methods or NIR)")
    add_pre(s)
    s.add_argument("--method", choices=["kaczmarz", "cgnr", "fista", "pdhg", "nir"], default="kaczmarz",
                   help="kaczmarz (the paper's baseline), cgnr (Tikhonov), fista (l1), pdhg (TV, l1, l2), nir")
    s.add_argument("--reg", default=None, metavar="l2|l1|tv",
                   help="classic prior(s), comma-separated: kaczmarz/cgnr l2; fista l1, l2; pdhg tv, l1, l2 "
                        "(default: l2, l2, l1, tv)")
    s.add_argument("--lambda", dest="lam", default=None, metavar="VALUE|auto",
                   help="relative λ (one value, or one per --reg term comma-separated) or auto (chosen from "
                        "the noise, no ground truth); default 0.5 for kaczmarz, auto otherwise")
    s.add_argument("--weighting", choices=["snr", "noise"], default=None,
                   help="classic methods: weight rows by calibration SNR or whiten by background noise")
    s.add_argument("--grid", default=None, help="output grid AxB, AxBxC or xF (F times the native grid; default: "
                                                "native); cgnr/fista/pdhg solve on it, kaczmarz up-samples")
    s.add_argument("--upsample", choices=["bilinear", "bicubic"], default=None,
                   help="solve on the native grid and interpolate to --grid (kaczmarz: bicubic by default)")
    s.add_argument("--iterations", type=int, default=None,
                   help="Kaczmarz sweeps (150), CGNR (100), FISTA (300), PDHG (500) or NIR iterations")
    s.add_argument("--seed", type=int, default=0, help="random seed (noise, network initialisation)")
    s.add_argument("--checkpoint", default=None, help="save the trained field here (NIR)")
    _add_nir_options(s)
    s.add_argument("--output", required=True, help="OUT.npy, OUT.tif or OUT.mdf")
    s.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser(
        "sample", help="render a trained field on any grid", formatter_class=_HelpFormatter,
        description="Render a field saved by `nirmpi reconstruct --method nir --checkpoint FIELD.pt` on any "
                    "grid of its field of view, or of a sub-region.",
        epilog="examples:\n"
               "  nirmpi sample field.pt --grid 104x104 --output field104.tif\n"
               "  nirmpi sample field.pt --grid x4 --region=-5,5,-5,5 --output zoom.npy\n\n"
               "--region is x0,x1,y0,y1 in millimetres, x first, as napari shows the layers. The Python\n"
               "API differs: sample_field(field, shape, region=((y0, x0), (y1, x1))) takes METRES in image\n"
               "axis order (napari_nirmpi.grid.parse_region converts this option's text).")
    s.add_argument("field", help="FIELD.pt checkpoint")
    s.add_argument("--grid", required=True,
                   help="output voxels: N, AxB, AxBxC (image order y,x / z,y,x) or xF (F times the training grid)")
    s.add_argument("--region", default=None,
                   help="x0,x1,y0,y1[,z0,z1] in mm, x first (write --region=-5,5,-5,5 when it starts with a "
                        "minus); default: the whole field of view")
    s.add_argument("--max-memory", type=float, default=2.0, metavar="GB",
                   help="refuse a grid whose float32 image exceeds this many GiB")
    s.add_argument("--output", required=True, help="OUT.npy, OUT.tif or OUT.mdf")
    s.add_argument("--force", action="store_true", help="overwrite the output")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("batch", help="reconstruct a frame series on Dask into an OME-Zarr store")
    add_pre(s)
    for act in s._actions:  # --verify checks a store alone: the files are needed only to compute
        if act.dest in ("sm", "meas"):
            act.required = False
    s.add_argument("--method", default="kaczmarz",
                   help="kaczmarz (default), nir, or a method of napari_nirmpi.classic")
    s.add_argument("--frames", default="all",
                   help="foreground frames: all, A:B, A:B:S, 0,2,5 or a mix such as 0:10,20")
    s.add_argument("--average", type=int, default=None,
                   help="average blocks of K frames (a trailing incomplete block is left out)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--scheduler", default=None, help="address of a running dask scheduler")
    g.add_argument("--workers", type=int, default=None, help="start a local cluster of N workers")
    s.add_argument("--threads-per-worker", type=int, default=None, help="compute threads per worker")
    s.add_argument("--chunk-frames", type=int, default=None, help="output frames per task and Zarr chunk")
    s.add_argument("--iterations", type=int, default=None, help="Kaczmarz sweeps or NIR iterations")
    s.add_argument("--lambda", dest="lam", default=None, metavar="VALUE|auto",
                   help="relative λ: a number for kaczmarz; for cgnr, fista, pdhg one value per --reg term "
                        "or auto (chosen per frame from the noise)")
    s.add_argument("--reg", default=None, help="prior(s) of cgnr, fista, pdhg: l2, l1, tv, comma-separated")
    s.add_argument("--grid", default=None, help="NIR sampling grid AxB (default: native)")
    s.add_argument("--seed", type=int, default=None, help="NIR seed")
    _add_nir_options(s)
    s.add_argument("--output", required=True, help="OUT.zarr (re-running resumes)")
    s.add_argument("--verify", action="store_true",
                   help="check OUT.zarr against its per-chunk checksums and exit: 0 intact and complete, "
                        "1 damaged or incomplete chunks (listed)")
    s.set_defaults(func=cmd_batch)

    s = sub.add_parser("demo", help="simulate the spiral, run both methods, write a comparison figure")
    s.add_argument("outdir", nargs="?", default="demo-out")
    s.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    s.set_defaults(func=cmd_demo)
    for name, parser in sub.choices.items():
        parser.formatter_class = _HelpFormatter
        if not parser.epilog and name in _EXAMPLES:
            parser.epilog = "example:\n  " + _EXAMPLES[name]
    return p


_EXAMPLES = {
    "info": "nirmpi info data/sm.mdf",
    "validate": "nirmpi validate data/meas.mdf   # exit 0 clean, 1 deviations listed, 2 unreadable",
    "simulate": "nirmpi simulate data/ --phantom spiral --grid 29 --seed 1",
    "reconstruct": "nirmpi reconstruct --sm data/sm.mdf --meas data/meas.mdf --method fista --reg l1 "
                   "--lambda auto --grid 104x104 --output l1_104.npy",
    "batch": "nirmpi batch --sm dyn/sm.mdf --meas dyn/meas.mdf --method kaczmarz --workers 2 --output series.zarr",
    "demo": "nirmpi demo demo-out/",
}


def _one_line(text) -> str:
    """Control characters (a newline in a file name) escaped: an error stays one line."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def main(argv=None) -> int:
    import warnings

    from .errors import MDFWarning

    parser = build_parser()
    a = parser.parse_args(argv)
    # warnings are collected, not printed as they come: on bad input only the one error line
    # shows (no numpy RuntimeWarning before it); on success our MDF warnings follow, one line each
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MDFWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            rc = a.func(a)
        except NirmpiError as e:
            sys.stderr.write(f"nirmpi {a.command}: error: {_one_line(e)}\n")
            return EXIT_BAD_INPUT
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            sys.stderr.write(f"nirmpi {a.command}: error: {e.strerror}: {_one_line(e.filename)}\n")
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            sys.stderr.write("nirmpi: interrupted\n")
            return 130
    seen = set()
    for w in caught:
        if issubclass(w.category, MDFWarning) and str(w.message) not in seen:
            seen.add(str(w.message))
            sys.stderr.write(f"nirmpi {a.command}: warning: {_one_line(w.message)}\n")
        elif not issubclass(w.category, (MDFWarning, RuntimeWarning)):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
