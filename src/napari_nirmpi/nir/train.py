"""Training a coordinate network φθ on one measurement: argmin_θ ‖S D φθ(p) − u‖² (Tsanda 2025).

Each iteration draws a refinement factor s ∈ 1..max_scale from a seeded generator, evaluates the
network on the s-times finer grid of the FOV (voxel centres), maps it back to the native grid with
the operator D (`nir.operators`: the paper's average pool, or the adjoint of cubic interpolation)
and takes an Adam step on the data misfit over the training rows (plus the optional ℓ1/TV priors).

Rows are weighted by their calibration SNR when the problem carries it (`snr_weight`: the misfit
of row m counts with weight snr_m² / (snr_m² + snr_weight²)). Every `val_every` iterations the
misfit of the held-out rows is computed; a jump by more than `spike_guard` × the previous check's
(at the first check: the initial field's) rolls the weights and Adam state back to that check and
halves the learning rate. The returned field is the checkpoint the selection rule picks from the
held-out misfits (`nir.stopping`; by default the lowest): iterate selection. By default the whole
iteration budget runs; `early_stopping` with a patience below the budget may end it earlier.

Complex rows are used as real ones: S_r = [Re S; Im S] (2M, N), u_r = [Re u; Im u].
The reported loss is the relative misfit ‖S_r c − u_r‖² / ‖u_r‖² on the training rows.

`fit(problem, config)` runs a training to its end and returns (field, final state), with an
optional progress display and a callback that may stop it; it is the one loop the CLI, batch,
demo and benchmarks use. `train(problem, config)` is the generator underneath (the napari widget
drives it to throttle its updates): it yields a `TrainState` every `log_every` iterations and a
final one (stop_reason set); closing it (`gen.close()`) cancels promptly. A non-finite loss yields
a final state (stop_reason "non-finite loss") and then raises `TrainingError`, whose `.field` is
the selected field so far, or None when the failure came before any checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..errors import NirmpiError, ProblemMismatch, TrainingError
from ..problem import Problem
from .config import ExperimentalConfig, TrainConfig
from .data import _real_rows, estimate_scale, resolve_device, split_rows
from .field import Field, build_network
from .operators import SubVoxelOperator, cubic_adjoint_matrix, cubic_pool, pool
from .stopping import OneStandardError, StoppingRule, TrackBest, ValidationPatience

__all__ = ["TrainConfig", "ExperimentalConfig", "TrainState", "train", "fit", "StoppingRule",
           "ValidationPatience", "resolve_device", "pool", "cubic_pool", "cubic_adjoint_matrix",
           "estimate_scale", "split_rows"]


# a returned field whose held-out misfit is not below this fraction of the untrained field's is
# flagged in the stop reason (see _Run.annotate)
POOR_FIT = 0.25


# --------------------------------------------------------------------------------------------
# state

@dataclass
class TrainState:
    """One progress report. `preview` is the current iterate's native-grid image (voxel centres,
    data units) every `preview_every` iterations, else None; the final state (stop_reason set)
    always carries the preview of the returned field. `field` is the selected field so far: the
    checkpoint the selection rule picks (TrainConfig.selection), or the latest iterate when no
    rows are held out; None only on a failed run's final state when no checkpoint existed yet."""

    iteration: int
    loss: float                     # relative data misfit on the training rows (this iteration)
    val_loss: float | None          # relative misfit on held-out rows (latest check) or None
    elapsed: float                  # seconds since training started
    preview: np.ndarray | None      # native-grid image (float32, data units) every preview_every
    best_iteration: int             # iteration of the selected checkpoint (0: the initial weights)
    stop_reason: str | None         # None until the final state
    best_val_loss: float | None = None
    lr: float = 0.0
    _make_field: Callable[[], Field] | None = dc_field(default=None, repr=False, compare=False)
    _field: Field | None = dc_field(default=None, repr=False, compare=False)
    _make_current: Callable[[], Field] | None = dc_field(default=None, repr=False, compare=False)

    def current_field(self) -> Field:
        """The CURRENT iterate (not the selected one) as a Field sharing the live weights. Valid only
        while the state is fresh: inside a `fit` callback, or before a `train` generator advances
        (benchmarks use it to score every checkpoint against ground truth)."""
        if self._make_current is None:
            raise TrainingError("this state carries no current iterate (only progress states of a "
                                "running training do)")
        return self._make_current()

    @property
    def field(self) -> Field | None:
        """The selected field so far (built on first access from a copy of its weights)."""
        if self._field is None and self._make_field is not None:
            self._field = self._make_field()
        return self._field


