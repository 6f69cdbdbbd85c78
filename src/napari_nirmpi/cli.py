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
    if text is None:
        return None
    try:
        return [int(c) for c in str(text).split(",") if c.strip() != ""]
    except ValueError:
        raise NirmpiError(f"--channels {text!r}: expected comma-separated integers such as 0,1") from None


def _region(text, ndim):
    """'x0,x1,y0,y1[,z0,z1]' in mm -> (lower, upper) in metres, image axis order."""
    from .grid import parse_region

    return parse_region(text, ndim, what="--region")


def write_image(path, image, grid, params=None, force=False):
    """Write an image as .npy (float32), .tif (with mm resolution) or .mdf (reconstruction)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".tif", ".tiff", ".mdf", ".h5", ".hdf5"):
        raise NirmpiError(f"{path}: output must end in .npy, .tif or .mdf")
    if os.path.exists(path) and not force:
        raise NirmpiError(f"{path} exists; pass --force to overwrite")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise NirmpiError(f"{path}: folder {d} does not exist")
    image = np.asarray(image, dtype=np.float32)
    if ext in (".mdf", ".h5", ".hdf5"):
        from . import mdf

        mdf.write_reconstruction(path, image, grid, params=params or {}, force=force)
        return path
    tmp = path + ".part"
    if ext == ".npy":
        with open(tmp, "wb") as f:
            np.save(f, image)
    else:
        import tifffile

        vy, vx = grid.voxel_size[-2:]
        tifffile.imwrite(tmp, image, imagej=True, resolution=(1 / (vx * 1e3), 1 / (vy * 1e3)),
                         metadata={"unit": "mm", "axes": "ZYX" if image.ndim == 3 else "YX",
                                   **({"spacing": grid.voxel_size[0] * 1e3} if image.ndim == 3 else {})})
    os.replace(tmp, path)
    return path


def _progress(total, desc):
    from tqdm import tqdm

    tty = sys.stderr.isatty()  # in a log file, a line every 15 s instead of a live bar
    return tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True, leave=True,
                mininterval=0.5 if tty else 15.0)


def run_nir(problem, config, *, desc="NIR"):
    """Train with a terminal progress bar; returns the final TrainState."""
    from .nir.train import train

    state = None
    with _progress(config.iterations, desc) as bar:
        for state in train(problem, config):
            bar.n = state.iteration
            if state.iteration % 50 == 0 or state.stop_reason:
                post = {"loss": f"{state.loss:.3g}"}
                if state.val_loss is not None:
                    post["val"] = f"{state.val_loss:.3g}"
                bar.set_postfix(post, refresh=False)
                bar.refresh()
    return state


# -- commands -------------------------------------------------------------------------------
def cmd_info(a):
    from . import mdf

    print(mdf.open(a.file).summary())


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
    """--operator / --l1: TrainConfig settings that are NIR-only (refused with --method kaczmarz)."""
    kw = {k: v for k, v in (("operator", a.operator), ("l1_weight", a.l1)) if v is not None}
    if kw and a.method != "nir":
        raise NirmpiError(f"{', '.join('--' + ('l1' if k == 'l1_weight' else k) for k in kw)} "
                          "applies to --method nir only")
    return kw


def cmd_reconstruct(a):
    from .grid import parse_shape
    from .preprocess import build_problem

    nir_kw = _nir_options(a)  # refuse a Kaczmarz run with NIR options before the slow part
    problem = build_problem(a.sm, a.meas, **_preprocess_kw(a))
    grid = problem.grid
    shape = parse_shape(a.grid, native=grid.shape) if a.grid else grid.shape
    params = dict(problem.params, method=a.method)
    if a.method == "kaczmarz":
        from .solvers import reconstruct_kaczmarz

        kw = dict(iterations=a.iterations or 150, lam=a.lam if a.lam is not None else 0.5)
        image = reconstruct_kaczmarz(problem, **kw)
        params.update(kw)
        if shape != grid.shape:
            from .resample import upsample

            image, grid = upsample(image, grid, shape, method=a.upsample)
            params["upsample"] = a.upsample
    else:
        from .nir.train import TrainConfig
        from .sample import sample

        cfg = TrainConfig(seed=a.seed, device=a.device, **nir_kw)
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
    from .sample import sample

    field = load(a.field)
    shape = parse_shape(a.grid, native=field.grid.shape)
    region = _region(a.region, field.grid.ndim) if a.region else None
    image, grid = sample(field, shape, region=region)
    write_image(a.output, image, grid, {"method": "nir", "checkpoint": os.path.abspath(a.field)}, force=a.force)
    print(f"wrote {a.output}: {image.shape}")


def cmd_batch(a):
    from .batch import reconstruct_series

    frames = None if a.frames in (None, "all") else a.frames
    method_kwargs = {}
    if a.iterations is not None:
        method_kwargs["iterations"] = a.iterations
    if a.lam is not None:
        if a.method != "kaczmarz":
            raise NirmpiError("--lambda applies to --method kaczmarz only")
        method_kwargs["lam"] = a.lam
    if a.grid is not None:
        if a.method != "nir":
            raise NirmpiError("--grid applies to --method nir only (Kaczmarz reconstructs on the native grid)")
        method_kwargs["grid"] = a.grid
    if a.seed is not None and a.method == "nir":
        method_kwargs["seed"] = a.seed
    method_kwargs.update(_nir_options(a))
    out = reconstruct_series(a.sm, a.meas, method=a.method, frames=frames, average=a.average,
                             output=a.output, scheduler=a.scheduler, workers=a.workers,
                             threads_per_worker=a.threads_per_worker, device=a.device,
                             preprocess=_preprocess_kw(a), method_kwargs=method_kwargs,
                             chunk_frames=a.chunk_frames, progress=True, overwrite=a.force)
    print(out)


def cmd_demo(a):
    from .demo import run_demo

    run_demo(a.outdir, quick=a.quick, device=a.device)


# -- parser ---------------------------------------------------------------------------------
def _add_nir_options(s) -> None:
    s.add_argument("--operator", choices=["auto", "pool", "cubic"], default=None,
                   help="NIR forward operator D: pool (the paper's block mean), cubic (the system matrix "
                        "interpolated inside each voxel) or auto (default: cubic in 2D, pool in 3D)")
    s.add_argument("--l1", type=float, default=None, metavar="W",
                   help="NIR sparsity weight (TrainConfig.l1_weight; default 0 = off)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nirmpi", description="MPI reconstruction: Kaczmarz-ℓ2 baseline and grid-agnostic "
                                          "neural implicit representations (NIR).")
    from . import __version__

    p.add_argument("--version", action="version", version=f"napari-nirmpi {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("info", help="print what an MDF file holds")
    s.add_argument("file")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("simulate", help="simulate a system matrix and a phantom measurement (MDF v2)")
    s.add_argument("outdir")
    s.add_argument("--phantom", default="spiral",
                   help="spiral, resolution, point, ellipses, bolus; 3D: cone, cubes, tubes")
    s.add_argument("--grid", default=None,
                   help="native grid: N (NxN; N³ with --scanner openmpi), AxB or AxBxC in (z, y, x) order "
                        "(default 29, or the scanner preset's 37x37x37)")
    s.add_argument("--scanner", default="default", choices=("default", "openmpi"),
                   help="scanner preset: default (2D 29 mm / 3D 13x26x26 mm) or openmpi (OpenMPIData's "
                        "Bruker scanner, 3D, 37x37x18.5 mm FOV, 3 channels, 817 frequencies)")
    s.add_argument("--seed", type=int, default=0)
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

    s = sub.add_parser("reconstruct", help="reconstruct a measurement (Kaczmarz or NIR)")
    add_pre(s)
    s.add_argument("--method", choices=["kaczmarz", "nir"], default="kaczmarz")
    s.add_argument("--grid", default=None, help="output grid AxB, AxBxC or xF (F times the native grid; default: native)")
    s.add_argument("--upsample", choices=["bilinear", "bicubic"], default="bicubic")
    s.add_argument("--iterations", type=int, default=None, help="Kaczmarz sweeps (150) or NIR iterations")
    s.add_argument("--lambda", dest="lam", type=float, default=None, help="Kaczmarz λ (0.5, relative)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--checkpoint", default=None, help="save the trained field here (NIR)")
    _add_nir_options(s)
    s.add_argument("--output", required=True, help="OUT.npy, OUT.tif or OUT.mdf")
    s.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser("sample", help="render a trained field on any grid")
    s.add_argument("field", help="FIELD.pt checkpoint")
    s.add_argument("--grid", required=True, help="AxB, AxBxC or xF (F times the training grid)")
    s.add_argument("--region", default=None,
                   help="x0,x1,y0,y1[,z0,z1] in mm (write --region=-5,5,-5,5 when it starts with a minus)")
    s.add_argument("--output", required=True)
    s.add_argument("--force", action="store_true")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("batch", help="reconstruct a frame series on Dask into Zarr")
    add_pre(s)
    s.add_argument("--method", choices=["kaczmarz", "nir"], default="kaczmarz")
    s.add_argument("--frames", default="all", help="all or A:B (foreground frames)")
    s.add_argument("--average", type=int, default=None, help="average blocks of K frames")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--scheduler", default=None, help="address of a running dask scheduler")
    g.add_argument("--workers", type=int, default=None, help="start a local cluster of N workers")
    s.add_argument("--threads-per-worker", type=int, default=None, help="compute threads per worker")
    s.add_argument("--chunk-frames", type=int, default=None, help="output frames per task and Zarr chunk")
    s.add_argument("--iterations", type=int, default=None, help="Kaczmarz sweeps or NIR iterations")
    s.add_argument("--lambda", dest="lam", type=float, default=None, help="Kaczmarz λ (relative)")
    s.add_argument("--grid", default=None, help="NIR sampling grid AxB (default: native)")
    s.add_argument("--seed", type=int, default=None, help="NIR seed")
    _add_nir_options(s)
    s.add_argument("--output", required=True, help="OUT.zarr (re-running resumes)")
    s.set_defaults(func=cmd_batch)

    s = sub.add_parser("demo", help="simulate the spiral, run both methods, write a comparison figure")
    s.add_argument("outdir", nargs="?", default="demo-out")
    s.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    s.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        a.func(a)
    except NirmpiError as e:
        sys.stderr.write(f"nirmpi {a.command}: error: {e}\n")
        return EXIT_BAD_INPUT
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        sys.stderr.write(f"nirmpi {a.command}: error: {e.strerror}: {e.filename}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("nirmpi: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
