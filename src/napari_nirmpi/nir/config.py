"""`TrainConfig`: every setting of a NIR training, as plain data that round-trips through JSON.

Checkpoints and frame-series stores record the config (`to_dict`), and `from_dict` rebuilds it
exactly: `TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg`. The settings a
user or the default needs are top-level fields; experiments that were measured and lost
(Fourier features, pixel jitter, weight EMA, gradient clipping, ...) sit in
`TrainConfig.experimental` (an `ExperimentalConfig`), kept so their measurements can be
reproduced (docs/research-notes.md), not because anyone should turn them on.

Config dicts written before 2026-12-03 had the experimental settings at top level and the
stopping rule as its repr string; `from_dict` still reads them (`LEGACY_KEYS`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field as dc_field, fields
from typing import Any

from ..errors import NirmpiError
from .stopping import rule_from_spec, rule_spec

__all__ = ["TrainConfig", "ExperimentalConfig", "FeatureGridConfig", "LIMITS", "LEGACY_KEYS"]

# classic reconstructions a field can start from (TrainConfig.init): method-prior, automatic λ
INIT_METHODS = ("pdhg-tv", "fista-l1", "cgnr-l2")
# what TrainConfig.fast() changes for a run that starts from one (measured on the 37³ cone)
WARM_START = dict(lr=1e-3, iterations=600, val_fraction=0.0)

# Sane ranges enforced by `validate` (and by checkpoint loading for the network sizes): generous
# for real use (the default is width 128, depth 3, 2000 iterations at lr 3e-4), tight enough that a
# typo cannot allocate gigabytes or train noise.
LIMITS = {
    "lr": (0.0, 0.01),             # exclusive lower bound; measured: 3e-3 already trains noise with
                                   # the default network, 1e-3 loses ~3 dB, the default is 3e-4
    "lr_grid": (0.0, 1.0),         # a feature grid's cells take steps of 1e-2..3e-2 (its preset: 3e-2)
    "iterations": (1, 10_000_000),
    "width": (1, 4096),
    "depth": (0, 32),
    "omega0": (0.0, 10_000.0),     # exclusive lower bound; images use 10–80, audio 3000
    "max_scale": (1, 16),
    "max_points": (1, 1 << 31),
    "num_features": (1, 4096),
    "jitter_points": (1, 1024),
    "init_steps": (1, 100_000),
    "levels": (1, 16),
    "features": (1, 64),
    "grid_cells": 1 << 25,         # feature-grid cells over all levels (x features: the parameters)
    "parameters": 1 << 26,         # 67 M weights = 256 MB of float32 (the default has 50 k)
}


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


class _Checker:
    def __init__(self, obj, prefix: str):
        self.obj, self.prefix = obj, prefix

    def bad(self, name, expected):
        raise NirmpiError(f"{self.prefix}.{name}={getattr(self.obj, name)!r}: expected {expected}")

    def integer(self, name, lo, hi=None):
        v = getattr(self.obj, name)
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            self.bad(name, f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))

    def real(self, name, lo=None, hi=None, lo_open=False, allow_none=False, what=None):
        v = getattr(self.obj, name)
        if v is None and allow_none:
            return
        ok = _is_real(v) and math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v <= hi
        if not ok:
            rng = what or (f"a finite number {'>' if lo_open else '>='} {lo:g}" if lo is not None else "a finite number")
            if hi is not None and what is None:
                rng += f" and <= {hi:g}"
            self.bad(name, ("None or " if allow_none else "") + rng)

    def choice(self, name, options):
        if getattr(self.obj, name) not in options:
            self.bad(name, " or ".join(repr(o) for o in options))


class _Group:
    """A nested group of TrainConfig settings (`TrainConfig.<_name>`): plain JSON both ways."""

    _name = ""

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def _refuse(cls, unknown: set) -> None:
        """A group's own message for some unknown keys (none by default)."""

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise NirmpiError(f"TrainConfig.{cls._name}: expected a dict of settings, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        cls._refuse(unknown)
        if unknown:
            raise NirmpiError(f"TrainConfig.{cls._name}: unknown settings {sorted(unknown)} "
                              f"(expected some of {sorted(names)})")
        return cls(**d)


@dataclass
class ExperimentalConfig(_Group):
    """Settings of experiments that were measured and lost against the default (kept so that the
    measurements in docs/research-notes.md can be rerun). Each default is the value the default
    training uses."""

    _name = "experimental"
    num_features: int = 128             # network="fourier" only (Gaussian Fourier features + ReLU MLP,
                                        # Tancik 2020): needed more tuning, never beat SIREN
    sigma: float = 4.0                  # Fourier network only
    output_bias: float = 0.0            # added to the output layer's initial bias
    fold: bool = True                   # fold ω0 into the weights (the same optimisation, fewer
                                        # element-wise ops); False: the reference parametrisation
    grad_clip: float | None = None      # max gradient norm (None: off); the spike guard replaced it
    ema: float = 0.0                    # EMA decay of the weights used for validation/result (0: off)
    val_scale: int | None = None        # s for the held-out misfit (None: the largest s in 2D, 1 in 3D)
    normalize: bool = True              # train on u / scale, scale from a short CGLS (units-free);
                                        # False trains in data units (needs an lr per data set)

    def validate(self) -> None:
        c = _Checker(self, "TrainConfig.experimental")
        c.integer("num_features", *LIMITS["num_features"])
        c.real("sigma", 0.0, 1e4, lo_open=True)
        c.real("output_bias")
        c.choice("fold", (True, False))
        c.real("grad_clip", 0.0, lo_open=True, allow_none=True)
        c.real("ema", what="a decay in [0, 1)")
        if not 0.0 <= self.ema < 1.0:
            c.bad("ema", "a decay in [0, 1)")
        if self.val_scale is not None:
            c.integer("val_scale", *LIMITS["max_scale"])
        c.choice("normalize", (True, False))

    @classmethod
    def _refuse(cls, unknown: set) -> None:
        if unknown & PROMOTED:
            raise NirmpiError(f"TrainConfig.experimental: {sorted(unknown & PROMOTED)} are TrainConfig settings "
                              f"(top level) since 2026-12-03")


EXPERIMENTAL_NAMES = frozenset(f.name for f in fields(ExperimentalConfig))
# settings that lived in `experimental` until 2026-12-03 and are top-level now (the feature-grid
# route uses them); a nested record of them is moved up by `from_dict`
PROMOTED = frozenset({"network", "sampling", "jitter_points"})
# keys a config dict written before 2026-12-03 may hold: the experimental settings at top level,
# and what a Field adds to its training config (network_config, scale)
LEGACY_KEYS = EXPERIMENTAL_NAMES | PROMOTED | {"network_config", "scale"}


@dataclass
class FeatureGridConfig(_Group):
    """The feature-grid network (`nir.encodings.FeatureGrid`, network="grid"): `levels` dense grids
    of `features` channels, from `min_res` cells along the longest axis to `finest` × the training
    grid, decoded by an MLP of `depth` hidden layers of `hidden` units. Defaults: the route that
    won on the 37³ cone (docs/3d.md)."""

    _name = "feature_grid"
    levels: int = 6
    features: int = 4
    min_res: int = 4
    finest: float = 1.0                 # finest level / training grid; 2 measured worse at 2x (docs/3d.md)
    hidden: int = 32
    depth: int = 1
    init_std: float = 1e-2              # small: the field starts flat

    def validate(self) -> None:
        c = _Checker(self, "TrainConfig.feature_grid")
        c.integer("levels", *LIMITS["levels"])
        c.integer("features", *LIMITS["features"])
        c.integer("min_res", 2, 4096)
        c.real("finest", 0.0, 16.0, lo_open=True)
        c.integer("hidden", *LIMITS["width"])
        c.integer("depth", *LIMITS["depth"])
        c.real("init_std", 0.0, 10.0)



@dataclass
class TrainConfig:
    """Network, optimiser, sampling, held-out rows and iterate selection. `TrainConfig()` is the
    default (tuned once on simulated cases, no per-measurement tuning); `TrainConfig.paper()` is
    the seed paper's recipe.

    How the returned field is chosen: `val_fraction` of the frequency rows are held out; every
    `val_every` iterations their misfit is computed, and the returned field is the checkpoint the
    `selection` rule picks (by default the lowest held-out misfit): **iterate selection**. The
    default trains its whole budget (`patience` = `iterations` = 2000, so the patience never ends a
    default run early); `early_stopping=True` with a smaller `patience` also ends the run that
    many iterations after the lowest misfit.
    """

    # network
    network: str = "siren"              # "siren" (the paper's) | "grid" (multi-resolution feature grid +
                                        # small MLP: `TrainConfig.fast()`, the 3D route) | "fourier"
                                        # (measured and lost; its settings are in `experimental`)
    width: int = 128
    depth: int = 3                      # hidden width×width layers (SIREN reference: 3)
    omega0: float = 10.0                # first-layer ω0 (bandwidth prior; paper 30)
    hidden_omega0: float = 30.0
    positive: str | None = "square"     # non-negative output: None | "softplus" | "relu" | "square";
                                        # measured at 104²: square beats softplus by 0.7–1.5 dB and
                                        # 0.1–0.2 SSIM (softplus cannot reach a zero background)
    # optimiser
    lr: float = 3e-4                    # measured: 1e-3 loses ~3 dB on the spiral, 3e-4 best of 1e-4..1e-3
    lr_schedule: str = "cosine"         # "constant" | "cosine" | "exponential" (towards lr*lr_final)
    lr_final: float = 0.05              # the schedule's last factor
    iterations: int = 2000
    spike_guard: float = 3.0            # held-out misfit above this × the last check's (the first
                                        # check: the initial field's): roll back to that checkpoint
                                        # (weights and Adam state) and halve the lr (0: off). Adam at
                                        # 3e-4 overshoots now and then, once in a while wiping the
                                        # field (spiral-low held-out: 16.2 → 13.2 dB at one check)
    # priors
    l1_weight: float = 0.0              # weight of an l1 (sparsity) term: the mean |field| over the sampled
                                        # grid (= ||c||_1 / N of the voxel means, normalised units, peak ~1).
                                        # Tune half at 0.3: resolution +5 dB, points tie the tuned baseline,
                                        # but it erodes the ellipses' low plateau and the held-out misfit
                                        # cannot see its gains (selection lands up to 1.5 dB early): not the
                                        # default (docs/benchmarks.md)
    tv_weight: float = 0.0              # weight of a total-variation term: the mean |finite difference| of
                                        # the sampled image along each axis (same units as l1_weight)
    # starting point
    init: str | None = None             # None: random weights | "pdhg-tv", "fista-l1", "cgnr-l2": the
                                        # network first fitted to that classic reconstruction (automatic
                                        # λ, native grid; `nir.warm`). `fast_tv` starts from PDHG-TV
    init_steps: int = 400               # Adam steps of that image fit
    # sampling (the operator D)
    max_scale: int = 3                  # s ∈ 1..3: 2.3× fewer points per step than the paper's 5;
                                        # spiral 104²: 18.0 dB at 2000 it vs 18.5 dB (s ≤ 5, 3000 it)
    operator: str = "auto"              # D: "pool" = the paper's block mean (S held constant over a
                                        # voxel) | "cubic" = the adjoint of cubic interpolation (S
                                        # interpolated to the fine grid; model error for an off-centre
                                        # dot 0.4 % vs 2.6 %) | "auto" = cubic in 2D, pool in 3D
                                        # (measured: cubic wins one more case on each of the tune,
                                        # held-out and unseen sets in 2D, and is 1 dB worse in 3D)
    max_points: int = 1 << 20           # cap on fine-grid points per step (limits s in 3D)
    sampling: str = "grid"              # "grid": the s-fold grid + the operator D | "jitter": `jitter_points`
                                        # uniform random points per native voxel, averaged (an unbiased
                                        # voxel mean; the feature-grid route's choice; with SIREN in 2D
                                        # measured 3.5 dB worse on the spiral)
    jitter_points: int = 4              # points per native voxel for sampling="jitter"
    snr_weight: float | None = 30.0     # weight row m by snr_m/√(snr_m² + snr_weight²) when the problem
                                        # carries the system matrix's SNR (None: unweighted): a noise model
                                        # with calibration noise 1/snr_m per row and a 1/snr_weight (3 %)
                                        # model-error floor. Fitting the rows near the SNR threshold is
                                        # what broke noisy objects into fragments (tune half: 10 / 20 / 30
                                        # measured, 30 the flattest after the best iterate)
    # held-out rows, iterate selection, stopping
    val_fraction: float = 0.1           # held-out rows (0: none; the field is then the latest iterate)
    val_every: int = 25
    selection: str = "min"              # returned iterate: "min" = the lowest held-out misfit; "1se" =
                                        # the earliest within selection_k standard errors of it (the
                                        # choice for operator="pool": "min" misses spiral-low by 1.1 dB)
    selection_k: float = 0.5            # for "1se": tune half worst gap 0.36 dB at 0.5, 0.50 at 1.0
    early_stopping: bool = True         # end the run `patience` iterations after the lowest held-out
                                        # misfit (False: always the whole budget; selection unchanged)
    patience: int = 2000                # = the default budget, so the default never stops early: the
                                        # held-out misfit of a dot can dip early and fall below the dip
                                        # only after ~1500 iterations
    min_iterations: int = 0             # no early stop before this iteration
    stopping: Any = None                # a rule object overriding selection/early_stopping/patience: a
                                        # nir.stopping rule (stored as its settings) or any object with
                                        # reset()/update() (benchmarks; not storable)
    # reporting and execution
    preview_every: int = 100
    log_every: int = 10                 # a TrainState is yielded every log_every iterations
    seed: int = 0
    device: str = "auto"                # "auto" (CUDA, then MPS, then CPU) | "cpu" | "cuda[:N]" | "mps"
    feature_grid: FeatureGridConfig = dc_field(default_factory=FeatureGridConfig)  # network="grid"
    experimental: ExperimentalConfig = dc_field(default_factory=ExperimentalConfig)

    def __post_init__(self):
        for name, group in (("feature_grid", FeatureGridConfig), ("experimental", ExperimentalConfig)):
            v = getattr(self, name)
            if isinstance(v, dict):
                setattr(self, name, group.from_dict(v))
            elif v is None:
                setattr(self, name, group())
            elif not isinstance(v, group):
                raise NirmpiError(f"TrainConfig.{name}: expected a {group.__name__} or a dict, got {type(v).__name__}")
        if isinstance(self.stopping, dict):
            self.stopping = rule_from_spec(self.stopping)

    @classmethod
    def paper(cls, **overrides) -> "TrainConfig":
        """The seed paper: SIREN 3×256, ω0 30, Adam 1e-4 constant, 70 000 iterations, s ≤ 5,
        average pooling, no held-out rows (so no selection: the last iterate), linear output,
        unweighted rows, no spike guard."""
        kw = dict(width=256, depth=3, omega0=30.0, hidden_omega0=30.0, positive=None, lr=1e-4,
                  lr_schedule="constant", iterations=70_000, max_scale=5, operator="pool",
                  early_stopping=False, val_fraction=0.0, tv_weight=0.0, l1_weight=0.0, snr_weight=None,
                  spike_guard=0.0, experimental=ExperimentalConfig())
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def fast(cls, **overrides) -> "TrainConfig":
        """The feature-grid route for large (3D, scanner-size) problems: a multi-resolution
        feature grid decoded by a small MLP, one jittered point per voxel per step, lr 3e-2 with a
        cosine decay over 1200 iterations, and a run that ENDS 300 iterations after the lowest
        held-out misfit (not before 100). On the 37³ OpenMPIData-geometry cone it ends about 60x
        sooner than the default's projected run (docs/3d.md); the field samples on any grid.

        With `init` (a start from a classic image) the run continues from there instead: lr 1e-3
        for 600 iterations on every row, the field being the last iterate. From such a start the
        native-grid PSNR rises steadily while the held-out misfit is flat and noisy (it picked
        iterates 25-150 of 600 on the cone; docs/research-notes.md, 2026-12-06)."""
        kw = dict(network="grid", lr=3e-2, iterations=1200, sampling="jitter", jitter_points=1,
                  early_stopping=True, patience=300, min_iterations=100)
        if overrides.get("init") is not None:
            kw.update(WARM_START)
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def fast_tv(cls, weight: float = 0.3, **overrides) -> "TrainConfig":
        """`fast()` with a total-variation prior of `weight`, for extended, piecewise-constant
        objects, started from the classic PDHG-TV image (`init="pdhg-tv"`, automatic λ; `fast()`
        then trains at lr 1e-3 for 600 iterations on every row). Rows unweighted
        (`snr_weight=None`: the weighting cost 0.9 dB with the prior on) and two jittered points
        per voxel. On the 37³ cone it beats PDHG-TV itself at the native grid and at 2x
        (docs/3d.md). `init=None` gives the random start: lr 3e-2, the whole 1200 iterations,
        held-out selection."""
        kw = dict(tv_weight=float(weight), snr_weight=None, jitter_points=2, early_stopping=False, init="pdhg-tv")
        kw.update(overrides)
        return cls.fast(**kw)

    # -- checks ------------------------------------------------------------------------------
    def validate(self) -> None:
        """Refuse settings outside their sane range (`LIMITS`) with a NirmpiError naming the
        setting, its value and what is expected. `train` and `fit` call it."""
        c = _Checker(self, "TrainConfig")
        c.choice("network", ("siren", "grid", "fourier"))
        c.integer("width", *LIMITS["width"])
        c.integer("depth", *LIMITS["depth"])
        lo, hi = LIMITS["omega0"]
        c.real("omega0", lo, hi, lo_open=True)
        c.real("hidden_omega0", lo, hi, lo_open=True)
        c.choice("positive", (None, "softplus", "relu", "square"))
        if self.network == "grid":
            lo, hi = LIMITS["lr_grid"]
            c.real("lr", lo, hi, lo_open=True,
                   what=f"a learning rate in (0, {hi:g}] for a feature grid (its preset: 3e-2)")
        else:
            lo, hi = LIMITS["lr"]
            c.real("lr", lo, hi, lo_open=True,
                   what=f"a learning rate in (0, {hi:g}] (default 3e-4; measured: 3e-3 already trains noise "
                        f"with the default network; try 1e-4..1e-3)")
        c.choice("lr_schedule", ("constant", "cosine", "exponential"))
        c.real("lr_final", 0.0, 1.0, lo_open=True)
        c.integer("iterations", *LIMITS["iterations"])
        c.real("spike_guard", 0.0, what="0 (off) or a finite factor > 1")
        if not (self.spike_guard == 0 or self.spike_guard > 1):
            c.bad("spike_guard", "0 (off) or a finite factor > 1")
        c.real("l1_weight", 0.0, 1e6)
        c.real("tv_weight", 0.0, 1e6)
        c.choice("init", (None,) + INIT_METHODS)
        c.integer("init_steps", *LIMITS["init_steps"])
        c.integer("max_scale", *LIMITS["max_scale"])
        c.choice("operator", ("auto", "pool", "cubic"))
        c.integer("max_points", *LIMITS["max_points"])
        c.choice("sampling", ("grid", "jitter"))
        c.integer("jitter_points", *LIMITS["jitter_points"])
        c.real("snr_weight", 0.0, lo_open=True, allow_none=True)
        c.real("val_fraction", what="a fraction in [0, 1)")
        if not 0.0 <= self.val_fraction < 1.0:
            c.bad("val_fraction", "a fraction in [0, 1)")
        c.integer("val_every", 1)
        c.choice("selection", ("min", "1se"))
        c.real("selection_k", 0.0)
        c.choice("early_stopping", (True, False))
        c.integer("patience", 1)
        c.integer("min_iterations", 0)
        if self.stopping is not None and not (callable(getattr(self.stopping, "update", None))
                                              and callable(getattr(self.stopping, "reset", None))):
            c.bad("stopping", "None or a stopping rule (an object with reset() and update())")
        c.integer("preview_every", 1)
        c.integer("log_every", 1)
        c.integer("seed", 0, (1 << 63) - 1)
        if not (isinstance(self.device, str) and (self.device in ("auto", "cpu", "cuda", "mps") or
                                                  (self.device.startswith("cuda:") and self.device[5:].isdigit()))):
            c.bad("device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        self.experimental.validate()
        self.feature_grid.validate()
        if self.network == "grid":
            return  # its size depends on the grid: checked when the network config is built
        n = parameter_count(self.network_config(3))
        if n > LIMITS["parameters"]:
            raise NirmpiError(f"TrainConfig: width {self.width} × depth {self.depth} makes {n:,} network "
                              f"parameters; the limit is {LIMITS['parameters']:,}")

    # -- derived -----------------------------------------------------------------------------
    def network_config(self, ndim: int, shape=None) -> dict:
        """The network's config dict (`nir.field.build_network`); a feature grid needs the
        training grid's `shape`."""
        e = self.experimental
        if self.network == "grid":
            if shape is None or len(tuple(shape)) != ndim:
                raise NirmpiError(f"a feature-grid network needs the training grid's shape ({ndim} axes), got {shape}")
            g = self.feature_grid
            return {"network": "grid", "in_dim": ndim, "shape": [int(n) for n in shape], "levels": g.levels,
                    "features": g.features, "min_res": g.min_res, "max_scale": float(g.finest),
                    "hidden": g.hidden, "depth": g.depth, "positive": self.positive,
                    "output_bias": 0.3, "init_std": g.init_std}
        if self.network == "siren":
            return {"network": "siren", "in_dim": ndim, "width": self.width, "depth": self.depth,
                    "omega0": self.omega0, "hidden_omega0": self.hidden_omega0,
                    "positive": self.positive, "fold": e.fold, "output_bias": e.output_bias}
        return {"network": "fourier", "in_dim": ndim, "width": self.width, "depth": self.depth,
                "num_features": e.num_features, "sigma": e.sigma, "positive": self.positive,
                "output_bias": e.output_bias}

    # -- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON data; `from_dict` rebuilds an equal config. A built-in stopping rule is
        stored as its settings; a custom rule object as {"rule": "custom", "repr": ...}, which
        `from_dict` refuses (the object itself cannot be rebuilt from text)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["experimental"] = self.experimental.to_dict()
        d["feature_grid"] = self.feature_grid.to_dict()
        d["stopping"] = rule_spec(self.stopping)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Rebuild a config from `to_dict` output, also from dicts written before 2026-12-03
        (experimental settings at top level, the stopping rule as a repr string, and a Field's
        record keys network_config/scale)."""
        if not isinstance(d, dict):
            raise NirmpiError(f"TrainConfig: expected a dict of settings, got {type(d).__name__}")
        d = dict(d)
        exp = d.pop("experimental", None)
        exp = dict(exp.to_dict() if isinstance(exp, ExperimentalConfig) else (exp or {}))
        for k in PROMOTED & set(exp):  # nested before 2026-12-03, top-level now
            v = exp.pop(k)
            d.setdefault(k, v)
        for k in EXPERIMENTAL_NAMES & set(d):  # old flat layout; a flat key wins over the group
            exp[k] = d.pop(k)
        d.pop("network_config", None)
        d.pop("scale", None)
        if isinstance(d.get("stopping"), str):  # old records: a repr, not rebuildable; the rule it
            d["stopping"] = None                # named followed from the other settings anyway
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise NirmpiError(f"TrainConfig: unknown settings {sorted(unknown)}")
        fg = d.pop("feature_grid", None)
        fg = fg.to_dict() if isinstance(fg, FeatureGridConfig) else (fg or {})
        return cls(**d, experimental=ExperimentalConfig.from_dict(exp), feature_grid=FeatureGridConfig.from_dict(fg))


def parameter_count(net_cfg: dict) -> int:
    """Weights a network config builds (for the size limits), without building it."""
    w, depth, d = int(net_cfg.get("width", 0)), int(net_cfg.get("depth", 0)), int(net_cfg.get("in_dim", 3))
    if net_cfg.get("network", "siren") == "grid":
        from .encodings import grid_parameter_count
        return grid_parameter_count(net_cfg)
    if net_cfg.get("network", "siren") == "fourier":
        first = 2 * int(net_cfg.get("num_features", 0))
        return int(net_cfg.get("num_features", 0)) * d + (first + 1) * w + depth * (w + 1) * w + w + 1
    return (d + 1) * w + depth * (w + 1) * w + w + 1
