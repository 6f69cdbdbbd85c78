"""The measurement as training sees it: the device, the held-out split of the frequency rows,
complex rows as real ones, and the units-free intensity scale."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import NirmpiError

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["resolve_device", "split_rows", "estimate_scale"]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NirmpiError(f"device {name!r} requested but CUDA is not available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise NirmpiError("device 'mps' requested but MPS is not available")
    return torch.device(name)


def split_rows(M: int, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, training rows) of M, sorted: val_fraction of them, drawn with cfg.seed (the
    same seed draws the same split)."""
    n_val = int(round(cfg.val_fraction * M)) if cfg.val_fraction > 0 else 0
    if n_val and M - n_val < 1:
        n_val = 0
    perm = np.random.default_rng(cfg.seed).permutation(M)
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


def _real_rows(S: np.ndarray, u: np.ndarray, rows: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    A = S[rows]
    Sr = np.concatenate([A.real, A.imag], axis=0).astype(np.float32)
    ur = np.concatenate([u[rows].real, u[rows].imag]).astype(np.float32)
    return torch.from_numpy(Sr).to(device), torch.from_numpy(ur).to(device)


def estimate_scale(Sr: torch.Tensor, ur: torch.Tensor, iterations: int = 20) -> float:
    """A units-free intensity level: the 99.5th percentile of |c| from a short (regularising) CGLS
    run on S_r c = u_r. Training fits u / scale so the network output is of order one."""
    with torch.no_grad():
        Sd, ud = Sr.double(), ur.double()
        c = torch.zeros(Sd.shape[1], dtype=torch.float64, device=Sd.device)
        r = ud.clone()
        s = Sd.T @ r
        p = s.clone()
        gamma = float(s @ s)
        for _ in range(iterations):
            if gamma <= 0 or not math.isfinite(gamma):
                break
            q = Sd @ p
            alpha = gamma / float(q @ q)
            c += alpha * p
            r -= alpha * q
            s = Sd.T @ r
            gamma_new = float(s @ s)
            p = s + (gamma_new / gamma) * p
            gamma = gamma_new
        level = float(torch.quantile(c.abs().float().cpu(), 0.995)) if c.numel() > 1 else float(c.abs().max())
    if not math.isfinite(level) or level <= 0:
        return 1.0
    return level
