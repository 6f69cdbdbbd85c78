"""Warm starts: a network fitted to an image before training on the data.

`TrainConfig.init = "pdhg-tv"` (the `fast_tv` preset) starts the field from the classic PDHG-TV
reconstruction with the automatic λ: the network is first fitted to that native-grid image
(`init_steps` Adam steps on the voxel centres, no data term), then trained on the measurement with
its own prior at a low learning rate. The convex solver finds the native-grid optimum that the
network's non-convex training only approaches from a random start; the network then adds what a
continuous field holds between voxels (on the 37³ cone: docs/3d.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import NirmpiError
from ..problem import Problem
from .config import TrainConfig
from .field import Field

# the image fit's learning rate, by network: the feature grid's preset rate, and SIREN's upper
# usable one (an image fit has no noise to overfit)
_FIT_LR = {"grid": 3e-2, "siren": 1e-3, "fourier": 1e-3}


def field_from_image(problem: Problem, image, config: TrainConfig | None = None, steps: int | None = None) -> Field:
    """A Field of `config`'s network whose values at the voxel centres of `problem.grid` fit
    `image` (native grid shape, data units): `steps` Adam steps (default `config.init_steps`) with a
    cosine decay on the relative squared error. The field carries the output scale that training
    on `problem` would choose, so `fit(problem, config, init_field=...)` continues from it.

    Centres, not voxel means: a feature grid whose finest level is the native grid cannot make
    its voxel means equal a peaked image, and on the cone at 9³ / 19³ the voxel-mean fit started
    4.6 / 1.2 dB below the PDHG-TV image it was fitted to (docs/research-notes.md, 2026-12-06)."""
    from .train import _Run, _clone_state

    cfg = config if config is not None else TrainConfig()
    img = np.asarray(image, dtype=np.float32)
    if img.shape != tuple(problem.grid.shape):
        raise NirmpiError(f"warm start: the image has shape {img.shape}, the problem's grid {tuple(problem.grid.shape)}")
    if not np.all(np.isfinite(img)):
        raise NirmpiError("warm start: the image contains NaN/Inf")
    steps = int(cfg.init_steps if steps is None else steps)
    if steps < 1:
        raise NirmpiError(f"warm start: steps must be >= 1, got {steps}")
    run = _Run(problem, cfg, None)
    target = torch.from_numpy(img.reshape(-1)).to(run.device) / run.scale
    norm = torch.clamp((target * target).mean(), min=1e-30)
    centres = run.coords_for(1)
    opt = torch.optim.Adam(run.net.param_groups(_FIT_LR[cfg.network]))
    base = [g["lr"] for g in opt.param_groups]
    run.net.train()
    for it in range(steps):
        f = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * it / steps))
        for g, lr0 in zip(opt.param_groups, base):
            g["lr"] = lr0 * f
        opt.zero_grad(set_to_none=True)
        loss = ((run.net(centres) - target) ** 2).mean() / norm
        loss.backward()
        opt.step()
    if not math.isfinite(float(loss.detach())):
        raise NirmpiError("warm start: fitting the network to the image diverged")
    return run.field_maker(_clone_state(run.net))()


def classic_start(problem: Problem, config: TrainConfig) -> Field:
    """The field `config.init` names: the classic reconstruction ("pdhg-tv", "fista-l1" or
    "cgnr-l2", automatic λ, on the native grid) fitted into the network (`field_from_image`)."""
    from ..classic import reconstruct

    config.validate()   # before the classic solve: a bad setting fails at once
    if config.init is None:
        raise NirmpiError("classic_start: TrainConfig.init is None (no classic image to start from)")
    method, reg = config.init.split("-")
    res = reconstruct(problem, method, reg, "auto", device=config.device)
    return field_from_image(problem, res.image, config)