# --------------------------------------------------------------------------------------------
# helpers

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


def _misfit(c: torch.Tensor, A: torch.Tensor, b: torch.Tensor, bnorm: torch.Tensor) -> torch.Tensor:
    r = A @ c - b
    return (r * r).sum() / bnorm


def _default_rule(cfg: TrainConfig, n_val: int) -> StoppingRule:
    if cfg.stopping is not None:
        return cfg.stopping
    if cfg.early_stopping and n_val and cfg.selection == "1se":
        return OneStandardError(cfg.patience, cfg.selection_k, min_iterations=cfg.min_iterations)
    if cfg.early_stopping and n_val:
        return ValidationPatience(cfg.patience, min_iterations=cfg.min_iterations)
    return TrackBest()


# --------------------------------------------------------------------------------------------
# one training run, in steps

class _Run:
    """Everything one training holds: the data (training and held-out rows, in units of `scale`),
    the network and its optimiser, the operator D, the selection rule and the spike guard. `train`
    calls `step`, `check` and the state builders in order."""

    def __init__(self, problem: Problem, config: TrainConfig | None, init_field: Field | None):
        cfg = copy.copy(config) if config is not None else TrainConfig()
        cfg.validate()
        self.cfg, self.problem, self.warm = cfg, problem, init_field is not None
        self.device = resolve_device(cfg.device)
        grid = problem.grid
        self.ndim, self.shape, self.N = grid.ndim, tuple(grid.shape), grid.size
        if cfg.operator == "auto":  # the field's config records the operator that was used
            cfg.operator = "cubic" if self.ndim == 2 else "pool"
        self._setup_data(problem)
        self._setup_network(init_field)
        self._setup_sampling()
        self.rule = _default_rule(cfg, self.n_val)
        self.rule.reset()
        self.wants_rows = bool(getattr(self.rule, "wants_residuals", False))
        self.history: dict[int, tuple[dict[str, torch.Tensor], float]] = {}  # checkpoints a rule may pick
        self.best_sd = _clone_state(self.eval_net)
        self.best_it, self.best_val, self.val_loss = 0, None, None
        self.guard_f, self.rollbacks, self.last_good, self.initial_val = 1.0, 0, None, None
        if self.n_val:
            val0, _ = self.held_out_misfit()
            self.initial_val = val0 if math.isfinite(val0) else None
            if cfg.spike_guard > 0 and self.initial_val is not None:
                # the initial field is the guard's first reference: a first check far above it is a
                # blow-up (too high an lr), which no later check could flag against itself. On the 24
                # benchmark-suite cases the first check is at most 0.10× the initial misfit, so a
                # working run never meets it (the default's figures are unchanged)
                self.last_good = (val0, _clone_state(self.net), copy.deepcopy(self.opt.state_dict()),
                                  _clone_state(self.ema_net) if self.ema_net is not None else None)
        # reading a CPU scalar costs nothing; on a GPU only at log points (a host sync)
        self.sync_every_step = self.device.type == "cpu"
        self.lr_f = 1.0
        self.t0 = time.perf_counter()

    # -- setup ---------------------------------------------------------------------------------
    def _setup_data(self, problem: Problem) -> None:
        cfg = self.cfg
        S, u = np.asarray(problem.S), np.asarray(problem.u)
        if u.ndim != 1:
            raise ProblemMismatch(f"train expects one measurement frame u of shape ({S.shape[0]},), got "
                                  f"{u.shape}; use problem.with_u(u[i]) per frame")
        M = S.shape[0]
        self.bad_inputs = [n for n, a in (("system matrix S", S), ("measurement u", u)) if not np.all(np.isfinite(a))]
        if cfg.snr_weight is not None and problem.snr is not None:
            snr = np.asarray(problem.snr, dtype=np.float64)
            if snr.shape == (M,) and np.all(np.isfinite(snr)) and np.all(snr >= 0):
                w = snr / np.sqrt(snr ** 2 + float(cfg.snr_weight) ** 2)
                S, u = S * w[:, None].astype(np.float32), u * w.astype(np.float32)
        val_rows, train_rows = split_rows(M, cfg)  # seeded: the same seed holds out the same rows
        self.n_val = len(val_rows)
        self.scale_seq = np.random.default_rng([cfg.seed, 1])
        # u is divided by the output scale in _setup_network, once the scale is known
        self.S_t, self.u_t_raw = _real_rows(S, u, train_rows, self.device)
        self.S_v, self.u_v_raw = _real_rows(S, u, val_rows, self.device) if self.n_val else (None, None)

    def _setup_network(self, init_field: Field | None) -> None:
        cfg, dev = self.cfg, self.device
        if init_field is not None:
            scale = float(init_field.scale)  # keep the previous field's units so its image carries over
        else:
            scale = estimate_scale(self.S_t, self.u_t_raw) if cfg.experimental.normalize else 1.0
        self.scale = scale
        self.u_t = self.u_t_raw / scale
        self.u_t_norm = torch.clamp((self.u_t * self.u_t).sum(), min=1e-30)
        if self.n_val:
            self.u_v = self.u_v_raw / scale
            self.u_v_norm = torch.clamp((self.u_v * self.u_v).sum(), min=1e-30)
        self.net_cfg = cfg.network_config(self.ndim, self.shape)
        self.net = build_network(self.net_cfg, seed=cfg.seed).to(dev)
        if init_field is not None:
            try:
                self.net.load_state_dict(init_field.network.state_dict())
            except RuntimeError as e:
                raise NirmpiError(f"warm start: the initial field's network does not match {self.net_cfg}: "
                                  f"{e}") from None
        self.opt = torch.optim.Adam(self.net.param_groups(cfg.lr))
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.ema_net = None
        if cfg.experimental.ema > 0:
            self.ema_net = copy.deepcopy(self.net)
            for p in self.ema_net.parameters():
                p.requires_grad_(False)
        self.eval_net = self.ema_net if self.ema_net is not None else self.net

    def _setup_sampling(self) -> None:
        cfg, exp, dev, ndim = self.cfg, self.cfg.experimental, self.device, self.ndim
        # the largest s whose fine grid stays under max_points
        s_max = 1
        while s_max < cfg.max_scale and self.N * (s_max + 1) ** ndim <= cfg.max_points:
            s_max += 1
        self.s_max = s_max
        val_s = exp.val_scale if exp.val_scale is not None else (s_max if ndim == 2 else 1)
        self.val_s = max(1, min(int(val_s), cfg.max_scale))
        self.coords: dict[int, torch.Tensor] = {}
        self.D = SubVoxelOperator(cfg.operator, self.shape, dev)
        self.jitter = cfg.sampling == "jitter"
        self.jitter_gen = torch.Generator(device=dev).manual_seed(int(cfg.seed) + 2)
        self.half_voxel = torch.tensor([1.0 / n for n in self.shape], dtype=torch.float32, device=dev)
        self.scales = self.scale_seq.integers(1, s_max + 1, size=cfg.iterations)

    def coords_for(self, s: int) -> torch.Tensor:
        if s not in self.coords:
            c = self.problem.grid.refined(s).normalized_coords(np.float32).reshape(-1, self.ndim)
            self.coords[s] = torch.from_numpy(c).to(self.device)
        return self.coords[s]

    def native(self, model, s: int, jitter: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(voxel values c (N,) that S sees, the sampled image the priors act on)."""
        if jitter:
            k, ndim = self.cfg.jitter_points, self.ndim
            offs = (torch.rand(k, self.N, ndim, generator=self.jitter_gen, device=self.device) * 2 - 1) * self.half_voxel
            vals = model((self.coords_for(1)[None] + offs).reshape(-1, ndim)).reshape(k, self.N)
            c = vals.mean(0)
            return c, c.reshape(self.shape)
        vals = model(self.coords_for(s))
        return self.D(vals, s), vals.reshape([n * s for n in self.shape])

    # -- one optimisation step ------------------------------------------------------------------
    def step(self, it: int) -> torch.Tensor:
        """Adam step `it` (1-based) on the training rows; returns the data misfit (a tensor)."""
        cfg = self.cfg
        self.lr_f = _lr_factor(cfg, it - 1) * self.guard_f
        for g, lr0 in zip(self.opt.param_groups, self.base_lrs):
            g["lr"] = lr0 * self.lr_f
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        c, img = self.native(self.net, int(self.scales[it - 1]), self.jitter)
        data = _misfit(c, self.S_t, self.u_t, self.u_t_norm)
        loss = data + cfg.tv_weight * _tv(img) if cfg.tv_weight > 0 else data
        if cfg.l1_weight > 0:
            loss = loss + cfg.l1_weight * img.abs().mean()
        loss.backward()
        if cfg.experimental.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.experimental.grad_clip)
        self.opt.step()
        if self.ema_net is not None:
            d = cfg.experimental.ema
            with torch.no_grad():
                ep, p = list(self.ema_net.parameters()), list(self.net.parameters())
                torch._foreach_mul_(ep, d)
                torch._foreach_add_(ep, p, alpha=1.0 - d)
        return data

    # -- validation: spike guard and iterate selection --------------------------------------------
    def held_out_misfit(self) -> tuple[float, torch.Tensor]:
        """(relative misfit of the evaluated weights on the held-out rows, one value per row)."""
        self.eval_net.eval()
        with torch.no_grad():
            cv, _ = self.native(self.eval_net, self.val_s, False)
            rv = self.S_v @ cv - self.u_v
            n = self.n_val
            per_row = (rv[:n] ** 2 + rv[n:] ** 2) / self.u_v_norm  # one value per held-out frequency
        return float(per_row.sum()), per_row

    def check(self, it: int, train_loss: float) -> str | None:
        """A validation check: roll back a spike, else let the rule select; returns a stop reason."""
        cfg = self.cfg
        new_val, per_row = self.held_out_misfit()
        lg = self.last_good
        if cfg.spike_guard > 0 and lg is not None and not new_val <= cfg.spike_guard * lg[0]:
            # a loss spike (Adam overshoot, occasionally a collapse of the whole field, or a
            # divergence from the start): undo it and continue at half the learning rate
            self.net.load_state_dict(lg[1])
            self.opt.load_state_dict(lg[2])
            if self.ema_net is not None:
                self.ema_net.load_state_dict(lg[3])
            self.guard_f *= 0.5
            self.rollbacks += 1
            return None
        self.val_loss = new_val
        if not math.isfinite(new_val):
            return None
        # one snapshot of the evaluated weights serves the guard and the rule's history
        eval_sd = _clone_state(self.eval_net) if (cfg.spike_guard > 0 or self.wants_rows) else None
        if cfg.spike_guard > 0:
            self.last_good = (new_val, eval_sd if self.eval_net is self.net else _clone_state(self.net),
                              copy.deepcopy(self.opt.state_dict()), eval_sd if self.ema_net is not None else None)
        if self.wants_rows:
            self.history[it] = (eval_sd, new_val)
            chosen, stop = self.rule.update(it, new_val, train_loss, residuals=per_row.double().cpu().numpy())
            if chosen != self.best_it and chosen in self.history:
                self.best_it = int(chosen)
                self.best_sd, self.best_val = self.history[self.best_it]
        else:
            is_best, stop = self.rule.update(it, new_val, train_loss)
            if is_best:
                self.best_sd, self.best_it, self.best_val = _clone_state(self.eval_net), it, new_val
        return stop

    def select_latest(self, it: int) -> None:
        """No held-out rows: the latest iterate is the result."""
        self.best_sd, self.best_it = _clone_state(self.eval_net), it

    def budget_reason(self, it: int) -> str:
        """The stop reason when the iteration budget is used up."""
        final = getattr(self.rule, "final_reason", None)
        if final is not None and self.n_val:
            return final(it)
        if not self.n_val:
            self.select_latest(it)
        return "max iterations"

    def annotate(self, reason: str) -> str:
        if self.rollbacks:
            reason += (f" [spike guard: {self.rollbacks} loss spike(s) rolled back to the previous check, "
                       f"lr ×{self.guard_f:g}]")
        if (not self.warm and self.initial_val is not None and self.best_val is not None
                and not self.best_val < POOR_FIT * self.initial_val):
            # measured on small problems: a working fit ends below 0.15 of the untrained field's
            # held-out misfit (2000 iterations: below 0.01); lr ≥ 3e-3 trains noise at 0.4–0.6
            reason += (f" [warning: poor fit: the returned field's held-out misfit is "
                       f"{self.best_val / self.initial_val:.0%} of the untrained field's, so the image is "
                       f"mostly not explained by the data (too high an lr? default 3e-4), or the data hold "
                       f"no signal]")
        return reason

    # -- results and states --------------------------------------------------------------------
    def record(self) -> dict:
        return {**self.cfg.to_dict(), "network_config": self.net_cfg, "scale": self.scale}

    def field_maker(self, sd: dict[str, torch.Tensor]) -> Callable[[], Field]:
        def make() -> Field:
            m = build_network(self.net_cfg, seed=self.cfg.seed).to(self.device)
            m.load_state_dict(sd)
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            return Field(m, self.problem.grid, self.record(), dict(self.problem.params), scale=self.scale)
        return make

    def live_field(self) -> Field:
        return Field(self.eval_net, self.problem.grid, self.record(), dict(self.problem.params), scale=self.scale)

    def preview(self, model) -> np.ndarray:
        """The native-grid image (data units) of `model`."""
        with torch.no_grad():
            img = model(self.coords_for(1)).reshape(self.shape) * self.scale
        return img.float().cpu().numpy()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def progress_state(self, it: int, loss: float | None, with_preview: bool) -> TrainState:
        prev = self.preview(self.eval_net) if with_preview else None
        return TrainState(it, loss, self.val_loss, self.elapsed(), prev, self.best_it, None, self.best_val,
                          lr=self.cfg.lr * self.lr_f, _make_field=self.field_maker(self.best_sd),
                          _make_current=self.live_field)

    def final_state(self, it: int, data: torch.Tensor, reason: str) -> TrainState:
        make = self.field_maker(self.best_sd)
        fld = make()
        return TrainState(it, float(data.detach()), self.val_loss, self.elapsed(), self.preview(fld.network),
                          self.best_it, self.annotate(reason), self.best_val, lr=self.cfg.lr * self.lr_f,
                          _make_field=make, _field=fld)

    def failure(self, it: int, loss: float) -> tuple[TrainState, TrainingError]:
        """The final state and the error of a non-finite loss. Before the first checkpoint there is
        no trained field to offer (the initial weights are not a result): then `.field` is None."""
        trained = self.best_it > 0
        state = TrainState(it, loss, self.val_loss, self.elapsed(), None, self.best_it, "non-finite loss",
                           self.best_val, lr=self.cfg.lr * self.lr_f,
                           _make_field=self.field_maker(self.best_sd) if trained else None)
        why = (f" ({' and '.join(self.bad_inputs)} contain NaN/Inf)" if self.bad_inputs
               else " (try a lower lr)")
        kept = (f"the selected field so far (iteration {self.best_it}) is kept as .field" if trained else
                "no checkpoint was reached, so there is no trained field (.field is None)")
        err = TrainingError(f"training stopped at iteration {it}: the loss became {loss}{why}; {kept}")
        err.field, err.state = state.field, state
        return state, err


# --------------------------------------------------------------------------------------------
# the loop

def train(problem: Problem, config: TrainConfig | None = None, *,
          init_field: Field | None = None) -> Iterator[TrainState]:
    """Fit a field to `problem` (one frame). Yields a TrainState every `log_every` iterations,
    on every preview and at the end (stop_reason set). Prefer `fit` unless you need the stream.

    init_field: start from this field's weights and output scale (a warm start, e.g. from the
    previous frame of a series); its network must match the config's. Without one, a config with
    `init` set first fits the network to that classic reconstruction (`nir.warm.classic_start`).
    """
    if init_field is None and config is not None and config.init is not None:
        from .warm import classic_start

        init_field = classic_start(problem, config)
    run = _Run(problem, config, init_field)
    cfg = run.cfg
    for it in range(1, cfg.iterations + 1):
        data = run.step(it)
        do_val = bool(run.n_val) and (it % cfg.val_every == 0 or it == cfg.iterations)
        do_preview = it % cfg.preview_every == 0
        do_log = it % cfg.log_every == 0 or do_preview or do_val or it == cfg.iterations
        loss = None
        if run.sync_every_step or do_log:
            loss = float(data.detach())
            if not math.isfinite(loss):
                state, err = run.failure(it, loss)
                yield state
                raise err
        stop = None
        if do_val:
            stop = run.check(it, loss)
        elif not run.n_val and do_log:
            run.select_latest(it)
        if stop is None and it == cfg.iterations:
            stop = run.budget_reason(it)
        if stop is not None:
            yield run.final_state(it, data, stop)
            return
        if do_log:
            yield run.progress_state(it, loss, do_preview)


def fit(problem: Problem, config: TrainConfig | None = None,
        callback: Callable[[TrainState], Any] | None = None, *, init_field: Field | None = None,
        progress: bool | str = False) -> tuple[Field, TrainState]:
    """Train to the end and return (selected field, final state).

    callback(state) is called with every state `train` yields; returning True stops training
    (the final state then has stop_reason "stopped by the callback at iteration N" and the
    field is the selection so far). Inside the callback `state.current_field()` is the live
    iterate. progress: True (or a label such as "frame 3") shows a progress bar on a terminal,
    and a one-line report about every 15 s otherwise (a log file). init_field: warm start, as
    in `train`. Raises TrainingError on a non-finite loss (see `train`).
    """
    cfg = config if config is not None else TrainConfig()
    reporter = None
    if progress:
        from .progress import Progress

        reporter = Progress(cfg.iterations, progress if isinstance(progress, str) else "NIR")
    gen = train(problem, cfg, init_field=init_field)
    last, stopped = None, False
    try:
        for last in gen:
            if reporter is not None:
                reporter.update(last)
            if callback is not None and callback(last):
                stopped = True
                break
    finally:
        gen.close()
        if reporter is not None:
            reporter.close()
    if last is None:
        raise TrainingError("training produced no state")
    if stopped and last.stop_reason is None:
        last = dataclasses.replace(last, stop_reason=f"stopped by the callback at iteration {last.iteration}",
                                   _make_current=None)
    return last.field, last
