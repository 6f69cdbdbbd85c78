"""Training a coordinate network φθ on one measurement: argmin_θ ‖S D φθ(p) − u‖² (Tsanda 2025).

Each iteration draws a refinement factor s ∈ 1..max_scale from a seeded generator, evaluates the
network on the s-times finer grid of the FOV (voxel centres), maps it back to the native grid with
the operator D and takes an Adam step on the data misfit over the training rows. D is the paper's
average pool (`operator="pool"`: each native voxel gets the mean over its s^ndim sub-voxels) or the
adjoint of cubic interpolation (`"cubic"`: the system matrix interpolated inside each voxel);
`"auto"` (the default) takes cubic in 2D and pool in 3D. `sampling="jitter"` replaces the
fine grid by k uniformly random points inside each native voxel (an unbiased estimate of the same
voxel mean, at k points per voxel instead of s^ndim).

Rows are weighted by their calibration SNR when the problem carries it (`snr_weight`: the misfit
of row m counts with weight snr_m² / (snr_m² + snr_weight²)), and a held-out misfit that jumps by
more than `spike_guard` × the previous check rolls the weights and Adam state back to that check
and halves the learning rate.

Complex rows are used as real ones: S_r = [Re S; Im S] (2M, N), u_r = [Re u; Im u].
The reported loss is the relative misfit ‖S_r c − u_r‖² / ‖u_r‖² on the training rows.

`train(problem, config)` is a generator of `TrainState`s. Closing it (`gen.close()`) cancels
promptly; the field of the last state received is the best so far. A non-finite loss yields a
final state (stop_reason "non-finite loss") and then raises `TrainingError` whose `.field` is the
best field so far (and `.state` that final state).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field as dc_field, fields
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NirmpiError, ProblemMismatch, TrainingError
from ..problem import Problem
from .field import Field, build_network
from .stopping import OneStandardError, StoppingRule, TrackBest, ValidationPatience

__all__ = ["TrainConfig", "TrainState", "train", "fit", "StoppingRule", "ValidationPatience",
           "resolve_device", "pool", "estimate_scale", "split_rows"]


# --------------------------------------------------------------------------------------------
# configuration

@dataclass
class TrainConfig:
    """Network, optimiser, sampling and stopping settings. `TrainConfig()` is the default preset
    (fast, no per-measurement tuning); `TrainConfig.paper()` is the paper's recipe."""

    # network
    network: str = "siren"              # "siren" | "fourier"
    width: int = 128
    depth: int = 3                      # hidden width×width layers (SIREN reference: 3)
    omega0: float = 10.0                # first-layer ω0 (bandwidth prior; paper 30)
    hidden_omega0: float = 30.0
    positive: str | None = "square"     # non-negative output: None | "softplus" | "relu" | "square";
                                        # measured at 104²: square beats softplus by 0.7–1.5 dB and
                                        # 0.1–0.2 SSIM (softplus cannot reach a zero background)
    output_bias: float = 0.0            # added to the output layer's initial bias
    fold: bool = True                   # fold ω0 into the weights (same optimisation, faster)
    num_features: int = 128             # Fourier-feature network only
    sigma: float = 4.0                  # Fourier-feature network only
    # optimiser
    lr: float = 3e-4                    # measured: 1e-3 loses ~3 dB on the spiral, 3e-4 best of 1e-4..1e-3
    lr_schedule: str = "cosine"         # "constant" | "cosine" | "exponential" (towards lr*lr_final)
    lr_final: float = 0.05
    iterations: int = 2000
    grad_clip: float | None = None      # max gradient norm (None: off)
    spike_guard: float = 3.0            # held-out misfit above this × the last check's: roll back to that
                                        # checkpoint (weights and Adam state) and halve the lr (0: off).
                                        # Adam at 3e-4 overshoots now and then, once in a while wiping the
                                        # field (spiral-low held-out: 16.2 → 13.2 dB at one check)
    ema: float = 0.0                    # EMA decay of the weights used for validation/result (0: off)
    tv_weight: float = 0.0              # weight of a total-variation term on the sampled image
    l1_weight: float = 0.0              # weight of an l1 (sparsity) term: the mean |field| over the sampled
                                        # grid (= ||c||_1 / N of the voxel means, normalised units, peak ~1).
                                        # Tune half at 0.3: resolution +5 dB, points tie the tuned baseline,
                                        # but it erodes the ellipses' low plateau and the held-out misfit
                                        # cannot see its gains (stopping lands up to 1.5 dB early): not the
                                        # default (docs/benchmarks.md)
    # sampling (the operator D)
    max_scale: int = 3                  # s ∈ 1..3: 2.3× fewer points per step than the paper's 5;
                                        # spiral 104²: 18.0 dB at 2000 it vs 18.5 dB (s ≤ 5, 3000 it)
    operator: str = "auto"              # D for "grid": "pool" = the paper's block mean (S held
                                        # constant over a voxel) | "cubic" = the adjoint of cubic
                                        # interpolation (S interpolated to the fine grid; model
                                        # error for an off-centre dot 0.4 % vs 2.6 %) | "auto" =
                                        # cubic in 2D, pool in 3D (measured: cubic wins one more case
                                        # on each of the tune, held-out and unseen sets in 2D, and is
                                        # 1 dB worse in 3D)
    sampling: str = "grid"              # "grid" (s-fold grid + average pool) | "jitter" (3× faster on
                                        # CPU but measured 3.5 dB worse on the spiral: not the default)
    jitter_points: int = 4              # points per native voxel for "jitter"
    max_points: int = 1 << 20           # cap on fine-grid points per step (limits s in 3D)
    val_scale: int | None = None        # s for validation/best-field misfit (None: max s in 2D, 1 in 3D)
    snr_weight: float | None = 30.0     # weight row m by snr_m/√(snr_m² + snr_weight²) when the problem
                                        # carries the system matrix's SNR (None: unweighted): a noise model
                                        # with calibration noise 1/snr_m per row and a 1/snr_weight (3 %)
                                        # model-error floor. Fitting the rows near the SNR threshold is
                                        # what broke noisy objects into fragments (tune half: 10 / 20 / 30
                                        # measured, 30 the flattest after the best iterate)
    normalize: bool = True              # train on u / scale, scale from a short CGLS (units-free)
    # stopping and reporting
    early_stopping: bool = True
    val_fraction: float = 0.1           # held-out rows for validation (0: none)
    val_every: int = 25
    patience: int = 2000                # iterations without validation improvement; 2000 = run the
                                        # default budget out: the held-out misfit of a dot can dip
                                        # early and fall below the dip only after ~1500 iterations
    selection: str = "min"              # returned iterate: "min" = the lowest held-out misfit; "1se" =
                                        # the earliest within selection_k standard errors of it (the
                                        # choice for operator="pool": "min" misses spiral-low by 1.1 dB)
    selection_k: float = 0.5            # for "1se": tune half worst gap 0.36 dB at 0.5, 0.50 at 1.0
    min_iterations: int = 0
    stopping: Any = None                # a StoppingRule object overriding early_stopping/patience
    preview_every: int = 100
    log_every: int = 10                 # a TrainState is yielded every log_every iterations
    seed: int = 0
    device: str = "auto"                # "auto" (CUDA, then MPS, then CPU) | "cpu" | "cuda" | "mps"

    @classmethod
    def paper(cls, **overrides) -> "TrainConfig":
        """The seed paper: SIREN 3×256, ω0 30, Adam 1e-4 constant, 70 000 iterations, s ≤ 5,
        average pooling, no held-out rows, no early stopping, linear output, unweighted rows,
        no spike guard."""
        kw = dict(network="siren", width=256, depth=3, omega0=30.0, hidden_omega0=30.0,
                  positive=None, lr=1e-4, lr_schedule="constant", iterations=70_000, max_scale=5,
                  sampling="grid", operator="pool", early_stopping=False, val_fraction=0.0, ema=0.0,
                  tv_weight=0.0, l1_weight=0.0, normalize=True, snr_weight=None, spike_guard=0.0)
        kw.update(overrides)
        return cls(**kw)

    def validate(self) -> None:
        def bad(name, expected):
            raise NirmpiError(f"TrainConfig.{name}={getattr(self, name)!r}: expected {expected}")
        if self.network not in ("siren", "fourier"):
            bad("network", "'siren' or 'fourier'")
        for name in ("width", "iterations", "max_scale", "jitter_points", "val_every", "preview_every",
                     "log_every", "max_points"):
            if int(getattr(self, name)) < 1:
                bad(name, "an integer >= 1")
        if self.depth < 0:
            bad("depth", "an integer >= 0")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", "a positive finite number")
        if self.lr_schedule not in ("constant", "cosine", "exponential"):
            bad("lr_schedule", "'constant', 'cosine' or 'exponential'")
        if self.sampling not in ("grid", "jitter"):
            bad("sampling", "'grid' or 'jitter'")
        if self.operator not in ("auto", "pool", "cubic"):
            bad("operator", "'auto', 'pool' or 'cubic'")
        if not 0.0 <= self.val_fraction < 1.0:
            bad("val_fraction", "a fraction in [0, 1)")
        if self.selection not in ("min", "1se"):
            bad("selection", "'min' or '1se'")
        if not (self.selection_k >= 0 and math.isfinite(self.selection_k)):
            bad("selection_k", "a finite number >= 0")
        if self.snr_weight is not None and not (self.snr_weight > 0 and math.isfinite(self.snr_weight)):
            bad("snr_weight", "None or a positive finite number")
        if not (self.spike_guard == 0 or (self.spike_guard > 1 and math.isfinite(self.spike_guard))):
            bad("spike_guard", "0 (off) or a finite factor > 1")
        for name in ("tv_weight", "l1_weight"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                bad(name, "a finite number >= 0")
        if not 0.0 <= self.ema < 1.0:
            bad("ema", "a decay in [0, 1)")
        if self.positive not in (None, "softplus", "relu", "square"):
            bad("positive", "None, 'softplus', 'relu' or 'square'")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            bad("device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")

    def network_config(self, ndim: int) -> dict:
        if self.network == "siren":
            return {"network": "siren", "in_dim": ndim, "width": self.width, "depth": self.depth,
                    "omega0": self.omega0, "hidden_omega0": self.hidden_omega0,
                    "positive": self.positive, "fold": self.fold, "output_bias": self.output_bias}
        return {"network": "fourier", "in_dim": ndim, "width": self.width, "depth": self.depth,
                "num_features": self.num_features, "sigma": self.sigma, "positive": self.positive,
                "output_bias": self.output_bias}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["stopping"] is not None:
            d["stopping"] = repr(d["stopping"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise NirmpiError(f"TrainConfig: unknown settings {sorted(unknown)}")
        d = {k: v for k, v in d.items() if not (k == "stopping" and isinstance(v, str))}
        return cls(**d)


# --------------------------------------------------------------------------------------------
# stopping rules (pluggable)

# StoppingRule, ValidationPatience, TrackBest live in stopping.py (re-exported here).


# --------------------------------------------------------------------------------------------
# state

@dataclass
class TrainState:
    """One progress report. `preview` is the current iterate's native-grid image (voxel centres,
    data units) every `preview_every` iterations, else None; the final state (stop_reason set)
    always carries the preview of the returned field. `field` is the best field so far: the
    checkpoint the stopping rule picks (TrainConfig.selection), or the latest iterate when no rows
    are held out."""

    iteration: int
    loss: float                     # relative data misfit on the training rows (this iteration)
    val_loss: float | None          # relative misfit on held-out rows (latest check) or None
    elapsed: float                  # seconds since training started
    preview: np.ndarray | None      # native-grid image (float32, data units) every preview_every
    best_iteration: int
    stop_reason: str | None         # None until the final state
    best_val_loss: float | None = None
    lr: float = 0.0
    _make_field: Callable[[], Field] | None = dc_field(default=None, repr=False, compare=False)
    _field: Field | None = dc_field(default=None, repr=False, compare=False)
    _make_current: Callable[[], Field] | None = dc_field(default=None, repr=False, compare=False)

    def current_field(self) -> Field:
        """The CURRENT iterate (not the best) as a Field sharing the live weights: valid only until
        the generator advances (benchmarks use it to score every checkpoint)."""
        if self._make_current is None:
            raise TrainingError("this state carries no current iterate")
        return self._make_current()

    @property
    def field(self) -> Field:
        """The best field so far (built on first access from a copy of its weights)."""
        if self._field is None:
            self._field = self._make_field()
        return self._field


# --------------------------------------------------------------------------------------------
# helpers

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


def pool(fine: torch.Tensor, shape: tuple[int, ...], s: int) -> torch.Tensor:
    """The operator D: mean over each s^ndim block of the (s·shape) image → flat (N,) in C order."""
    if s == 1:
        return fine.reshape(-1)
    img = fine.reshape(1, 1, *[n * s for n in shape])
    pooled = F.avg_pool2d(img, s) if len(shape) == 2 else F.avg_pool3d(img, s)
    return pooled.reshape(-1)


def cubic_adjoint_matrix(n: int, s: int) -> torch.Tensor:
    """(n, n·s) matrix Uᵀ/s of 1D cubic interpolation U from n voxel centres to the n·s
    centres of an s-fold finer grid (torch's bicubic kernel, a = -0.75, edges clamped). Applied
    along every axis it maps a fine image to the native values that `S` sees, S·Uᵀ/s^ndim: the
    system matrix interpolated to the fine grid rather than held constant over each voxel."""
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, 1, n)
    up = F.interpolate(eye, size=(1, n * s), mode="bicubic", align_corners=False)
    return (up.reshape(n, n * s) / s).float()


def cubic_pool(fine: torch.Tensor, shape: tuple[int, ...], s: int,
               mats: list[torch.Tensor]) -> torch.Tensor:
    """The operator D of operator='cubic': apply each axis' cubic_adjoint_matrix → flat (N,)."""
    if s == 1:
        return fine.reshape(-1)
    img = fine.reshape([n * s for n in shape])
    for axis, m in enumerate(mats):
        img = torch.movedim(torch.tensordot(m, img, dims=([1], [axis])), 0, axis)
    return img.reshape(-1)


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


def _lr_factor(cfg: TrainConfig, it: int) -> float:
    t = min(max(it / cfg.iterations, 0.0), 1.0)
    f = cfg.lr_final
    if cfg.lr_schedule == "cosine":
        return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.lr_schedule == "exponential":
        return f ** t
    return 1.0


def _tv(img: torch.Tensor) -> torch.Tensor:
    return sum(img.diff(dim=d).abs().mean() for d in range(img.ndim))


def _clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------------
# training

def train(problem: Problem, config: TrainConfig | None = None, *,
          init_field: Field | None = None) -> Iterator[TrainState]:
    """Fit a field to `problem` (one frame). Yields a TrainState every `log_every` iterations,
    on every preview and at the end (stop_reason set).

    init_field: start from this field's weights and output scale (a warm start, e.g. from the
    previous frame of a series); its network must match the config's.
    """
    cfg = copy.copy(config) if config is not None else TrainConfig()
    cfg.validate()
    device = resolve_device(cfg.device)
    grid = problem.grid
    ndim, shape, N = grid.ndim, tuple(grid.shape), grid.size
    if cfg.operator == "auto":  # the field's config records the operator that was used
        cfg.operator = "cubic" if ndim == 2 else "pool"
    S = np.asarray(problem.S)
    u = np.asarray(problem.u)
    if u.ndim != 1:
        raise ProblemMismatch(f"train expects one measurement frame u of shape ({S.shape[0]},), got {u.shape}; "
                              "use problem.with_u(u[i]) per frame")
    M = S.shape[0]
    if cfg.snr_weight is not None and problem.snr is not None:
        snr = np.asarray(problem.snr, dtype=np.float64)
        if snr.shape == (M,) and np.all(np.isfinite(snr)) and np.all(snr >= 0):
            w = snr / np.sqrt(snr ** 2 + float(cfg.snr_weight) ** 2)
            S, u = S * w[:, None].astype(np.float32), u * w.astype(np.float32)

    # held-out rows (seeded; the same seed draws the same split)
    val_rows, train_rows = split_rows(M, cfg)
    n_val = len(val_rows)
    scale_seq = np.random.default_rng([cfg.seed, 1])

    S_t, u_t = _real_rows(S, u, train_rows, device)
    S_v, u_v = _real_rows(S, u, val_rows, device) if n_val else (None, None)
    if init_field is not None:
        scale = float(init_field.scale)  # keep the previous field's units so its image carries over
    else:
        scale = estimate_scale(S_t, u_t) if cfg.normalize else 1.0
    u_t = u_t / scale
    u_t_norm = torch.clamp((u_t * u_t).sum(), min=1e-30)
    if n_val:
        u_v = u_v / scale
        u_v_norm = torch.clamp((u_v * u_v).sum(), min=1e-30)

    net_cfg = cfg.network_config(ndim)
    net = build_network(net_cfg, seed=cfg.seed).to(device)
    if init_field is not None:
        try:
            net.load_state_dict(init_field.network.state_dict())
        except RuntimeError as e:
            raise NirmpiError(f"warm start: the initial field's network does not match {net_cfg}: {e}") from None
    opt = torch.optim.Adam(net.param_groups(cfg.lr))
    base_lrs = [g["lr"] for g in opt.param_groups]
    ema_net = None
    if cfg.ema > 0:
        ema_net = copy.deepcopy(net)
        for p in ema_net.parameters():
            p.requires_grad_(False)
    eval_net = ema_net if ema_net is not None else net

    # sampling: largest s whose fine grid stays under max_points
    s_max = 1
    while s_max < cfg.max_scale and N * (s_max + 1) ** ndim <= cfg.max_points:
        s_max += 1
    val_s = cfg.val_scale if cfg.val_scale is not None else (s_max if ndim == 2 else 1)
    val_s = max(1, min(int(val_s), cfg.max_scale))
    coords: dict[int, torch.Tensor] = {}

    def coords_for(s: int) -> torch.Tensor:
        if s not in coords:
            c = grid.refined(s).normalized_coords(np.float32).reshape(-1, ndim)
            coords[s] = torch.from_numpy(c).to(device)
        return coords[s]

    jitter_gen = torch.Generator(device=device).manual_seed(int(cfg.seed) + 2)
    half_voxel = torch.tensor([1.0 / n for n in shape], dtype=torch.float32, device=device)

    cubic_mats: dict[int, list[torch.Tensor]] = {}

    def to_native(vals: torch.Tensor, s: int) -> torch.Tensor:
        if cfg.operator == "pool" or s == 1:
            return pool(vals, shape, s)
        if s not in cubic_mats:
            cubic_mats[s] = [cubic_adjoint_matrix(n, s).to(device) for n in shape]
        return cubic_pool(vals, shape, s, cubic_mats[s])

    def native(model, s: int, jitter: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(voxel values c (N,) that S sees, image used for TV)."""
        if jitter:
            k = cfg.jitter_points
            offs = (torch.rand(k, N, ndim, generator=jitter_gen, device=device) * 2 - 1) * half_voxel
            vals = model((coords_for(1)[None] + offs).reshape(-1, ndim)).reshape(k, N)
            c = vals.mean(0)
            return c, c.reshape(shape)
        vals = model(coords_for(s))
        return to_native(vals, s), vals.reshape([n * s for n in shape])

    def misfit(c, A, b, bnorm):
        r = A @ c - b
        return (r * r).sum() / bnorm

    def make_field_fn(sd: dict[str, torch.Tensor]) -> Callable[[], Field]:
        def make() -> Field:
            m = build_network(net_cfg, seed=cfg.seed).to(device)
            m.load_state_dict(sd)
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            return Field(m, grid, {**cfg.to_dict(), "network_config": net_cfg, "scale": scale},
                         dict(problem.params), scale=scale)
        return make

    def live_field() -> Field:
        return Field(eval_net, grid, {**cfg.to_dict(), "network_config": net_cfg, "scale": scale},
                     dict(problem.params), scale=scale)

    def preview_of(model) -> np.ndarray:
        with torch.no_grad():
            img = model(coords_for(1)).reshape(shape) * scale
        return img.float().cpu().numpy()

    if cfg.stopping is not None:
        rule = cfg.stopping
    elif cfg.early_stopping and n_val and cfg.selection == "1se":
        rule = OneStandardError(cfg.patience, cfg.selection_k, min_iterations=cfg.min_iterations)
    elif cfg.early_stopping and n_val:
        rule = ValidationPatience(cfg.patience, min_iterations=cfg.min_iterations)
    else:
        rule = TrackBest()
    rule.reset()

    wants_rows = bool(getattr(rule, "wants_residuals", False))
    history: dict[int, tuple[dict[str, torch.Tensor], float]] = {}  # checkpoints a rule may pick
    best_sd = _clone_state(eval_net)
    best_it, best_val = 0, None
    val_loss = None
    sync_every_step = device.type == "cpu"  # reading a CPU scalar costs nothing; on GPU only at log points
    t0 = time.perf_counter()
    scales = scale_seq.integers(1, s_max + 1, size=cfg.iterations)
    jitter = cfg.sampling == "jitter"
    guard_f, rollbacks, last_good = 1.0, 0, None

    for it in range(1, cfg.iterations + 1):
        lr_f = _lr_factor(cfg, it - 1)
        lr_f *= guard_f
        for g, lr0 in zip(opt.param_groups, base_lrs):
            g["lr"] = lr0 * lr_f
        net.train()
        opt.zero_grad(set_to_none=True)
        c, img = native(net, int(scales[it - 1]), jitter)
        data = misfit(c, S_t, u_t, u_t_norm)
        loss = data + cfg.tv_weight * _tv(img) if cfg.tv_weight > 0 else data
        if cfg.l1_weight > 0:
            loss = loss + cfg.l1_weight * img.abs().mean()
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        if ema_net is not None:
            with torch.no_grad():
                ep, p = list(ema_net.parameters()), list(net.parameters())
                torch._foreach_mul_(ep, cfg.ema)
                torch._foreach_add_(ep, p, alpha=1.0 - cfg.ema)

        do_val = bool(n_val) and (it % cfg.val_every == 0 or it == cfg.iterations)
        do_preview = it % cfg.preview_every == 0
        do_log = it % cfg.log_every == 0 or do_preview or do_val or it == cfg.iterations
        loss_val = None
        if sync_every_step or do_log:
            loss_val = float(data.detach())
            if not math.isfinite(loss_val):
                bad = [n for n, a in (("system matrix S", S), ("measurement u", u)) if not np.all(np.isfinite(a))]
                why = f" ({' and '.join(bad)} contain NaN/Inf)" if bad else " (try a lower lr or grad_clip)"
                state = TrainState(it, loss_val, val_loss, time.perf_counter() - t0, None, best_it,
                                   "non-finite loss", best_val, lr=cfg.lr * lr_f,
                                   _make_field=make_field_fn(best_sd))
                yield state
                err = TrainingError(f"training stopped at iteration {it}: the loss became {loss_val}{why}; "
                                    f"the best field so far (iteration {best_it}) is kept as .field")
                err.field, err.state = state.field, state
                raise err

        stop = None
        if do_val:
            eval_net.eval()
            with torch.no_grad():
                cv, _ = native(eval_net, val_s, False)
                rv = S_v @ cv - u_v
                per_row = (rv[:n_val] ** 2 + rv[n_val:] ** 2) / u_v_norm  # one value per held-out frequency
                new_val = float(per_row.sum())
            spike = cfg.spike_guard > 0 and last_good is not None and not new_val <= cfg.spike_guard * last_good[0]
            if spike:
                # a loss spike (Adam overshoot, occasionally a collapse of the whole field): undo it
                net.load_state_dict(last_good[1])
                opt.load_state_dict(last_good[2])
                if ema_net is not None:
                    ema_net.load_state_dict(last_good[3])
                guard_f *= 0.5
                rollbacks += 1
            else:
                val_loss = new_val
            if not spike and math.isfinite(val_loss):
                # one snapshot of the evaluated weights serves the guard and the rule's history
                eval_sd = _clone_state(eval_net) if (cfg.spike_guard > 0 or wants_rows) else None
                if cfg.spike_guard > 0:
                    last_good = (val_loss, eval_sd if eval_net is net else _clone_state(net),
                                 copy.deepcopy(opt.state_dict()), eval_sd if ema_net is not None else None)
                tl = loss_val if loss_val is not None else float(data)
                if wants_rows:
                    history[it] = (eval_sd, val_loss)
                    chosen, stop = rule.update(it, val_loss, tl, residuals=per_row.double().cpu().numpy())
                    if chosen != best_it and chosen in history:
                        best_it = int(chosen)
                        best_sd, best_val = history[best_it]
                else:
                    is_best, stop = rule.update(it, val_loss, tl)
                    if is_best:
                        best_sd, best_it, best_val = _clone_state(eval_net), it, val_loss
        elif not n_val and do_log:
            best_sd, best_it = _clone_state(eval_net), it  # no held-out rows: the latest iterate

        if stop is None and it == cfg.iterations:
            final = getattr(rule, "final_reason", None)
            stop = final(it) if (final is not None and n_val) else "max iterations"
            if not n_val:
                best_sd, best_it = _clone_state(eval_net), it
        if stop is not None:
            if rollbacks:
                stop += (f" [spike guard: {rollbacks} loss spike(s) rolled back to the previous check, "
                         f"lr ×{guard_f:g}]")
            fn = make_field_fn(best_sd)
            fld = fn()
            prev = preview_of(fld.network)
            yield TrainState(it, float(data.detach()), val_loss, time.perf_counter() - t0, prev, best_it,
                             stop, best_val, lr=cfg.lr * lr_f, _make_field=fn, _field=fld)
            return
        if do_log:
            prev = preview_of(eval_net) if do_preview else None
            yield TrainState(it, loss_val, val_loss, time.perf_counter() - t0, prev, best_it, None,
                             best_val, lr=cfg.lr * lr_f, _make_field=make_field_fn(best_sd),
                             _make_current=live_field)


def fit(problem: Problem, config: TrainConfig | None = None,
        callback: Callable[[TrainState], Any] | None = None) -> tuple[Field, TrainState]:
    """Run `train` to the end; returns (best field, final state). `callback(state)` may return
    True to cancel."""
    gen = train(problem, config)
    last = None
    try:
        for last in gen:
            if callback is not None and callback(last):
                break
    finally:
        gen.close()
    if last is None:
        raise TrainingError("training produced no state")
    return last.field, last
