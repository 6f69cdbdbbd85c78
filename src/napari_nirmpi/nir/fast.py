"""A lean training loop for large (3D, scanner-size) problems: argmin_θ ‖S D φθ − u‖².

It differs from `nir.train` where a 37³ volume needs it (benchmarks/scanner3d.py measures each):
- fewer points per step: `sampling="jitter"` evaluates `points_per_voxel` uniformly random points
  inside every native voxel and averages them (an unbiased estimate of the voxel mean that the
  system matrix sees, at 1-2 points per voxel instead of s³ for an s-fold grid);
- a grid-agnostic fast parametrisation by default (`network="grid"`: `encodings.FeatureGrid`);
  `network="siren"` trains the paper's SIREN in the same loop for comparison;
- optional minibatches of frequency rows (`row_batch`: a fraction of the training rows per step,
  contiguous slices of a once-shuffled copy, so no row gather per step);
- a true early stop: the held-out misfit is checked every `val_every` steps and the run ENDS
  after `patience` steps without a new minimum; the returned field is that minimum.

`fit_fast(problem, config=None, callback=None, *, init_field=None, progress=False)` follows the
signature of `nir.fit` and returns `(Field, FastState)`; the field samples on any grid with
`napari_nirmpi.sample`. Device-agnostic: `device="auto"` takes CUDA when present.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field as dc_field, fields
from typing import Any, Callable

import numpy as np
import torch

from ..errors import NirmpiError, ProblemMismatch, TrainingError
from ..problem import Problem
from .encodings import FeatureGrid
from .field import Field, build_network
from .train import estimate_scale, pool, resolve_device

__all__ = ["FastConfig", "FastState", "fit_fast", "build_fast_network"]


@dataclass
class FastConfig:
    """Settings of `fit_fast`. Defaults: the route that won on the 37³ cone (docs/3d.md)."""

    network: str = "grid"            # "grid" (FeatureGrid) | "siren"
    # FeatureGrid
    levels: int = 6
    features: int = 4
    min_res: int = 4
    max_scale: float = 1.0           # finest level relative to the training grid
    hidden: int = 32
    depth: int = 1
    init_std: float = 1e-2
    # SIREN (network="siren"), as TrainConfig's default preset
    width: int = 128
    siren_depth: int = 3
    omega0: float = 10.0
    hidden_omega0: float = 30.0
    positive: str | None = "square"
    # optimiser
    lr: float = 3e-2                 # FeatureGrid (37³ cone: 3e-2 beat 1e-2 at 500 steps); a SIREN wants 3e-4
    lr_final: float = 0.05           # cosine decay to lr * lr_final at `iterations`
    iterations: int = 1200
    tv_weight: float = 0.0           # FeatureGrid feature TV (smoothness prior)
    # points and rows per step
    sampling: str = "jitter"         # "jitter" | "center" | "grid" (s-fold grid + average pool)
    points_per_voxel: int = 1        # jitter
    grid_scale: int = 2              # grid
    row_batch: float | None = None   # fraction of training rows per step (None: all)
    # rows and stopping
    snr_weight: float | None = 30.0  # as TrainConfig: row weight snr/sqrt(snr² + snr_weight²)
    val_fraction: float = 0.1
    val_every: int = 25
    val_scale: int = 1               # held-out misfit at voxel centres (1) or on the s-fold grid
    patience: int = 300              # steps without a new held-out minimum: the run ends
    min_iterations: int = 100
    normalize: bool = True
    seed: int = 0
    device: str = "auto"
    compile: bool = False            # torch.compile the network (measured: docs/3d.md)
    log_every: int = 25

    def validate(self) -> None:
        def bad(name, expected):
            raise NirmpiError(f"FastConfig.{name}={getattr(self, name)!r}: expected {expected}")
        if self.network not in ("grid", "siren"):
            bad("network", "'grid' or 'siren'")
        if self.sampling not in ("jitter", "center", "grid"):
            bad("sampling", "'jitter', 'center' or 'grid'")
        for name in ("iterations", "points_per_voxel", "grid_scale", "val_every", "val_scale", "log_every",
                     "levels", "features", "hidden", "width"):
            if int(getattr(self, name)) < 1:
                bad(name, "an integer >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", "a positive finite number")
        if self.row_batch is not None and not 0 < self.row_batch <= 1:
            bad("row_batch", "None or a fraction in (0, 1]")
        if not 0 <= self.val_fraction < 1:
            bad("val_fraction", "a fraction in [0, 1)")
        if self.snr_weight is not None and not self.snr_weight > 0:
            bad("snr_weight", "None or a positive number")
        if self.tv_weight < 0:
            bad("tv_weight", "a number >= 0")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class FastState:
    """Progress report: `field` is the selected field (lowest held-out misfit so far)."""

    iteration: int
    loss: float
    val_loss: float | None
    best_iteration: int
    best_val_loss: float | None
    elapsed: float
    stop_reason: str | None = None
    _make_field: Callable[[], Field] | None = dc_field(default=None, repr=False)
    _field: Field | None = dc_field(default=None, repr=False)

    @property
    def field(self) -> Field:
        if self._field is None:
            self._field = self._make_field()
        return self._field


def build_fast_network(cfg: FastConfig, grid_shape, seed: int = 0) -> torch.nn.Module:
    ndim = len(grid_shape)
    if cfg.network == "grid":
        return FeatureGrid(ndim, grid_shape, cfg.levels, cfg.features, cfg.min_res, cfg.max_scale,
                           cfg.hidden, cfg.depth, cfg.positive, init_std=cfg.init_std, seed=seed)
    return build_network({"network": "siren", "in_dim": ndim, "width": cfg.width, "depth": cfg.siren_depth,
                          "omega0": cfg.omega0, "hidden_omega0": cfg.hidden_omega0,
                          "positive": cfg.positive, "fold": True}, seed=seed)


def _real(S, u, rows):
    A = S[rows]
    Sr = np.concatenate([A.real, A.imag], axis=0).astype(np.float32)
    ur = np.concatenate([u[rows].real, u[rows].imag]).astype(np.float32)
    return torch.from_numpy(Sr), torch.from_numpy(ur)


def fit_fast(problem: Problem, config: FastConfig | None = None, callback: Callable[[FastState], Any] | None = None,
             *, init_field: Field | None = None, progress: bool = False) -> tuple[Field, FastState]:
    """Fit a field to one frame of `problem`; returns (selected field, final state).
    callback(state) every `log_every` steps may return True to stop (the field so far is kept)."""
    cfg = copy.copy(config) if config is not None else FastConfig()
    cfg.validate()
    device = resolve_device(cfg.device)
    grid = problem.grid
    ndim, shape, N = grid.ndim, tuple(grid.shape), grid.size
    S = np.asarray(problem.S)
    u = np.asarray(problem.u)
    if u.ndim != 1:
        raise ProblemMismatch(f"fit_fast expects one frame u of shape ({S.shape[0]},), got {u.shape}")
    if S.shape[1] != N:
        raise ProblemMismatch(f"system matrix has {S.shape[1]} columns but the grid {shape} has {N} voxels")
    M = S.shape[0]
    w = np.ones(M, np.float32)
    if cfg.snr_weight is not None and problem.snr is not None:
        snr = np.asarray(problem.snr, np.float64)
        if snr.shape == (M,) and np.all(np.isfinite(snr)):
            w = (snr / np.sqrt(snr ** 2 + cfg.snr_weight ** 2)).astype(np.float32)
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(M)
    n_val = int(round(cfg.val_fraction * M)) if cfg.val_fraction > 0 else 0
    val_rows, train_rows = np.sort(perm[:n_val]), perm[n_val:]   # training rows stay shuffled (minibatches)
    Sw, uw = S, u
    if not np.all(w == 1):
        Sw, uw = None, u * w   # weight row by row below, without a weighted copy of all of S
    def rows_real(rows):
        A, b = _real(S, uw, rows)
        if Sw is None:
            ww = torch.from_numpy(np.concatenate([w[rows], w[rows]]))
            A *= ww[:, None]
        return A.to(device), b.to(device)
    S_t, u_t = rows_real(train_rows)
    S_v, u_v = rows_real(val_rows) if n_val else (None, None)
    if init_field is not None:
        scale = float(init_field.scale)
    else:
        scale = estimate_scale(S_t, u_t) if cfg.normalize else 1.0
    u_t = u_t / scale
    if n_val:
        u_v = u_v / scale
        u_v_norm = torch.clamp((u_v * u_v).sum(), min=1e-30)
    Mt = len(train_rows)
    batch = Mt if cfg.row_batch is None else max(1, int(round(cfg.row_batch * Mt)))
    # real rows come as [Re (Mt); Im (Mt)]: a minibatch is the same slice of both halves
    def batch_of(it):
        if batch >= Mt:
            return S_t, u_t
        b0 = ((it * batch) % Mt)
        idx = torch.arange(b0, b0 + batch, device=device) % Mt
        idx = torch.cat([idx, idx + Mt])
        return S_t.index_select(0, idx), u_t.index_select(0, idx)

    net = build_fast_network(cfg, shape, seed=cfg.seed).to(device)
    if init_field is not None:
        net.load_state_dict(init_field.network.state_dict())
    groups = net.param_groups(cfg.lr)
    opt = torch.optim.Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    run = torch.compile(net) if cfg.compile else net

    centres = torch.from_numpy(grid.normalized_coords(np.float32).reshape(-1, ndim)).to(device)
    half = torch.tensor([1.0 / n for n in shape], device=device)   # half a voxel in [-1, 1] units
    fine: dict[int, torch.Tensor] = {}

    def fine_coords(s):
        if s not in fine:
            fine[s] = torch.from_numpy(grid.refined(s).normalized_coords(np.float32).reshape(-1, ndim)).to(device)
        return fine[s]

    gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)

    def voxel_values(model, mode):
        if mode == "center":
            return model(centres)
        if mode == "jitter":
            k = cfg.points_per_voxel
            offs = (torch.rand(k, N, ndim, generator=gen, device=device) * 2 - 1) * half
            return model((centres[None] + offs).reshape(-1, ndim)).reshape(k, N).mean(0)
        s = mode
        return pool(model(fine_coords(s)), shape, s)

    train_mode = cfg.grid_scale if cfg.sampling == "grid" else cfg.sampling
    net_cfg = net.config() if hasattr(net, "config") else {}

    def make_field(sd):
        def make():
            m = build_fast_network(cfg, shape, seed=cfg.seed).to(device)
            m.load_state_dict(sd)
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            return Field(m, grid, {"fast": cfg.to_dict(), "network_config": net_cfg, "scale": scale},
                         dict(problem.params), scale=scale)
        return make

    best_sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    best_it, best_val, val_loss = 0, None, None
    t0 = time.perf_counter()
    stop, state = None, None
    it = 0
    for it in range(1, cfg.iterations + 1):
        f = cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * (it - 1) / cfg.iterations))
        for g, lr0 in zip(opt.param_groups, base):
            g["lr"] = lr0 * f
        opt.zero_grad(set_to_none=True)
        A, b = batch_of(it)
        c = voxel_values(run, train_mode)
        r = A @ c - b
        loss = (r * r).sum() / torch.clamp((b * b).sum(), min=1e-30)
        if cfg.tv_weight > 0 and hasattr(net, "tv"):
            loss = loss + cfg.tv_weight * net.tv()
        loss.backward()
        opt.step()
        lv = float(loss.detach())
        if not math.isfinite(lv):
            err = TrainingError(f"fit_fast: the loss became {lv} at step {it}; try a lower lr")
            err.field = make_field(best_sd)()
            raise err
        if n_val and (it % cfg.val_every == 0 or it == cfg.iterations):
            with torch.no_grad():
                cv = voxel_values(net, cfg.val_scale if cfg.val_scale > 1 else "center")
                rv = S_v @ cv - u_v
                val_loss = float((rv * rv).sum() / u_v_norm)
            if best_val is None or val_loss < best_val:
                best_val, best_it = val_loss, it
                best_sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif it >= cfg.min_iterations and it - best_it >= cfg.patience:
                stop = f"early stop: no new held-out minimum for {it - best_it} steps (best at {best_it})"
        elif not n_val:
            best_it = it
        if stop is None and it == cfg.iterations:
            stop = "max iterations"
        if stop is not None or it % cfg.log_every == 0:
            if not n_val:
                best_sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
            state = FastState(it, lv, val_loss, best_it, best_val, time.perf_counter() - t0, stop,
                              _make_field=make_field(best_sd))
            if progress:
                print(f"  step {it:5d} loss {lv:.4g} val {val_loss if val_loss is None else round(val_loss, 5)} "
                      f"best {best_it} {state.elapsed:.1f}s", flush=True)
            if stop is None and callback is not None and callback(state):
                stop = "cancelled"
                state.stop_reason = stop
            if stop is not None:
                break
    if state is None or state.stop_reason is None:
        state = FastState(it, lv, val_loss, best_it, best_val, time.perf_counter() - t0, stop or "max iterations",
                          _make_field=make_field(best_sd))
    return state.field, state
