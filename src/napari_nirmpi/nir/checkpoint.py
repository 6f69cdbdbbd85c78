"""Save and load a `Field`: weights + network/training config + grid/FOV + preprocessing params.

File layout (a `torch.save` zip holding only tensors and plain containers):
    {"format": "napari-nirmpi-field", "version": 1, "meta": <JSON text>, "state_dict": {name: tensor}}
Loading uses `torch.load(weights_only=True)`, which refuses any pickled object other than tensors
and plain containers, so a crafted file cannot execute code. Before anything is built the metadata
is checked: network sizes within `nir.config.LIMITS`, the weights' shapes equal to what the metadata
declares, every weight and the output scale finite, the training grid at most `MAX_GRID_VOXELS`.
Every refusal is one CheckpointError line. Writes are atomic (temporary file in the same folder,
then rename) and never overwrite an existing file unless `force=True`.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..grid import Grid
from .field import Field, build_network, expected_state_shapes

__all__ = ["save", "load", "FORMAT", "VERSION", "MAX_FILE_BYTES", "MAX_GRID_VOXELS"]

FORMAT = "napari-nirmpi-field"
VERSION = 1
MAX_FILE_BYTES = 1 << 30     # the largest network LIMITS allow is 256 MB of weights
MAX_GRID_VOXELS = 1 << 24    # training grids are native MPI grids (29², 37³ ≈ 5e4); 256³ = 1.7e7


def _plain(o):
    """JSON fallback for numpy scalars/arrays and other odd values in params."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, os.PathLike)):
        return str(o)
    return repr(o)


def save(field: Field, path, force: bool = False) -> Path:
    """Write `field` to `path` (conventionally *.pt). Returns the path."""
    path = Path(path)
    if path.exists() and not force:
        raise CheckpointError(f"{path}: file exists; pass force=True to overwrite")
    if not path.parent.exists():
        raise CheckpointError(f"{path}: folder {path.parent} does not exist")
    meta = json.dumps({**field.state(), "package": "napari-nirmpi"}, default=_plain)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in field.network.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "meta": meta, "state_dict": state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def load(path, device: str | torch.device = "cpu") -> Field:
    """Read a field written by `save`. CheckpointError (one line) for a missing, foreign, corrupt,
    oversized, non-finite or newer file; nothing is built before the metadata passed its checks."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: {st.st_size / 1e9:.1f} GB is larger than any napari-nirmpi field "
                              f"checkpoint (limit {MAX_FILE_BYTES / 1e9:.1f} GB)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a napari-nirmpi field checkpoint (not a PyTorch zip archive)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text would advise weights_only=False: never for a foreign file
        raise CheckpointError(f"{path}: not a napari-nirmpi field checkpoint: it holds objects other than "
                              "tensors and plain containers (refused without running them; weights_only)") from None
    except Exception as e:  # zip errors, truncation, ...
        raise CheckpointError(f"{path}: not a readable napari-nirmpi field checkpoint "
                              f"(corrupt or truncated archive: {type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-nirmpi field checkpoint (expected format {FORMAT!r})")
    version = payload.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: invalid checkpoint version {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version} is newer than this napari-nirmpi "
                              f"supports ({VERSION}); update the package")
    try:
        meta = json.loads(payload["meta"])
        if not isinstance(meta, dict):
            raise ValueError("meta must be a JSON object")
        grid = _checked_grid(meta.get("grid"))
        net_cfg = dict(meta["network"])
        shapes = expected_state_shapes(net_cfg)  # bounds the sizes; builds nothing
        if int(net_cfg.get("in_dim", 2)) != grid.ndim:
            raise ValueError(f"the network takes {net_cfg.get('in_dim')} coordinates but the grid has {grid.ndim} axes")
        state = payload["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("state_dict must map names to tensors")
        got = {k: tuple(v.shape) for k, v in state.items()}
        if got != shapes:
            diff = sorted(set(got.items()) ^ set(shapes.items()))[:3]
            raise ValueError(f"the weights do not match the network the metadata declares "
                             f"(width {net_cfg.get('width')}, depth {net_cfg.get('depth')}): {diff}")
        for k, v in state.items():
            if not v.is_floating_point() or not bool(torch.isfinite(v).all()):
                raise ValueError(f"weight {k!r} is not finite floating point")
        scale = meta.get("scale", 1.0)
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"output scale {scale!r} must be a positive finite number")
        net = build_network(net_cfg)
        net.load_state_dict(state, strict=True)
    except CheckpointError:
        raise
    except Exception as e:
        msg = " ".join(str(e).split())[:300]  # one line
        raise CheckpointError(f"{path}: corrupt checkpoint contents: {msg}") from None
    net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return Field(net, grid, meta.get("config") or {}, meta.get("params") or {}, scale=float(scale))


def _checked_grid(d) -> Grid:
    if not isinstance(d, dict) or not isinstance(d.get("shape"), list):
        raise ValueError("grid must be an object with a shape list")
    shape = d["shape"]
    if not 2 <= len(shape) <= 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape):
        raise ValueError(f"grid shape {shape!r} must be 2 or 3 positive integers")
    n = math.prod(shape)
    if n > MAX_GRID_VOXELS:
        raise ValueError(f"the training grid {'×'.join(map(str, shape))} has {n:,} voxels; a checkpoint's grid is "
                         f"at most {MAX_GRID_VOXELS:,}")
    return Grid.from_dict(d)
