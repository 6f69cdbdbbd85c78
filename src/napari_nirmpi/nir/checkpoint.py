"""Save and load a `Field`: weights + network/training config + grid/FOV + preprocessing params.

File layout (a `torch.save` zip holding only tensors and plain containers):
    {"format": "napari-nirmpi-field", "version": 1, "meta": <JSON text>, "state_dict": {name: tensor}}
Loading uses `torch.load(weights_only=True)`, which refuses any pickled object other than tensors
and plain containers, so a crafted file cannot execute code. Writes are atomic (temporary file in
the same folder, then rename) and never overwrite an existing file unless `force=True`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..grid import Grid
from .field import Field, build_network

__all__ = ["save", "load", "FORMAT", "VERSION"]

FORMAT = "napari-nirmpi-field"
VERSION = 1


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
    """Read a field written by `save`. CheckpointError for a missing, foreign, corrupt or newer file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (forbidden globals), zip errors, truncation, ...
        raise CheckpointError(f"{path}: not a readable napari-nirmpi field checkpoint "
                              f"(loaded with weights_only=True): {type(e).__name__}: {str(e)[:300]}") from None
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
        grid = Grid.from_dict(meta["grid"])
        net_cfg = dict(meta["network"])
        state = payload["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("state_dict must map names to tensors")
        net = build_network(net_cfg)
        net.load_state_dict(state, strict=True)
        scale = float(meta.get("scale", 1.0))
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: corrupt checkpoint contents: {type(e).__name__}: {str(e)[:300]}") from None
    net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return Field(net, grid, meta.get("config") or {}, meta.get("params") or {}, scale=scale)
